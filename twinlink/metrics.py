"""Prometheus metrics for the ingest processes and senders, with the official
``prometheus_client``.

The ingest code calls the module functions (:func:`frame`, :func:`event`, …) unconditionally:
they do nothing until :func:`enable` (or :func:`serve_metrics`) has run, and
``prometheus_client`` is imported only then, so a process without ``--metrics`` pays neither
import time nor memory for it. Series (Prometheus naming: one ``twinlink_`` prefix, base units,
``_total`` counters, build metadata in an ``_info`` metric; ``_created`` series are off):

- ``twinlink_frames_total{result}`` — frames handled: ``stored``, or the refusal reason
  (``replay``, ``bad_signature`` … as ``twinlink open`` prints it), ``line`` for serial line
  damage; anything else counts as ``other``.
- ``twinlink_events_total{type}`` — security events by catalogue type (``frame.replay`` …);
  an aggregated event counts every repeat it stands for.
- ``twinlink_readings_stored_total`` — readings committed to the twin store.
- ``twinlink_ingest_latency_seconds`` — histogram: frame received to stored (or refused).
- ``twinlink_device_last_seen_timestamp_seconds{device}`` — per device, when its last
  accepted frame arrived (Unix time). Cardinality: one series per device this process has seen
  accept a frame, i.e. at most the fleet size (a fleet of 10 000 devices is 10 000 series);
  :func:`forget_device` drops one (a removed device).
- ``twinlink_outbox_frames``, ``twinlink_outbox_oldest_age_seconds`` — a sender's durable
  outbox: frames awaiting the twin's acknowledgement, and the age of the oldest (computed at
  scrape time).
- ``twinlink_outbox_dead_letters`` — frames the twin refused for good, kept in the outbox's
  dead letters (all runs).
- ``twinlink_outbox_frames_sent_total`` (resends included), ``…_resent_total``,
  ``…_released_total`` (stored, as the twin acknowledged), ``…_refused_total`` (moved to the
  dead letters by this process) — a sender's delivery.
- ``twinlink_acks_received_total{result}`` — end-to-end acks a sender received: ``accepted``
  (authentic, settled queued frames), ``stale`` (authentic but naming nothing queued: a
  duplicate or replayed ack), ``forged`` (did not authenticate: ``ack.forged``);
  ``twinlink_ack_conflicts_total`` — ack entries naming a queued seq with another frame's
  digest (``ack.conflict``).

The sender series are read at scrape time from every live
:class:`~twinlink.delivery.Delivery` (a bridge's or ``send``'s; summed when a process has
several), which registers itself with :func:`track_sender` whether or not metrics are enabled
(a weak reference, nothing else).
- ``twinlink_devices{state}`` — registered devices by state (``active``, ``revoked``,
  ``window_lost``).
- ``twinlink_build_info{version,backend}`` — 1, labelled with the twinlink version and the
  active frame backend (``native`` or ``pure``).

Plus the client's standard ``process_*`` and ``python_*`` series.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from . import events as _events
from .errors import TwinlinkError

log = logging.getLogger("twinlink.metrics")

#: Latency buckets (seconds): a frame is stored in about a millisecond when batches are small,
#: tens of milliseconds under load (batch wait + fsync).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
DEVICE_STATES = ("active", "revoked", "window_lost")


class MetricsUnavailable(TwinlinkError):
    """prometheus_client is not installed, or the metrics port cannot be opened."""

    reason = "metrics"


def _frame_results() -> frozenset[str]:
    ingest = {t.reason for t in _events.types()
              if t.side == "twin" and t.namespace in ("frame", "ingest")}
    return frozenset(ingest | {"stored", "line"})


class Metrics:
    """One set of twinlink series in its own registry (with the process and platform
    collectors). Raises :class:`MetricsUnavailable` if prometheus_client is missing."""

    def __init__(self) -> None:
        try:
            import prometheus_client as pc
        except ImportError:
            raise MetricsUnavailable("prometheus_client is not installed — pip install "
                                     "prometheus_client") from None
        from . import __version__, backends

        pc.disable_created_metrics()
        self._pc = pc
        reg = self.registry = pc.CollectorRegistry()
        pc.ProcessCollector(registry=reg)
        pc.PlatformCollector(registry=reg)
        pc.GCCollector(registry=reg)
        self.frames = pc.Counter("twinlink_frames", "Frames handled by the ingest, by result "
                                 "(stored, or the refusal reason)", ["result"], registry=reg)
        self.events = pc.Counter("twinlink_events", "Security events by catalogue type "
                                 "(aggregated repeats counted)", ["type"], registry=reg)
        self.readings = pc.Counter("twinlink_readings_stored", "Readings committed to the twin "
                                   "store", registry=reg)
        self.latency = pc.Histogram("twinlink_ingest_latency_seconds", "Time from a frame's "
                                    "arrival to its commit or refusal", registry=reg,
                                    buckets=LATENCY_BUCKETS)
        self.last_seen = pc.Gauge("twinlink_device_last_seen_timestamp_seconds",
                                  "Unix time of the device's last accepted frame",
                                  ["device"], registry=reg)
        # Set by outbox() for a sender that is not a tracked Delivery; added to the tracked.
        self._frames = 0
        self._oldest: Optional[float] = None
        reg.register(_SenderCollector(self))
        self.devices = pc.Gauge("twinlink_devices", "Registered devices by state", ["state"],
                                registry=reg)
        for state in DEVICE_STATES:
            self.devices.labels(state).set(0)
        self.build = pc.Info("twinlink_build", "twinlink version and active frame backend",
                             registry=reg)
        self.build.info({"version": __version__, "backend": backends.name()})
        self._results = _frame_results()
        self._types = frozenset(t.name for t in _events.types())

    def frame(self, result: str, n: int = 1) -> None:
        self.frames.labels(result if result in self._results else "other").inc(n)

    def event(self, type_name: str, n: int = 1) -> None:
        if type_name not in self._types:  # registered after enable(), or unknown
            self._types = frozenset(t.name for t in _events.types())
            if type_name not in self._types:
                type_name = _events.UNCLASSIFIED
        self.events.labels(type_name).inc(n)

    def render(self) -> bytes:
        """The exposition text, as a scrape would get it."""
        return bytes(self._pc.generate_latest(self.registry))


_lock = threading.Lock()
_metrics: Optional[Metrics] = None


def enable() -> Metrics:
    """Create the process-wide metrics (idempotent) and return them."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = Metrics()
        return _metrics


