# The README's commands. Each sets itself up on a fresh machine (venv, Airflow, providers).
.PHONY: setup demo test lint

setup:
	@bash scripts/setup.sh

demo: setup
	@.venv/bin/python scripts/demo.py

test: setup
	@.venv/bin/ruff check airflow_dify dags tests scripts
	@.venv/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

lint: setup
	@.venv/bin/ruff check airflow_dify dags tests scripts
	@.venv/bin/ruff format --check airflow_dify dags tests scripts
