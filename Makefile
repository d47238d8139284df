# SocioReasoner for QGIS: setup, tests, demo, lint and packaging.
#
#   make test   builds both environments (idempotent) and runs the whole suite headless
#   make demo   segments the sample view shipped in sample/ with the default weights
#
# Two environments, on purpose: QGIS's Debian Python must never see pip's numpy 2 or
# torch, so the engine lives in .venv and QGIS's tests in .venv-qgis (system packages
# plus test tools only). The plugin reaches the engine through a worker process.

SHELL := /bin/bash
SYSTEM_PYTHON ?= /usr/bin/python3
ENGINE_VENV := .venv
QGIS_VENV := .venv-qgis
ENGINE_PY := $(ENGINE_VENV)/bin/python
QGIS_PY := $(QGIS_VENV)/bin/python
PIP_FLAGS := --disable-pip-version-check --no-input -q
PYTEST_FLAGS ?= -q -ra
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export QT_QPA_PLATFORM := offscreen
export SAM2_BUILD_CUDA := 0
export DS_BUILD_OPS := 0
export MPLBACKEND := Agg

.PHONY: setup system-deps engine-env qgis-env test test-engine test-qgis demo lint package clean

setup: system-deps engine-env qgis-env

system-deps:
	@bash scripts/system-deps.sh

# A stamp per environment: rebuilt only when its pinned requirement files change.
engine-env: $(ENGINE_VENV)/.stamp
$(ENGINE_VENV)/.stamp: requirements/engine.txt requirements/engine-nobuildiso.txt pyproject.toml
	@test -x $(ENGINE_PY) || $(SYSTEM_PYTHON) -m venv $(ENGINE_VENV)
	$(ENGINE_PY) -m pip install $(PIP_FLAGS) -r requirements/engine.txt
	# sam2 is an sdist whose build imports torch: build it against the torch just installed.
	$(ENGINE_PY) -m pip install $(PIP_FLAGS) --no-build-isolation --no-deps -r requirements/engine-nobuildiso.txt
	$(ENGINE_PY) -m pip install $(PIP_FLAGS) --no-build-isolation --no-deps -e .
	@touch $@

qgis-env: $(QGIS_VENV)/.stamp
$(QGIS_VENV)/.stamp: requirements/qgis-tests.txt
	@test -x $(QGIS_PY) || $(SYSTEM_PYTHON) -m venv --system-site-packages $(QGIS_VENV)
	$(QGIS_PY) -m pip install $(PIP_FLAGS) -r requirements/qgis-tests.txt
	@$(QGIS_PY) -c "import numpy, sys; v = int(numpy.__version__.split('.')[0]); sys.exit('QGIS env must keep Debian numpy 1.x, found ' + numpy.__version__) if v != 1 else None"
	@touch $@

test: setup
	@mkdir -p test-output
	$(ENGINE_PY) -m pytest $(PYTEST_FLAGS) tests/engine
	$(QGIS_PY) -m pytest $(PYTEST_FLAGS) tests/qgis

test-engine: engine-env
	$(ENGINE_PY) -m pytest $(PYTEST_FLAGS) tests/engine

test-qgis: system-deps qgis-env
	@mkdir -p test-output
	$(QGIS_PY) -m pytest $(PYTEST_FLAGS) tests/qgis

demo: setup
	HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=0 $(ENGINE_VENV)/bin/socio-reasoner segment \
		--sat sample/helsinki_sat.tif --map sample/helsinki_map.tif \
		--query "where children study" --out runs/demo/result.gpkg \
		--overlay runs/demo/overlay.png --json runs/demo/report.json

lint: engine-env
	$(ENGINE_VENV)/bin/ruff check .

package:
	@$(SYSTEM_PYTHON) tools/package_plugin.py --out dist

clean:
	rm -rf dist test-output .pytest_cache .ruff_cache
