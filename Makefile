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

.PHONY: study test test-fast install git-filter browser lab constraints bench lint reliability-doc clean-outputs

install: $(STAMP) git-filter

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[test]"
	@rm -f $(VENV)/.installed-*
	@touch $@

# Outputs never enter a commit: nbstripout as this checkout's git filter (in .git/config and .git/info/attributes,
# nothing tracked; idempotent; skipped outside a git checkout). --keep-id keeps the stored notebooks' cell ids, so a
# stored notebook (no outputs) is its own stripped form and `git status` stays clean.
NBSTRIPOUT := "$(abspath $(BIN))/python" -m nbstripout --keep-id
git-filter: $(STAMP)
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
		$(BIN)/nbstripout --install && \
		git config filter.nbstripout.clean '$(NBSTRIPOUT)' && \
		git config diff.ipynb.textconv '$(NBSTRIPOUT) -t'; \
	fi

# The browser test (tests/test_jupyterlab.py) drives Debian's Chromium with Playwright (no browser download):
# installed with apt-get where we run as root (CI), else that test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Debian's chromium for the browser test (apt-get)"; \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				chromium >/dev/null; } || echo "apt-get could not install chromium: the browser test will skip"; \
		else echo "no chromium (as root: apt-get install chromium): the browser test will skip"; fi; }

study: install
	$(BIN)/python -m liverlib study -f params/base.yaml -f params/$(PROFILE).yaml $(ARGS)

test: install browser
	$(BIN)/python -m pytest $(ARGS)

# the development loop: everything but the slow tests (whole study, DDP, JupyterLab, install dry run, CV)
test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

# docs/reliability.md is generated from the tests marked @pytest.mark.reliability (a test checks it)
reliability-doc: $(STAMP)
	$(BIN)/python tools/reliability_table.py

# JupyterLab from the venv: the notebooks' `python3` kernel is this venv's ipykernel. Loopback only.
lab: install
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
