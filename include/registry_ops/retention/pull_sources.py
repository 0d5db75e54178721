"""The pull sources of ``retention.pulls``, read from S3 and merged into the inventory before
planning, so ``keep_pulled_within_days`` sees pulls that ``last_pulled_at`` lacks (ECR's lags a
day and ignores nothing but Inspector; the distribution registry records no pull time at all).

- **CloudTrail** (``cloudtrail``): log files as CloudTrail delivers them,
  ``<prefix><region>/YYYY/MM/DD/*.json.gz``, each ``{"Records": [...]}``. Only the day folders
  from ``now - lookback_days`` to ``now`` are listed. A pull is credited to the ECR registries
  whose ``registry_id`` and ``region`` match the record's (a registry that leaves one unset
  matches any: more keeps, never fewer).
- **Notifications** (``notifications``): every object under the prefix is one distribution
  notification envelope ``{"events": [...]}`` (JSON, gzip allowed); objects last modified before
  the window are not read (they hold older events only). Pulls are credited to the source's
  ``registries`` (default: every ``oci`` registry).

A source that cannot be read (bucket, permissions, a prefix with nothing under it, a file that
is not what it should be) raises :class:`PullSourceError` naming it: like in-use discovery,
nothing is planned without the information the policy asked for.

:func:`read_pulls` is the one reader; the reports' incremental Parquet dataset (issue 11) can take
its place without changing ``retention.pulls``.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
from botocore.exceptions import BotoCoreError, ClientError

from ..config import Config, ConfigError, RegistryConfig
from ..registries.ecr_errors import aws_problem
from ..store.clients import s3_for
from .pulls import PULL_COLUMNS, cloudtrail_rows, distribution_rows, merge_last_pulled
from .settings import PullSource

log = logging.getLogger(__name__)

READERS = 16  # parallel S3 requests per source (a busy trail writes a file per region every ~5 min)


class PullSourceError(RuntimeError):
    """A configured pull source could not be read; planning without it would be unsafe."""


def merge_configured(
    config: Config, s3: Any, inventory: pd.DataFrame, now: datetime, policies: Any
) -> pd.DataFrame:
    """The inventory with ``last_pulled_at`` raised to the latest pull the configured sources hold
    (``pulls.merge_last_pulled``); the inventory itself when none is configured."""
    settings = config.retention.pulls
    if not settings.configured:
        return inventory
    check_lookback(config, policies)
    pulls = read_pulls(config, s3, now)
    merged = merge_last_pulled(inventory, pulls)
    was = merge_last_pulled(inventory, pulls.iloc[0:0])["last_pulled_at"]  # the same dtype, unchanged
    later = int((merged["last_pulled_at"].notna() & ~(merged["last_pulled_at"] == was)).sum())
    log.info("retention: pulls: %d pull(s) read; a later last_pulled_at for %d image(s)", len(pulls), later)
    return merged


def check_lookback(config: Config, policies: Any) -> None:
    """A policy keeping images pulled within N days needs N days of events: refuse a shorter window."""
    days = config.retention.pulls.lookback_days
    model = policies.model
    levels = [("defaults", model.defaults)]
    for p in model.policies:
        levels += [(f"policy {p.name!r}", p), *((f"policy {p.name!r} overrides", o) for o in p.overrides)]
    for where, level in levels:
        wanted = level.keep_pulled_within_days
        if wanted is not None and wanted > days:
            raise ConfigError(
                f"{config.source}: retention.pulls.lookback_days is {days}, but {policies.source}: {where} "
                f"keeps images pulled within {wanted} days: pulls older than {days} days are not read; "
                f"set lookback_days to at least {wanted}"
            )


def read_pulls(config: Config, s3: Any, now: datetime) -> pd.DataFrame:
    """Every pull of the configured sources in the window, one row per (pull, credited registry):
    ``pulls.PULL_COLUMNS`` plus ``registry``."""
    settings = config.retention.pulls
    now = now.astimezone(UTC)  # CloudTrail's day folders are UTC days
    start = now - timedelta(days=settings.lookback_days)
    excluded = list(settings.exclude_principals)
    frames = [pd.DataFrame(columns=[*PULL_COLUMNS, "registry"])]
    for n, src in enumerate(settings.cloudtrail):
        where = f"retention.pulls.cloudtrail[{n}]"
        registries = _registries(config, src, "ecr", where)
        reader = _Reader(config, s3, src, where)
        keys = reader.cloudtrail_keys(start.date(), now.date())
        rows = reader.rows(keys, lambda data: cloudtrail_rows(_log_file(data), excluded))
        frames += [_credited(rows, reg, by_account=True) for reg in registries]
        log.info(
            "retention: pulls: %s: %d pull(s) in %d CloudTrail file(s)", reader.url, len(rows), len(keys)
        )
    for n, src in enumerate(settings.notifications):
        where = f"retention.pulls.notifications[{n}]"
        registries = _registries(config, src, "oci", where)
        reader = _Reader(config, s3, src, where)
        keys = reader.keys_since(start)
        rows = reader.rows(keys, lambda data: distribution_rows(data, excluded))
        frames += [_credited(rows, reg, by_account=False) for reg in registries]
        log.info("retention: pulls: %s: %d pull(s) in %d envelope(s)", reader.url, len(rows), len(keys))
    out = pd.concat([f for f in frames if not f.empty] or frames[:1], ignore_index=True)
    out["pulled_at"] = pd.to_datetime(out["pulled_at"], utc=True)  # each file's times already parsed
    return out


def _registries(config: Config, src: PullSource, kind: str, where: str) -> list[RegistryConfig]:
    """The registries a source's pulls are credited to, all known and of the source's kind."""
    if src.registries is None:
        found = [r for r in config.registries if r.kind == kind]
        if not found:
            raise ConfigError(
                f"{config.source}: {where}: no registry of kind {kind!r} to credit its pulls to"
            )
        return found
    out = []
    for name in src.registries:
        reg = config.registry(name)  # unknown: ConfigError naming the configured ones
        if reg.kind != kind:
            raise ConfigError(
                f"{config.source}: {where}.registries: {name!r} is of kind {reg.kind!r}; "
                f"these pulls can only be credited to registries of kind {kind!r}"
            )
        out.append(reg)
    return out


def _credited(rows: list[dict[str, Any]], reg: RegistryConfig, *, by_account: bool) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(PULL_COLUMNS))
    if by_account and reg.registry_id:
        frame = frame[frame["account"] == reg.registry_id]
    if by_account and reg.region:
        frame = frame[frame["region"] == reg.region]
    return frame.assign(registry=reg.name)


def _log_file(data: Any) -> Any:
    if not isinstance(data, dict) or not isinstance(data.get("Records"), list):
        raise ValueError('not a CloudTrail log file: no "Records" list')
    return data


class _Reader:
    """Listing and reading one source's objects; every failure a PullSourceError naming it."""

    def __init__(self, config: Config, s3: Any, src: PullSource, where: str) -> None:
        same = src.conn_id in (None, config.storage.conn_id)
        self.s3 = s3 if same else s3_for(src.conn_id or "")
        self.bucket = src.bucket or config.storage.bucket
        self.prefix = src.prefix
        self.where = where
        self.url = f"s3://{self.bucket}/{self.prefix}"

    def _fail(self, what: str, exc: Exception) -> PullSourceError:
        return PullSourceError(f"{self.where}: cannot read {what}: {aws_problem(exc)}")

    def _list(self, prefix: str, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
        kwargs = {"Bucket": self.bucket, "Prefix": prefix, **({"Delimiter": delimiter} if delimiter else {})}
        try:
            yield from self.s3.get_paginator("list_objects_v2").paginate(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"s3://{self.bucket}/{prefix}", exc) from None

    def _nothing_under(self, hint: str) -> PullSourceError:
        return PullSourceError(f"{self.where}: nothing under {self.url} ({hint})")

    def cloudtrail_keys(self, first: date, last: date) -> list[str]:
        """The ``.json.gz`` files of the day folders ``first`` to ``last`` of every region folder."""
        regions = [
            p["Prefix"] for page in self._list(self.prefix, "/") for p in page.get("CommonPrefixes", [])
        ]
        if not regions:
            raise self._nothing_under(
                "CloudTrail delivers to <prefix><region>/YYYY/MM/DD/: a wrong prefix, or the trail has not "
                "delivered yet"
            )
        days = [first + timedelta(days=d) for d in range((last - first).days + 1)]
        folders = [f"{region}{day:%Y/%m/%d}/" for region in regions for day in days]

        def listing(folder: str) -> list[str]:
            return [o["Key"] for page in self._list(folder) for o in page.get("Contents", [])]

        with ThreadPoolExecutor(READERS) as pool:
            found = [k for keys in pool.map(listing, folders) for k in keys]
        return sorted(k for k in found if k.endswith(".json.gz"))

    def keys_since(self, start: datetime) -> list[str]:
        """Every object under the prefix last modified at or after ``start``."""
        objects = [o for page in self._list(self.prefix) for o in page.get("Contents", [])]
        if not objects:
            raise self._nothing_under(
                "the registry's notification envelopes are stored there: a wrong prefix?"
            )
        return sorted(o["Key"] for o in objects if o["LastModified"] >= start)

    def _read(self, key: str, parse: Callable[[Any], Iterator[dict[str, Any]]]) -> list[dict[str, Any]]:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"s3://{self.bucket}/{key}", exc) from None
        try:
            data = json.loads(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body)
            rows = list(parse(data))
            times = pd.to_datetime([r["pulled_at"] for r in rows], utc=True, format="ISO8601")
        except (OSError, EOFError, ValueError, AttributeError, TypeError) as exc:
            raise PullSourceError(f"{self.where}: s3://{self.bucket}/{key}: {exc}") from None
        for row, when in zip(rows, times, strict=True):
            row["pulled_at"] = when
        return rows

    def rows(self, keys: list[str], parse: Callable[[Any], Iterator[dict[str, Any]]]) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(READERS) as pool:
            return [row for rows in pool.map(lambda k: self._read(k, parse), keys) for row in rows]
