# Deep Learning Labs — the commands a user runs. See README.md.
#   make labs            run every notebook (PROFILE=quick by default) and write runs/REPORT.md
#   make labs PROFILE=full
#   make test            the whole test suite (what CI runs)
#   make test-browser    JupyterLab, the explorers and the website driven by headless Chromium
#                        (needs: apt-get install -y chromium chromium-driver)
#   make lab             JupyterLab with widgets
#   make data            pre-fetch datasets into data/
#   make strip           store notebooks without outputs (nbval-checked cells excepted)
#   make student         write the student edition (exercises stubbed) into student/
#   make site            the course website from the last `make labs` run: runs/site/html/index.html
#   make grade SUBMISSIONS=DIR   grade DIR/<student>/<NN_lab>.ipynb with the hidden tests: DIR/grades.csv, summary.md

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= quick
STAMP   := $(VENV)/.installed
export MPLBACKEND ?= Agg

.PHONY: labs test test-browser lab data strip student site grade lint venv clean

# The environment is rebuilt only when requirements.txt or pyproject.toml change.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

labs: $(STAMP)
	$(PY) -m labutils run --profile $(PROFILE)

test: lint
	LABS_PROFILE=quick WANDB_MODE=offline $(PY) -m pytest -n 2 --dist loadfile tests notebooks --nbval-lax

# The browser tests alone; here a missing Chromium or driver is a failure, not a skip.
test-browser: $(STAMP)
	LABS_PROFILE=quick WANDB_MODE=offline LABS_REQUIRE_BROWSER=1 $(PY) -m pytest -m browser -rA tests/test_browser.py tests/test_explore_browser.py tests/test_site_browser.py

LINTED := labutils tests benchmarks notebooks conftest.py

lint: $(STAMP)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)

# Containers often run as root, which JupyterLab refuses without --allow-root. Kernels show figures inline only
# when MPLBACKEND is unset: the Agg exported above is for batch runs and would hide every plt.show().
lab: $(STAMP)
	env -u MPLBACKEND $(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS) notebooks/

data: $(STAMP)
	$(PY) -m labutils data

strip: $(STAMP)
	$(PY) -m labutils strip

student: $(STAMP)
	$(PY) -m labutils.student

# Built from runs/ (or $LABS_RUNS) as `make labs` left it; nothing is executed again.
site: $(STAMP)
	$(PY) -m labutils.site

SUBMISSIONS ?= submissions
grade: $(STAMP)
	$(PY) -m labutils.grade $(SUBMISSIONS) $(GRADE_ARGS)

clean:
	rm -rf runs .pytest_cache
