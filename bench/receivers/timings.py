"""When receivers and tasks ran: one fixed-width line per run, in a file per process.

Recording is one unbuffered ``write`` of a 54-byte line to ``<BENCH_RESULTS_DIR>/<pid>.times``:
cheap, visible to the benchmark at once, and countable from file sizes alone.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

LINE_FORMAT = "%17.6f %17.6f %17.6f\n"
LINE_BYTES = 54

_file: tuple[int, int] | None = None  # (pid, fd): a forked child opens its own file


class Timing(NamedTuple):
    """Times (``time.time()``) of one run: sent by the producer, started, finished."""

    sent: float
    started: float
    finished: float


def record(sent: float, started: float) -> None:
    """Record a run that started at ``started`` and finishes now."""
    global _file
    pid = os.getpid()
    if _file is None or _file[0] != pid:
        path = Path(os.environ["BENCH_RESULTS_DIR"]) / f"{pid}.times"
        _file = (pid, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    os.write(_file[1], (LINE_FORMAT % (sent, started, time.time())).encode("ascii"))


def count(results_dir: Path) -> int:
    """How many runs were recorded in ``results_dir`` so far."""
    return sum(path.stat().st_size // LINE_BYTES for path in results_dir.glob("*.times"))


def read(results_dir: Path) -> list[Timing]:
    """Every run recorded in ``results_dir``."""
    timings = []
    for path in results_dir.glob("*.times"):
        for line in path.read_text("ascii").splitlines():
            sent, started, finished = (float(x) for x in line.split())
            timings.append(Timing(sent, started, finished))
    return timings
