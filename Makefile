# Two commands do everything on a fresh machine (Python 3.11 + pip):
#   make study   create .venv if missing, install what is missing, run the whole study (smoke profile)
#   make test    same install, then the test suite (what CI runs via .ci/run)
#   make lab     same install, then JupyterLab on notebooks/ (kernel `python3` = this venv)
#   make test-fast  the quick development loop (slow tests deselected)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# exact versions tested (pyproject.toml holds the ranges); see docs/kaggle.md
CONSTRAINTS ?= requirements/constraints.txt
# the install stamp changes when pyproject.toml or the constraints change, so new dependencies get installed
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(CONSTRAINTS) | cksum | cut -d' ' -f1)
PORT   ?= 8888
PROFILE ?= smoke
ARGS   ?=

.PHONY: study test test-fast install lab constraints bench lint reliability-doc clean-outputs

install: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[test]"
	@rm -f $(VENV)/.installed-*
	@touch $@

study: $(STAMP)
	$(BIN)/python -m liverlib study -f params/base.yaml -f params/$(PROFILE).yaml $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

# the development loop: everything but the slow tests (whole study, DDP, JupyterLab, install dry run, CV)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

# docs/reliability.md is generated from the tests marked @pytest.mark.reliability (a test checks it)
reliability-doc: $(STAMP)
	$(BIN)/python tools/reliability_table.py

# JupyterLab from the venv: the notebooks' `python3` kernel is this venv's ipykernel. Loopback only.
lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks --ServerApp.ip=127.0.0.1 --ServerApp.port=$(PORT) $(if $(filter 0,$(shell id -u)),--allow-root) $(ARGS)

# rewrite the constraints from what is installed (after a deliberate upgrade; commit the result)
constraints: $(STAMP)
	{ sed -n '/^#/p' $(CONSTRAINTS); $(BIN)/python -m pip freeze --exclude-editable | grep -v '^#'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

bench: $(STAMP)
	$(BIN)/python -m liverlib bench $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check liverlib tests notebooks tools
	$(BIN)/ruff format --check liverlib tests notebooks tools

clean-outputs:
	rm -rf outputs/smoke
