# gptoss developer tasks. `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
GPU    ?= cpu
DEMO   ?= .work/demo

# llama-cpp-python compiles llama.cpp from source; GPU picks the backend. Every variant also gets ggml's RPC
# backend (`gptoss worker`, `--rpc`) and skips LLAVA_BUILD, the multimodal tools/mtmd library gptoss never
# loads (minutes of compile on a small machine; `import llama_cpp` does not need it).
# pip caches the wheel it built from the sdist whatever CMAKE_ARGS were, and would silently reuse one built
# without RPC: install checks the installed ggml for its backends (python -m gptoss_cli.engine.ggml) and, when
# one is missing, rebuilds llama-cpp-python from source with --no-cache-dir --no-binary.
LLAMA_SPEC  ?= llama-cpp-python>=0.3.36
LLAMA_FLAGS := -DGGML_RPC=ON -DLLAVA_BUILD=OFF
ifeq ($(GPU),cuda)
  CMAKE_ARGS ?= -DGGML_CUDA=on $(LLAMA_FLAGS)
  LLAMA_BACKENDS := RPC CUDA
else ifeq ($(GPU),metal)
  CMAKE_ARGS ?= -DGGML_METAL=on $(LLAMA_FLAGS)
  LLAMA_BACKENDS := RPC MTL
else
  CMAKE_ARGS ?= $(LLAMA_FLAGS)
  LLAMA_BACKENDS := RPC
endif
export CMAKE_ARGS

.PHONY: install lint test demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml converters/_repack.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m gptoss_cli.engine.ggml $(LLAMA_BACKENDS) 2>/dev/null || \
	  $(PY) -m pip install --force-reinstall --no-deps --no-cache-dir --no-binary llama-cpp-python '$(LLAMA_SPEC)'
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m gptoss_cli.engine.ggml $(LLAMA_BACKENDS)
	touch $@

# ruff (pyflakes, pycodestyle, isort, bugbear, pyupgrade for Python 3.10) over the repository and mypy over
# gptoss_cli/ and converters/; settings in pyproject.toml. `make test` runs it first.
lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy

# Two pytest-xdist workers: a native crash in one test (a segfault inside llama.cpp) is reported as that test's
# failure ("worker 'gw0' crashed while running ..."), the worker is replaced and the rest of the suite still
# runs. xdist's default distribution: with --dist loadfile a crashed worker's file is sent out again whole,
# crashing test included, until xdist gives up on restarting workers.
TEST_WORKERS ?= 2
test: install lint
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# The main job offline: a tiny RANDOM-weight gpt-oss checkpoint in the official layout -> GGUF -> one-shot chat.
demo: install
	@echo "== 1/3 writing a tiny gpt-oss checkpoint with RANDOM weights (official Hugging Face layout)"
	$(PY) -m converters.fixture $(DEMO)/gpt-oss-tiny --preset tiny --force
	@echo "== 2/3 gptoss quantize (default recipe mxfp4: experts bit-exact MXFP4, the rest Q8_0)"
	GPTOSS_HOME=$(DEMO)/home XDG_STATE_HOME=$(DEMO)/state $(VENV)/bin/gptoss quantize $(DEMO)/gpt-oss-tiny --force
	@echo "== 3/3 gptoss chat, one-shot (the weights are random: expect gibberish, the harmony plumbing is real)"
	GPTOSS_HOME=$(DEMO)/home XDG_STATE_HOME=$(DEMO)/state $(VENV)/bin/gptoss chat -p "Say hello." --max-tokens 48 --seed 1 --json

# `make bench ONLY=convert,offload` runs some of: convert, convert-full, chat, offload, pull, recipes, rpc, serve, prune-stats,
# constrain, prune.
bench: install
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m tests.bench.run --out bench-out $(if $(ONLY),--only $(ONLY))

clean:
	rm -rf $(VENV) .work bench-out
