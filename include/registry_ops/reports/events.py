"""Pull events from CloudTrail log files and distribution notification envelopes.

Definitions (issue 11):

- **ECR pull**: one CloudTrail record with ``eventSource`` ``ecr.amazonaws.com`` and ``eventName``
  ``BatchGetImage``; ``GetDownloadUrlForLayer`` and the rest are not pulls, and
  ``ecr-public.amazonaws.com`` is another registry. ONE record is ONE pull, whatever
  ``imageIds`` holds (the issue's definition); ``digest`` / ``tag`` are set when exactly one
  distinct value appears among the record's ``imageIds``. It *failed* when it has an
  ``errorCode``. The principal is ``userIdentity.arn``, else ``invokedBy``, else
  ``sourceIPAddress``; the account is ``requestParameters.registryId``, else
  ``recipientAccountId``; the region ``awsRegion``.
- **OCI pull**: a notification event with ``action`` ``pull`` whose ``target.mediaType`` is a
  manifest or index type (blob pulls are not image pulls). The registry notifies successful
  requests only, so none failed. The principal is ``actor.name``, else the client address
  without its (ephemeral) port.
- **Day**: the UTC day of the event time (offsets and nanoseconds are honoured).

A file is parsed by pyarrow's JSON reader into only the fields above (fast: a million records
in seconds); anything it cannot take (not JSON, an unknown shape, a record whose field has an
unexpected type) is parsed again with ``json`` to name the problem and keep the good records.
Bad input is a :class:`Problem` naming the file (and a sample event id), counted, never a crash.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import json
import logging
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from ..config import Config, RegistryConfig
from ..retention.pulls import MANIFEST_MEDIA_TYPES
from . import tables
from .model import Problem

log = logging.getLogger(__name__)

CLOUDTRAIL = "cloudtrail"
DISTRIBUTION = "distribution"
ECR_SOURCE = "ecr.amazonaws.com"
PULL_EVENT = "BatchGetImage"

_S = pa.string()
_IMAGE_ID = pa.struct([("imageDigest", _S), ("imageTag", _S)])
CLOUDTRAIL_RECORD = pa.struct(
    [
        ("eventID", _S),
        ("eventTime", _S),
        ("eventSource", _S),
        ("eventName", _S),
        ("awsRegion", _S),
        ("errorCode", _S),
        ("sourceIPAddress", _S),
        ("recipientAccountId", _S),
        ("userIdentity", pa.struct([("arn", _S), ("invokedBy", _S)])),
        (
            "requestParameters",
            pa.struct([("repositoryName", _S), ("registryId", _S), ("imageIds", pa.list_(_IMAGE_ID))]),
        ),
    ]
)
DISTRIBUTION_EVENT = pa.struct(
    [
        ("id", _S),
        ("timestamp", _S),
        ("action", _S),
        ("target", pa.struct([("mediaType", _S), ("digest", _S), ("repository", _S), ("tag", _S)])),
        ("request", pa.struct([("host", _S), ("addr", _S)])),
        ("actor", pa.struct([("name", _S)])),
    ]
)
_FILE_SCHEMA = pa.schema([("Records", pa.list_(CLOUDTRAIL_RECORD)), ("events", pa.list_(DISTRIBUTION_EVENT))])
_PARSE = pj.ParseOptions(
    explicit_schema=_FILE_SCHEMA, unexpected_field_behavior="ignore", newlines_in_values=True
)

EVENTS_SCHEMA = pa.schema(
    [
        ("event_id", _S),
        ("source", _S),
        ("registry", _S),
        ("repository", _S),
        ("digest", _S),
        ("tag", _S),
        ("event_time", pa.timestamp("ns", tz="UTC")),
        ("day", pa.date32()),
        ("principal", _S),
        ("failed", pa.bool_()),
        ("error_code", _S),
        ("file", _S),
    ]
)
assert tuple(EVENTS_SCHEMA.names) == tables.EVENTS

_ZONE = r"(Z|z|[+-]\d\d:?\d\d)$"
_SHAPE = 'expected {"Records": [...]} (a CloudTrail log file) or {"events": [...]} (a notification envelope)'


# -- attribution ---------------------------------------------------------------------------------
def _host(text: str | None) -> str | None:
    """``host[:port]`` lowercased, without the scheme's default port (443, 80)."""
    if not text:
        return None
    netloc = urlsplit(text if "://" in text else f"//{text}").netloc.lower()
    for default in (":443", ":80"):
        if netloc.endswith(default):
            netloc = netloc[: -len(default)]
    return netloc or None


