"""Realistic pull-event files for a seeded fleet (tests, the demo and the bench only).

``write_events`` writes, for the images of an inventory frame:

- **ECR** images (``registry_kind`` ``ecr``): CloudTrail log files where CloudTrail delivers
  them, ``<prefix><region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<id>.json.gz``,
  each ``{"Records": [...]}``. Every pull record is AWS's documented ``BatchGetImage`` example
  (``tests/fixtures/events/cloudtrail-ecr-BatchGetImage.awsdocs.json``) with only these fields
  changed: ``eventID``, ``requestID``, ``eventTime``, ``awsRegion``, the account ids and ARNs,
  ``userIdentity.arn`` (one of a few principals), ``requestParameters.repositoryName`` and
  ``imageIds`` (a tag, or the digest), and ``errorCode``/``errorMessage`` on failed calls.
  Each file also holds records that are NOT pulls: ``GetDownloadUrlForLayer`` (the same record
  with ``eventName`` and ``requestParameters`` changed: AWS documents no example), the
  documented ``PutImage``, the documented ECR Public ``PutImage``, and an ECR Public
  ``BatchGetImage`` (the pull record with ``eventSource`` ``ecr-public.amazonaws.com``). The
  first pull of each day's first file is delivered again in the next file (CloudTrail may
  deliver a record twice).
- **OCI** images (``oci``): distribution notification envelopes ``{"events": [...]}`` under
  ``notifications_prefix``; each pull is the documented "pull of a manifest" event with
  ``id``, ``timestamp`` (nanoseconds, ``-08:00`` as in the example), ``target.digest``,
  ``repository``, ``url``, ``tag`` (absent when pulled by digest), ``mediaType`` (the image's),
  ``request.id``/``addr``/``host`` and ``actor`` changed; blob pulls (``action`` pull of a
  layer) and the documented push events are mixed in and must be ignored.

Choices are drawn with numpy; records are rendered by splicing Arrow string columns into the
templates' text (Arrow's C++), one file at a time in the writer threads, so a million events
take seconds of CPU and one file's text of memory per thread. Everything is deterministic by
``seed`` (gzip with mtime 0: the same bytes). The returned truth (pulls, failed, principals per
registry/repository/day and per image/day, last successful pull per digest) is computed from
the generator's own choices, never by parsing what it wrote.
"""

from __future__ import annotations

import copy
import gzip
import json
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from include.registry_ops import schema
from include.registry_ops.registries.base import INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "events"
PULL_RECORD = "cloudtrail-ecr-BatchGetImage.awsdocs.json"
PUT_RECORD = "cloudtrail-ecr-PutImage.awsdocs.json"
PUBLIC_PUT_RECORD = "cloudtrail-ecr-public-PutImage.awsdocs.json"
PULL_EVENT = "distribution-notification-pull.docs.json"
PUSH_ENVELOPE = "distribution-notification-push-envelope.docs.json"
ERRORS = (
    ("AccessDenied", "User is not authorized to perform: ecr:BatchGetImage"),
    ("ThrottlingException", "Rate exceeded"),
)
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
_SAFE = re.compile(r"^[A-Za-z0-9._/:@+-]*$")  # names rendered into JSON without escaping


class Target(Protocol):
    """Where event files go: an S3 bucket or a local directory."""

    def put(self, key: str, data: bytes) -> None: ...


@dataclass
class S3Target:
    s3: Any
    bucket: str

    def put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)


