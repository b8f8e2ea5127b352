# Two commands on a fresh machine (see README.md):
#   make lab    -- set up .venv and open the course in JupyterLab
#   make test   -- set up .venv and run every test (unit tests, nbval on all notebooks, browser smoke test)
# Also:
#   make headless -- set up and execute every notebook without a browser; prints a time table

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# JupyterLab refuses to run as root unless told to.
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: setup lab headless test browser-deps clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -c constraints.txt -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# Binds to localhost only and keeps JupyterLab's token (printed in the terminal).
lab: setup
	$(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 $(ROOT_FLAG) notebooks/00_setup_and_tour.ipynb

headless: setup
	$(PY) benchmarks/run_notebooks.py

browser-deps:
	@bash scripts/ensure_chromium.sh

test: setup browser-deps
	$(PY) -m pytest -v

clean:
	rm -rf $(VENV) *.egg-info tests/_artifacts
