# make run  — create .venv, install, migrate, seed, and run web + worker + beat (Ctrl-C stops all)
# make test — create/update .venv and run the whole test suite on SQLite, in parallel (pytest-xdist)
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Workers: CPUs + 1 (conftest.py); tests go out one by one in the order conftest.py sorts them. XDIST= runs the
# suite in one process (for pdb, or -s).
XDIST ?= -n auto --dist loadgroup --no-loadscope-reorder

.PHONY: run serve test lint typecheck bench-ingest bench-usage bench-close lock clean

$(STAMP): pyproject.toml constraints.txt
	@bash .ci/pdf_libs
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python manage.py run_stack

# The production web server (README "Running in production"): gunicorn's gthread workers, one per core, 4 threads
# each. Measured by bench/ingest.py against sync workers and uvicorn: keep-alive connections (a sync worker closes
# every connection after its answer) halve the CPU of a single-event POST; batches cost the same.
WEB_WORKERS ?= 2
WEB_BIND ?= 127.0.0.1:8000
serve: $(STAMP)
	$(BIN)/python -m gunicorn billing_site.wsgi --worker-class gthread --workers $(WEB_WORKERS) --threads 4 \
		--bind $(WEB_BIND) --max-requests 10000 --max-requests-jitter 1000

bench-ingest: $(STAMP)
	$(BIN)/python bench/ingest.py $(BENCH_ARGS)

# Bytecode is cached even where PYTHONDONTWRITEBYTECODE is set: every xdist worker and every subprocess a test
# starts would otherwise compile the project and its assertion-rewritten tests again (__pycache__ is ignored by git).
test: $(STAMP)
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python manage.py makemigrations --check --dry-run

typecheck: $(STAMP)
	$(BIN)/python -m mypy .

# Regenerate the constraints from the current .venv after changing dependencies in pyproject.toml.
lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e ' > constraints.txt

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache
