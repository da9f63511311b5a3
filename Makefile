# Both targets create .venv on a fresh machine and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pytest-xdist workers; CI machines have 2 cores. worksteal: a worker that runs dry takes tests
# queued for the other, so the few long ones (B7 at 600, oneDNN freezing) don't end the run alone.
JOBS ?= 2

.PHONY: run test docs install clean system-deps graphviz

# pyproject.toml holds the supported ranges; constraints.txt the exact versions tests run on.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -c constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The main job: LeNet-5 trained on the embedded digits (20% held out), its held-out accuracy
# printed, then the model timeline and the evolution atlas. One thread: LeNet-5's kernels are
# too small to share.
run: install graphviz
	$(VENV)/bin/cnnzoo train lenet5 --data digits --val-split 0.2 --epochs 15 --lr 0.05 \
		--threads 1 -o runs/lenet5-digits --force
	$(VENV)/bin/cnnzoo list
	$(VENV)/bin/cnnzoo evolution -o atlas --force

test: install system-deps
	$(PY) -m pytest -n $(JOBS) --dist worksteal -q

# The site, offline: fonts are the system's, search is MkDocs's own index, the API reference
# is read from the docstrings, and the pictures are drawn by tools/docs_hooks.py.
docs: install graphviz
	$(PY) -m pip install -q -c constraints.txt -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -d site

# The atlas and docs browser tests drive Debian's chromium; diagrams are rendered by Graphviz's dot.
system-deps:
	@command -v chromium >/dev/null 2>&1 && command -v dot >/dev/null 2>&1 || { \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
		--no-install-recommends chromium graphviz fonts-dejavu-core; }

# `make run` draws the atlas's diagrams with dot when it can; without it the atlas says so.
graphviz:
	-@command -v dot >/dev/null 2>&1 || { apt-get update && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends graphviz; }

clean:
	rm -rf $(VENV) build site src/*.egg-info
