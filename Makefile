# gptoss developer tasks. `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
GPU    ?= cpu
DEMO   ?= .work/demo

# llama-cpp-python compiles llama.cpp from source; GPU picks the backend.
ifeq ($(GPU),cuda)
  CMAKE_ARGS ?= -DGGML_CUDA=on
else ifeq ($(GPU),metal)
  CMAKE_ARGS ?= -DGGML_METAL=on
else
  CMAKE_ARGS ?=
endif
export CMAKE_ARGS

.PHONY: install test demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) -m converters.fixture $(DEMO)/checkpoint --preset tiny --force
	GPTOSS_HOME=$(DEMO)/home $(VENV)/bin/gptoss quantize $(DEMO)/checkpoint -o $(DEMO)/demo-mxfp4.gguf --force
	GPTOSS_HOME=$(DEMO)/home $(VENV)/bin/gptoss info $(DEMO)/demo-mxfp4.gguf
	@echo "Note: the demo checkpoint has RANDOM weights; its chat output is gibberish by design."

bench: install
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m tests.bench.run --out bench-out

clean:
	rm -rf $(VENV) .work bench-out
