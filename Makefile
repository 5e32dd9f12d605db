# One command sets up and runs the main job; one runs the tests (README, .ci/run).
VENV ?= .venv
PY := $(VENV)/bin/python
SAMPLE ?= out/sample-study

.PHONY: setup demo test

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

demo: setup
	$(VENV)/bin/chestdx sample $(SAMPLE)
	$(VENV)/bin/chestdx info $(SAMPLE)
	$(VENV)/bin/chestdx preview $(SAMPLE) -o out/sample-sheet.png

test: setup
	$(PY) -m pytest -q
