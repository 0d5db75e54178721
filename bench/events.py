"""Registry event receiver bench: throughput and latency of ``POST /api/events/<registry>`` at 200
envelopes/s (the issue's rate), its capacity, and a same-process baseline of the bare S3 writes.

Run from the repository root (not a pytest test)::

    .venv/bin/python bench/events.py              # 10 s at 200/s
    .venv/bin/python bench/events.py --seconds 3  # quicker

Three processes on this machine, as in production the registry, the API server and S3 are apart:

- **S3**: moto's server (``moto_server``) in a child process;
- **the receiver**: the Registry page app (``page.app.create_app()`` with its defaults: the config
  file of ``REGISTRY_OPS_CONFIG``, the storage connection's S3 client, the token connection
  ``registry_events`` from ``AIRFLOW_CONN_*``) served by uvicorn in a child process;
- **the client** (this process): envelopes rendered from the documented pull and push events
  (``tests/fixtures/events``) with ids, times, digests, repositories, tags, addresses and actors
  varied (90 % one event, as the registry sends them, 10 % two or three), 5 % of the
  deliveries a repeat of an earlier body (a retried delivery).

Figures:

1. **paced**: an open-loop client sends at 200/s for ``--seconds`` (each request leaves at its
   scheduled time whatever the earlier ones are doing; latency is measured from the scheduled
   time, so a stalled receiver cannot hide its queue). Achieved rate, status counts, p50/p99/max,
   and the CPU seconds each of the three processes used meanwhile (where the time went).
2. **capacity**: ``--workers`` closed-loop clients posting back to back for 5 s: envelopes/s.
   When it is under 200/s, a second paced run at 60 % of it gives the latency of a receiver
   that keeps up (at an overloaded rate latency only measures the queue).
3. **baseline** (this process, no HTTP): the same number of fresh bodies written with the bare
   ``objects.put_once`` (one PUT), then with ``receiver.store_envelope`` (what the receiver does
   to S3: HEAD of the previous day's key, PUT ``If-None-Match``), paced the same way from as
   many threads as the receiver uses; the receiver's p50/p99 are printed as ratios to them.
   And ``store_envelope`` 300 times one after another: the CPU boto3 spends per delivery in the
   receiver (against the receiver's CPU per delivery from the paced run).

Every stored object is counted afterwards: one per distinct body, whatever was delivered twice.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _local
from _report import note, out, row, title

ROOT = _local.prepare()

import aiohttp  # noqa: E402
import yaml  # noqa: E402

from devstack.services import free_port, moto_process, wait_http  # noqa: E402

RATE = 200.0
TOKEN = "bench-events-token"
BUCKET = "events-bench"
REGISTRY = "oci-bench"
FIXTURES = ROOT / "tests" / "fixtures" / "events"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


# -- the envelopes ---------------------------------------------------------------------------------
def envelopes(count: int, seed: int = 7) -> list[bytes]:
    """``count`` deliveries: realistic envelopes, 5 % of them repeating an earlier body."""
    rng = random.Random(seed)
    pull = json.loads((FIXTURES / "distribution-notification-pull.docs.json").read_text())["events"][0]
    push = json.loads((FIXTURES / "distribution-notification-push-envelope.docs.json").read_text())["events"][
        0
    ]
    repos = [f"team-{t}/service-{s}" for t in range(12) for s in range(20)]
    start = datetime(2026, 11, 28, tzinfo=UTC)

    def event(n: int) -> dict:
        ev = copy.deepcopy(pull if rng.random() < 0.85 else push)
        repo = rng.choice(repos)
        digest = "sha256:" + hashlib.sha256(f"{seed}-{n}-{rng.random()}".encode()).hexdigest()
        stamp = start + timedelta(microseconds=n * 4813 + rng.randrange(1000))
        ev["id"] = f"{rng.getrandbits(128):032x}"
        ev["timestamp"] = stamp.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
        ev["target"].update(
            mediaType=MANIFEST,
            digest=digest,
            repository=repo,
            url=f"https://registry.example.com/v2/{repo}/manifests/{digest}",
            size=rng.randrange(400, 4000),
        )
        if ev["action"] == "pull" and rng.random() < 0.5:
            ev["target"]["tag"] = rng.choice(["latest", "v1.4.2", "main", f"build-{rng.randrange(9999)}"])
        else:
            ev["target"].pop("tag", None)
        ev["request"].update(
            id=f"{rng.getrandbits(128):032x}",
            addr=f"10.{rng.randrange(256)}.{rng.randrange(256)}.7:{rng.randrange(30000, 60000)}",
            host="registry.example.com",
            useragent=rng.choice(["containerd/1.7.13", "docker/25.0.3 go/go1.21.6", "skopeo/1.14"]),
        )
        ev["actor"] = (
            {"name": rng.choice(["ci-bot", "deployer", "alice", "bob"])} if rng.random() < 0.7 else {}
        )
        return ev

    out_: list[bytes] = []
    n = 0
    for i in range(count):
        if i > 20 and rng.random() < 0.05:
            out_.append(out_[rng.randrange(i - 20, i)])  # a retried delivery of a recent body
            continue
        size = 1 if rng.random() < 0.9 else rng.choice([2, 3])
        events = [event(n + k) for k in range(size)]
        n += size
        out_.append(json.dumps({"events": events}, indent=3).encode())  # the registry indents too
    return out_


# -- the services ----------------------------------------------------------------------------------
def aws_conn(endpoint: str) -> str:
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"region_name": "us-east-1", "endpoint_url": endpoint},
        }
    )


def start_receiver(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], env=env, stdout=sys.stderr, stderr=sys.stderr
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/api/events/{REGISTRY}", ok=(405,), timeout=120)  # GET: the route is there
    return proc, url


def serve(port: int) -> None:
    """The child: the page app as the plugin builds it, on uvicorn."""
    import logging

    import uvicorn

    from include.registry_ops.page.app import create_app

    logging.basicConfig(level=logging.WARNING)
    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the clients -----------------------------------------------------------------------------------
async def paced(send: Callable[[int], Awaitable[int]], count: int, rate: float) -> dict:
    """Open loop: request ``i`` leaves at ``start + i / rate``; latency from that time."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    latencies = [0.0] * count
    statuses: Counter[int] = Counter()
    late = 0

    async def one(i: int, due: float) -> None:
        try:
            statuses[await send(i)] += 1
        except Exception as exc:  # counted, not fatal: the figures show it
            statuses[type(exc).__name__] += 1  # type: ignore[index]
        latencies[i] = loop.time() - due

    tasks = []
    for i in range(count):
        due = start + i / rate
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.005:
            late += 1
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    return {
        "latencies": latencies,
        "statuses": statuses,
        "elapsed": elapsed,
        "late": late,
        "count": count,
        "rate": rate,
    }


