# Two commands do everything on a fresh machine (Python 3.11 + pip):
#   make study   create .venv if missing, install what is missing, run the whole study (smoke profile)
#   make test    same install, then the test suite (what CI runs via .ci/run)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# the install stamp changes when pyproject.toml changes, so new dependencies get installed
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PROFILE ?= smoke
ARGS   ?=

.PHONY: study test install bench lint clean-outputs

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@rm -f $(VENV)/.installed-*
	@touch $@

study: $(STAMP)
	$(BIN)/python -m liverlib study -f params/base.yaml -f params/$(PROFILE).yaml $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m liverlib bench $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check liverlib tests notebooks
	$(BIN)/ruff format --check liverlib tests notebooks

clean-outputs:
	rm -rf outputs/smoke
