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

.PHONY: venv build demo test wheel wheel-check cmake-check bench ci gpu-check clean

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

# The README's test command: set up, build, run the whole suite.
test: build
	$(PY) -m pytest -q

# A wheel that holds the extension and gatfast.kernels, installed apart from the
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

ci: test wheel-check cmake-check

# On a lent GPU machine, whose python3 already holds torch, triton, pytest and
# pytest-benchmark (carry an expecttest wheel for opcheck): build there, run every
# gpu-marked test (the cuda/triton cases of the op tests and tests/test_gpu.py), then
# the op benchmarks, which write benchmarks/results/ops-gpu-*.{md,json}.
gpu-check:
	python3 -m pip install -q --no-build-isolation --no-deps -e .
	python3 -m pytest -q -m gpu tests
	python3 -m pytest -q benchmarks/bench_ops.py
	python3 -m gatfast bench --device cuda

clean:
	rm -rf build dist wheel-test cmake-build *.egg-info gatfast/*.so
