"""Project code importable from DAGs as ``include.*`` (Airflow puts the project root on the path)."""
