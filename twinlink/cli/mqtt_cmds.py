"""MQTT commands: ``send --mqtt`` (device, through the durable outbox) and ``serve`` (ingest)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .. import transport
from ..device import Device
from ..mqtt_link import MqttLink
from ..outbox import DEFAULT_CAPACITY, OutboxFull
from ..transport.mqtt import MqttOptions, connect_options
from . import EXIT_PENDING, EXIT_TRANSPORT, EXIT_USAGE, READING_HINT, fail, json_readings

SEAL_BATCH = 256


def _options(args: argparse.Namespace) -> MqttOptions:
    return connect_options(ca=args.ca, cert=args.cert, key=args.key, username=args.username,
                           password_file=args.password_file,
                           backoff_max=args.reconnect_max)


def _readings(stream: Any) -> list[dict[str, Any]]:
    out = []
    for lineno, reading, why in json_readings(stream):
        if reading is None:
            raise fail(f"line {lineno}: {why}", EXIT_USAGE, READING_HINT)
        out.append(reading)
    return out


def send_mqtt(args: argparse.Namespace) -> int:
    """``twinlink send --mqtt URL``: exit 0 once the twin acknowledged everything queued."""
    if args.mqtt.split("://", 1)[0].lower() not in transport.MQTT_SCHEMES:
        raise fail(f"{args.mqtt} is not a broker URL", EXIT_USAGE, "use mqtt://host:port")
    readings = _readings(sys.stdin)
    dev = Device.load(args.device, args.state)
    outbox = Path(dev.state_path).with_suffix(".outbox")
    deadline = time.monotonic() + args.timeout
    link = dev.link = transport.open(
        args.mqtt, device=dev, outbox=outbox, client_id=args.client_id, options=_options(args),
        timeout=args.timeout, capacity=args.outbox_capacity, when_full=args.when_full,
        window=args.window, resend_after=args.resend_after)
    assert isinstance(link, MqttLink)  # the scheme was checked above
    i = 0
    try:
        for i in range(0, len(readings), SEAL_BATCH):
            chunk = readings[i:i + SEAL_BATCH]
            # Check for room before sealing so a full outbox burns no sequence numbers.
            link.timeout = max(0.0, deadline - time.monotonic())
            if link.outbox.room() < len(chunk) and args.when_full == "refuse":
                raise OutboxFull(f"outbox full ({len(link.outbox)}/{link.outbox.capacity})")
            try:
                link.send_many(dev.seal_many(chunk))
            except (TypeError, ValueError) as exc:
                raise fail(f"reading {i + 1}…: {exc}", EXIT_USAGE) from None
        left = link.flush(max(0.0, deadline - time.monotonic()))
    except OutboxFull as exc:
        left = len(link.outbox)
        print(f"twinlink: {exc}; {len(readings) - i} reading(s) not queued, {left} still "
              "awaiting the twin's acknowledgement — retry when the broker and twin are back",
              file=sys.stderr)
        dev.close()
        return EXIT_TRANSPORT
    dev.close()  # closes the link: unacknowledged frames stay in the outbox
    if left:
        why = f" (last error: {link.last_error})" if link.last_error else ""
        print(f"twinlink: {left} reading(s) still awaiting the twin's acknowledgement after "
              f"{args.timeout:g}s; kept in {outbox} for the next run{why}", file=sys.stderr)
        return EXIT_PENDING
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ..ingest.mqtt import MqttIngest
    from ..twin import Twin
    from .commands import _store

    twin = Twin(_store(args.db), args.twin_key)
    ing = MqttIngest(args.mqtt, twin, client_id=args.client_id, options=_options(args),
                     share=args.share, session_expiry=args.session_expiry,
                     batch_wait=args.batch_ms / 1000.0, jsonl=sys.stdout if args.jsonl else None)
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)

    def _ready() -> None:
        if ing.subscribed.wait(args.timeout if args.timeout else None) and not stop.is_set():
            print(f"twinlink: serving {ing.sub_topic} on {args.mqtt} into {args.db}",
                  file=sys.stderr, flush=True)
        elif not stop.is_set():
            print(f"twinlink: not subscribed after {args.timeout:g}s ({ing.last_error}); "
                  "still retrying", file=sys.stderr, flush=True)

    threading.Thread(target=_ready, daemon=True).start()
    try:
        st = ing.run(stop)
    finally:
        twin.close()
    extra = "".join(f", {n} {what}" for n, what in (
        (st.retained, "retained dropped"), (st.failed_batches, "failed batch attempts"),
        (st.poisoned, "set aside")) if n)
    print(f"twinlink: stopped; {st.received} frames, {st.stored} stored, {st.duplicates} "
          f"duplicates re-acknowledged, {st.refused} refused{extra}", file=sys.stderr)
    return 0


def _conn_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("MQTT connection")
    g.add_argument("--ca", help="CA certificate file (PEM); enables TLS")
    g.add_argument("--cert", help="client certificate (PEM) for mutual TLS")
    g.add_argument("--key", help="client certificate's private key (PEM)")
    g.add_argument("--username", help="broker user name")
    g.add_argument("--password-file", help="file holding the broker password (one line)")
    g.add_argument("--client-id", help="MQTT client id")
    g.add_argument("--reconnect-max", type=float, default=30.0,
                   help="longest reconnect backoff in seconds (default 30; jittered)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    send = sub.choices["send"]
    _conn_args(send)
    g = send.add_argument_group("MQTT outbox")
    g.add_argument("--outbox-capacity", type=int, default=DEFAULT_CAPACITY,
                   help=f"most unacknowledged frames kept (default {DEFAULT_CAPACITY})")
    g.add_argument("--when-full", choices=["refuse", "block"], default="refuse",
                   help="full outbox: refuse new readings at once (default), or wait for room "
                        "until --timeout")
    g.add_argument("--window", type=int, default=64,
                   help="frames in flight per device; at most the twin's replay window (64)")
    g.add_argument("--resend-after", type=float, default=10.0,
                   help="seconds without the twin's ack before a frame is published again")

    p = sub.add_parser("serve", help="ingest frames from an MQTT broker into the twin database")
    p.add_argument("--mqtt", required=True, help="broker URL mqtt://host:port or mqtts://…")
    p.add_argument("--db", required=True, help="twin database")
    p.add_argument("--twin-key", required=True, help="the twin's private key (twin.key)")
    p.add_argument("--jsonl", action="store_true",
                   help="print one JSON object per received frame (as 'twinlink open')")
    p.add_argument("--share", metavar="GROUP",
                   help="use the shared subscription $share/GROUP/twinlink/+/t")
    p.add_argument("--session-expiry", type=int, default=3600,
                   help="seconds the broker keeps the session and its queue while we are away")
    p.add_argument("--batch-ms", type=float, default=5.0,
                   help="collect frames this long into one transaction (default 5)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="warn if not subscribed within this many seconds (keeps retrying)")
    _conn_args(p)
    p.set_defaults(func=_serve_with_default_id)


def _serve_with_default_id(args: argparse.Namespace) -> int:
    if not args.client_id:
        from ..ingest.mqtt import DEFAULT_CLIENT_ID
        args.client_id = DEFAULT_CLIENT_ID
    return cmd_serve(args)
