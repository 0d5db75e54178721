"""
### registry_restore

Puts an image the retention DAG archived back into its registry: same manifest bytes, same
digest, its tags (blobs too where the archive holds them). Manual only.

* **Schedule**: none; trigger with Params.
* **Params**: `digest` **or** `tag` (with `repository`); optional `registry`, `repository`
  (where it was archived), `to_repository` (restore elsewhere) and `move_tags` (take tags that
  now point at other images; off by default so an old image never silently becomes `latest`).
  With no digest and no tag it restores nothing and logs the newest archived images.
* **Work**: finds the newest archive entry (catalogs under `archive/images/`), reads the
  manifests from their pack (checked against the digests), makes the blobs present, puts the
  child manifests, the manifest, then the tags, and reads the result back.
* **Outputs**: the restored image; an audit record under `retention/audit/restore/`.
* **Failure modes**: bad Params, an image not in the archive, or blobs neither archived nor in
  the registry fail at once without retries, naming the problem (nothing is half-restored:
  blobs are checked before any manifest is put). Details: `docs/dags/registry_restore.md`.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

log = logging.getLogger("airflow.task")

PARAMS = {
    "digest": Param("", type="string", description="sha256:... of the archived image (or use tag)"),
    "tag": Param("", type="string", description="restore the newest archived image with this tag"),
    "registry": Param("", type="string", description="registry name from the config (optional)"),
    "repository": Param("", type="string", description="repository it was archived from"),
    "to_repository": Param("", type="string", description="restore into this repository instead"),
    "move_tags": Param(False, type="boolean", description="move tags that now point at other images"),
}


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["registry-ops", "retention", "restore"],
    params=PARAMS,
    default_args={"owner": "platform", "retries": 2, "retry_delay": timedelta(minutes=1)},
    max_active_runs=4,
    max_consecutive_failed_dag_runs=0,
)
def registry_restore():
    @task(multiple_outputs=False)
    def restore() -> dict:
        """Restore one archived image; bad input or a missing archive fails without retry."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.config import ConfigError, load_config
        from include.registry_ops.retention import jobs
        from include.registry_ops.retention.restore import RestoreError

        p = get_current_context()["params"]
        try:
            config = load_config()
            if not (p["digest"] or p["tag"]):  # nothing asked: show what can come back
                recent = jobs.recent_archives(config, p["registry"] or None, p["repository"] or None)
                lines = "\n".join(json.dumps(e) for e in recent) or "(the archive is empty)"
                log.info("restore: no digest or tag given; the newest archived images:\n%s", lines)
                return {"restored": None, "recent": recent}
            return jobs.restore(
                config,
                registry=p["registry"] or None,
                repository=p["repository"] or None,
                digest=p["digest"] or None,
                tag=p["tag"] or None,
                to_repository=p["to_repository"] or None,
                move_tags=bool(p["move_tags"]),
            )
        except (ConfigError, RestoreError) as exc:
            raise AirflowFailException(str(exc)) from None

    restore()


registry_restore()