def enabled() -> Optional[Metrics]:
    """The process-wide metrics, or None if :func:`enable` has not run."""
    return _metrics


# -- the API the ingest processes call (no-ops until enabled) --------------------------------


def frame(result: str, n: int = 1) -> None:
    """Count ``n`` frames with ``result`` (``stored`` or a refusal reason)."""
    m = _metrics
    if m is not None:
        m.frame(result, n)


def event(type_name: str, n: int = 1) -> None:
    """Count ``n`` security events of catalogue type ``type_name``."""
    m = _metrics
    if m is not None:
        m.event(type_name, n)


def readings_stored(n: int = 1) -> None:
    m = _metrics
    if m is not None:
        m.readings.inc(n)


def ingest_latency(seconds: float) -> None:
    """Observe one frame's arrival-to-commit time."""
    m = _metrics
    if m is not None:
        m.latency.observe(seconds)


def device_seen(device: str, when: float) -> None:
    """Record the arrival time of ``device``'s latest accepted frame."""
    m = _metrics
    if m is not None:
        m.last_seen.labels(device).set(when)


def forget_device(device: str) -> None:
    """Drop ``device``'s last-seen series (a removed device)."""
    m = _metrics
    if m is not None:
        try:
            m.last_seen.remove(device)
        except KeyError:
            pass


def outbox(frames: int, oldest_time: Optional[float]) -> None:
    """A sender's outbox: how many frames wait, and when the oldest was queued (None if
    empty); the age is computed at scrape time."""
    m = _metrics
    if m is not None:
        m._frames, m._oldest = frames, oldest_time


_senders: weakref.WeakSet[Any] = weakref.WeakSet()
_senders_lock = threading.Lock()


def track_sender(delivery: Any) -> None:
    """Expose ``delivery``'s outbox and ack series (a :class:`~twinlink.delivery.Delivery`:
    anything with ``metrics_snapshot()``) while it lives; costs a weak reference, and the
    snapshot is taken only when metrics are scraped."""
    with _senders_lock:
        _senders.add(delivery)


def _sender_snapshots() -> list[Mapping[str, Any]]:
    with _senders_lock:
        senders = list(_senders)
    out = []
    for d in senders:
        try:
            snap = d.metrics_snapshot()
        except sqlite3.Error as exc:  # its outbox closed under the scrape: left out of this one
            log.debug("metrics: a sender's outbox could not be read: %s", exc)
            snap = None
        if snap is not None:
            out.append(snap)
    return out


