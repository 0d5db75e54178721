"""The digest index: a restore by digest costs the same few S3 requests whatever the archive's
size; concurrent catalog writers and compactions never lose an entry; a missing or damaged index
falls back to reading every catalog and is rebuilt from them."""

from __future__ import annotations

import logging
import threading

import pytest

from include.registry_ops.retention.archive_index import shard_of
from include.registry_ops.retention.restore import locate, restore_image
from tests.retention_exec.archive_helpers import (
    Requests,
    archive_fleet,
    keys_under,
    new_store,
    overwrite,
    s3_client,
    write_catalog,
)
from tests.retention_exec.helpers import BUCKET


@pytest.fixture
def client(moto_server, ret_s3):
    return s3_client(moto_server.endpoint)


def _lookup_requests(store, digest: str) -> tuple[int, list[dict]]:
    counter = Requests(store.s3)
    hits = store.find(None, None, digest=digest)
    return counter.total, hits


def test_archiving_writes_one_delta_per_catalog_and_a_restore_reads_a_constant_few(any_reg, client):
    store = new_store(client)
    counter = Requests(client)
    repo, chosen, _run = archive_fleet(any_reg, store, n=6, archive_batch=2)
    catalogs = store.catalog_keys()
    assert len(catalogs) >= 3
    deltas = keys_under(client, store.index.pending_prefix)
    assert [store.index.catalog_of_delta(k) for k in deltas] == sorted(catalogs)  # one each, no more
    index_puts = sum(n for (op, key), n in counter.keys.items() if op == "PutObject" and "/index/" in key)
    assert index_puts == len(catalogs)

    store.compact_index()
    assert keys_under(client, store.index.pending_prefix) == []  # merged, then deleted
    target = chosen[0]
    requests, hits = _lookup_requests(store, target.digest)
    # LIST pending deltas, GET pointer, GET one shard, GET the one catalog that holds it
    assert requests == 4 and [h["digest"] for h in hits] == [target.digest]
    entry = locate(store, any_reg.name, repo.name, digest=target.digest)
    assert restore_image(store, any_reg, entry)["verified"]


def test_the_lookup_cost_does_not_grow_with_the_archive(client):
    small, large = new_store(client), new_store(client)
    for store, n in ((small, 3), (large, 30)):
        for _ in range(n):
            write_catalog(store, images=2)
        store.compact_index()
    digest_small = store_digest(small)
    digest_large = store_digest(large)
    indexed = [_lookup_requests(s, d)[0] for s, d in ((small, digest_small), (large, digest_large))]
    assert indexed[0] == indexed[1] == 4
    for s in (small, large):  # the old way: read every catalog
        s.s3.delete_object(Bucket=BUCKET, Key=s.index.pointer_key)
    scanned = [_lookup_requests(s, d)[0] for s, d in ((small, digest_small), (large, digest_large))]
    assert scanned[1] - scanned[0] == 27 and scanned[0] > 3


def store_digest(store) -> str:
    return store.read_catalog(store.catalog_keys()[0])["images"][0]["digest"]


def test_pending_deltas_are_found_before_compaction_and_merged_after(client):
    store = new_store(client)
    first, first_digests = write_catalog(store, images=300)  # most of the 256 shards
    store.compact_index()  # the first compaction builds the index
    pointer = store.index.read_pointer()
    second, second_digests = write_catalog(store, images=50)  # pending, not compacted yet
    assert store.index.lookup(second_digests[0]) == [second]
    assert store.index.lookup(first_digests[0]) == [first]
    result = store.compact_index()
    assert result["deltas_merged"] == 1 and not result["rebuilt"]
    after = store.index.read_pointer()
    assert after.generation == pointer.generation + 1
    assert store.index.lookup(second_digests[1]) == [second]
    assert store.index.lookup(first_digests[1]) == [first]
    # superseded shard versions are deleted: what is stored is what the pointer names
    assert set(pointer.shards.values()) - set(after.shards.values())  # some were superseded
    assert keys_under(client, store.index.shards_prefix) == sorted(after.shards.values())


def test_the_same_image_archived_twice_lists_both_catalogs(client):
    store = new_store(client)
    key, digests = write_catalog(store)
    doc = store.read_catalog(key)
    for e in doc["images"]:  # what read_catalog adds is not part of the stored catalog
        for extra in ("registry", "repository", "run_id", "archived_at", "catalog", "note"):
            e.pop(extra)
        for ref in [e["manifest"], *e["children"], *e["blobs"]]:
            ref.pop("pack", None)
    doc["run_id"] = "a-later-run"
    from datetime import UTC, datetime

    again = store.write_catalog(doc, datetime.now(UTC))
    store.compact_index()
    assert store.index.lookup(digests[0]) == sorted([key, again])