@dataclass
class DirTarget:
    root: Path

    def put(self, key: str, data: bytes) -> None:
        path = Path(self.root) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def sample(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


# -- templates -----------------------------------------------------------------------------------
class _Template:
    """A JSON document with ``"@@NAME@@"`` string slots. :meth:`render` splices Arrow string
    columns in as raw JSON text (quote strings with :func:`_q`), vectorised in Arrow's C++."""

    def __init__(self, doc: Any) -> None:
        text = json.dumps(doc, separators=(",", ":"))
        self.names = re.findall(r'"@@(\w+)@@"', text)
        self.literals = re.split(r'"@@\w+@@"', text)

    def render(self, values: dict[str, pa.Array], rows: pa.Array | np.ndarray) -> pa.Array:
        """One JSON text per row index of ``rows``."""
        args: list[Any] = []
        for literal, name in zip(self.literals, self.names, strict=False):
            args += [literal, values[name].take(rows)]
        args.append(self.literals[-1])
        return pc.binary_join_element_wise(*args, "")


def _q(values: Any) -> pa.Array:
    """JSON string literals (names are checked safe up front: nothing to escape)."""
    array = (
        values if isinstance(values, pa.Array) else pa.array(np.asarray(values, dtype=object), pa.string())
    )
    return pc.binary_join_element_wise('"', array, '"', "")


def _raw(values: Any) -> pa.Array:
    return pa.array(np.asarray(values, dtype=object), pa.string(), from_pandas=True)


def _join(parts: Sequence[pa.Array], head: bytes, tail: bytes) -> bytes:
    """``head`` + the texts joined by commas + ``tail``."""
    texts = pa.concat_arrays([p.cast(pa.string()) for p in parts if len(p)])
    whole = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(texts)], pa.int32()), texts), ",")
    return head + whole[0].as_py().encode() + tail


def _cloudtrail_templates(account: str, region: str) -> dict[str, _Template]:
    def base(doc: dict) -> dict:
        doc = copy.deepcopy(doc)
        doc.update(eventID="@@ID@@", eventTime="@@TIME@@", awsRegion=region, recipientAccountId=account)
        who = doc["userIdentity"]
        who.update(arn="@@ARN@@", accountId=account, principalId="@@PID@@")
        if "requestID" in doc:
            doc["requestID"] = "@@REQ@@"
        for res in doc.get("resources") or []:
            res["accountId"] = account
        return doc

    pull = base(sample(PULL_RECORD))
    params = pull["requestParameters"]
    params.update(repositoryName="@@REPO@@", registryId=account, imageIds="@@IDS@@")
    pull["resources"][0]["ARN"] = "@@RES@@"
    failed = copy.deepcopy(pull)
    failed.update(errorCode="@@ERR@@", errorMessage="@@MSG@@")
    layer = copy.deepcopy(pull)
    layer["eventName"] = "GetDownloadUrlForLayer"
    layer["requestParameters"] = {
        "repositoryName": "@@REPO@@",
        "registryId": account,
        "layerDigest": "@@LAYER@@",
    }
    public_pull = copy.deepcopy(pull)
    public_pull["eventSource"] = "ecr-public.amazonaws.com"
    return {
        "pull": _Template(pull),
        "failed": _Template(failed),
        "layer": _Template(layer),
        "public_pull": _Template(public_pull),
        "put": _Template(base(sample(PUT_RECORD))),
        "public_put": _Template(base(sample(PUBLIC_PUT_RECORD))),
    }


def _distribution_templates() -> dict[str, _Template]:
    event = sample(PULL_EVENT)["events"][0]
    event.update(id="@@ID@@", timestamp="@@TIME@@", actor="@@ACTOR@@")
    event["target"].update(
        mediaType="@@TYPE@@", digest="@@DIGEST@@", repository="@@REPO@@", url="@@URL@@", tag="@@TAG@@"
    )
    event["request"].update(id="@@REQ@@", addr="@@ADDR@@", host="@@HOST@@")
    by_digest = copy.deepcopy(event)
    del by_digest["target"]["tag"]
    push = sample(PUSH_ENVELOPE)["events"][0]
    push.update(id="@@ID@@", timestamp="@@TIME@@")
    push["target"].update(repository="@@REPO@@")
    return {"tag": _Template(event), "digest": _Template(by_digest), "push": _Template(push)}


# -- choices ---------------------------------------------------------------------------------------
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_UUID_DIGITS = [i for i in range(36) if i not in (8, 13, 18, 23)]


