# Set-up and everyday commands. Each target installs what it needs first.
#   make train   venv + install + train the default CNN (prints its test accuracy)
#   make test    venv + install + the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The four original MNIST .gz files (tfds's manual download directory).
MNIST_DIR ?= $(abspath ../shared/data/mnist)
export MNIST_DIR

.PHONY: install train test clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

train: install
	$(PY) -m mnist_jax train --config configs/cnn.py --workdir runs/cnn

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
