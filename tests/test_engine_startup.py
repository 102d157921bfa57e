"""A CPU engine's start-up: vLLM compiles a model once per machine, not at every start.

vLLM 0.32 saves a CPU model's compiled form as an AOT artefact it cannot load back, so every start
compiled again (2-3 minutes for SmolLM2's 30 layers on two cores). The engine builds CPU models
without AOT compilation (``models.engine.keep_compiled_models``): Inductor's own on-disk caches then
serve every later start with the same compiled code."""

import json
import os
import subprocess
import sys

import pytest

START = """
import json, sys
from torch._dynamo.utils import counters
from pargs_batch.config import ModelConfig
from pargs_batch.models.loading import Models

def main():
    model = ModelConfig(path=sys.argv[1], dtype="float32", max_model_len=256, kv_cache_memory_bytes=64 << 20,
                        enforce_eager=False)
    with Models() as models:  # a fused engine on CPU is built in this process, so its counters are these
        engine = models.engine(model, None, fused=True)
        ids, logprobs = engine.topk([[5, 6, 7, 8, 9, 10, 11]], 10)
    print(json.dumps({"hit": counters["inductor"]["fxgraph_cache_hit"],
                      "miss": counters["inductor"]["fxgraph_cache_miss"],
                      "ids": ids.tolist(), "logprobs": logprobs.tolist()}))

if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
def test_a_second_start_of_a_compiled_cpu_engine_compiles_nothing_and_gives_the_same_logprobs(world, tmp_path):
    script = tmp_path / "start.py"
    script.write_text(START)
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
           "VLLM_CACHE_ROOT": str(tmp_path / "vllm")}
    env.pop("VLLM_USE_AOT_COMPILE", None)
    starts = []
    for _ in range(2):
        done = subprocess.run([sys.executable, str(script), world["llm"]], capture_output=True, text=True,
                              env=env, timeout=1800, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        starts.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first, second = starts
    assert first["miss"] > 0  # an empty cache: the first start compiles
    assert second["miss"] == 0 and second["hit"] > 0  # the second finds every graph in the cache
    assert second["ids"] == first["ids"] and second["logprobs"] == first["logprobs"]