def _hexes(rng: np.random.Generator, n: int, width: int, head: str = "") -> pa.Array:
    """``n`` random ``head`` + ``width`` hex digit strings, built as bytes in numpy."""
    digits = _HEX[rng.integers(0, 16, size=(n, width), dtype=np.uint8)]
    out = np.empty((n, len(head) + width), np.uint8)
    out[:, : len(head)] = np.frombuffer(head.encode(), np.uint8)
    out[:, len(head) :] = digits
    return pa.array(out.view(f"S{out.shape[1]}").ravel()).cast(pa.string())


def _uuids(rng: np.random.Generator, n: int) -> pa.Array:
    """Version-4-shaped UUIDs (CloudTrail's eventID form) from the generator's bytes."""
    out = np.full((n, 36), ord("-"), np.uint8)
    out[:, _UUID_DIGITS] = _HEX[rng.integers(0, 16, size=(n, 32), dtype=np.uint8)]
    out[:, 14], out[:, 19] = ord("4"), ord("a")
    return pa.array(out.view("S36").ravel()).cast(pa.string())


def _noise_rows(chunks: Sequence[np.ndarray], rate: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Per chunk, ``max(1, len * rate)`` random rows of it (the pulls the noise accompanies)."""
    extras = np.array([max(1, int(len(c) * rate)) for c in chunks], dtype=np.int64)
    starts = np.repeat([int(c[0]) for c in chunks], extras)
    spans = np.repeat([int(c[-1]) - int(c[0]) + 1 for c in chunks], extras)
    rows = starts + (rng.random(int(extras.sum())) * spans).astype(np.int64)
    return np.split(rows, np.cumsum(extras)[:-1])


def _pullable(inventory: pd.DataFrame, kind: str) -> pa.Table:
    """Images a client pulls directly: kind image or index, not the child of an index."""
    frame = inventory[(inventory["registry_kind"] == kind) & inventory["kind"].isin(["image", "index"])]
    parents = frame["parent_digests"].map(lambda v: v is not None and len(v) > 0).to_numpy(dtype=bool)
    frame = frame[~parents]
    columns = {c: _raw(frame[c]) for c in ("registry", "repository", "digest", "media_type", "kind")}
    columns["tags"] = pa.array(
        frame["tags"].map(lambda v: list(v) if v is not None else []).tolist(), pa.list_(pa.string())
    )
    return pa.table(columns)


@dataclass
class _Pulls:
    """One entry per pull, in time order: which image (row of ``images``), by which tag (null:
    by digest), when, whether it fails, and a number choosing its principal."""

    images: pa.Table
    image: np.ndarray
    time: np.ndarray  # datetime64[ns], UTC
    tag: pa.Array
    failed: np.ndarray
    who: np.ndarray

    def __len__(self) -> int:
        return len(self.image)

    def column(self, name: str) -> pa.Array:
        return self.images[name].combine_chunks().take(pa.array(self.image))


def _choose(
    images: pa.Table,
    days: Sequence[date],
    rng: np.random.Generator,
    *,
    per_image_per_day: float,
    idle_fraction: float,
    by_digest_fraction: float,
    failure_rate: float,
) -> _Pulls:
    n, d = images.num_rows, len(days)
    counts = rng.poisson(per_image_per_day, size=(n, d))
    counts[rng.random(n) < idle_fraction] = 0
    flat = counts.ravel()
    image = np.repeat(np.repeat(np.arange(n), d), flat)
    day = np.repeat(np.tile(np.arange(d), n), flat)
    total = len(image)
    starts = np.array([np.datetime64(x, "D") for x in days], dtype="datetime64[ns]")
    offsets = rng.integers(0, 86_400 * 10**9, size=total).astype("timedelta64[ns]")
    times = (starts[day] if total else np.array([], "datetime64[ns]")) + offsets
    tags = images["tags"].combine_chunks()
    ntags = pc.list_value_length(tags).to_numpy(zero_copy_only=False).astype(np.int64)
    first = tags.offsets.to_numpy()[:-1].astype(np.int64)
    pick = rng.integers(0, 1 << 30, size=total)
    by_tag = (rng.random(total) >= by_digest_fraction) & (ntags[image] > 0)
    where = first[image] + pick % np.maximum(ntags[image], 1)
    chosen = (
        tags.values.take(pa.array(np.where(by_tag, where, 0), mask=~by_tag))
        if total
        else pa.array([], pa.string())
    )
    failed = rng.random(total) < failure_rate
    who = rng.integers(0, 1 << 30, size=total)
    order = np.argsort(times, kind="stable")
    return _Pulls(images, image[order], times[order], chosen.take(pa.array(order)), failed[order], who[order])


@dataclass
class _File:
    """One file to write: its key and how to render its body (run in the writer threads, so
    the whole set is never in memory at once)."""

    key: str
    body: Callable[[], bytes]


@dataclass
class _Written:
    """What a kind's files hold, for the truth: each pull's event id, principal (and its
    number, for counting distinct principals fast), the files and the non-pulls written."""

    pulls: _Pulls
    event_id: pa.Array
    principal: pa.Array
    principal_code: np.ndarray
    files: list[_File]
    ignored: dict[str, int]


def _chunks(n: int, size: int) -> list[np.ndarray]:
    return [c for c in np.array_split(np.arange(n), max(1, -(-n // size))) if len(c)]


# -- CloudTrail ------------------------------------------------------------------------------------
def _cloudtrail_files(
    pulls: _Pulls,
    rng: np.random.Generator,
    *,
    account: str,
    region: str,
    prefix: str,
    principals: Sequence[str],
    records_per_file: int,
    layers_per_pull: float,
    compresslevel: int,
) -> _Written:
    tpl = _cloudtrail_templates(account, region)
    n = len(pulls)
    ids = _uuids(rng, n)
    choice = pulls.who % len(principals)
    who = _raw(principals).take(pa.array(choice))
    repos = pulls.column("repository")
    tag_ids = pc.binary_join_element_wise('[{"imageTag":"', pulls.tag, '"}]', "")
    digest_ids = pc.binary_join_element_wise('[{"imageDigest":"', pulls.column("digest"), '"}]', "")
    err = pa.array(pulls.who % len(ERRORS))
    values = {
        "ID": _q(ids),
        "REQ": _q(_uuids(rng, n)),
        "TIME": _q(np.char.add(np.datetime_as_string(pulls.time, unit="s"), "Z")),
        "ARN": _q(who),
        "PID": _q([f"AROA{account}EXAMPLE:{w.rsplit('/', 1)[-1]}" for w in principals]).take(
            pa.array(choice)
        ),
        "REPO": _q(repos),
        "IDS": pc.coalesce(tag_ids, digest_ids),
        "RES": pc.binary_join_element_wise(f'"arn:aws:ecr:{region}:{account}:repository/', repos, '"', ""),
        "ERR": _q([e[0] for e in ERRORS]).take(err),
        "MSG": _q([e[1] for e in ERRORS]).take(err),
    }
    failed = pulls.failed

    day = pulls.time.astype("datetime64[D]")
    chunks = []
    for d in np.unique(day):
        rows = np.flatnonzero(day == d)
        chunks += [rows[c] for c in _chunks(len(rows), records_per_file)]
    noise_rng = np.random.default_rng(rng.integers(1 << 62))
    picks = _noise_rows(chunks, layers_per_pull, noise_rng) if chunks else []
    at = np.concatenate([[0], np.cumsum([len(p) for p in picks])]).astype(np.int64)
    layer_ids = _q(_uuids(noise_rng, int(at[-1])))
    layers = _q(_hexes(noise_rng, int(at[-1]), 64, "sha256:"))
    other_ids = _q(_uuids(noise_rng, 3 * len(chunks)))
    suffixes = _hexes(noise_rng, len(chunks), 16).to_pylist()
    # CloudTrail may deliver a record twice: each day's first pull again in the following file
    again: dict[int, int] = {}
    for i in range(len(chunks) - 1):
        if i == 0 or day[chunks[i][0]] != day[chunks[i - 1][0]]:
            again[i + 1] = int(chunks[i][0])

    def render(rows: np.ndarray) -> list[pa.Array]:
        bad = failed[rows]
        return [tpl["pull"].render(values, rows[~bad]), tpl["failed"].render(values, rows[bad])]

    def body(k: int) -> bytes:
        chunk, pick = chunks[k], picks[k]
        parts = render(chunk)
        layer = {n: values[n].take(pick) for n in tpl["layer"].names if n in values}
        size = len(pick)
        layer.update(ID=layer_ids.slice(at[k], size), LAYER=layers.slice(at[k], size))
        parts.append(tpl["layer"].render(layer, np.arange(size)))
        one = {n: values[n].take(chunk[:1]) for n in values}
        for j, name in enumerate(("put", "public_put", "public_pull")):
            parts.append(tpl[name].render({**one, "ID": other_ids.slice(3 * k + j, 1)}, [0]))
        if k in again:
            parts += render(np.array([again[k]]))
        return gzip.compress(_join(parts, b'{"Records":[', b"]}"), compresslevel, mtime=0)

    files = []
    for k, (chunk, suffix) in enumerate(zip(chunks, suffixes, strict=True)):
        stamp = pd.Timestamp(pulls.time[int(chunk[-1])]).ceil("5min")
        folder = pd.Timestamp(day[chunk[0]]).strftime("%Y/%m/%d")
        name = f"{account}_CloudTrail_{region}_{stamp:%Y%m%dT%H%MZ}_{suffix}.json.gz"
        files.append(_File(f"{prefix}{region}/{folder}/{name}", lambda k=k: body(k)))
    ignored = {
        "GetDownloadUrlForLayer": int(at[-1]),
        "PutImage": len(chunks),
        "ecr-public": 2 * len(chunks),
        "redelivered": len(again),
    }
    return _Written(pulls, ids, who, choice, files, ignored)


# -- notifications ---------------------------------------------------------------------------------
def _distribution_files(
    pulls: _Pulls,
    rng: np.random.Generator,
    *,
    host: str,
    prefix: str,
    actors: Sequence[str | None],
    events_per_envelope: int,
    blobs_per_pull: float,
    compress: bool,
    compresslevel: int,
) -> _Written:
    tpl = _distribution_templates()
    n = len(pulls)
    ids = _uuids(rng, n)
    local = np.datetime_as_string(pulls.time - np.timedelta64(8, "h"), unit="ns")
    actor = pulls.who % len(actors)
    client = pulls.who % 7
    anonymous = np.array([a is None for a in actors])[actor]
    clients = [f"10.0.0.{c + 10}" for c in range(7)]
    principal = _raw(
        np.where(anonymous, np.array(clients, dtype=object)[client], np.array(actors, dtype=object)[actor])
    )
    code = np.where(anonymous, len(actors) + client, actor)
    ports = rng.integers(30000, 60000, size=n)
    addr = pc.binary_join_element_wise(
        _raw(np.array(clients, dtype=object)[client]), _raw(ports.astype(str)), ":"
    )
    repos = pulls.column("repository")
    digests = pulls.column("digest")
    by_tag = pc.is_valid(pulls.tag).to_numpy(zero_copy_only=False)
    media = pulls.column("media_type")
    known = pc.fill_null(pc.is_in(media, value_set=pa.array(sorted(MANIFEST_TYPES | INDEX_TYPES))), False)
    fallback = pc.if_else(pc.equal(pulls.column("kind"), "index"), OCI_INDEX, OCI_MANIFEST)
    actor_json = _raw([json.dumps({"name": a}) if a else "{}" for a in actors])
    values = {
        "ID": _q(ids),
        "REQ": _q(_uuids(rng, n)),
        "TIME": _q(np.char.add(local, "-08:00")),
        "ACTOR": actor_json.take(pa.array(actor)),
        "TYPE": _q(pc.if_else(known, media, fallback)),
        "DIGEST": _q(digests),
        "REPO": _q(repos),
        "URL": pc.binary_join_element_wise(
            f'"http://{host}/v2/', repos, "/manifests/", pc.coalesce(pulls.tag, digests), '"', ""
        ),
        "TAG": _q(pc.fill_null(pulls.tag, "")),
        "ADDR": _q(addr),
        "HOST": _q(pa.array([host] * n, pa.string())),
    }
    noise_rng = np.random.default_rng(rng.integers(1 << 62))
    chunks = _chunks(n, events_per_envelope) if n else []
    picks = _noise_rows(chunks, blobs_per_pull, noise_rng) if chunks else []
    at = np.concatenate([[0], np.cumsum([len(p) for p in picks])]).astype(np.int64)
    blob_ids = _q(_uuids(noise_rng, int(at[-1])))
    blob_digests = _hexes(noise_rng, int(at[-1]), 64, "sha256:")
    push_ids = _q(_uuids(noise_rng, len(chunks)))

    def body(k: int) -> bytes:
        chunk, pick = chunks[k], picks[k]
        blobs = blob_digests.slice(at[k], len(pick))
        tagged = by_tag[chunk]
        parts = [tpl["tag"].render(values, chunk[tagged]), tpl["digest"].render(values, chunk[~tagged])]
        blob = {n: values[n].take(pick) for n in tpl["digest"].names}
        blob.update(
            ID=blob_ids.slice(at[k], len(pick)),
            TYPE=_q(pa.array([LAYER_TYPE] * len(pick), pa.string())),
            DIGEST=_q(blobs),
            URL=pc.binary_join_element_wise(
                f'"http://{host}/v2/', repos.take(pick), "/blobs/", blobs, '"', ""
            ),
        )
        parts.append(tpl["digest"].render(blob, np.arange(len(pick))))
        first = chunk[:1]
        push = {
            "ID": push_ids.slice(k, 1),
            "TIME": values["TIME"].take(first),
            "REPO": values["REPO"].take(first),
        }
        parts.append(tpl["push"].render(push, [0]))
        body = _join(parts, b'{"events":[', b"]}")
        return gzip.compress(body, compresslevel, mtime=0) if compress else body

    files = []
    for k, chunk in enumerate(chunks):
        stamp = pd.Timestamp(pulls.time[int(chunk[-1])])
        name = f"{prefix}{stamp:%Y/%m/%d/%H%M%S}-{k:06d}.json" + (".gz" if compress else "")
        files.append(_File(name, lambda k=k: body(k)))
    ignored = {"blob pulls": int(at[-1]), "pushes": len(chunks)}
    return _Written(pulls, ids, principal, code, files, ignored)


# -- the truth -------------------------------------------------------------------------------------
def _truth(written: Sequence[_Written]) -> dict[str, Any]:
    """Counts from the generator's own choices, grouped on integer codes (fast for millions)."""
    per_repo, per_image, last, tables = [], [], [], []
    for w in written:
        p = w.pulls
        if not len(p):
            continue
        images = p.images.select(["registry", "repository", "digest"]).to_pandas()
        repo_code, repos = pd.factorize(pd.MultiIndex.from_frame(images[["registry", "repository"]]))
        frame = pd.DataFrame(
            {
                "image": p.image,
                "repo": repo_code[p.image],
                "day": p.time.astype("datetime64[D]").astype(np.int64),
                "failed": p.failed,
                "who": w.principal_code,
            }
        )
        aggs = {"pulls": ("failed", "size"), "failed": ("failed", "sum"), "principals": ("who", "nunique")}
        r = frame.groupby(["repo", "day"]).agg(**aggs).reset_index()
        r[["registry", "repository"]] = pd.DataFrame(list(repos[r["repo"].to_numpy()]), index=r.index)
        per_repo.append(r)
        i = frame.groupby(["image", "day"]).agg(**aggs).reset_index()
        i[["registry", "repository", "image_digest"]] = images.iloc[i["image"].to_numpy()].to_numpy()
        per_image.append(i)
        ok = frame.assign(time=p.time)[~p.failed]
        latest = ok.groupby("image")["time"].max()
        last.append(
            images.iloc[latest.index.to_numpy()].assign(
                last_pull=pd.to_datetime(latest.to_numpy()).tz_localize(UTC)
            )
        )
        tables.append(
            pa.table(
                {
                    "registry": p.column("registry"),
                    "repository": p.column("repository"),
                    "digest": p.column("digest"),
                    "tag": p.tag,
                    "event_time": pa.array(p.time, pa.timestamp("ns")).cast(pa.timestamp("ns", tz="UTC")),
                    "failed": pa.array(p.failed),
                    "principal": w.principal,
                    "event_id": w.event_id,
                }
            )
        )

    def days(frame: pd.DataFrame) -> pd.Series:
        ordinals = frame["day"].to_numpy(dtype=np.int64) + EPOCH
        return pd.Series([date.fromordinal(int(d)) for d in ordinals], index=frame.index, dtype=object)

    columns = ["registry", "repository", "day", "pulls", "failed", "principals"]
    image_columns = ["registry", "repository", "image", *columns[2:]]
    if not per_repo:
        return {
            "by_repository_day": pd.DataFrame(columns=columns),
            "by_image_day": pd.DataFrame(columns=image_columns),
            "last_pull": pd.DataFrame(columns=["registry", "repository", "digest", "last_pull"]),
            "pulls": None,
        }
    repo = pd.concat(per_repo, ignore_index=True)
    repo["day"] = days(repo)
    image = pd.concat(per_image, ignore_index=True)
    image["day"] = days(image)
    image = image.drop(columns=["image"]).rename(columns={"image_digest": "image"})
    return {
        "by_repository_day": repo[columns].sort_values(columns[:3]).reset_index(drop=True),
        "by_image_day": image[image_columns].sort_values(image_columns[:4]).reset_index(drop=True),
        "last_pull": pd.concat(last, ignore_index=True),
        "pulls": pa.concat_tables(tables),
    }


EPOCH = date(1970, 1, 1).toordinal()


# -- the entry point -------------------------------------------------------------------------------
def write_events(
    target: Target,
    inventory: pd.DataFrame,
    *,
    days: Sequence[date],
    account: str = "123456789012",
    region: str = "us-east-1",
    cloudtrail_prefix: str | None = None,
    notifications_prefix: str = "notifications/",
    oci_host: str = "registry.local:5000",
    per_image_per_day: float = 2.0,
    idle_fraction: float = 0.2,
    by_digest_fraction: float = 0.3,
    failure_rate: float = 0.01,
    records_per_file: int = 1000,
    events_per_envelope: int = 500,
    layers_per_pull: float = 0.05,
    blobs_per_pull: float = 0.2,
    seed: int = 0,
    threads: int = 8,
    compresslevel: int = 1,
    compress_envelopes: bool = False,
) -> dict[str, Any]:
    """Write the event files of ``days`` for the inventory's pullable images (kind image or
    index, not children of an index): ``ecr`` registries' as CloudTrail files of ``account`` and
    ``region``, ``oci`` registries' as notification envelopes whose ``request.host`` is
    ``oci_host`` (plain JSON as the registry POSTs them; gzip with ``compress_envelopes``,
    as a sink may store them). Each image gets Poisson(``per_image_per_day``) pulls a day,
    except an ``idle_fraction`` that gets none; ``failure_rate`` of the ECR pulls fail.

    Returns the truth: ``by_repository_day`` and ``by_image_day`` (pulls, failed, principals;
    ``day`` a ``datetime.date``), ``last_pull`` (latest successful pull per digest), ``pulls``
    (an Arrow table, one row per unique pull), ``files`` / ``cloudtrail_files`` /
    ``notification_files`` (keys written), ``events`` (unique pulls), ``failed``, ``ignored``
    (the non-pull records and redeliveries written, by kind)."""
    rng = np.random.default_rng(seed)
    prefix = cloudtrail_prefix or f"AWSLogs/{account}/CloudTrail/"
    for kind in ("ecr", "oci"):
        names = inventory.loc[inventory["registry_kind"] == kind, "registry"].unique()
        if len(names) > 1:
            raise ValueError(f"one {kind} registry per call (the inventory holds {', '.join(names)})")
    for column in ("repository", "digest"):
        bad = [v for v in inventory[column].unique() if not _SAFE.match(str(v))]
        if bad:
            raise ValueError(f"inventory {column} {bad[0]!r}: not safe to render into JSON unescaped")
    choose = dict(
        per_image_per_day=per_image_per_day,
        idle_fraction=idle_fraction,
        by_digest_fraction=by_digest_fraction,
        failure_rate=failure_rate,
    )
    arns = [f"arn:aws:sts::{account}:assumed-role/ci-runner/i-0{k}a1b2c3d4e5f6" for k in range(3)] + [
        f"arn:aws:iam::{account}:user/deployer",
        f"arn:aws:sts::{account}:assumed-role/ecsTaskRole/task",
    ]
    ecr = _cloudtrail_files(
        _choose(_pullable(inventory, "ecr"), days, rng, **choose),
        rng,
        account=account,
        region=region,
        prefix=prefix,
        principals=arns,
        records_per_file=records_per_file,
        layers_per_pull=layers_per_pull,
        compresslevel=compresslevel,
    )
    oci = _distribution_files(
        _choose(_pullable(inventory, "oci"), days, rng, **{**choose, "failure_rate": 0.0}),
        rng,
        host=oci_host,
        prefix=notifications_prefix,
        actors=["ci", "deployer", None, None],
        events_per_envelope=events_per_envelope,
        blobs_per_pull=blobs_per_pull,
        compress=compress_envelopes,
        compresslevel=compresslevel,
    )
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda f: target.put(f.key, f.body()), [*ecr.files, *oci.files]))

    out = _truth([ecr, oci])
    out.update(
        files=[f.key for f in (*ecr.files, *oci.files)],
        cloudtrail_files=[f.key for f in ecr.files],
        notification_files=[f.key for f in oci.files],
        events=len(ecr.pulls) + len(oci.pulls),
        failed=int(ecr.pulls.failed.sum() + oci.pulls.failed.sum()),
        ignored={**ecr.ignored, **oci.ignored},
    )
    return out


