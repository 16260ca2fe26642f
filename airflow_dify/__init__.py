"""Apache Airflow provider for Dify."""

__version__ = "0.1.0"