def test_a_compaction_that_loses_the_race_retries_and_drops_nothing(moto_server, client):
    """Compaction A reads the pointer, then (injected just before A replaces it) another catalog
    is written and compaction B merges and deletes every pending delta. A's conditional write must
    fail and A must start again: written blindly it would drop what B merged."""
    store = new_store(client)
    c1, d1 = write_catalog(store)
    store.compact_index()
    c2, d2 = write_catalog(store, images=20)
    other = new_store(s3_client(moto_server.endpoint))
    other.prefix = store.prefix
    state = {"fired": False, "c3": None}

    def before_put(params, **_):
        if params.get("Key") == store.index.pointer_key and not state["fired"]:
            state["fired"] = True
            # many digests: B's shard versions differ from A's, so A's become orphans
            state["c3"] = write_catalog(other, images=300)
            assert other.compact_index()["deltas_merged"] == 2

    client.meta.events.register("before-parameter-build.s3.PutObject", before_put)
    result = store.compact_index()
    assert state["fired"] and result["deltas_merged"] == 0  # the retry found everything merged
    c3, d3 = state["c3"]
    for digest, key in ((d1[0], c1), (d2[0], c2), (d3[0], c3)):
        assert store.index.lookup(digest) == [key]
    assert keys_under(client, store.index.pending_prefix) == []
    pointer = store.index.read_pointer()  # the loser's shard writes were not left behind
    assert keys_under(client, store.index.shards_prefix) == sorted(pointer.shards.values())


def test_a_lookup_racing_a_compaction_still_finds_the_image(moto_server, client):
    """The lookup lists a pending delta and reads the old pointer; a compaction then merges and
    deletes that delta before the lookup reads it: the lookup must read the new pointer."""
    store = new_store(client)
    write_catalog(store)
    store.compact_index()
    key, digests = write_catalog(store)
    other = new_store(s3_client(moto_server.endpoint))
    other.prefix = store.prefix
    fired = []

    def before_get(params, **_):
        if params.get("Key", "").startswith(store.index.pending_prefix) and not fired:
            fired.append(other.compact_index())

    client.meta.events.register("before-parameter-build.s3.GetObject", before_get)
    assert store.index.lookup(digests[0]) == [key]
    assert fired and fired[0]["deltas_merged"] == 1


