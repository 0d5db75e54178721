"""Storage-cost and pull-metric reports: built from the inventory, the retention summaries and the
registries' pull events; checked with Great Expectations; emailed to stakeholders and stored in S3.

| module | what |
|---|---|
| ``settings`` | the ``reports:`` config section (prices, teams, targets, event sources) |
| ``tables`` | the report tables' columns: the contract between builders, checks and rendering |
| ``events`` | CloudTrail records and distribution notifications -> pull events (bad input counted) |
| ``ingest`` | incremental reading of event files from S3 into a day-partitioned Parquet dataset |
| ``pulls`` | pull metrics per registry, repository, image and day; success rates; never pulled |
| ``cost`` | stored bytes and USD per month per digest, repository and team; shared-layer estimate |
| ``trend`` | earlier inventory snapshots, week/month over month, top growers, retention savings |
| ``s3_cost`` | the archive's and backups' bytes and cost by storage class |
| ``quality`` | the Great Expectations suites (imported inside tasks only: GX takes seconds to import) |
| ``charts`` / ``render`` | PNG charts, the HTML email, CSV attachments, the subject |
| ``jobs`` | the steps the DAG and the command line run |

Nothing here imports Airflow or GX at module level, so DAG parsing stays fast.
"""
