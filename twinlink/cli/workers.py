"""``twinlink serve --workers N``: N ingest processes on one shared subscription, supervised.

Each worker is a ``twinlink serve`` process of its own (its own interpreter, so N workers use N
cores) with the same options plus ``--share GROUP --client-id BASE-i``. The broker hands each
message of ``$share/GROUP/ROOT/+/t`` to one worker; each worker acknowledges only after its
commit. A worker that dies (crash, SIGKILL, out of memory) is started again with the same
client id: its persistent broker session resumes and the broker redelivers what it had not
acknowledged (docs/SCALING.md says what mosquitto guarantees). A worker that exits with a
configuration error (bad key, client id in use, unknown database …) stops them all with its
exit code; SIGTERM/SIGINT or ``--duration`` stop them all cleanly.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from .common import (
    EXIT_KEYS,
    EXIT_REGISTRY,
    EXIT_STATE,
    EXIT_USAGE,
    StopControl,
    fail,
    say,
)

#: Exit codes that no restart can cure: stop every worker and report it.
FATAL = frozenset({EXIT_USAGE, EXIT_KEYS, EXIT_STATE, EXIT_REGISTRY})
#: Restart delay after a worker died: doubles while workers die young, up to the maximum.
RESTART_MIN, RESTART_MAX, YOUNG = 0.5, 10.0, 10.0


class _Worker:
    def __init__(self, index: int, cmd: list[str]) -> None:
        self.index, self.cmd = index, cmd
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.delay = RESTART_MIN
        self.due: float | None = 0.0  # when to (re)start; None: finished for good

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL)
        self.started, self.due = time.monotonic(), None


def supervise(args: argparse.Namespace, root: str) -> int:
    """Run ``args.workers`` workers on topic root ``root`` until stopped; the exit code of
    ``twinlink serve``."""
    from ..ingest.mqtt import default_client_id

    if args.count is not None:
        raise fail("--count cannot be combined with --workers", EXIT_USAGE,
                   "use --duration, or stop the workers with SIGTERM")
    group = args.share or "twinlink"
    base = args.client_id or default_client_id(root)
    workers = [
        _Worker(i, [sys.executable, "-m", "twinlink", *args.argv, "--workers", "1",
                    "--share", group, "--client-id", f"{base}-{i}"])
        for i in range(1, args.workers + 1)]
    say(f"starting {len(workers)} workers on $share/{group}/{root}/+/t (client ids "
        f"{base}-1 … {base}-{len(workers)})")
    code = 0
    with StopControl(None, args.duration) as stop:
        try:
            code = _loop(workers, stop)
        finally:
            _stop_all(workers)
    return code


def _loop(workers: list[_Worker], stop: StopControl) -> int:
    while not stop.stopped:
        now = time.monotonic()
        for w in workers:
            if w.proc is None or w.proc.poll() is None:
                if w.due is not None and w.due <= now:
                    w.start()
                continue
            rc = w.proc.returncode
            w.proc = None
            if rc == 0:  # stopped cleanly (its --duration, or someone's SIGTERM)
                continue
            if rc in FATAL:
                say(f"worker {w.index} exited with code {rc}; stopping all workers")
                return rc
            lived = now - w.started
            w.delay = RESTART_MIN if lived > YOUNG else min(RESTART_MAX, w.delay * 2)
            w.due = now + w.delay
            why = f"killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
            say(f"worker {w.index} {why} after {lived:.1f}s; restarting it in {w.delay:g}s "
                "(its broker session resumes)")
        if all(w.proc is None and w.due is None for w in workers):
            return 0
        stop.event.wait(0.1)
    return 0


def _stop_all(workers: list[_Worker], timeout: float = 30.0) -> None:
    live = [w.proc for w in workers if w.proc is not None and w.proc.poll() is None]
    for p in live:
        p.terminate()
    deadline = time.monotonic() + timeout
    for p in live:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
