# gatfast developer entry points. Everything runs from a local virtual environment
# that `make venv` creates from nothing (torch, build and test dependencies).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1
VISION_SPEC ?= torchvision==0.29.1
ATTACKS_SPEC ?= torchattacks==3.5.1
DEPS := numpy safetensors tqdm matplotlib mlxtend scikit-learn scipy pytest pytest-benchmark expecttest setuptools wheel ninja
export CUDA_HOME ?= $(wildcard /usr/local/cuda)

.PHONY: venv build demo test test-slow test-faults wheel wheel-check cmake-check bench ci gpu-check gpu-check-dry gpu-torch-check clean

venv: $(VENV)/.deps
$(VENV)/.deps: Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)" "$(VISION_SPEC)" $(DEPS)
	# torchattacks' metadata pins requests~=2.25.1, which it never imports: no deps.
	$(PY) -m pip install -q --no-deps "$(ATTACKS_SPEC)"
	touch $@

# The C++ extension (CPU kernels; CUDA kernels when the toolkit is found), in place.
build: venv
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .

# The README's main job: train GAT on the embedded MNIST subset, train a surrogate (another
# method and seed) for the transfer attack, and evaluate GAT against the whole suite on the
# held-out images, printing the table (clean accuracy beside every robust one), the worst
# case per image (the headline) and the sanity checks. To fit its time the demo runs
# AutoAttack's members on the first 100 test images only (the table says so) and lighter
# checks; `gatfast eval RUN` without the DEMO_EVAL flags is the full-size evaluation.
DEMO_GAT ?= --dataset mnist5k --method gat --eps 0.3 --epochs 20 --seed 0
DEMO_SURROGATE ?= --dataset mnist5k --method fgsm_rs --eps 0.3 --epochs 5 --seed 1
DEMO_EVAL ?= --n 1000 --n-autoattack 100 --n-slow 100 --cw-steps 50 --cw-search-steps 3 --check-factor 2 \
	--check-restarts 2 --sweep-steps 10
demo: build
	set -e; run=runs/demo-$$(date +%Y%m%d-%H%M%S); \
	$(PY) -m gatfast train $(DEMO_GAT) --eval-pgd-steps 0 --out $$run/gat; \
	$(PY) -m gatfast train $(DEMO_SURROGATE) --eval-pgd-steps 0 --out $$run/surrogate; \
	$(PY) -m gatfast eval $$run/gat --surrogate $$run/surrogate $(DEMO_EVAL)

# The README's test command: set up, build, run the suite but for the two marked groups
# below (it keeps under 10 minutes on 2 cores).
test: build
	$(PY) -m pytest -q

# The slow tests (the attacks against torchattacks on trained robust models, certified
# training to its floor): apart from `make test` for its time; CI runs both.
test-slow: build
	$(PY) -m pytest -q -m slow

# The fault-injection tests that kill and interrupt subprocesses (SIGKILL mid-checkpoint,
# Ctrl-C in train, eval and sweep): slower, so apart from `make test`; CI runs both.
test-faults: build
	$(PY) -m pytest -q -m faults tests/test_faults.py

# A wheel that holds the extension and gatfast.ops.kernels, installed apart from the
# source tree and imported from elsewhere, so a packaging slip cannot hide.
wheel: venv
	rm -rf dist
	$(PY) -m pip wheel -q --no-build-isolation --no-deps -w dist .

wheel-check: wheel
	rm -rf wheel-test
	$(PY) -m pip install -q --no-deps --target wheel-test dist/gatfast-*.whl
	cd /tmp && PYTHONPATH=$(CURDIR)/wheel-test $(CURDIR)/$(PY) $(CURDIR)/tools/check_wheel.py $(CURDIR)/wheel-test

# The same csrc/ built by CMake with Torch's CMake package, then loaded by torch.
cmake-check: venv
	rm -rf cmake-build
	cmake -S . -B cmake-build -DCMAKE_BUILD_TYPE=Release -DCUDA_TOOLKIT_ROOT_DIR=$(CUDA_HOME) \
	  -DCUDA_nvrtc_LIBRARY="$$($(PY) tools/find_nvrtc.py)" \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build cmake-build -j2
	$(PY) tools/check_cmake_lib.py cmake-build/libgatfast_ops.so

# Op micro-benchmarks: writes benchmarks/results/ops-<device>.{md,json}.
bench: build
	$(PY) -m pytest benchmarks/bench_ops.py -q -p no:randomly --benchmark-min-rounds=20

ci: test test-slow test-faults wheel-check cmake-check gpu-torch-check

# The extension, CUDA kernels included, built against the GPU machines' torch (2.11.0, the
# CUDA 13 build) in a venv of its own, from a copy of the tracked sources (so no object file
# of the pinned torch's build is reused), installed as a wheel and put through the op tests
# on its CPU backends: an API difference between the two torch versions shows here, not on a
# rare GPU. (Its Triton cases are left out: torch 2.11 refuses the interpreter's kernels.)
GPU_TORCH_SPEC ?= torch==2.11.0
GPU_VENV ?= .venv-gpu-torch
GPU_CHECK_DIR := gpu-torch-check
gpu-torch-check:
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install -q "$(GPU_TORCH_SPEC)" numpy safetensors tqdm pytest setuptools wheel ninja
	rm -rf $(GPU_CHECK_DIR) && mkdir -p $(GPU_CHECK_DIR)/src
	git ls-files -z | xargs -0 cp --parents -t $(GPU_CHECK_DIR)/src
	cd $(GPU_CHECK_DIR)/src && GATFAST_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=2 \
	  $(abspath $(GPU_VENV))/bin/python -m pip wheel -q --no-build-isolation --no-deps -w ../dist .
	$(GPU_VENV)/bin/python -m pip install -q --no-deps --target $(GPU_CHECK_DIR)/site $(GPU_CHECK_DIR)/dist/gatfast-*.whl
	cd /tmp && PYTHONPATH=$(CURDIR)/$(GPU_CHECK_DIR)/site $(abspath $(GPU_VENV))/bin/python -c \
	  "import gatfast, torch; i = gatfast.build_info(); print(i); assert i['cuda_kernels'] and torch.__version__.startswith('2.11')"
	cd /tmp && PYTHONPATH=$(CURDIR)/$(GPU_CHECK_DIR)/site $(abspath $(GPU_VENV))/bin/python -m pytest -q \
	  -p no:cacheprovider $(CURDIR)/tests/test_ops.py -k "not triton"

# On a lent GPU machine (its python3 holds torch, triton, pytest; the wheels it lacks
# travel in .whl/, benchmarks/README.md): build for that GPU, run every gpu-marked test,
# the op, step and PGD benchmarks, each stage under its own time limit; the summary and
# an archive of every log and result land in $$OUT (tools/gpu_check.py says more).
gpu-check:
	python3 tools/gpu_check.py --out "$${OUT:-gpu-check-out}"

# The same check's plumbing on the CPU (no build, no GPU): CI runs it so that it cannot rot.
gpu-check-dry: build
	GATFAST_GPU_CHECK_DRY=1 $(PY) tools/gpu_check.py --out gpu-check-dry

clean:
	rm -rf build dist wheel-test cmake-build *.egg-info gatfast/*.so gpu-check-out gpu-check-dry gpu-torch-check