@dataclass(frozen=True)
class EcrTarget:
    """An ECR registry of the config as CloudTrail names it (None: any account / region)."""

    name: str
    account: str | None
    region: str | None
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()

    def matches(self, account: str | None, region: str | None) -> bool:
        return (self.account is None or self.account == account) and (
            self.region is None or self.region == region
        )

    def wants(self, repository: str) -> bool:
        """The registry's include/exclude globs (as ``RegistryConfig.wants``)."""
        inc = any(fnmatch.fnmatchcase(repository, g) for g in self.include)
        return inc and not any(fnmatch.fnmatchcase(repository, g) for g in self.exclude)

    @property
    def specificity(self) -> int:
        return (self.account is not None) + (self.region is not None)


@dataclass(frozen=True)
class Attribution:
    """Which config registry an event belongs to.

    CloudTrail: the ECR registries whose ``registry_id`` and ``region`` match the record's
    (unset matches any); among several, the most specific, then one whose include/exclude globs
    want the repository, then the first in config order (the pull happened in that account and
    region; the globs only scope the inventory). Notifications: the ``oci`` registry whose URL
    host (``host[:port]``) is the event's ``request.host``, or the source's one named registry.
    :meth:`default` (no config) names registries ``<account>.dkr.ecr.<region>.amazonaws.com``
    and by ``request.host``. An event no registry takes is a Problem, counted.
    """

    ecr: tuple[EcrTarget, ...] = ()
    oci: tuple[tuple[str, str], ...] = ()  # (host, registry name)
    fixed_oci: str | None = None  # a notification source naming its one registry
    by_address: bool = False  # default(): registry names from account/region and host

    @classmethod
    def default(cls) -> Attribution:
        return cls(by_address=True)

    @classmethod
    def from_config(cls, config: Config, hosts: Mapping[str, str] | None = None) -> Attribution:
        """``hosts``: registry name -> URL or host for ``oci`` registries without ``url``
        (default: their Airflow connection's host, looked up once here)."""
        ecr = tuple(
            EcrTarget(r.name, r.registry_id, r.region, tuple(r.include), tuple(r.exclude))
            for r in config.registries
            if r.kind == "ecr"
        )
        oci = []
        for reg in config.registries:
            if reg.kind != "oci":
                continue
            host = _host((hosts or {}).get(reg.name) or reg.url or _connection_url(reg))
            if host:
                oci.append((host, reg.name))
        return cls(ecr=ecr, oci=tuple(oci))

    def only(self, names: Sequence[str] | None, kind: str) -> Attribution:
        """This attribution for a source credited to ``names`` (of ``kind``) only; a
        notification source naming exactly one registry takes every event for it."""
        if not names or self.by_address:
            return self
        wanted = set(names)
        if kind == "ecr":
            return replace(self, ecr=tuple(t for t in self.ecr if t.name in wanted))
        oci = tuple((h, n) for h, n in self.oci if n in wanted)
        return replace(self, oci=oci, fixed_oci=names[0] if len(names) == 1 else None)

    def ecr_registry(self, account: str | None, region: str | None, repository: str) -> str | None:
        """The registry of a CloudTrail record's account, region and repository, or None."""
        if self.by_address:
            return f"{account}.dkr.ecr.{region}.amazonaws.com" if account and region else None
        found = [t for t in self.ecr if t.matches(account, region)]
        if not found:
            return None
        best = max(t.specificity for t in found)
        found = [t for t in found if t.specificity == best]
        wanting = [t for t in found if t.wants(repository)]
        return (wanting or found)[0].name

    def oci_registry(self, host: str | None) -> str | None:
        """The registry of a notification's ``request.host``, or None."""
        if self.fixed_oci:
            return self.fixed_oci
        if self.by_address:
            return _host(host)
        wanted = _host(host)
        return next((name for h, name in self.oci if h == wanted), None)


