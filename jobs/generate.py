"""Entry point for `ray job submit`: the generation job on whatever cluster runs it.

    ray job submit --address http://HEAD:8265 --working-dir . \\
        --runtime-env-json '{"excludes": [".venv", "outputs", ".git"]}' -- \\
        python jobs/generate.py --config jobs/configs/pargs.yaml [key=value ...]

Under `ray job submit`, RAY_ADDRESS points at the cluster, so the pool's actors land there, and
Ray puts the uploaded working_dir first on every process's PYTHONPATH: the package runs from the
upload even where it is not installed. The first line says which copy of the code runs.
"""

import sys
from pathlib import Path

import pargs_batch
from pargs_batch.cli import main

if __name__ == "__main__":
    print(f"pargs_batch from {Path(pargs_batch.__file__).parent}", file=sys.stderr, flush=True)
    sys.exit(main(["generate", *sys.argv[1:]]))
