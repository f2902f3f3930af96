# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Both create .venv when missing, install the package with its dev extra, and register the
# Jupyter kernel "workbench" that papermill and the notebooks use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
KERNEL := workbench
RUN    ?= runs/sde_ablation-$(shell date +%Y%m%d-%H%M%S)

DEB_LIST := .ci/debian-packages.txt
DEB_PKGS := $(shell grep -v '^\#' $(DEB_LIST) | grep -v '^$$')

.PHONY: demo test lint figures system-deps

# Debian packages (datasets, fonts, chromium for PNG export and the browser test): installed when
# missing and this user can (root, or password-less sudo); otherwise stop and name the exact line.
system-deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	line="apt-get install -y --no-install-recommends $$(echo $$missing)"; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; \
	else echo "Missing Debian packages: $$missing" >&2; \
	     echo "Install them with:  sudo apt-get update && sudo $$line" >&2; exit 1; fi; \
	echo "installing Debian packages: $$missing"; \
	DEBIAN_FRONTEND=noninteractive $$sudo apt-get update -q && \
	DEBIAN_FRONTEND=noninteractive $$sudo $$line

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (workbench)" >/dev/null
	touch $@

demo: system-deps $(VENV)/.installed
	mkdir -p $(RUN)
	$(VENV)/bin/papermill notebooks/sde_ablation.ipynb $(RUN)/sde_ablation.ipynb -k $(KERNEL) -p output_dir $(RUN)

lint: system-deps $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Every tier: -m "" lifts pyproject's fast-tier default (slow, notebooks, browser; gpu tests skip
# without CUDA). pytest exits 5 when it collects nothing: that is not a pass, so it stays an error.
test: lint
	$(VENV)/bin/pytest -q -m ""; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: check tests/ and markers" >&2; fi; \
	exit $$rc

figures: $(VENV)/.installed
	$(VENV)/bin/workbench figures
