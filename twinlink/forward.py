"""Forward the twin's security events to a collector: syslog over UDP, TCP or TLS, or a file.

:class:`Forwarder` tails the store (``store.events(after_id=position)``), renders each event
in one of the :mod:`twinlink.siem` formats and sends it to one target:

- ``udp://host:port`` — RFC 5426, one message per datagram. Fire and forget: UDP has no
  acknowledgement, so a datagram sent while the collector is down is lost. Use TCP or TLS
  where every event must arrive.
- ``tcp://host:port`` — RFC 6587 octet counting (``LEN SP MSG``) for ``rfc5424``; the JSON
  and CEF formats go one per line (newline-delimited, what JSON-lines and CEF TCP inputs
  read; a rendered event never contains a newline).
- ``tls://host:port`` — RFC 5425 (TLS, framed as over TCP), server certificate verified against
  the system CAs or ``ca`` (a PEM file), host name checked.
- ``file:PATH`` — one line per event appended to PATH, flushed and fsynced per batch.

**Position.** After each batch the id of its last event is written to the position file
(atomically: temp file, fsync, rename). A restarted forwarder resumes after it, so it skips
nothing and resends nothing already confirmed. "Confirmed" means: for a file, fsynced; for
TCP/TLS, every byte of the batch acknowledged by the collector's TCP (the socket's send queue
drained, checked with ``SIOCOUTQ``) with no reset or close seen from it; for UDP, handed to the
kernel. A forwarder killed between that confirmation and the position write sends that one
batch again on restart (at-least-once, at most ``batch`` events, only at that instant).

**Collector restarts (TCP/TLS).** Syslog over TCP has no application acknowledgement: a
collector that is killed with data in its socket's receive buffer loses that data even though
its TCP acknowledged it, and its kernel answers with a reset instead of an orderly close. So
when the forwarder sees a *reset* (not an orderly close), it goes back and resends every batch
it confirmed on the connection that was reset (at most ``resend_limit`` events, at least the
last batch) on the new connection — a rule about the connection, not about time, so a slow or
loaded machine resends the same. Nothing is lost across a collector restart, at the price of
possible duplicates: deduplicate on the event id (``id`` SD parameter, ECS ``event.id``,
CEF ``externalId``, OCSF ``metadata.uid``). While the collector is down the forwarder retries
with exponential backoff.

**Finality.** A row whose ``final_after`` lies in the future may still change (an aggregated
event still counting repeats); it and everything after it wait until then.

**Gaps.** The store keeps a bounded number of events; a forwarder that fell further behind than
that finds ids missing. It counts them (:attr:`ForwardStats.skipped`) and says so on its log.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union
from urllib.parse import urlsplit

from . import events as _events
from . import siem
from .errors import StateLocked, TransportError
from .fileio import atomic_write, read_regular
from .store import StorageError, TwinStore, open_store

log = logging.getLogger("twinlink.forward")

_SIOCOUTQ = 0x5411  # Linux: bytes in a TCP socket's send queue not yet acknowledged (TIOCOUTQ)

StoreSource = Union[TwinStore, Callable[[], TwinStore], str, "os.PathLike[str]"]


class CollectorDown(TransportError):
    """The collector cannot be reached, or the connection broke; ``reset`` says the collector
    may have discarded data it had already acknowledged (a TCP reset)."""

    reason = "collector_down"

    def __init__(self, message: str, reset: bool = False) -> None:
        super().__init__(message)
        self.reset = reset


@dataclass(frozen=True)
class Target:
    """A parsed ``--to`` URL."""

    scheme: str  # udp | tcp | tls | file
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.scheme == "file":
            return f"file:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_target(url: str) -> Target:
    """``udp://host:port``, ``tcp://host:port``, ``tls://host:port`` or ``file:PATH``;
    ValueError with the accepted forms otherwise."""
    if url.startswith("file:"):
        path = url[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError("file: target needs a path, e.g. file:/var/log/twinlink.log")
        return Target("file", path=path)
    parts = urlsplit(url)
    if parts.scheme not in ("udp", "tcp", "tls") or not parts.hostname:
        raise ValueError(f"unsupported target {url!r}: use udp://HOST:PORT, tcp://HOST:PORT, "
                         "tls://HOST:PORT or file:PATH")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not port:
        raise ValueError(f"target {url!r} needs a port (1-65535)")
    return Target(parts.scheme, parts.hostname, port)


# -- sinks ---------------------------------------------------------------------------------


class _Sink:
    """Moves rendered messages to the collector; ``send`` returns only once the batch is
    confirmed as described in the module docstring, else raises :class:`CollectorDown`."""

    def send(self, messages: Sequence[bytes]) -> None:
        raise NotImplementedError

    def check(self) -> None:
        """While idle: raise :class:`CollectorDown` if the connection broke."""

    def close(self) -> None:
        """Release the connection or file."""


class _UdpSink(_Sink):
    def __init__(self, target: Target) -> None:
        self.target = target
        self.sock: socket.socket | None = None
        self.addr: Any = None

    def send(self, messages: Sequence[bytes]) -> None:
        try:
            if self.sock is None:
                info = socket.getaddrinfo(self.target.host, self.target.port,
                                          type=socket.SOCK_DGRAM)[0]
                self.sock = socket.socket(info[0], socket.SOCK_DGRAM)
                self.addr = info[4]
            for m in messages:
                self.sock.sendto(m, self.addr)
        except OSError as exc:
            self.close()
            raise CollectorDown(f"cannot send to {self.target}: {exc}") from None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class _StreamSink(_Sink):
    """TCP or TLS: RFC 6587 octet counting (``octet``), or one line per message (``lf``, for
    the JSON and CEF formats, which collectors read as newline-delimited lines)."""

    def __init__(self, target: Target, ca: str | None, timeout: float,
                 ack_timeout: float, framing: str = "octet") -> None:
        self.target = target
        self.framing = framing
        self.timeout = timeout
        self.ack_timeout = ack_timeout
        self.ctx: ssl.SSLContext | None = None
        if target.scheme == "tls":
            self.ctx = ssl.create_default_context(cafile=ca)
            self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        try:
            raw = socket.create_connection((self.target.host, self.target.port),
                                           timeout=self.timeout)
        except OSError as exc:
            raise CollectorDown(f"cannot connect to {self.target}: {exc}") from None
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = raw
            if self.ctx is not None:
                sock = self.ctx.wrap_socket(raw, server_hostname=self.target.host)
            sock.settimeout(self.timeout)
        except (OSError, ssl.SSLError) as exc:
            raw.close()
            raise CollectorDown(f"TLS handshake with {self.target} failed: {exc}") from None
        log.info("connected to %s", self.target)
        return sock

    def _peer_state(self, sock: socket.socket) -> str:
        """``ok``, ``closed`` (orderly close: everything before it was read) or ``reset``.
        A syslog collector never sends us data, so readable means closing."""
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return "ok"
        sock.setblocking(False)
        try:
            data = sock.recv(4096)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return "ok"  # a TLS record without application data (a session ticket)
        except ssl.SSLZeroReturnError:
            return "closed"
        except OSError:
            return "reset"
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(self.timeout)
        return "closed" if not data else "ok"

    def _fail(self, why: str, reset: bool) -> CollectorDown:
        self.close()
        return CollectorDown(f"{self.target}: {why}", reset=reset)

    def check(self) -> None:
        if self.sock is not None:
            state = self._peer_state(self.sock)
            if state != "ok":
                raise self._fail(f"collector {state} the connection", state == "reset")

    def send(self, messages: Sequence[bytes]) -> None:
        if self.sock is None:
            self.sock = self._connect()
        sock = self.sock
        self.check()
        if self.framing == "octet":
            payload = b"".join(b"%d %s" % (len(m), m) for m in messages)
        else:
            payload = b"".join(m + b"\n" for m in messages)
        try:
            sock.sendall(payload)
        except OSError as exc:
            raise self._fail(f"send failed: {exc}", True) from None
        self._confirm(sock)

    def _confirm(self, sock: socket.socket) -> None:
        """Wait until the collector's TCP has acknowledged every byte, with no close or reset
        from it meanwhile."""
        deadline = time.monotonic() + self.ack_timeout
        fd = sock.fileno()
        buf = bytearray(4)
        delay = 0.0005
        while True:
            state = self._peer_state(sock)
            if state != "ok":
                raise self._fail(f"collector {state} the connection during a batch", True)
            try:
                fcntl.ioctl(fd, _SIOCOUTQ, buf)
            except OSError:
                return  # not Linux: sendall returning is all we can know
            if struct.unpack("i", bytes(buf))[0] == 0:
                return
            if time.monotonic() > deadline:
                raise self._fail(f"no acknowledgement within {self.ack_timeout:g} s", True)
            select.select([sock], [], [], delay)
            delay = min(delay * 2, 0.05)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError, ValueError):
                if isinstance(self.sock, ssl.SSLSocket):
                    # close_notify, so the collector sees an orderly end, not a truncation
                    self.sock.settimeout(1.0)
                    self.sock.unwrap()
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


class _FileSink(_Sink):
    def __init__(self, target: Target) -> None:
        self.path = target.path
        self.fd: int | None = None

    def send(self, messages: Sequence[bytes]) -> None:
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            data = memoryview(b"".join(m + b"\n" for m in messages))
            while data:
                data = data[os.write(self.fd, data):]
            os.fsync(self.fd)
        except OSError as exc:
            self.close()
            raise CollectorDown(f"cannot append to {self.path}: {exc}") from None

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def _sink(target: Target, fmt: str, ca: str | None, timeout: float,
          ack_timeout: float) -> _Sink:
    if target.scheme == "udp":
        return _UdpSink(target)
    if target.scheme == "file":
        return _FileSink(target)
    return _StreamSink(target, ca, timeout, ack_timeout,
                       "octet" if fmt == "rfc5424" else "lf")


# -- position --------------------------------------------------------------------------------


class Position:
    """The forwarder's position (id of the last event confirmed) in a small JSON file written
    atomically, with a lock file so two forwarders never share one position."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Take the position's lock; :class:`~twinlink.errors.StateLocked` if another
        forwarder holds it."""
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StateLocked(f"another forwarder uses position file {self.path}") from None
            raise
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> int | None:
        """The saved position, or None when there is no file yet. A corrupt file raises
        :class:`~twinlink.errors.StateError` rather than silently restarting from 0."""
        from .errors import StateError

        try:
            data, _ = read_regular(self.path, 4096)
        except FileNotFoundError:
            return None
        try:
            pos = json.loads(data)["after_id"]
        except (ValueError, KeyError, TypeError):
            raise StateError(f"forwarder position file {self.path} is corrupt; fix or remove "
                             "it (removing resends every stored event)") from None
        if type(pos) is not int or pos < 0:
            raise StateError(f"forwarder position file {self.path} holds no valid id")
        return pos

    def save(self, after_id: int, **info: Any) -> None:
        atomic_write(self.path, json.dumps({"after_id": after_id, **info}) + "\n")


# -- the forwarder ---------------------------------------------------------------------------


@dataclass
class ForwardStats:
    forwarded: int = 0  # events confirmed (resends included)
    batches: int = 0
    resent: int = 0  # events sent again after a collector reset
    skipped: int = 0  # ids missing from the store (dropped by its event cap before we got them)
    reconnects: int = 0
    position: int = 0
    errors: list[str] = field(default_factory=list)


def ready_prefix(rows: Sequence[Mapping[str, Any]], now: float
                 ) -> tuple[list[Mapping[str, Any]], float | None]:
    """The leading rows that are final at ``now``, and when the first row that is not will be
    (None if all are). Rows are in id order; a row that may still change holds back every row
    after it, so positions only ever move past final events."""
    out: list[Mapping[str, Any]] = []
    for r in rows:
        fa = r.get("final_after")
        if isinstance(fa, (int, float)) and not isinstance(fa, bool) and fa > now:
            return out, float(fa)
        out.append(r)
    return out, None


class Forwarder:
    """Tail a twin store and forward its events to one collector (see the module docstring).

    ``store`` is a :class:`~twinlink.store.TwinStore`, a callable returning one, or a database
    path (opened read-only). ``position_file`` None keeps the position in memory only
    (starting after ``start_after``). Raises ValueError for a bad target or format,
    :class:`~twinlink.errors.StateLocked` when another forwarder holds the position file.
    """

    def __init__(
        self,
        store: StoreSource,
        to: str,
        fmt: str = "rfc5424",
        position_file: str | os.PathLike[str] | None = None,
        *,
        options: siem.Options | None = None,
        ca: str | None = None,
        batch: int = 500,
        start_after: int = 0,
        poll: float = 0.5,
        backoff: tuple[float, float] = (0.25, 30.0),
        timeout: float = 10.0,
        ack_timeout: float = 10.0,
        resend_limit: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.target = parse_target(to)
        self.fmt = fmt
        self._render = siem.renderer(fmt)
        if not 1 <= batch <= 10_000:
            raise ValueError("batch must be 1..10000")
        self.options = options or siem.Options()
        self.batch = batch
        self.poll = poll
        self.backoff = backoff
        self.resend_limit = resend_limit
        self.clock = clock
        self.stats = ForwardStats()
        self._own_store = False
        if isinstance(store, TwinStore):
            self.store = store
        elif callable(store):
            self.store = store()
            self._own_store = True
        else:
            self.store = open_store(store, readonly=True)
            self._own_store = True
        self.position: Position | None = None
        pos = start_after
        try:
            if position_file is not None:
                self.position = Position(position_file)
                self.position.lock()
                saved = self.position.load()
                pos = saved if saved is not None else start_after
        except BaseException:
            self.close()
            raise
        self.after_id = pos
        self.stats.position = pos
        self._sink = _sink(self.target, fmt, ca, timeout, ack_timeout)
        # (confirmed at, position before the batch) of batches on the current connection
        self._recent: deque[tuple[float, int]] = deque(maxlen=1000)

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection, release the position lock and a store opened here."""
        sink = getattr(self, "_sink", None)
        if sink is not None:
            sink.close()
        if self.position is not None:
            self.position.unlock()
        if self._own_store:
            self.store.close()
            self._own_store = False

    def _line(self, row: Mapping[str, Any]) -> bytes:
        ev = _events.normalise(row)
        try:
            return self._render(ev, self.options).encode("utf-8")
        except Exception as exc:  # a renderer bug must not wedge the stream on one event
            log.exception("cannot render event %s", ev["id"])
            stub = {"id": ev["id"], "time": ev["time"], "type": _events.UNCLASSIFIED,
                    "reason": "render_failed",
                    "detail": f"event could not be rendered ({type(exc).__name__})"}
            return self._render(_events.normalise(stub), self.options).encode("utf-8")

    def _save(self, after_id: int) -> None:
        self.after_id = after_id
        self.stats.position = after_id
        if self.position is not None:
            self.position.save(after_id, to=str(self.target), format=self.fmt)

    def _rewind(self) -> None:
        """After a collector reset: go back to the oldest batch confirmed on the reset connection
        (within ``resend_limit`` events, at least the last batch), and persist that so a crash
        now skips nothing."""
        if not self._recent:
            return
        start = self._recent[-1][1]
        for _, before in self._recent:  # oldest first
            if self.after_id - before <= self.resend_limit:
                start = before
                break
        self._recent.clear()
        if start < self.after_id:
            log.warning("collector reset the connection: resending events after id %d", start)
            self.stats.resent += self.after_id - start
            self._save(start)

    def _down(self, exc: CollectorDown) -> None:
        self.stats.reconnects += 1
        self.stats.errors = [*self.stats.errors, str(exc)][-20:]
        if exc.reset:
            self._rewind()
        else:
            self._recent.clear()

    def pending(self) -> tuple[list[Mapping[str, Any]], float | None]:
        """The next batch of final rows after the position, and when a held-back row becomes
        final (None if none is held back)."""
        rows = self.store.events(None, self.batch, after_id=self.after_id, audit=True)
        return ready_prefix(rows, self.clock())  # type: ignore[arg-type]

    def step(self) -> int:
        """Forward one batch; return how many events were confirmed (0 when there is nothing
        final to send). Raises :class:`CollectorDown` (position unchanged, or rewound after a
        reset) and :class:`~twinlink.store.StorageError`."""
        rows, _ = self.pending()
        if not rows:
            try:
                self._sink.check()
            except CollectorDown as exc:
                self._down(exc)
                raise
            return 0
        first = int(rows[0]["id"])
        lines = [self._line(r) for r in rows]
        try:
            self._sink.send(lines)
        except CollectorDown as exc:
            self._down(exc)
            raise
        if first > self.after_id + 1:
            gap = first - self.after_id - 1
            self.stats.skipped += gap
            log.warning("%d events (ids %d..%d) left the store before they were forwarded "
                        "(its event cap)", gap, self.after_id + 1, first - 1)
        before = self.after_id
        self._save(int(rows[-1]["id"]))
        self._recent.append((time.monotonic(), before))
        self.stats.forwarded += len(rows)
        self.stats.batches += 1
        return len(rows)

    def run(self, stop: threading.Event | None = None, *, until_idle: bool = False
            ) -> ForwardStats:
        """Forward until ``stop`` is set (or, with ``until_idle``, until nothing final is left),
        retrying with exponential backoff while the collector or the store fails."""
        stop = stop or threading.Event()
        delay = self.backoff[0]
        while not stop.is_set():
            try:
                n = self.step()
            except (CollectorDown, StorageError) as exc:
                log.warning("%s; retrying in %.2f s", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            delay = self.backoff[0]
            if n:
                continue
            _, held = self.pending()
            if until_idle and held is None:
                break
            wait = self.poll if held is None else min(self.poll, max(0.0, held - self.clock()))
            stop.wait(max(wait, 0.01))
        return self.stats


def default_position_file(db: str, to: str, fmt: str) -> str:
    """``<db>.forward-<hash>.pos``: one position per (database, target, format)."""
    import hashlib

    tag = hashlib.sha256(f"{to}|{fmt}".encode()).hexdigest()[:10]
    return f"{db}.forward-{tag}.pos"
