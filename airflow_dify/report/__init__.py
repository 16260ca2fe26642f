"""Cost reporting over answered tables (Airflow-free): daily summary table and PNG chart."""
