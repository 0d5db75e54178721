"""registry-ops: maintenance of a fleet of container registries (ECR and OCI distribution).

Plain Python, importable and testable without Airflow: DAGs in ``dags/`` only wire these
functions to connections, schedules and assets.
"""

__version__ = "0.1.0"
