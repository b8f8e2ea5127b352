# Two commands on a fresh machine (see README.md):
#   make lab    -- set up .venv and open the course in JupyterLab
#   make test   -- set up .venv and run every test (unit tests, nbval on all notebooks, browser smoke test)
# Also:
#   make check    -- the unit tests only (no notebooks, no browser, no slow tests): a few minutes
#   make headless -- execute every notebook without a browser; prints a time table
#                    (timings go to build/notebook_times.json; RECORD=1 updates benchmarks/results/notebook_times.json)
#   make sync     -- regenerate the text sources notebooks/NN_*.py from the notebooks (jupytext)
#   make site     -- build the course website (static HTML, no notebook execution) into build/site
#   make student  -- nbgrader source notebooks (solutions filled in) and the student release, in build/nbgrader
#                    (the class's folder: its course.toml, gradebook and grades are kept across runs)
#   make release  -- the student distribution (release notebooks, course package, data; no solutions): build/distribution
#   make grade SUBMISSIONS=DIR [JOBS=N] -- autograde DIR/<student>/<assignment>/<assignment>.ipynb, each in a
#                    bubblewrap sandbox, N at a time; merges into build/nbgrader/grades.csv
#   make feedback -- each graded student's feedback page, offline HTML: build/nbgrader/feedback/<student>/<assignment>/
#   make report   -- per-exercise pass rates and the most common failure message: build/nbgrader/class_report.{md,png}
#   make slides   -- lecture decks (build/slides/decks) and slide copies of the notebooks (build/slides) for RISE
#                    (open one in `make lab`, press Alt+R)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# JupyterLab refuses to run as root unless told to.
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)
RECORD ?=
NOTEBOOKS := $(wildcard notebooks/[0-9][0-9]_*.ipynb)

.PHONY: setup lab headless check test sync site browser-deps sandbox-deps hub-deps student release grade feedback report slides clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -c constraints.txt -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# Copies the notebooks into my-work/ (git-ignored; existing copies are never overwritten), serves the whole
# repository (my-work/, docs/, solutions/, course_utils/ in the file browser) and opens my-work's notebook 00.
# Binds to localhost only and keeps JupyterLab's token (printed in the terminal); no news or update pop-ups.
# GOMP_SPINCOUNT: PyTorch's threads soon sleep while they wait, so other programs cannot slow it many times over (conftest.py).
lab: setup
	$(PY) scripts/my_work.py
	GOMP_SPINCOUNT=$${GOMP_SPINCOUNT:-1000} $(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=. \
		--LabApp.default_url=/lab/tree/my-work/00_setup_and_tour.ipynb \
		--LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate $(ROOT_FLAG)

headless: setup
	$(PY) benchmarks/run_notebooks.py $(if $(RECORD),--record)

# Unit tests only: no nbval, no browser, no tests marked slow (those run in `make test`).
check: setup
	$(PY) -m pytest tests --ignore=tests/test_browser.py -m "not slow" -q

browser-deps:
	@bash scripts/ensure_chromium.sh

# Grading runs student code in a bubblewrap sandbox (classroom/sandbox.py); installs Debian's bubblewrap if missing.
sandbox-deps:
	@bash scripts/ensure_bubblewrap.sh

# The course hub's end-to-end test (tests/test_hub.py) starts JupyterHub's proxy, from npm.
hub-deps:
	@bash scripts/ensure_hub_proxy.sh

test: setup browser-deps sandbox-deps hub-deps
	$(PY) -m pytest -v

sync: setup
	$(VENV)/bin/jupytext --to py:percent $(NOTEBOOKS)

site: setup
	rm -rf build/site
	$(PY) -m sphinx -b html -W --keep-going -q -c docs . build/site
	@echo "open build/site/index.html"

student: setup
	$(PY) -m classroom.nbgrader_build student

release: setup
	$(PY) -m classroom.distribution

SUBMISSIONS ?=
JOBS ?=
grade: setup sandbox-deps
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=DIR [JOBS=N]  (DIR/<student>/<assignment>/<assignment>.ipynb)"; exit 2; }
	$(PY) -m classroom.grading "$(SUBMISSIONS)" $(if $(JOBS),--jobs $(JOBS))

feedback: setup
	$(PY) -m classroom.feedback

report: setup
	$(PY) -m classroom.class_report

slides: setup
	$(PY) -m classroom.slides

clean:
	rm -rf $(VENV) *.egg-info tests/_artifacts build
