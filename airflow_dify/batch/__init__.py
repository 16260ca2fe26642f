"""Airflow-free batch engine: rows in -> concurrent Dify calls under the pool -> outcomes out."""
