"""Everything registry-ops writes to S3, in one place: which key holds what, in which order it is
written, and how it is read back.

=================  ====================================================================
``objects``        S3 object I/O (JSON, Parquet, bytes, write-once puts, listings, buckets)
``clients``        one S3 client per Airflow connection and process
``runs``           dated runs, their manifest (``kind``, ``schema_version``), the ``latest``
                   pointer written last, and the one run-id cleaner
``blobs``          the content-addressed, write-once, read-back-verified blob store (blobs by
                   digest and packs of small ones); catalogs of several kinds share it
=================  ====================================================================

Who uses which layout (prefixes from the config; ``R`` a capability's root):

* inventory: ``runs`` under ``storage.prefixes.inventory`` (``inventory.parquet`` per run,
  parts under ``_parts/<run id>/``), read by ``snapshots`` (the newest-event rule);
* scan: ``runs`` under ``<storage.prefixes.reports>scan/`` (runs in ``runs/``; gate state and
  acknowledgements beside them, see ``scan/store.py``);
* retention: ``runs`` keyed by run id under ``retention.runs_prefix`` (plan, items, results,
  journal, ``summary.json``); its audit records under ``retention.audit_prefix`` (``audit.py``);
* the archive: ``blobs`` under ``storage.prefixes.archive`` with the archive's catalogs and
  their digest index (``retention/archive.py``, ``retention/archive_index.py``).
"""
