"""What the bench scripts share for printing their figures, counting S3 requests and measuring
the wall time and memory of a block."""

from __future__ import annotations

import gc
import resource
import sys
import threading
import time
from collections import Counter
from types import TracebackType
from typing import Any

WIDTH = 100


def out(line: str = "") -> None:
    print(line, flush=True)


def note(line: str) -> None:
    print(f"[bench] {line}", file=sys.stderr, flush=True)


def title(text: str) -> None:
    out()
    out("=" * WIDTH)
    out(text)
    out("=" * WIDTH)


def row(label: str, value: Any, comment: str = "", widths: tuple[int, int] = (50, 14)) -> None:
    """One figure: label and value in columns of ``widths`` (each bench keeps its own layout)."""
    text = f"  {label:<{widths[0]}} {value!s:>{widths[1]}}"
    out(f"{text}   {comment}" if comment else text)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class S3Counter:
    """S3 requests by operation through botocore's before-send event."""

    def __init__(self, client: Any) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        client.meta.events.register("before-send.s3.*", self._count)

    def _count(self, event_name: str, **_: Any) -> None:
        with self._lock:
            self.counts[event_name.rsplit(".", 1)[-1]] += 1

    def take(self) -> Counter[str]:
        """The counts so far, and a fresh start."""
        with self._lock:
            got, self.counts = self.counts, Counter()
        return got


# -- memory ----------------------------------------------------------------------------------------
def rss_bytes() -> int:
    """The process's resident set now (``/proc/self/statm``, Linux)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def maxrss_bytes() -> int:
    """``ru_maxrss``: the kernel's high-water mark of the process's resident set over its whole
    life (an exiting thread folds the current one in, so it never goes down)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _hwm_bytes() -> int | None:
    """VmHWM: the resident-set high-water mark since the last reset (``_reset_hwm``)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False where that is refused."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (Arrow's pool when pyarrow is loaded,
    glibc ``malloc_trim``), so the RSS measured before a block is what is really held."""
    gc.collect()
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Meter:
    """Wall time and memory of a block: ``with Meter() as m: ...``, then read its fields.

    - ``seconds``: wall time; ``cpu_seconds``: the process's CPU time (every thread, user +
      system: above ``seconds`` when threads ran in parallel, far below it on a busy machine);
    - ``peak_sampled``: the highest RSS a thread read from ``/proc/self/statm`` every
      ``interval`` seconds (it can miss a spike shorter than that, or one inside a C call that
      holds the GIL);
    - ``maxrss_delta``: how far the block raised ``ru_maxrss`` (exact, but 0 when the block
      stayed below an earlier peak the process kept: a thread that exited folded it in);
    - ``peak_hwm``: VmHWM, reset at the start of the block: the kernel's exact peak of the block
      (None where the reset is refused);
    - ``peak``: the highest of them, the figure to quote.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.seconds = self.cpu_seconds = 0.0
        self.rss_start = self.rss_end = self.peak_sampled = 0
        self.maxrss_start = self.maxrss_end = 0
        self.peak_hwm: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = self._cpu0 = 0.0
        self._reset = False

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_sampled = max(self.peak_sampled, rss_bytes())

    def __enter__(self) -> Meter:
        release_memory()
        self.rss_start = self.peak_sampled = rss_bytes()
        self._reset = _reset_hwm()  # Linux: ru_maxrss drops with it, to the threads' folded-in peaks
        self.maxrss_start = maxrss_bytes()
        self._thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)
        self._thread.start()
        self._t0, self._cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.cpu_seconds = time.process_time() - self._cpu0
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.rss_end = rss_bytes()
        self.peak_sampled = max(self.peak_sampled, self.rss_end)
        self.maxrss_end = maxrss_bytes()
        self.peak_hwm = _hwm_bytes() if self._reset else None

    @property
    def maxrss_delta(self) -> int:
        return self.maxrss_end - self.maxrss_start

    @property
    def peak(self) -> int:
        return max(self.peak_sampled, self.maxrss_end if self.maxrss_delta > 0 else 0, self.peak_hwm or 0)
