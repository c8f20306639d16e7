"""The spool's disk fills up while Redis is down: ``log`` raises SpoolError, nothing hangs, nothing is lost unsaid.

No tmpfs can be mounted here, so a full disk is a file-size limit: the training process
sets ``RLIMIT_FSIZE`` on itself and on its sender process, which writes the spool (both
ignore SIGXFSZ, so a write past it fails with EFBIG, as a write to a full disk fails with
ENOSPC), before logging into a Redis that was killed.
``tests/test_logger.py`` covers a spool that cannot be created at all; this is the other
case, a spool that fills up mid-outage, then the exit, then Redis back and a second
process adopting the spool.

The accounting must close: every event logged (each ``log`` call that returned, the one
that raised, whose point was queued before it raised, the run's start and the status its
exit sets) is either in Redis after the adoption or counted as lost in the exit's
``events_not_delivered`` line; what arrives is in seq order, each once, and what the exit
said the spool kept is exactly what arrives.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from runstream.codec import Batch
from runstream.events import MetricsLogged
from runstream.redis_server import RedisServer
from tests.battery.conftest import ScriptProcess, duplicates, report
from tests.conftest import first_of_each_seq, make_workspace, read_batches

pytestmark = pytest.mark.battery

LIMIT = 256 * 1024  # bytes any file of the process may reach: the spool's "disk"

_FILL = f"""
import resource, signal, time
from runstream import SpoolError
from runstream.logger import get_logger
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, ({LIMIT}, {LIMIT}))
sender = getattr(get_logger(), "sender_pid", None)  # the sender process writes the spool (it ignores SIGXFSZ)
if sender is not None:
    resource.prlimit(sender, resource.RLIMIT_FSIZE, ({LIMIT}, {LIMIT}))
began, longest, returned = time.monotonic(), 0.0, 0
try:
    while time.monotonic() - began < 30:  # bounded: SpoolError is expected well within it
        t = time.perf_counter()
        run.log("loss", returned)
        longest = max(longest, time.perf_counter() - t)
        returned += 1
        if returned % 1000 == 0:
            time.sleep(0.001)  # a training step's pace
    print("no_error", returned, flush=True)
except SpoolError as exc:
    print("refused", returned, time.monotonic() - began, longest, flush=True)
    print("message", exc, flush=True)
"""


def events_of(batches: list[Batch]) -> int:
    """Events the batches carry, counted as the logger counts them (a point each, else one per event)."""
    return sum(len(e.values) if isinstance(e, MetricsLogged) else 1 for b in batches for e in b.events)


def points_of(batches: list[Batch]) -> list[int]:
    """The values of "loss" (ints: the script logs its call counter)."""
    return [int(v) for b in batches for e in b.events if isinstance(e, MetricsLogged) for v in e.values]


def exit_figure(stderr: str, name: str) -> int:
    """A number from the ``events_not_delivered`` line the process wrote at exit."""
    line = next(line for line in stderr.splitlines() if "events_not_delivered" in line)
    found = re.search(rf"\b{name}=(\d+)", line)
    assert found is not None, line
    return int(found.group(1))


class TestSpoolFull:
    """A spool that fills up mid-outage: SpoolError at once, no hang, and what is lost is counted and said."""

    def test_disk_full_while_redis_is_down(
        self,
        restartable_redis: RedisServer,
        tmp_path: Path,
        start_script: Callable[..., ScriptProcess],
    ) -> None:
        workspace = make_workspace(restartable_redis.url, tmp_path / ".runstream")
        restartable_redis.kill()

        first = start_script(
            workspace, _FILL, max_memory_bytes=16 * 1024, exit_flush_timeout=0.5, heartbeat_interval=60.0
        )
        code = first.wait(60)  # no hang: it raises, gives up its exit flush, says what is lost, exits
        run_id = first.run_id()
        said = {line.split()[0]: line.split(None, 1)[1] for line in first.lines[1:]}
        returned, refused_after, longest = (float(x) for x in said["refused"].split())
        spools = [p.stat().st_size for p in (tmp_path / ".runstream" / "spool").rglob("*.spool")]
        kept, lost = exit_figure(first.stderr, "events"), exit_figure(first.stderr, "lost")
        restartable_redis.restart()
        second = start_script(workspace, "run.complete()\n")
        second_code = second.wait(60)
        batches = read_batches(workspace, run_id)
        unique = first_of_each_seq(batches)
        points = points_of(unique)
        logged = int(returned) + 3  # the calls that returned, the one that raised, run start and exit status
        report(
            "spool disk full (RLIMIT_FSIZE 256 KiB) while Redis is down",
            logged_events=f"{logged} ({int(returned)} log() calls returned, then SpoolError)",
            refused_after_s=f"{refused_after:.2f}",
            longest_log_ms=f"{longest * 1000:.2f}",
            spool_bytes_at_exit=spools,
            exit_said=f"{kept} events kept in the spool, {lost} lost",
            arrived_events=events_of(unique),
            arrived_points=f"{len(points)} (seqs {unique[0].seq}..{unique[-1].seq} of {len(unique)} batches)",
            duplicates=duplicates(points),
            message=said["message"],
        )

        assert (0, 0) == (code, second_code), first.stderr[-2000:]
        assert refused_after < 10, "SpoolError comes within a bound of the disk filling up"
        assert "cannot be written" in said["message"]
        assert "File too large" in said["message"]
        assert str(tmp_path / ".runstream" / "spool") in said["message"]
        assert all(size <= LIMIT for size in spools)
        assert lost > 0
        assert kept == events_of(unique), "what the exit said the spool kept is what arrived"
        assert logged == kept + lost, "every event logged arrived or was counted as lost"
        assert [b.seq for b in unique] == sorted(b.seq for b in unique)
        assert points == sorted(points)
        assert 0 == duplicates(points)
        assert "spool_adopted" in second.stderr
