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
	$(VENV)/bin/chestdx --quiet sample $(SAMPLE)
	$(VENV)/bin/chestdx --quiet info $(SAMPLE)
	$(VENV)/bin/chestdx --quiet preview $(SAMPLE) -o out/sample-sheet.png
	$(VENV)/bin/chestdx --quiet predict $(SAMPLE) --explain gradcam --out out/sample-explain
	@echo "expected: covid 0.673 on this drawn phantom (it has COVID-19-like patches); this shows the pipeline runs,"
	@echo "not that the model is right: README, 'What the demo shows'"

test: setup
	$(PY) -m pytest -q
