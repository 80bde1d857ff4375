# Two commands on a fresh clone: `make test` and `make demo`. Both create or reuse .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.metactl-installed
DIST := build/dist
CORE_VENV := build/core-venv

.PHONY: setup test demo lint typecheck package clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: an unpinned torch pulls several GB of CUDA wheels.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -e ".[all,dev]"
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check metactl integrations tests examples setup.py .ci

# mypy sees the installed layout (integrations/ as metactl/integrations) through a link tree.
typecheck: setup
	rm -rf build/typecheck && mkdir -p build/typecheck/metactl
	ln -s $(CURDIR)/metactl/* build/typecheck/metactl/
	ln -s $(CURDIR)/integrations build/typecheck/metactl/integrations
	cd build/typecheck && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p metactl

# The non-editable install: sdist, the wheel built from it, a core-only venv, every module.
package: setup
	rm -rf $(DIST) build/wheel-site
	$(PY) -m build --no-isolation --outdir $(DIST) . > build/package.log
	test -x $(CORE_VENV)/bin/python || $(PYTHON) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/pip install -q $(DIST)/*.whl
	$(CORE_VENV)/bin/pip install -q --force-reinstall --no-deps $(DIST)/*.whl
	$(PY) -m pip install -q --no-deps --target build/wheel-site $(DIST)/*.whl
	$(PY) .ci/check_wheel.py $(DIST)/*.whl --core $(CORE_VENV)/bin/python --full build/wheel-site

# The quick suite (what a developer reruns; under 10 minutes on 2 cores), then the slow tests.
test: setup lint typecheck package
	$(VENV)/bin/pytest -q -m "not slow"
	$(VENV)/bin/pytest -q -m slow

demo: setup
	$(VENV)/bin/metactl demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
