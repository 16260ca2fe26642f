# The README's commands. Each sets itself up on a fresh machine (venv, Airflow, providers).
.PHONY: setup demo test lint

setup:
	@bash scripts/setup.sh

demo: setup
	@.venv/bin/python scripts/demo.py

test: setup
	@.venv/bin/ruff check airflow_dify dags tests scripts bench
	@.venv/bin/mypy
	@.venv/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

lint: setup
	@.venv/bin/ruff check airflow_dify dags tests scripts bench
	@.venv/bin/ruff format --check airflow_dify dags tests scripts bench
	@.venv/bin/mypy

# Benchmarks against FakeDify on 127.0.0.1 (~10 min); writes bench/results.json.
# BENCH_ARGS="--memory-rows 100000,1000000" runs the full target memory sizes (~20 min more).
.PHONY: bench
bench: setup
	@.venv/bin/python -m bench $(BENCH_ARGS)
