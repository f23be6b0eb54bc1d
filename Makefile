# The two commands of the quick start:
#   make book   set up .venv if needed, execute every chapter, build the HTML book (_build/html)
#   make test   set up .venv if needed, run the unit tests, every chapter and the graded exercises
# and, after `make book`: make browser  opens every built page in headless Chromium, offline
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Data files: ../shared/data beside the checkout when it exists (CI has it), unless
# LLAMA_DATA_DIR is already set; otherwise the package downloads them into its cache.
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(strip $(LLAMA_DATA_DIR)),)
ifneq ($(wildcard $(SHARED_DATA)/README.md),)
export LLAMA_DATA_DIR := $(SHARED_DATA)
endif
endif

.PHONY: book test venv exercises clean browser

# One pip command for everything, so the pinned CPU torch is what gets installed.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -e .
	touch $@

venv: $(VENV)/.installed

test: venv
	$(BIN)/python -m pytest

book: venv
	$(BIN)/python -m tools.build_book

# Every page of _build/html in Chromium with no network (needs `apt-get install -y chromium
# chromium-driver`): math, images and alt text, code width, console, launch links, screenshots
# in _build/screenshots/. One page: .venv/bin/python -m tools.browser _build/html/book/00_warmup.html
browser: venv
	$(BIN)/python -m pytest -m browser tests/test_browser.py

# Regenerate the learner notebooks from exercises/solutions/ after editing a solution.
exercises: venv
	$(BIN)/python -m tools.exercises

clean:
	rm -rf _build