#: name, help, snapshot key: the sender counters (exposed with ``_total``).
_SENDER_COUNTERS = (
    ("twinlink_outbox_frames_sent", "Frames a sender handed to its transport, resends "
     "included", "sent"),
    ("twinlink_outbox_frames_resent", "Frames a sender sent again (no acknowledgement in time, "
     "or a reconnect)", "resent"),
    ("twinlink_outbox_frames_released", "Frames released from a sender's outbox as stored by "
     "the twin", "released"),
    ("twinlink_outbox_frames_refused", "Frames the twin refused for good, moved to the "
     "outbox's dead letters by this process", "refused"),
    ("twinlink_ack_conflicts", "Acknowledgement entries naming a queued sequence number with "
     "another frame's digest (ack.conflict)", "conflicts"),
)
ACK_RESULTS = ("accepted", "stale", "forged")


class _SenderCollector:
    """The sender series, computed from the tracked deliveries at scrape time."""

    def __init__(self, m: Metrics) -> None:
        self._m = m

    def describe(self) -> list[Any]:
        return self._families([])

    def collect(self) -> list[Any]:
        return self._families(_sender_snapshots())

    def _families(self, snaps: list[Mapping[str, Any]]) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self._m
        oldest = [t for t in [m._oldest, *(s["oldest"] for s in snaps)] if t is not None]
        fams: list[Any] = [
            GaugeMetricFamily("twinlink_outbox_frames", "Frames in the sender's outbox "
                              "awaiting the twin's acknowledgement",
                              value=m._frames + sum(s["frames"] for s in snaps)),
            GaugeMetricFamily("twinlink_outbox_oldest_age_seconds", "Age of the oldest frame "
                              "in the sender's outbox (0 when empty)",
                              value=max(0.0, time.time() - min(oldest)) if oldest else 0.0),
            GaugeMetricFamily("twinlink_outbox_dead_letters", "Frames the twin refused for "
                              "good, kept in the outbox's dead letters (all runs)",
                              value=sum(s["dead_letters"] for s in snaps)),
        ]
        for name, doc, key in _SENDER_COUNTERS:
            fams.append(CounterMetricFamily(name, doc, value=sum(s[key] for s in snaps)))
        acks = CounterMetricFamily("twinlink_acks_received", "End-to-end acknowledgements a "
                                   "sender received, by result", labels=["result"])
        for result in ACK_RESULTS:
            acks.add_metric([result], sum(s["acks"][result] for s in snaps))
        fams.append(acks)
        return fams


def devices(counts: Mapping[str, int]) -> None:
    """Set the devices-by-state gauge; states not given are 0."""
    m = _metrics
    if m is not None:
        for state in DEVICE_STATES:
            m.devices.labels(state).set(int(counts.get(state, 0)))


def device_counts(store: Any) -> dict[str, int]:
    """Devices by registry status from a :class:`~twinlink.store.TwinStore` (``active``,
    ``revoked``); ``window_lost`` needs per-device status and is counted only for stores with
    few devices (at most 1000), else left out."""
    recs = store.devices()
    counts = {s: 0 for s in DEVICE_STATES}
    for r in recs:
        counts[r.status if r.status in counts else "active"] += 1
    if len(recs) <= 1000:
        lost = 0
        for r in recs:
            st = store.status(r.name)
            lost += bool(st["window_lost"])
        counts["window_lost"] = lost
    return counts


# -- the exporter ----------------------------------------------------------------------------


@dataclass
class MetricsServer:
    """A running exporter: ``host``/``port`` it listens on; :meth:`close` stops it."""

    host: str
    port: int
    _server: Any
    _thread: Any

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (loopback); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--metrics wants HOST:PORT (e.g. 127.0.0.1:9464), not {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "127.0.0.1", int(port)


def serve_metrics(host_port: str, metrics: Optional[Metrics] = None) -> MetricsServer:
    """Enable the metrics and serve them over HTTP at ``host_port`` (``/metrics``; port 0
    picks a free one) from a daemon thread. Raises ValueError for a bad address,
    :class:`MetricsUnavailable` if the port cannot be opened or prometheus_client is missing.
    """
    host, port = parse_host_port(host_port)
    m = metrics or enable()
    try:
        started = m._pc.start_http_server(port, addr=host, registry=m.registry)
    except OSError as exc:
        raise MetricsUnavailable(f"cannot serve metrics on {host_port}: {exc}") from None
    if not isinstance(started, tuple):  # prometheus_client < 0.20 returned nothing
        raise MetricsUnavailable("prometheus_client >= 0.20 is required")
    server, thread = started
    return MetricsServer(host, int(server.server_address[1]), server, thread)