def _connection_url(reg: RegistryConfig) -> str | None:
    """The URL of an ``oci`` registry's connection, or None (logged) when it cannot be looked up."""
    if not reg.conn_id:
        return None
    try:
        from ..clients import get_connection, oci_url

        return oci_url(get_connection(reg.conn_id))
    except Exception as exc:  # no host: its events become counted problems
        log.warning("reports: registry %s: no URL to match notifications by host: %s", reg.name, exc)
        return None


# -- reading one file ----------------------------------------------------------------------------
@dataclass
class Raw:
    """One file's records (CloudTrail) or events (notifications) as Arrow structs, before the
    rules; ``problems`` are the file's own (unreadable, unknown shape, records of a wrong type)."""

    file: str
    records: pa.Array | None = None
    events: pa.Array | None = None
    problems: list[Problem] = field(default_factory=list)
    fetched: bool = True  # False: the file could not be fetched (read again next time)


def read_raw(data: bytes, name: str) -> Raw:
    """Decompress (gzip by its magic bytes) and parse; never raises for bad content."""
    raw = Raw(name)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raw.problems.append(Problem(name, f"not a readable gzip file: {exc}"))
            return raw
    try:
        table = pj.read_json(
            io.BytesIO(data),
            read_options=pj.ReadOptions(block_size=len(data) + 64, use_threads=False),
            parse_options=_PARSE,
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _read_slow(data, raw)
    if table.num_rows != 1:
        return _read_slow(data, raw)
    records, events = table.column("Records").chunk(0), table.column("events").chunk(0)
    if records.is_null().to_pylist()[0] and events.is_null().to_pylist()[0]:
        return _read_slow(data, raw)  # neither list: let json name the shape
    raw.records = None if records.is_null().to_pylist()[0] else records.flatten()
    raw.events = None if events.is_null().to_pylist()[0] else events.flatten()
    return raw


def _read_slow(data: bytes, raw: Raw) -> Raw:
    """json's reading: names what is wrong, and keeps the records that are right."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raw.problems.append(Problem(raw.file, f"not JSON: {exc}"))
        return raw
    if isinstance(doc, dict) and isinstance(doc.get("Records"), list):
        raw.records = _structs(doc["Records"], CLOUDTRAIL_RECORD, raw, "CloudTrail record", "eventID")
    elif isinstance(doc, dict) and isinstance(doc.get("events"), list):
        raw.events = _structs(doc["events"], DISTRIBUTION_EVENT, raw, "notification event", "id")
    else:
        seen = f"an object with keys {', '.join(sorted(map(str, doc))[:8]) or 'none'}"
        what = seen if isinstance(doc, dict) else f"a JSON {type(doc).__name__}"
        raw.problems.append(Problem(raw.file, f"unknown shape: {what}; {_SHAPE}"))
    return raw


def _structs(items: list[Any], kind: pa.DataType, raw: Raw, what: str, id_key: str) -> pa.Array:
    try:
        return pa.array(items, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    good, bad, first = [], 0, ""
    for n, item in enumerate(items):
        try:
            good.append(pa.array([item], type=kind))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            bad += 1
            if bad == 1:
                ident = item.get(id_key) if isinstance(item, dict) else None
                which = f"{id_key} {ident}" if isinstance(ident, str) else f"item {n}"
                first = f"{which}: {_bad_field(item, kind) or exc}"
    if bad:
        raw.problems.append(
            Problem(raw.file, f"{bad} {what}(s) with a field of an unexpected type (e.g. {first})", bad)
        )
    return pa.concat_arrays(good) if good else pa.array([], type=kind)


def _bad_field(item: Any, kind: pa.DataType, path: str = "") -> str | None:
    """``<path> is <type>, expected <type>`` for the first value that does not fit ``kind``."""
    if isinstance(kind, pa.StructType) and isinstance(item, dict):
        for f in kind:
            if item.get(f.name) is not None:
                found = _bad_field(item[f.name], f.type, f"{path}.{f.name}" if path else f.name)
                if found:
                    return found
        return None
    if isinstance(kind, pa.ListType) and isinstance(item, list):
        return next((m for m in (_bad_field(v, kind.value_type, f"{path}[]") for v in item) if m), None)
    try:
        pa.array([item], type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        want = "text" if kind == _S else "a list" if isinstance(kind, pa.ListType) else "an object"
        return f"{path or 'the record'} is a JSON {type(item).__name__}, expected {want}"
    return None


# -- the rules -------------------------------------------------------------------------------------
def _blank_to_null(array: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(array, ""), pa.scalar(None, _S), array)


def _gather(raws: Sequence[Raw], attr: str) -> tuple[pa.StructArray, pa.Array] | None:
    """Every file's records (or events) as one array, and each one's file (dictionary-encoded)."""
    found = [(n, getattr(r, attr)) for n, r in enumerate(raws) if getattr(r, attr) is not None]
    found = [(n, a) for n, a in found if len(a)]
    if not found:
        return None
    items = pa.concat_arrays([a for _, a in found])
    which = np.repeat(np.array([n for n, _ in found], dtype=np.int32), [len(a) for _, a in found])
    files = pa.DictionaryArray.from_arrays(pa.array(which), pa.array([r.file for r in raws], _S))
    return items, files


def _single(ids: pa.Array, name: str) -> pa.Array:
    """Per record, the one distinct non-null ``name`` of its ``imageIds`` entries, else null.
    One entry (the usual ``BatchGetImage``) is read off the offsets; several are grouped."""
    lengths = pc.fill_null(pc.list_value_length(ids), 0).to_numpy(zero_copy_only=False)
    field = _fields(ids.values)[name]
    one = lengths == 1
    starts = ids.offsets.to_numpy()[:-1]
    out = field.take(pa.array(np.where(one, starts, 0), mask=~one))
    several = np.flatnonzero(lengths > 1)
    if not len(several):
        return out
    multi = ids.take(pa.array(several))
    values = _fields(multi.flatten())[name]
    pairs = pa.table({"p": pc.list_parent_indices(multi), "v": values}).filter(pc.is_valid(values))
    grouped = pairs.group_by("p", use_threads=False).aggregate([("v", "count_distinct"), ("v", "min")])
    alone = grouped.filter(pc.equal(grouped["v_count_distinct"], 1))
    found = np.full(len(several), -1, dtype=np.int64)
    found[alone["p"].to_numpy()] = np.arange(alone.num_rows)
    chosen = alone["v_min"].combine_chunks().take(pa.array(found, mask=found < 0))
    where = np.full(len(ids), -1, dtype=np.int64)
    where[several] = np.arange(len(several))
    mixed = pa.concat_arrays([out, chosen])
    pick = np.where(where >= 0, len(out) + where, np.arange(len(ids)))
    return mixed.take(pa.array(pick))


def _times(text: pa.Array) -> pa.Array:
    """ISO-8601 with a zone (``Z`` or an offset, any fraction) -> UTC ns; null when unreadable."""
    try:
        return pc.cast(text, pa.timestamp("ns", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    zoned = pc.fill_null(pc.match_substring_regex(text, _ZONE), False).to_numpy(zero_copy_only=False)
    values = pd.Series(text.to_numpy(zero_copy_only=False), dtype=object).where(zoned, None)
    parsed = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
    return pa.array(parsed.astype("datetime64[ns, UTC]"), type=pa.timestamp("ns", tz="UTC"))


def _fields(struct: pa.Array) -> dict[str, pa.Array]:
    """A struct array's children by name, null where the struct itself is null."""
    return dict(zip((f.name for f in struct.type), struct.flatten(), strict=True))


def _columns_cloudtrail(raws: Sequence[Raw]) -> pa.Table | None:
    """The ``BatchGetImage`` records of ``ecr.amazonaws.com`` (nothing else is a pull), flattened."""
    gathered = _gather(raws, "records")
    if gathered is None:
        return None
    records, files = gathered
    rec = _fields(records)
    pulls = pc.and_(
        pc.fill_null(pc.equal(rec["eventSource"], ECR_SOURCE), False),
        pc.fill_null(pc.equal(rec["eventName"], PULL_EVENT), False),
    )
    if not pc.any(pulls).as_py():
        return None
    records, files = records.filter(pulls), files.filter(pulls)
    rec = _fields(records)
    who = _fields(rec["userIdentity"])
    params = _fields(rec["requestParameters"])
    ids = params["imageIds"]
    return pa.table(
        {
            "event_id": _blank_to_null(rec["eventID"]),
            "time": rec["eventTime"],
            "region": _blank_to_null(rec["awsRegion"]),
            "account": pc.coalesce(
                _blank_to_null(params["registryId"]), _blank_to_null(rec["recipientAccountId"])
            ),
            "error_code": _blank_to_null(rec["errorCode"]),
            "principal": pc.coalesce(
                _blank_to_null(who["arn"]),
                _blank_to_null(who["invokedBy"]),
                _blank_to_null(rec["sourceIPAddress"]),
            ),
            "repository": _blank_to_null(params["repositoryName"]),
            "digest": _single(ids, "imageDigest"),
            "tag": _single(ids, "imageTag"),
            "image_ids": pc.fill_null(pc.list_value_length(ids), 0),
            "file": files,
        }
    )


def _columns_distribution(raws: Sequence[Raw]) -> pa.Table | None:
    """The ``pull`` events, flattened (blob pulls are told apart by the caller)."""
    gathered = _gather(raws, "events")
    if gathered is None:
        return None
    events, files = gathered
    pulls = pc.fill_null(pc.equal(_fields(events)["action"], "pull"), False)
    if not pc.any(pulls).as_py():
        return None
    events, files = events.filter(pulls), files.filter(pulls)
    ev = _fields(events)
    target, request = _fields(ev["target"]), _fields(ev["request"])
    address = pc.replace_substring_regex(request["addr"], r"^(\[.*\]|[^:]*):\d+$", r"\1")
    return pa.table(
        {
            "event_id": _blank_to_null(ev["id"]),
            "time": ev["timestamp"],
            "media_type": _blank_to_null(target["mediaType"]),
            "repository": _blank_to_null(target["repository"]),
            "digest": _blank_to_null(target["digest"]),
            "tag": _blank_to_null(target["tag"]),
            "host": _blank_to_null(request["host"]),
            "principal": pc.coalesce(_blank_to_null(_fields(ev["actor"])["name"]), _blank_to_null(address)),
            "file": files,
        }
    )


def _missing(
    frame: pa.Table, checks: Iterable[tuple[str, pa.Array]], what: str
) -> tuple[pa.Array, list[Problem]]:
    """Rows without a field a pull needs -> problems per (file, field); the mask of good rows."""
    good = pa.array(np.ones(frame.num_rows, dtype=bool))
    problems = []
    for label, bad in checks:
        bad = pc.and_(pc.fill_null(bad, True), good)
        count = pc.sum(bad).as_py() or 0
        if count:
            problems += _per_file(frame.filter(bad), f"{what}(s) without {label}")
            good = pc.and_(good, pc.invert(bad))
    return good, problems


def _per_file(rows: pa.Table, problem: str) -> list[Problem]:
    """One problem per file: how many rows, with a sample event id."""
    frame = rows.select(["file", "event_id"]).to_pandas()
    out = []
    for name, group in frame.groupby("file", sort=True, observed=True):
        sample = group["event_id"].dropna()
        example = f" (e.g. event id {sample.iloc[0]})" if len(sample) else ""
        out.append(Problem(str(name), f"{len(group)} {problem}{example}", len(group)))
    return out


def _by_key(keys: list[pa.Array], name: Any) -> pa.Array:
    """``name(*key)`` for each row's key, computed once per distinct key (vectorised lookup)."""
    joined = pc.binary_join_element_wise(*keys, "\x1f", null_handling="replace", null_replacement="\x00")
    if isinstance(joined, pa.ChunkedArray):
        joined = joined.combine_chunks()
    encoded = pc.dictionary_encode(joined)
    distinct = [
        [None if part == "\x00" else part for part in text.split("\x1f")]
        for text in encoded.dictionary.to_pylist()
    ]
    names = pa.array([name(*key) for key in distinct], _S)
    return names.take(encoded.indices)


def _finish(
    frame: pa.Table, source: str, registry: pa.Array, failed: pa.Array, error: pa.Array, times: pa.Array
) -> pa.Table:
    return pa.table(
        {
            "event_id": frame["event_id"],
            "source": pa.array(np.full(frame.num_rows, source, dtype=object), _S),
            "registry": registry,
            "repository": frame["repository"],
            "digest": frame["digest"],
            "tag": frame["tag"],
            "event_time": times,
            "day": pc.cast(times, pa.date32()),
            "principal": frame["principal"],
            "failed": failed,
            "error_code": error,
            "file": frame["file"].cast(_S),
        },
        schema=EVENTS_SCHEMA,
    )


def _cloudtrail_events(raws: Sequence[Raw], attribution: Attribution) -> tuple[pa.Table, list[Problem]]:
    frame = _columns_cloudtrail(raws)
    if frame is None:
        return EVENTS_SCHEMA.empty_table(), []
    times = _times(frame["time"])
    succeeded = pc.is_null(frame["error_code"])
    no_image = pc.and_(succeeded, pc.and_(pc.is_null(frame["digest"]), pc.is_null(frame["tag"])))
    good, problems = _missing(
        frame,
        [
            ("eventID", pc.is_null(frame["event_id"])),
            ("a readable eventTime (ISO 8601 with a zone)", pc.is_null(times)),
            ("requestParameters.repositoryName", pc.is_null(frame["repository"])),
            ("an image in requestParameters.imageIds", pc.and_(no_image, pc.equal(frame["image_ids"], 0))),
        ],
        "BatchGetImage record",
    )
    frame, times = frame.filter(good), times.filter(good)
    keys = [frame["account"], frame["region"], frame["repository"]]
    registry = _by_key(keys, attribution.ecr_registry)
    unknown = pc.is_null(registry)
    if pc.any(unknown).as_py():
        problems += _unattributed(frame.filter(unknown), ("account", "region"), "account {} region {}")
        keep = pc.invert(unknown)
        frame, times, registry = frame.filter(keep), times.filter(keep), registry.filter(keep)
    failed = pc.is_valid(frame["error_code"])
    return _finish(frame, CLOUDTRAIL, registry, failed, frame["error_code"], times), problems


def _distribution_events(raws: Sequence[Raw], attribution: Attribution) -> tuple[pa.Table, list[Problem]]:
    frame = _columns_distribution(raws)
    if frame is None:
        return EVENTS_SCHEMA.empty_table(), []
    untyped = pc.is_null(frame["media_type"])
    problems = []
    if pc.any(untyped).as_py():
        problems += _per_file(frame.filter(untyped), "pull event(s) without target.mediaType")
    manifests = pa.array(sorted(MANIFEST_MEDIA_TYPES))
    frame = frame.filter(pc.fill_null(pc.is_in(frame["media_type"], value_set=manifests), False))
    times = _times(frame["time"])
    good, more = _missing(
        frame,
        [
            ("id", pc.is_null(frame["event_id"])),
            ("a readable timestamp (ISO 8601 with a zone)", pc.is_null(times)),
            ("target.repository", pc.is_null(frame["repository"])),
            ("target.digest or target.tag", pc.and_(pc.is_null(frame["digest"]), pc.is_null(frame["tag"]))),
        ],
        "manifest pull event",
    )
    problems += more
    frame, times = frame.filter(good), times.filter(good)
    registry = _by_key([frame["host"]], attribution.oci_registry)
    unknown = pc.is_null(registry)
    if pc.any(unknown).as_py():
        problems += _unattributed(frame.filter(unknown), ("host",), "request.host {}")
        keep = pc.invert(unknown)
        frame, times, registry = frame.filter(keep), times.filter(keep), registry.filter(keep)
    failed = pa.array(np.zeros(frame.num_rows, dtype=bool))
    return _finish(frame, DISTRIBUTION, registry, failed, pa.nulls(frame.num_rows, _S), times), problems


def _unattributed(rows: pa.Table, keys: tuple[str, ...], label: str) -> list[Problem]:
    frame = rows.select(["file", "event_id", *keys]).to_pandas()
    frame["file"] = frame["file"].astype(object)
    out = []
    for (name, *where), group in frame.groupby(["file", *keys], sort=True, dropna=False):
        place = label.format(*(None if pd.isna(w) else w for w in where))
        example = group["event_id"].iloc[0]
        out.append(
            Problem(
                str(name),
                f"{len(group)} pull(s): no configured registry for {place} (e.g. event id {example})",
                len(group),
            )
        )
    return out


def events_table(raws: Sequence[Raw], attribution: Attribution) -> tuple[pa.Table, list[Problem]]:
    """The pull events of parsed files (``EVENTS_SCHEMA``, unique ``event_id``; the first copy
    of a repeated id is kept) and every problem: the files' own, then the records'."""
    problems = [p for raw in raws for p in raw.problems]
    ct, ct_problems = _cloudtrail_events(raws, attribution)
    dist, dist_problems = _distribution_events(raws, attribution)
    table = pa.concat_tables([ct, dist])
    return dedupe(table), problems + ct_problems + dist_problems


def dedupe(table: pa.Table) -> pa.Table:
    """The first row of each ``event_id`` (CloudTrail may deliver a record twice, in two files)."""
    if table.num_rows < 2:
        return table
    rows = pa.table({"id": table["event_id"], "row": pa.array(np.arange(table.num_rows))})
    first = rows.group_by("id", use_threads=False).aggregate([("row", "min")])["row_min"].to_numpy()
    if len(first) == table.num_rows:
        return table
    return table.take(np.sort(first))


def to_frame(table: pa.Table) -> pd.DataFrame:
    """An ``EVENTS_SCHEMA`` table as the ``tables.EVENTS`` frame (``day`` as ``datetime.date``)."""
    return table.to_pandas(date_as_object=True).reset_index(drop=True)


def empty_frame() -> pd.DataFrame:
    return to_frame(EVENTS_SCHEMA.empty_table())


def parse_file(data: bytes, name: str, attribution: Attribution) -> tuple[pd.DataFrame, list[Problem]]:
    """One event file (gzip or plain; CloudTrail or notification envelope) -> its pull events as
    a ``tables.EVENTS`` frame, and its problems (each naming ``name``)."""
    table, problems = events_table([read_raw(data, name)], attribution)
    return to_frame(table), problems
