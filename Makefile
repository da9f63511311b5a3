# Both targets create .venv on a fresh machine and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pytest-xdist workers; CI machines have 2 cores.
JOBS ?= 2

.PHONY: run test install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/cnnzoo list

test: install
	$(PY) -m pytest -n $(JOBS) -q

clean:
	rm -rf $(VENV) build src/*.egg-info
