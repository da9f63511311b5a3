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

# The main job: LeNet-5 trained on the embedded digits (20% held out), its held-out accuracy
# printed, then the model timeline. One thread: LeNet-5's kernels are too small to share.
run: install
	$(VENV)/bin/cnnzoo train lenet5 --data digits --val-split 0.2 --epochs 15 --lr 0.05 \
		--threads 1 -o runs/lenet5-digits --force
	$(VENV)/bin/cnnzoo list

test: install
	$(PY) -m pytest -n $(JOBS) -q

clean:
	rm -rf $(VENV) build src/*.egg-info
