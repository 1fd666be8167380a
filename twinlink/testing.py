"""Test and demo helpers that stand in for hardware: no broker, no cable, no board needed.

:class:`VirtualCable` joins two pty pairs into a null-modem cable with two port paths (POSIX),
optionally damaging what it forwards; the demo, the tests and the benchmarks use it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from .errors import TransportError

__all__ = ["VirtualCable"]


class VirtualCable:
    """Two pty pairs joined by a forwarding thread: a null-modem cable with two port paths.

    For demos, tests and benchmarks on POSIX (no hardware): open ``a`` and ``b`` (device paths)
    with any serial program; bytes written on one side come out of the other. ``tamper(data,
    direction)`` may rewrite each forwarded chunk a→b (direction ``"ab"``) or b→a; ``inject``
    writes raw bytes into one side as if they came down the wire.
    """

    def __init__(self, tamper: Callable[[bytes, str], bytes] | None = None) -> None:
        if os.name != "posix":  # pragma: no cover
            raise OSError("VirtualCable needs POSIX ptys")
        import tty

        self.tamper = tamper
        self._fds: list[int] = []
        names = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(master)
            tty.setraw(slave)
            os.set_blocking(master, False)
            names.append(os.ttyname(slave))
            self._fds += [master, slave]  # keep the slave open: no hangup between opens
        self.a, self.b = names
        self._ma, self._mb = self._fds[0], self._fds[2]
        self._stop = threading.Event()
        self._wlock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="twinlink-cable", daemon=True)
        self._thread.start()

    def inject(self, data: bytes, side: str = "b") -> None:
        """Write raw bytes so they come out of port ``side`` (``"a"`` or ``"b"``)."""
        _write_all(self._mb if side == "b" else self._ma, data, self._wlock)

    def _run(self) -> None:
        import select

        peers = {self._ma: (self._mb, "ab"), self._mb: (self._ma, "ba")}
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(list(peers), [], [], 0.05)
                for fd in ready:
                    data = os.read(fd, 65536)
                    dst, direction = peers[fd]
                    if self.tamper is not None:
                        data = self.tamper(data, direction)
                    if data:
                        _write_all(dst, data, self._wlock)
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> VirtualCable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_all(fd: int, data: bytes, lock: threading.Lock, timeout: float = 5.0) -> None:
    import select

    deadline = time.monotonic() + timeout
    view = memoryview(data)
    with lock:
        while view:
            if time.monotonic() > deadline:
                raise TransportError("virtual cable: peer is not reading")
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                n = 0
            view = view[n:]
            if view:
                select.select([], [fd], [], 0.05)
