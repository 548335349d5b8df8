# Set-up and everyday commands. Each target installs what it needs first.
#   make train      venv + the package + train the default CNN (prints its test accuracy)
#   make test       venv + the package and its test extra + the fast tier (tests not marked slow)
#   make test-all   the same + every test, the property tests with many examples
#                   (tests/hypothesis_profiles.py); what CI runs (.ci/run)
# The tests run on JOBS pytest-xdist workers (JOBS=0: in pytest's own process),
# a module's tests on one worker (--dist loadscope): its module fixtures train
# once, and make_results' test finds the studies of test_end_to_end.py.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
JOBS ?= 2
PYTEST := $(PY) -m pytest -q -n $(JOBS) --dist loadscope
# The four original MNIST .gz files (tfds's manual download directory).
MNIST_DIR ?= $(abspath ../shared/data/mnist)
export MNIST_DIR

.PHONY: install install-test train test test-all clean
install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# One stamp per extra, so that `make test` after `make train` adds the test extra.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

train: install
	$(PY) -m mnist_jax train --config configs/cnn.py --workdir runs/cnn

test: install-test
	$(PYTEST) -m "not slow"

test-all: install-test
	HYPOTHESIS_PROFILE=thorough $(PYTEST)

clean:
	rm -rf $(VENV) runs .pytest_cache
