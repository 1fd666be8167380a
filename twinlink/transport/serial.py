"""The serial transport: twinlink frames over a pyserial port, opened by URL.

``SerialLink("/dev/ttyUSB0")`` (or ``loop://``, ``socket://host:port``, ``rfc2217://host:port``)
carries frames as COBS records with a CRC-16 (see :mod:`twinlink.transport.framing` and
docs/SERIAL.md). ``Device(..., link=SerialLink(url)).send({...})`` sends over it;
:class:`twinlink.ingest.SerialReceiver` feeds what arrives to a :class:`~twinlink.Twin`.

Thread model
------------
Each link has **one I/O thread** (``twinlink-serial <url>``) that owns the port: it opens it,
reads it, reopens it with exponential backoff when it vanishes, drains the reconnect queue and
closes it. Every callback (``on_frame``, ``on_line_error``, ``on_batch``, ``on_state``, and the
receiver's ``on_result``) runs on that thread, in wire order; a slow callback delays reading (the
OS buffers a few KiB, then the sender's writes time out), so hand heavy work to your own queue.

``send`` may be called from any thread. While the port is up and nothing is queued it writes on
the caller's thread under the link's write lock, bounded by ``write_timeout``: a write that cannot
complete in time raises :class:`~twinlink.TransportError` (the record may be half written; the
next record's leading 0x00 cuts it off, and the receiver counts one line error). While the port
is down, ``send`` queues the record and returns at once; the I/O thread writes the queue, in
order, before any new write once the port is back.

Reconnect queue policy
----------------------
The queue is in memory and bounded (``queue_size`` records). When it is full, ``send`` raises
:class:`~twinlink.TransportError` and the frame is *not* queued (``overflow="raise"``, the
default: the caller decides, nothing is dropped silently), or the oldest queued record is dropped
and counted in ``stats["dropped"]`` (``overflow="drop_oldest"``: freshest data wins). Records
still queued when the process exits are lost; use MQTT's durable outbox where that matters. A
record interrupted by a disconnect is re-queued whole; if the receiver already had it, the twin's
replay window refuses the copy (``replay``), so nothing is stored twice.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Union

import serial

from ..backoff import Backoff
from ..errors import FrameTooLarge, LineError, TransportError
from . import framing

log = logging.getLogger("twinlink.serial")

#: Everything pyserial and the OS raise when a port is missing, vanished or unusable.
PORT_ERRORS = (serial.SerialException, OSError, ValueError, TypeError)

Item = Union[bytes, LineError]


def is_url(port: str) -> bool:
    """True for pyserial URLs (``loop://``, ``socket://…``), false for device paths."""
    return "://" in port


def open_port(url: str, *, baudrate: int = 115200, read_timeout: float = 0.1,
              write_timeout: float = 5.0, exclusive: bool = True) -> serial.SerialBase:
    """Open a port by path or pyserial URL with timeouts set; raise :class:`TransportError`.

    Device paths are locked exclusively (``flock``) on POSIX, so a second process gets a clear
    error instead of stealing bytes; URLs (sockets, loop://) have no such notion.
    """
    try:
        port = serial.serial_for_url(url, do_not_open=True)
        port.baudrate = baudrate
        port.timeout = read_timeout
        port.write_timeout = write_timeout
        if exclusive and not is_url(url) and os.name == "posix":
            port.exclusive = True
        port.open()
    except PORT_ERRORS as exc:
        raise TransportError(f"cannot open serial port {url}: {exc}") from None
    return port


class SerialLink:
    """A framed, self-healing serial link; see the module docstring for threads and queueing.

    Callbacks: ``on_frame(bytes)`` per intact frame, ``on_line_error(LineError)`` per damaged
    record, ``on_state(str)`` on (dis)connection, and ``on_batch(items)`` once per read with all
    of that read's frames and line errors in wire order (an ingest opens them as one batch; if it
    raises, the error is logged and those frames count as not delivered). Raises
    :class:`TransportError` from the constructor if the port cannot be opened (unless
    ``require_open=False``: then it starts disconnected and keeps trying with backoff).
    """

    def __init__(self, url: str, *, baudrate: int = 115200, write_timeout: float = 5.0,
                 read_timeout: float = 0.1, max_frame: int = framing.DEFAULT_MAX_FRAME,
                 queue_size: int = 1024, overflow: str = "raise",
                 on_frame: Callable[[bytes], None] | None = None,
                 on_line_error: Callable[[LineError], None] | None = None,
                 on_state: Callable[[str], None] | None = None,
                 on_batch: Callable[[Sequence[Item]], None] | None = None,
                 reconnect: bool = True, backoff: float = 0.05, max_backoff: float = 2.0,
                 exclusive: bool = True, flush_prefix: bool = True,
                 require_open: bool = True) -> None:
        if overflow not in ("raise", "drop_oldest"):
            raise ValueError("overflow must be 'raise' or 'drop_oldest'")
        if queue_size < 0:
            raise ValueError("queue_size must be >= 0")
        self.url = url
        self.baudrate, self.write_timeout, self.read_timeout = baudrate, write_timeout, read_timeout
        self.max_frame, self.queue_size, self.overflow = max_frame, queue_size, overflow
        self.on_frame, self.on_line_error, self.on_state = on_frame, on_line_error, on_state
        self.on_batch = on_batch
        self.reconnect, self.backoff, self.max_backoff = reconnect, backoff, max_backoff
        self.exclusive, self.flush_prefix = exclusive, flush_prefix
        self.decoder = framing.Decoder(max_frame)
        self.stats: dict[str, int] = {"sent": 0, "queued": 0, "dropped": 0, "received": 0,
                                      "line_errors": 0, "reconnects": 0, "write_timeouts": 0}
        self._lock = threading.Lock()  # guards _port, _queue, stats
        self._write_lock = threading.Lock()  # one writer on the port at a time
        self._queue: collections.deque[bytes] = collections.deque()
        self._port: serial.SerialBase | None = None  # published: direct writes allowed
        self._idle = threading.Condition(self._lock)  # notified when the queue empties
        self._closing = threading.Event()
        self._connected = threading.Event()
        self._last_error = ""
        first: serial.SerialBase | None = None
        try:
            first = self._open()
        except TransportError as exc:
            if require_open:
                raise
            self._last_error = str(exc)
        self._thread = threading.Thread(target=self._run, args=(first,),
                                        name=f"twinlink-serial {url}", daemon=True)
        self._thread.start()
        if first is not None:
            self._connected.wait(1.0)

    def __repr__(self) -> str:
        return f"SerialLink({self.url!r}, {'connected' if self.connected else 'disconnected'})"

    # -- public API ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def pending(self) -> int:
        """Records waiting in the reconnect queue."""
        with self._lock:
            return len(self._queue)

    @property
    def last_error(self) -> str:
        return self._last_error

    def send(self, frame: bytes) -> None:
        """Send one frame; raise :class:`TransportError` on a write timeout, a full queue or
        a closed link, :class:`FrameTooLarge` above ``max_frame``. Returns once written or
        queued (see the module docstring)."""
        if len(frame) > self.max_frame:
            raise FrameTooLarge(f"frame of {len(frame)} bytes exceeds the link's maximum "
                                f"{self.max_frame}")
        record = framing.wire(frame, flush_prefix=self.flush_prefix)
        with self._lock:
            if self._closing.is_set():
                raise TransportError(f"serial link {self.url} is closed")
            port = self._port
            if port is None or self._queue:
                self._enqueue(record)
                return
        err = self._write(port, record)
        if isinstance(err, serial.SerialTimeoutException):
            raise TransportError(
                f"write to {self.url} did not complete within {self.write_timeout} s "
                "(is the other side reading?)")
        if err is not None:
            self._lost(port, err)
            with self._lock:
                self._enqueue(record, front=True)

    def wait_connected(self, timeout: float) -> bool:
        """Block until the port is open (and the queue written); False on timeout."""
        return self._connected.wait(timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until the reconnect queue is empty; True if it is, False after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._queue:
                left = deadline - time.monotonic()
                if left <= 0 or self._closing.is_set():
                    return False
                self._idle.wait(min(left, 0.1))
        return True

    def close(self, timeout: float = 0.0) -> int:
        """Stop the I/O thread and close the port after waiting up to ``timeout`` seconds for
        queued records; return how many queued records were abandoned (logged if any)."""
        if timeout > 0:
            self.flush(timeout)
        self._closing.set()
        self._thread.join(max(2.0, self.write_timeout + 1.0))
        with self._lock:
            abandoned = len(self._queue)
            self._queue.clear()
            port, self._port = self._port, None
        if port is not None:  # the thread did not finish in time; close from here
            self._close_port(port)
        if abandoned:
            log.warning("serial link %s closed with %d queued frames unsent", self.url, abandoned)
        return abandoned

    def __enter__(self) -> SerialLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _open(self) -> serial.SerialBase:
        return open_port(self.url, baudrate=self.baudrate, read_timeout=self.read_timeout,
                         write_timeout=self.write_timeout, exclusive=self.exclusive)

    def _write(self, port: serial.SerialBase, record: bytes) -> BaseException | None:
        """Write one record under the write lock, counting it; return None once written, the
        :class:`serial.SerialTimeoutException` if the peer did not take it within
        ``write_timeout``, or the error of a port that failed."""
        with self._write_lock:
            try:
                n = port.write(record)
                if n is not None and n != len(record):
                    raise serial.SerialTimeoutException("short write")
            except serial.SerialTimeoutException as exc:
                with self._lock:
                    self.stats["write_timeouts"] += 1
                return exc
            except PORT_ERRORS as exc:
                return exc
        with self._lock:
            self.stats["sent"] += 1
        return None

    def _enqueue(self, record: bytes, front: bool = False) -> None:
        # Caller holds self._lock.
        if len(self._queue) >= self.queue_size:
            if self.overflow == "raise" or self.queue_size == 0:
                raise TransportError(
                    f"serial link {self.url} is down and its queue of {self.queue_size} frames "
                    f"is full{': ' + self._last_error if self._last_error else ''}")
            self._queue.popleft()
            self.stats["dropped"] += 1
        if front:
            self._queue.appendleft(record)
        else:
            self._queue.append(record)
        self.stats["queued"] += 1

    def _lost(self, port: serial.SerialBase, exc: BaseException) -> None:
        """The port failed: unpublish it so sends queue; the I/O thread closes and reopens it."""
        with self._lock:
            if self._port is port:
                self._port = None
                self._connected.clear()
                self._last_error = str(exc)

    def _close_port(self, port: serial.SerialBase) -> None:
        # Under the write lock: never close the fd under a writer (its number could be reused).
        with self._write_lock:
            try:
                port.close()
            except PORT_ERRORS:
                pass

    def _state(self, state: str) -> None:
        log.info("serial link %s %s", self.url, state)
        if self.on_state is not None:
            self._call(self.on_state, state)

    def _call(self, fn: Callable[[Any], None], arg: Any) -> None:
        _safe_call(fn, arg, self.url)

    def _drain(self, port: serial.SerialBase) -> bool:
        """Write the reconnect queue in order, then publish the port; False if it failed."""
        while True:
            with self._lock:
                if not self._queue:
                    self._port = port
                    self._connected.set()
                    self._idle.notify_all()
                    return True
                record = self._queue[0]
            if self._closing.is_set():
                return False
            err = self._write(port, record)
            if isinstance(err, serial.SerialTimeoutException):
                return True  # peer not reading: keep the queue, keep reading, retry
            if err is not None:
                self._last_error = str(err)
                return False
            with self._lock:
                self._queue.popleft()

    def _run(self, port: serial.SerialBase | None) -> None:
        # The port usually comes back after a USB re-enumeration: no jitter, one process waits.
        backoff = Backoff(self.backoff, max(self.backoff, self.max_backoff), jitter=False)
        ever = port is not None
        while not self._closing.is_set():
            if port is None:
                try:
                    port = self._open()
                except TransportError as exc:
                    self._last_error = str(exc)
                    self._closing.wait(backoff.next())
                    continue
                backoff.reset()
                if ever:
                    with self._lock:
                        self.stats["reconnects"] += 1
                ever = True
                self.decoder = framing.Decoder(self.max_frame)  # a half record died with the port
            if self._port is not port:
                if not self._drain(port):
                    self._drop_port(port)
                    port = None
                    continue
                if self._port is port:
                    self._state("connected")
            assert port is not None
            try:
                data = port.read(max(1, min(port.in_waiting, 1 << 16)))
            except PORT_ERRORS as exc:
                self._lost(port, exc)
                self._drop_port(port)
                port = None
                if not self.reconnect:
                    break
                self._closing.wait(backoff.next())
                continue
            if data:
                try:
                    self._on_data(data)
                except Exception:  # e.g. the twin's database failed: keep the port's reader
                    log.exception("serial link %s: handling %d received bytes failed; the "
                                  "frames in them were not delivered", self.url, len(data))
        if port is not None:
            self._lost(port, TransportError("closed"))
            self._close_port(port)

    def _drop_port(self, port: serial.SerialBase) -> None:
        self._close_port(port)
        self._state(f"disconnected ({self._last_error})")

    def _on_data(self, data: bytes) -> None:
        """Handle bytes from the wire (the protocol hook; subclasses may override)."""
        items = list(self.decoder.feed(data))
        if items:
            self._handle_items(items)

    def _handle_items(self, items: Sequence[Item]) -> None:
        for item in items:
            if isinstance(item, LineError):
                with self._lock:
                    self.stats["line_errors"] += 1
                if self.on_line_error is not None:
                    self._call(self.on_line_error, item)
            else:
                with self._lock:
                    self.stats["received"] += 1
                if self.on_frame is not None:
                    self._call(self.on_frame, item)
        if self.on_batch is not None:
            self.on_batch(items)  # errors reach _run's guard: the read's frames were not handled


def _safe_call(fn: Callable[[Any], None], arg: Any, url: str) -> None:
    try:
        fn(arg)
    except Exception:  # a callback bug must not kill the port's only reader
        log.exception("serial link %s: callback %r failed", url, fn)


__all__ = ["PORT_ERRORS", "Item", "SerialLink", "is_url", "open_port"]