def fleet_inventory(
    fleet: Sequence[Any], registry: str, registry_kind: str, snapshot_at: datetime | None = None
) -> pd.DataFrame:
    """An inventory frame of a ``devstack.fleet`` fleet as one registry would list it (every
    manifest; children name their parent indexes), for tests and the demo without a registry."""
    at = snapshot_at or datetime(2026, 11, 27, tzinfo=UTC)
    records = []
    for repo in fleet:
        parents: dict[str, list[str]] = {}
        for m in repo.manifests:
            for child in m.children:
                parents.setdefault(child, []).append(m.digest)
        for m in repo.manifests:
            records.append(
                {
                    "registry": registry,
                    "registry_kind": registry_kind,
                    "repository": repo.name,
                    "digest": m.digest,
                    "tags": sorted(m.tags),
                    "kind": m.kind,
                    "media_type": m.media_type,
                    "size_bytes": m.size,
                    "pushed_at": m.pushed_at,
                    "last_pulled_at": m.last_pulled_at if registry_kind == "ecr" else None,
                    "parent_digests": sorted(parents.get(m.digest, [])),
                    "child_digests": list(m.children),
                    "subject_digest": m.subject,
                    "snapshot_at": at,
                }
            )
    return schema.to_frame(records)


def day_range(first: date, count: int) -> list[date]:
    return [first + timedelta(days=i) for i in range(count)]