def test_writers_in_parallel_with_compactions_lose_nothing(moto_server, client):
    store = new_store(client)
    write_catalog(store)
    store.compact_index()
    written: list[tuple[str, list[str]]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer() -> None:
        own = new_store(s3_client(moto_server.endpoint))
        own.prefix = store.prefix
        for _ in range(6):
            got = write_catalog(own, images=2)
            with lock:
                written.append(got)

    def compactor() -> None:
        own = new_store(s3_client(moto_server.endpoint))
        own.prefix = store.prefix
        while not stop.is_set():
            own.compact_index()

    writers = [threading.Thread(target=writer) for _ in range(3)]
    compacting = threading.Thread(target=compactor)
    compacting.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    compacting.join()
    store.compact_index()
    assert len(written) == 18
    for key, digests in written:
        for digest in digests:
            assert store.index.lookup(digest) == [key]


def test_catalogs_written_before_the_index_existed_are_indexed_by_the_first_compaction(client):
    store = new_store(client)
    key, digests = write_catalog(store)
    for delta in keys_under(client, store.index.pending_prefix):  # as an older registry-ops wrote
        client.delete_object(Bucket=BUCKET, Key=delta)
    result = store.compact_index()
    assert result["rebuilt"] and result["catalogs"] == 1
    assert store.index.lookup(digests[0]) == [key]


@pytest.mark.parametrize("damage", ["pointer-missing", "pointer-corrupt", "shard-corrupt", "shard-missing"])
def test_a_missing_or_damaged_index_falls_back_to_the_catalogs_and_is_rebuilt(client, caplog, damage):
    store = new_store(client)
    key, digests = write_catalog(store)
    store.compact_index()
    pointer = store.index.read_pointer()
    shard = pointer.shards[shard_of(digests[0])]
    if damage == "pointer-missing":
        client.delete_object(Bucket=BUCKET, Key=store.index.pointer_key)
    elif damage == "pointer-corrupt":
        overwrite(client, store.index.pointer_key, b'{"kind": "nope"}')
    elif damage == "shard-corrupt":
        overwrite(client, shard, b"\x00")
    else:
        client.delete_object(Bucket=BUCKET, Key=shard)
    with caplog.at_level(logging.WARNING):
        found = store.search(None, None, digest=digests[0])
    assert [h["catalog"] for h in found.hits] == [key] and not found.via_index
    assert "scanning every catalog instead" in caplog.text
    assert "archive reindex" in caplog.text
    # a compaction rebuilds a missing or damaged pointer by itself; shards: `archive reindex`
    result = store.compact_index() if damage.startswith("pointer") else store.reindex()
    assert result["rebuilt"]
    found = store.search(None, None, digest=digests[0])
    assert found.via_index and [h["catalog"] for h in found.hits] == [key]


def test_a_damaged_delta_is_replaced_by_its_catalog(client):
    store = new_store(client)
    write_catalog(store)
    store.compact_index()
    key, digests = write_catalog(store)
    [delta] = keys_under(client, store.index.pending_prefix)
    overwrite(client, delta, b"garbage")
    assert store.index.lookup(digests[0]) == [key]  # names the catalog; search filters it
    assert store.find(None, None, digest=digests[0])[0]["catalog"] == key
    assert store.compact_index()["deltas_merged"] == 1  # its digests taken from the catalog
    assert store.index.lookup(digests[1]) == [key]


def test_a_rebuild_keeps_the_entry_of_a_catalog_still_being_written(client):
    """A writer writes its delta, a compaction merges and deletes it, and a rebuild lists the
    catalogs before the writer's catalog lands: the rebuild must keep the merged entry."""
    store = new_store(client)
    write_catalog(store)
    store.compact_index()
    in_flight = store.catalog_prefix("oci-local", "idx/app") + "20990101T000000000000Z-0123456789abcdef.json"
    digest = "sha256:" + "ab" * 32
    store.index.write_delta(in_flight, [digest])
    store.compact_index()
    store.reindex()
    assert store.index.lookup(digest) == [in_flight]


def test_reindex_rebuilds_an_index_that_lost_entries(client):
    store = new_store(client)
    key, digests = write_catalog(store)
    store.compact_index()
    pointer = store.index.read_pointer()
    shard = pointer.shards[shard_of(digests[0])]
    import json

    doc = json.loads(client.get_object(Bucket=BUCKET, Key=shard)["Body"].read())
    del doc["entries"][digests[0]]
    overwrite(client, shard, json.dumps(doc).encode())  # a valid shard that lost an entry
    assert store.index.lookup(digests[0]) == []
    result = store.reindex()
    assert result["rebuilt"] and result["catalogs"] == 1
    assert store.index.lookup(digests[0]) == [key]


def test_a_catalog_written_during_a_compaction_stays_pending_until_merged(moto_server, client):
    """Compaction deletes only the deltas its pointer merged: one written after its listing
    (here: while it reads what it listed) must survive it and be found."""
    store = new_store(client)
    write_catalog(store)
    store.compact_index()
    write_catalog(store)
    writer = new_store(s3_client(moto_server.endpoint))
    writer.prefix = store.prefix
    late = []

    def before_get(params, **_):
        if params.get("Key", "").startswith(store.index.pending_prefix) and not late:
            late.append(write_catalog(writer))

    client.meta.events.register("before-parameter-build.s3.GetObject", before_get)
    assert store.compact_index()["deltas_merged"] == 1
    key, digests = late[0]
    assert store.index.lookup(digests[0]) == [key]
    assert [store.index.catalog_of_delta(k) for k in keys_under(client, store.index.pending_prefix)] == [key]


class Crash(RuntimeError):
    """The injected failure."""


def test_a_crash_inside_a_catalog_write_never_leaves_a_catalog_the_index_misses(client):
    """Of the delta and the catalog, the second write fails: whatever exists afterwards, an
    archived (catalog written) image is found by digest."""
    store = new_store(client)
    write_catalog(store)
    store.compact_index()
    puts = []

    def before_put(params, **_):
        key = params.get("Key", "")
        if key.startswith((store.catalog_prefix(), store.index.pending_prefix)):
            puts.append(key)
            if len(puts) == 2:
                raise Crash(f"injected crash writing {key}")

    client.meta.events.register("before-parameter-build.s3.PutObject", before_put)
    with pytest.raises(Crash):
        write_catalog(store)
    client.meta.events.unregister("before-parameter-build.s3.PutObject", before_put)
    store.compact_index()
    for key in store.catalog_keys():
        for e in store.read_catalog(key)["images"]:
            assert key in store.index.lookup(e["digest"])
