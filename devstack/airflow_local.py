"""``airflow standalone`` on 127.0.0.1 for the demo, and the REST API (``/api/v2``) to drive it.

The demo's runs go through the real scheduler and LocalExecutor, so each task writes its log
where the UI reads it (``dag.test()`` writes none). Sized for a 2-core machine: the
LocalExecutor forks ``parallelism`` workers up front (32 by default, about 4.5 GiB idle), so
it gets a few; the API server gets one worker. Every user is admin: a local demo only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

PARALLELISM = 4  # tasks at once; also the LocalExecutor's worker processes
TERMINAL = {"success", "failed"}


def airflow_env(root: Path, home: Path, port: int) -> dict[str, str]:
    """Environment of the demo process and of the standalone it starts (which inherits it)."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
        # paused until the demo unpauses each DAG in order (a scan before any inventory would fail)
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "GX_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        # `airflow standalone` starts its components as `airflow ...`: the venv's bin first
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


class Standalone:
    """``airflow standalone`` in its own session: a Ctrl-C in the terminal reaches only the demo,
    which then stops Airflow in order (SIGINT lets standalone stop its components)."""

    def __init__(self, log_path: Path, **env: str) -> None:
        self.log_path = log_path
        self.env = {**os.environ, **env}  # this process's environment, with ``env`` on top
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Standalone:
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child holds it; closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "standalone"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal_group(self, sig: int) -> bool:
        """Signal every process left in standalone's session; False when none is left."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)  # the session leader's pid is the group id
        except ProcessLookupError:
            return False
        return True

    def _group_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._signal_group(0):
                return True
            time.sleep(0.5)
        return False

    def stop(self, timeout: float = 60.0) -> None:
        """SIGINT to standalone (it stops scheduler, API server, ...), then what is left of its
        session gets SIGTERM, then SIGKILL."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            if self._group_gone(0.1) or (self._signal_group(sig) and self._group_gone(wait)):
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._log.close()

    def memory(self) -> dict[str, Any]:
        """RSS (which counts pages shared by forked workers once per process) and PSS of every
        process of the session, in MiB."""
        import psutil

        assert self.proc is not None
        root = psutil.Process(self.proc.pid)
        procs = [root, *root.children(recursive=True)]
        rss = pss = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                info = p.memory_full_info()
                rss, pss = rss + info.rss, pss + info.pss
        return {"processes": len(procs), "rss_mib": round(rss / 2**20), "pss_mib": round(pss / 2**20)}


class AirflowApi:
    """The few ``/api/v2`` calls the demo needs; a JWT from ``GET /auth/token`` (all-admins mode)."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")
        self.http = requests.Session()
        self.http.trust_env = False  # 127.0.0.1 only: never through a proxy

    def _token(self) -> None:
        resp = self.http.get(f"{self.base}/auth/token", timeout=10)
        resp.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        if "Authorization" not in self.http.headers:
            self._token()
        resp = self.http.request(method, f"{self.base}/api/v2{path}", timeout=30, **kwargs)
        if resp.status_code == 401:  # expired: once more with a fresh token
            self._token()
            resp = self.http.request(method, f"{self.base}/api/v2{path}", timeout=30, **kwargs)
        if resp.status_code >= 400:
            raise RuntimeError(f"Airflow API {method} {path}: {resp.status_code} {resp.text[:500]}")
        return resp.json()

    def wait_ready(self, timeout: float, alive: Any = lambda: True) -> None:
        """Until the API answers; ``alive()`` False (standalone died) stops waiting at once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError("airflow standalone exited while starting (see its log)")
            with contextlib.suppress(requests.RequestException):
                if self.http.get(f"{self.base}/api/v2/version", timeout=5).status_code == 200:
                    return
            time.sleep(1)
        raise RuntimeError(f"the Airflow API at {self.base} did not come up within {timeout:.0f}s")

    def wait_dags(self, dag_ids: list[str], timeout: float) -> None:
        """Until the DAG processor has serialized every DAG (the scheduler knows them then)."""
        deadline = time.monotonic() + timeout
        missing = set(dag_ids)
        while time.monotonic() < deadline:
            found = {d["dag_id"] for d in self.call("GET", "/dags", params={"limit": 100})["dags"]}
            missing = set(dag_ids) - found
            if not missing:
                return
            time.sleep(2)
        raise RuntimeError(f"DAGs not loaded within {timeout:.0f}s: {sorted(missing)} (see import errors)")

    def import_errors(self) -> list[dict[str, Any]]:
        return self.call("GET", "/importErrors")["import_errors"]

    def unpause(self, dag_id: str) -> None:
        self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self.call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "run_after"})["dag_runs"]

    def first_run(self, dag_id: str, timeout: float) -> dict[str, Any]:
        """The first run the scheduler creates (a timetable's, right after unpausing)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.runs(dag_id)
            if found:
                return found[0]
            time.sleep(2)
        raise RuntimeError(f"{dag_id}: the scheduler created no run within {timeout:.0f}s")

    def wait_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in TERMINAL:
                return run
            time.sleep(3)
        raise RuntimeError(f"{dag_id} run {run_id} did not finish within {timeout:.0f}s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})[
            "task_instances"
        ]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """A task's XCom value (JSON as stored); None when the task pushed none."""
        try:
            body = self.call(
                "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
            )
        except RuntimeError:
            return None
        value = body.get("value")
        return json.loads(value) if isinstance(value, str) else value

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """The task's log as the UI shows it, one line per event."""
        body = self.call(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true", "map_index": map_index},
            headers={"Accept": "application/json"},
        )
        return "\n".join(e if isinstance(e, str) else str(e.get("event", "")) for e in body["content"])
