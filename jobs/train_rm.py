"""Entry point for `ray job submit`: reward-model training on Ray Train, from the same YAML as
`python -m rm_training.train` and `torchrun ... -m rm_training.train`.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/train_rm.py --config rm_training/configs/full_rm.yaml [key=value ...] [--num-workers N]

The driver loads and checks the config (keys, the model's architecture, the preference data) before
any worker starts; then Ray Train's TorchTrainer starts N workers, sets up the torch.distributed
process group (gloo on CPU, nccl on GPU) with the environment torchrun gives (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT), and each worker runs `rm_training.train.train`, DeepSpeed
included where `training.deepspeed` names a config. Rank 0 writes `training.output_dir`: the checkpoint
and `training_summary.json`, as under torchrun.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from pargs_batch.configlib import ConfigError, load_config

PATH_KEYS = (("", "model"), ("", "tokenizer"), ("data", "source"), ("data", "eval_source"),
             ("training", "deepspeed"), ("training", "output_dir"))
MAX_CPU_WORKERS = 8  # past a few processes per node, gloo's all-reduce costs more than CPU data-parallel gains


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python jobs/train_rm.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config of rm_training (see rm_training/configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. training.max_steps=10")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="training processes (default: one per GPU in the cluster; without GPUs one per "
                             f"CPU of the cluster, at most {MAX_CPU_WORKERS}, each taking one CPU)")
    parser.add_argument("--use-gpu", action=argparse.BooleanOptionalAction, default=None,
                        help="one GPU per worker, nccl (default: when the cluster has GPUs; otherwise CPU, gloo)")
    return parser.parse_args(argv)


def scaling(num_workers: int | None, use_gpu: bool | None, resources: dict) -> tuple[int, bool]:
    """(workers, use_gpu) for a cluster with ``resources`` (ray.cluster_resources())."""
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if use_gpu is None:
        use_gpu = gpus > 0
    if use_gpu and not gpus:
        raise ConfigError("--use-gpu", True, "the cluster has no GPU (leave it out to train on CPU)")
    if num_workers is None:
        num_workers = gpus if use_gpu else max(1, min(cpus, MAX_CPU_WORKERS))
    if num_workers < 1:
        raise ConfigError("--num-workers", num_workers, "must be at least 1")
    return num_workers, use_gpu


def absolute_paths(cfg) -> None:
    """Relative paths of ``cfg`` made absolute from the driver's directory (the job's working_dir), as
    torchrun's processes would read them: a Ray worker's own directory is another. A hub id (no such
    local path) stays as it is; the output directory is always made absolute."""
    if not Path(cfg.training.output_dir).is_absolute() and "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        print(f"train_rm: training.output_dir {cfg.training.output_dir!r} is relative: this Ray job writes it under its "
              f"working directory on the head node, {Path(cfg.training.output_dir).resolve()}, which Ray may delete "
              "after the job; give an absolute path every node sees", file=sys.stderr)
    for section, key in PATH_KEYS:
        owner = getattr(cfg, section) if section else cfg
        value = getattr(owner, key)
        if value and (key == "output_dir" or Path(value).exists()):
            setattr(owner, key, str(Path(value).resolve()))


def preflight(cfg) -> None:
    """What `rm_training.train` refuses before loading weights, refused here before any worker starts."""
    from rm_training.train import check_architecture, load_triples

    check_architecture(cfg)
    load_triples(cfg)


def train_worker(loop_config: dict) -> None:
    """One Ray Train worker: the torch.distributed group and its environment are set up already."""
    from rm_training.train import train

    # Ray Train's root logger already shows a worker's log records: only their level is ours to set
    logging.getLogger("rm_training").setLevel(logging.INFO)
    logging.getLogger("rm_training").info("worker rank %s of %s", os.environ["RANK"], os.environ["WORLD_SIZE"])
    train(loop_config["config"])


def main(argv: list[str] | None = None) -> int:
    from rm_training.config import TrainConfig

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
        absolute_paths(cfg)
        preflight(cfg)
        import ray

        ray.init()  # the cluster in RAY_ADDRESS (set by `ray job submit`), else a running or new local one
        num_workers, use_gpu = scaling(args.num_workers, args.use_gpu, ray.cluster_resources())
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    out = Path(cfg.training.output_dir)
    print(f"train_rm: {num_workers} {'GPU' if use_gpu else 'CPU'} worker(s), backend {'nccl' if use_gpu else 'gloo'}"
          f"{', DeepSpeed ' + cfg.training.deepspeed if cfg.training.deepspeed else ''}; output {out}",
          file=sys.stderr, flush=True)
    trainer = TorchTrainer(train_worker, train_loop_config={"config": cfg},
                           scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
                           run_config=RunConfig(name="train_rm", storage_path=str(out / "ray_train")))
    trainer.fit()
    summary = out / "training_summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        print(f"train_rm: done, world size {s.get('world_size')}, held-out accuracy "
              f"{s.get('pairwise_accuracy')}; summary {summary}", file=sys.stderr)
    else:  # rank 0 ran on another node: the path is on its filesystem
        print(f"train_rm: done; rank 0 wrote {summary} on its node (use a path every node sees)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
