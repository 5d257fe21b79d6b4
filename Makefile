# The two commands a newcomer needs:  make run   (main job)   and   make test   (install + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 3000

.PHONY: run train serve test browser check typecheck-tree lint format bench clean lock container-check

$(BIN)/python:
	@echo "[1/3] creating the virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)
	@echo "[2/3] upgrading pip"
	$(BIN)/python -m pip install --quiet --upgrade pip

# One line per package as pip collects it (with --quiet a minute passes in silence); errors pass through.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "[3/3] installing Keel and its dependencies into $(VENV) (about a minute; once)"
	@bash -o pipefail -c "$(BIN)/python -m pip install -e '.[dev,spark]' 2>&1 \
		| awk '/^(Collecting|Successfully|ERROR)/ { print substr(\$$0, 1, 100); fflush() }'"
	@echo "installed: $$($(BIN)/keel --version)"
	touch $@

## run: install, train and register the three models if none is registered yet, then serve
run: $(VENV)/.installed
	$(BIN)/keel train all --if-missing
	$(BIN)/keel keys add local-dev --role decide feedback read admin --if-missing
	$(BIN)/keel serve --host $(HOST) --port $(PORT)

train: $(VENV)/.installed
	$(BIN)/keel train all

## test: install, run ruff + mypy + the layer contract, then the whole pytest suite
# On TEST_WORKERS pytest-xdist processes; a test file stays on one worker (--dist loadfile), so its
# module fixtures are built once. The session's models are trained once for all workers
# (tests/trained_store.py). TEST_WORKERS=0 runs the suite in this one process.
TEST_WORKERS ?= 2
test: $(VENV)/.installed check browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# The console's browser tests drive Debian's chromium through chromium-driver (nothing is downloaded
# at test time). As root they are installed when missing; otherwise those tests say they skip.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium and chromium-driver for the console's browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "chromium/chromedriver missing and not root: the console's browser tests will skip"; fi

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
	cd build/typecheck && ../../$(BIN)/lint-imports ../../pyproject.toml
	$(BIN)/mkdocs build --strict --site-dir build/site

format: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.installed
	$(BIN)/python -m bench.models

clean:
	rm -rf $(VENV) .keel .pytest_cache .mypy_cache .ruff_cache build *.egg-info

## lock: pin every runtime dependency with hashes (requirements.lock, which the image installs)
# Resolved with the versions this venv was tested with as constraints, so the image runs the same set.
lock: $(VENV)/.installed
	$(BIN)/python -m pip freeze --exclude-editable > build/tested-versions.txt
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --all-build-deps --strip-extras --no-emit-index-url \
		--no-emit-find-links --constraint build/tested-versions.txt --output-file requirements.lock pyproject.toml

## container-check: build the image on a local bookworm base, train, serve and decide in containers (root, minutes)
container-check:
	bash ops/container-check.sh
