# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test clean deb

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/posswarm demo

test: $(STAMP)
	$(VENV)/bin/ruff check posswarm seeder tracker tools tests
	$(VENV)/bin/pytest -q --durations=30 -n 2 --dist loadfile

# posswarm_VERSION_ARCH.deb in $(DEB_OUT) (see docs/deployment.md, "The package").
DEB_OUT ?= build
deb:
	packaging/build-deb $(DEB_OUT)

clean:
	rm -rf $(VENV) build *.egg-info