async def closed(send: Callable[[int], Awaitable[int]], workers: int, seconds: float) -> dict:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    done = Counter[int]()
    counter = iter(range(10**9))

    async def worker() -> None:
        while loop.time() < end:
            try:
                done[await send(next(counter))] += 1
            except Exception as exc:  # counted, not fatal: the figures show it
                done[type(exc).__name__] += 1  # type: ignore[index]

    started = loop.time()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return {"statuses": done, "elapsed": loop.time() - started}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(label: str, result: dict) -> None:
    lat = result["latencies"]
    row(f"{label}: deliveries", result["count"])
    row(
        f"{label}: achieved rate",
        f"{result['count'] / result['elapsed']:.1f}/s",
        f"target {result['rate']:.0f}/s",
    )
    row(f"{label}: statuses", dict(sorted(result["statuses"].items(), key=str)))
    row(f"{label}: sends left late (>5 ms)", result["late"], "the client's own lag")
    row(f"{label}: p50 latency", f"{statistics.median(lat) * 1000:.1f} ms")
    row(f"{label}: p99 latency", f"{pct(lat, 0.99) * 1000:.1f} ms")
    row(f"{label}: max latency", f"{max(lat) * 1000:.1f} ms")


# -- main ------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="3 seconds per phase (make bench ARGS=--quick)")
    args = parser.parse_args()
    if args.quick:
        args.seconds = min(args.seconds, 3.0)
    if args.serve:
        serve(args.serve)
        return

    count = int(RATE * args.seconds)
    moto, endpoint = moto_process()
    receiver = None
    try:
        home = tempfile.mkdtemp(prefix="events-bench-")
        config = Path(home) / "registry-ops.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "registries": [{"name": REGISTRY, "kind": "oci", "conn_id": "oci_bench"}],
                    "storage": {"conn_id": "aws_default", "bucket": BUCKET},
                }
            )
        )
        env = {
            **os.environ,
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "REGISTRY_OPS_CONFIG": str(config),
            "AIRFLOW_CONN_AWS_DEFAULT": aws_conn(endpoint),
            "AIRFLOW_CONN_REGISTRY_EVENTS": json.dumps({"conn_type": "generic", "password": TOKEN}),
        }
        os.environ.update({k: env[k] for k in ("AIRFLOW_HOME", "AIRFLOW_CONN_AWS_DEFAULT")})
        from include.registry_ops.clients import aws_client
        from include.registry_ops.events.receiver import WORKERS, store_envelope
        from include.registry_ops.store import objects

        s3 = aws_client("s3", "aws_default", None)
        s3.create_bucket(Bucket=BUCKET)
        receiver, url = start_receiver(env)
        bodies = envelopes(count)
        distinct = len(set(bodies))
        title(f"Registry event receiver: {count} deliveries at {RATE:.0f}/s ({distinct} distinct bodies)")
        row(
            "envelope body size (median / max)",
            f"{statistics.median(map(len, bodies)):.0f} / {max(map(len, bodies))} B",
        )
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

        pids = {"S3 (moto)": moto.pid, "receiver": receiver.pid, "client (this process)": os.getpid()}

        def session() -> aiohttp.ClientSession:
            # aiohttp: about half httpx's CPU per request, and this client shares the 2 cores
            return aiohttp.ClientSession(
                base_url=url,
                headers=headers,
                connector=aiohttp.TCPConnector(limit=256),
                timeout=aiohttp.ClientTimeout(total=120),
            )

        async def post(client: aiohttp.ClientSession, body: bytes) -> int:
            async with client.post(f"/api/events/{REGISTRY}", data=body) as resp:
                await resp.read()
                return resp.status

        extra = envelopes(20_000, seed=3)  # capacity: bodies never sent before

        async def run_http(rate: float, sent: list[bytes], cap: bool) -> tuple[dict, dict | None]:
            async with session() as client:

                async def send(i: int) -> int:
                    return await post(client, sent[i])

                before = {k: cpu_seconds(pid) for k, pid in pids.items()}
                result = await paced(send, len(sent), rate)
                result["cpu"] = {k: cpu_seconds(pid) - before[k] for k, pid in pids.items()}
                if not cap:
                    return result, None

                async def send_new(i: int) -> int:
                    return await post(client, extra[i])

                return result, await closed(send_new, args.workers, 5.0)

        async def warm_up() -> int:
            async with session() as client:
                return await post(client, envelopes(1, seed=99)[0])

        note(f"warm-up delivery: {asyncio.run(warm_up())} (the token lookup imports Airflow once)")
        note(f"paced run at {RATE:.0f}/s, then capacity")
        http, capacity = asyncio.run(run_http(RATE, bodies, True))
        assert capacity is not None
        report("receiver", http)
        for name, used in http["cpu"].items():
            row(f"receiver: CPU of {name}", f"{used:.1f} s", f"over {http['elapsed']:.1f} s, 2 cores shared")
        per = http["cpu"]["receiver"] / http["count"] * 1000
        row("receiver: CPU per delivery", f"{per:.1f} ms", "the receiver process's CPU / deliveries")
        stored = objects.list_keys(s3, BUCKET, f"events/{REGISTRY}/")
        paced_keys = {f"{hashlib.sha256(b).hexdigest()}.json" for b in bodies}
        found = sum(1 for o in stored if o["Key"].rsplit("/", 1)[-1] in paced_keys)
        row("receiver: objects stored for the paced run", found, f"distinct bodies: {distinct}")
        sustained = sum(capacity["statuses"].values()) / capacity["elapsed"]
        row(
            f"capacity ({args.workers} closed-loop clients, 5 s)",
            f"{sustained:.0f}/s",
            f"statuses {dict(capacity['statuses'])}",
        )
        low = min(RATE, max(5.0, round(sustained * 0.6)))
        if low < RATE:
            note(f"paced run at {low:.0f}/s (60 % of the capacity measured)")
            at_low = envelopes(int(low * args.seconds), seed=5)
            http_low, _ = asyncio.run(run_http(low, at_low, False))
            report(f"receiver at {low:.0f}/s", http_low)

        fresh = envelopes(count, seed=11)
        received = datetime.now(UTC)

        async def run_baseline(store: Callable[[int], None], rate: float, n: int) -> dict:
            pool = ThreadPoolExecutor(WORKERS)  # as many threads as the receiver's S3 steps get

            async def send(i: int) -> int:
                await asyncio.get_running_loop().run_in_executor(pool, store, i)
                return 201

            try:
                return await paced(send, n, rate)
            finally:
                pool.shutdown()

        def bare(i: int) -> None:
            key = f"baseline/{hashlib.sha256(fresh[i]).hexdigest()}-{i}.json"
            objects.put_once(s3, BUCKET, key, fresh[i], "application/json")

        def full(i: int) -> None:
            store_envelope(s3, BUCKET, "baseline-store/", REGISTRY, fresh[i] + b" ", received)

        note(f"same-process baselines (no HTTP) at {RATE:.0f}/s")
        base = asyncio.run(run_baseline(bare, RATE, count))
        report("baseline put_once", base)
        base_store = asyncio.run(run_baseline(full, RATE, count))
        report("baseline store_envelope", base_store)
        for label, ref in (("put_once", base), ("store_envelope", base_store)):
            rates = (http["count"] / http["elapsed"]) / (ref["count"] / ref["elapsed"])
            row(f"receiver / {label}: achieved rate", f"{rates:.2f}x")
            for q, name in ((0.5, "p50"), (0.99, "p99")):
                ratio = pct(http["latencies"], q) / pct(ref["latencies"], q)
                row(f"receiver / {label}: {name} latency", f"{ratio:.1f}x")
        sample = envelopes(300, seed=21)
        cpu, wall = time.process_time(), time.perf_counter()
        for body in sample:  # one after another: the client side's own cost of the S3 writes
            store_envelope(s3, BUCKET, "baseline-seq/", REGISTRY, body, received)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        row(
            "store_envelope one at a time: CPU per call",
            f"{cpu / len(sample) * 1000:.1f} ms",
            f"wall {wall / len(sample) * 1000:.1f} ms (boto3's side; moto's is in its process)",
        )
        if low < RATE:
            note(f"same-process baseline store_envelope at {low:.0f}/s")
            base_low = asyncio.run(run_baseline(full, low, int(low * args.seconds)))
            report(f"baseline store_envelope at {low:.0f}/s", base_low)
            for q, name in ((0.5, "p50"), (0.99, "p99")):
                ratio = pct(http_low["latencies"], q) / pct(base_low["latencies"], q)
                row(f"receiver / store_envelope at {low:.0f}/s: {name} latency", f"{ratio:.1f}x")
        out()
    finally:
        if receiver is not None:
            receiver.terminate()
            receiver.wait(10)
        moto.terminate()
        moto.wait(10)


if __name__ == "__main__":
    main()
