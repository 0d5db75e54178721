"""
### registry_restore

Puts an image the retention DAG archived back into its registry, or into another configured
registry of any kind (an OCI image layout directory too): same manifest bytes, same digest, its
tags (blobs too where the archive holds them). Manual only.

* **Schedule**: none; trigger with Params. The form opens on `mode` = *list recent archives*:
  triggering it as it is restores nothing and logs the newest archived images.
* **Params**: `mode` (*list recent archives* or *restore*); for a restore, `digest`
  (`sha256:` + 64 hex, checked in the form) **or** `tag` (with `repository`); optional
  `registry`, `repository` (where it was archived; filters for the listing), `to_registry`
  (restore into another configured registry, e.g. an `ocilayout` directory), `to_repository`
  (restore elsewhere) and `move_tags` (take tags that now point at other images; off by
  default so an old image never silently becomes `latest`). Every optional Param defaults to
  null, so the form requires nothing.
* **Work**: finds the newest archive entry (catalogs under `archive/images/`), reads the
  manifests from their pack (checked against the digests), makes the blobs present, puts the
  child manifests, the manifest, then the tags, and reads the result back.
* **Outputs**: the restored image; an audit record under `retention/audit/restore/`.
* **Failure modes**: bad Params (a digest or tag while the mode is still *list recent
  archives*, neither or both of digest and tag, a tag without its repository, a `to_registry`
  not in the config), an image not in the archive, or blobs neither archived nor in the
  registry fail at once without retries,
  naming the problem (nothing is half-restored: blobs are checked before any manifest is put).
  Details: `docs/dags/registry_restore.md`.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from include.registry_ops.dag_support import dag_defaults
from include.registry_ops.retention.restore_request import DIGEST_PATTERN, MODE_LIST, MODES

log = logging.getLogger(__name__)
OPTIONAL_TEXT = ["null", "string"]

PARAMS = {
    "mode": Param(
        MODE_LIST,
        type="string",
        enum=list(MODES),
        title="Mode",
        description="'list recent archives' logs what can come back; 'restore' puts one image back",
    ),
    "digest": Param(
        None,
        type=OPTIONAL_TEXT,
        pattern=DIGEST_PATTERN,
        title="Digest",
        description="restore: sha256:... of the archived image (give this or a tag)",
    ),
    "tag": Param(
        None,
        type=OPTIONAL_TEXT,
        title="Tag",
        description="restore: the newest archived image with this tag (needs the repository)",
    ),
    "registry": Param(
        None, type=OPTIONAL_TEXT, title="Registry", description="registry name from the config (optional)"
    ),
    "repository": Param(
        None,
        type=OPTIONAL_TEXT,
        title="Repository",
        description="the repository it was archived from (needed with a tag; filters the listing)",
    ),
    "to_registry": Param(
        None,
        type=OPTIONAL_TEXT,
        title="To registry",
        description="restore: into this configured registry instead (any kind, e.g. an ocilayout directory)",
    ),
    "to_repository": Param(
        None, type=OPTIONAL_TEXT, title="To repository", description="restore: into this repository instead"
    ),
    "move_tags": Param(
        False,
        type="boolean",
        title="Move tags",
        description="restore: move tags that now point at other images",
    ),
}


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["registry-ops", "retention", "restore"],
    params=PARAMS,
    **dag_defaults(owner="platform", retry_delay=timedelta(minutes=1), pause_after=0),
    max_active_runs=4,
)
def registry_restore():
    @task(multiple_outputs=False)
    def restore() -> dict:
        """List the newest archives or restore one image; bad input or a missing archive fails, no retry."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.registry_ops.config import ConfigError, load_config
        from include.registry_ops.retention import jobs
        from include.registry_ops.retention.archive import ArchiveError
        from include.registry_ops.retention.restore import RestoreError
        from include.registry_ops.retention.restore_request import ParamError, from_params, listing_text

        try:
            req = from_params(get_current_context()["params"])
            config = load_config()
            if req.mode == MODE_LIST:  # nothing asked: show what can come back
                recent = jobs.recent_archives(config, req.registry, req.repository)
                log.info(
                    "restore: listing only, no digest or tag given; the newest archived images (to restore "
                    "one, trigger again with mode 'restore' and its digest):\n%s",
                    listing_text(recent),
                )
                return {"mode": req.mode, "restored": None, "recent": recent}
            return jobs.restore(config, **req.restore_kwargs())
        except (ConfigError, ParamError, RestoreError, ArchiveError) as exc:  # no retry fixes these
            raise AirflowFailException(str(exc)) from None

    restore()


registry_restore()
