# One command sets up and runs the main job; one runs the tests (README, .ci/run).
VENV ?= .venv
PY := $(VENV)/bin/python
SAMPLE ?= out/sample-study

# Debian packages the tests drive as real programs (the viewer in Chromium, DICOM validation with dciodvfy,
# Orthanc as the PACS the node talks to, with its DICOMweb plugin, PostgreSQL as the service's second database; the
# tests start Orthanc and PostgreSQL themselves, on 127.0.0.1 and on a socket in a temporary folder).
SYSTEM_PACKAGES ?= chromium chromium-driver dicom3tools orthanc orthanc-dicomweb postgresql
SYSTEM_COMMANDS ?= chromium chromedriver dciodvfy Orthanc
# Files rather than commands: Orthanc's DICOMweb plugin, and PostgreSQL's server programs, which Debian keeps
# off the PATH.
SYSTEM_FILES ?= /usr/share/orthanc/plugins/libOrthancDicomWeb.so /usr/lib/postgresql/*/bin/initdb

.PHONY: setup system demo test

setup: $(VENV)/.installed

system:
	@missing=""; for c in $(SYSTEM_COMMANDS); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	for f in $(SYSTEM_FILES); do [ -e "$$f" ] || missing="$$missing $$f"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages for:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	  else echo "missing:$$missing; install as root: apt-get install $(SYSTEM_PACKAGES)"; fi; \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

demo: setup
	$(VENV)/bin/chestdx --quiet sample $(SAMPLE)
	$(VENV)/bin/chestdx --quiet info $(SAMPLE)
	$(VENV)/bin/chestdx --quiet preview $(SAMPLE) -o out/sample-sheet.png
	$(VENV)/bin/chestdx --quiet predict $(SAMPLE) --explain gradcam --out out/sample-explain
	@echo "expected: covid 0.564 on this drawn phantom (it has COVID-19-like patches); this shows the pipeline runs,"
	@echo "not that the model is right: README, 'What the demo shows'"

test: system setup
	$(PY) -m pytest -q
