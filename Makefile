# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Both create .venv when missing, install the package with its dev extra, and register the
# Jupyter kernel "workbench" that papermill and the notebooks use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
KERNEL := workbench
RUN    ?= runs/sde_ablation-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo test lint figures

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (workbench)" >/dev/null
	touch $@

demo: $(VENV)/.installed
	mkdir -p $(RUN)
	$(VENV)/bin/papermill notebooks/sde_ablation.ipynb $(RUN)/sde_ablation.ipynb -k $(KERNEL) -p output_dir $(RUN)

lint: $(VENV)/.installed
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
