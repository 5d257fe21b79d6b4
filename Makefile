# The two commands a newcomer needs:  make run   (main job)   and   make test   (install + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 3000

.PHONY: run train serve test check typecheck-tree lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $@

## run: install, train and register the three models if none is registered yet, then serve
run: $(VENV)/.installed
	$(BIN)/keel train all --if-missing
	$(BIN)/keel keys add local-dev --role decide feedback read admin --if-missing
	$(BIN)/keel serve --host $(HOST) --port $(PORT)

train: $(VENV)/.installed
	$(BIN)/keel train all

## test: install, run ruff + mypy, then the whole pytest suite
test: $(VENV)/.installed check
	$(BIN)/python -m pytest

# mypy cannot follow setuptools' package-dir mapping, so it reads a symlink tree laid out as the wheel
# installs it (keel/, keel/models -> models/, ...); mypy prints how many files it checked.
typecheck-tree:
	rm -rf build/typecheck && mkdir -p build/typecheck/keel
	for f in keel/*; do case $$f in *__pycache__) ;; *) ln -s ../../../$$f build/typecheck/keel/;; esac; done
	for d in feature_defs models training serving monitoring; do ln -s ../../../$$d build/typecheck/keel/$$d; done

check: $(VENV)/.installed typecheck-tree
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.installed
	$(BIN)/python -m bench.models

clean:
	rm -rf $(VENV) .keel .pytest_cache .mypy_cache .ruff_cache build *.egg-info
