"""The Registry page's data: one loader per section, each reading only what the DAGs wrote to
S3 (never the registries live) and returning a ``model.Section``.

=================  ==============================================================
``model``          the JSON shape (Section, Table, Column kinds, Chart), ``guard``
``context``        what loaders get (config, S3 client, now) and the process memo
``fleet``          per registry and repository: images, bytes, cost, pushes, pulls
``vulns``          scan findings, the gate's violators, the allowlist, the trend
``retention``      runs, what they removed or would remove, the deleted-image search
``backups``        the last backup snapshot and its RPO, drills and their RTO
``audit``          open access-audit findings by severity, new since last week
``reports``        the last usage report, its validation, pull success
``health``         our DAGs' last success and paused state (Airflow's REST API)
=================  ==============================================================

The plugin (``plugins/registry_page``) serves them; ``bench/registry_page.py`` times them.
"""
