"""MQTT commands: ``send --mqtt`` (device, through the durable outbox) and ``serve --mqtt``.

``send`` and ``serve`` are declared in :mod:`.commands`; this module adds their MQTT options.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import transport
from ..device import Device
from ..mqtt_link import MqttLink
from ..outbox import DEFAULT_CAPACITY, OutboxFull
from ..store import ClientIdInUse
from ..transport.mqtt import MqttOptions, connect_options
from . import output
from .common import (
    EXIT_PENDING,
    EXIT_STATE,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    StopControl,
    fail,
    open_twin_store,
    positive_int,
    say,
    seconds,
)
from .jsonl import ReadingLines, utf8_stdin

SEAL_BATCH = 256


def _options(args: argparse.Namespace) -> MqttOptions:
    return connect_options(ca=args.ca, cert=args.cert, key=args.key, username=args.username,
                           password_file=args.password_file,
                           backoff_max=args.reconnect_max)


def send_mqtt(args: argparse.Namespace) -> int:
    """``twinlink send --mqtt URL``: exit 0 once the twin acknowledged everything queued.

    Readings are read, sealed and queued in batches as stdin delivers them (bad lines follow
    the JSON-lines policy); ``--timeout`` then bounds the wait for the twin's acknowledgements.
    What is reported as stored is what the twin acknowledged end to end, never more.
    """
    if args.mqtt.split("://", 1)[0].lower() not in transport.MQTT_SCHEMES:
        raise fail(f"{args.mqtt} is not a broker URL", EXIT_USAGE, "use mqtt://host:port")
    dev = Device.load(args.device, args.state)
    lines = ReadingLines(utf8_stdin(), check=dev.encode)
    outbox = Path(dev.state_path).with_suffix(".outbox")
    link = dev.link = transport.open(
        args.mqtt, device=dev, outbox=outbox, client_id=args.client_id, options=_options(args),
        timeout=args.timeout, capacity=args.outbox_capacity, when_full=args.when_full,
        window=args.window, resend_after=args.resend_after)
    assert isinstance(link, MqttLink)  # the scheme was checked above
    queued = 0
    full: OutboxFull | None = None
    try:
        for batch in lines.batches(SEAL_BATCH):
            # Check for room before sealing so a full outbox burns no sequence numbers.
            if link.outbox.room() < len(batch) and args.when_full == "refuse":
                raise OutboxFull(f"outbox full ({len(link.outbox)}/{link.outbox.capacity})")
            link.send_many(dev.seal_many([r for _, r in batch]))
            queued += len(batch)
        link.flush(args.timeout)
    except OutboxFull as exc:
        full = exc
    finally:
        dev.close()  # closes the link: unacknowledged frames stay in the outbox
    # Read once the link has stopped, so the two numbers describe the same moment.
    stored, left = link.stats.released, len(link.outbox)
    if args.json:
        output.emit({"stored" if link.e2e else "delivered_to_broker": stored, "pending": left,
                     "skipped": lines.bad})
    if full is not None:
        say(f"{full}; stored {stored}, pending {left}: readings after the first {queued} not "
            "queued — retry when the broker and twin are back")
        return EXIT_TRANSPORT
    if not link.e2e:
        # Without an end-to-end acknowledgement (lite bundle) a release means the broker has
        # the frame, not that the twin stored it.
        say(f"delivered {stored} to the broker, pending {left} (a lite bundle has no "
            "end-to-end acknowledgement; check the twin)")
    elif left:
        why = f" (last error: {link.last_error})" if link.last_error else ""
        say(f"stored {stored}, pending {left}: {left} reading(s) still awaiting the twin's "
            f"acknowledgement after {args.timeout:g}s; kept in {outbox} for the next run{why}")
    else:
        say(f"stored {stored}, pending 0")
    if left:
        return EXIT_PENDING
    return lines.exit_code


def serve_mqtt(args: argparse.Namespace) -> int:
    """``twinlink serve --mqtt URL``: the ingest service until SIGTERM/SIGINT, --count or
    --duration."""
    from ..ingest.mqtt import DEFAULT_CLIENT_ID, MqttIngest
    from ..twin import Twin

    if args.ready_timeout_deprecated is not None:
        say("serve --timeout is deprecated: use --ready-timeout")
        args.ready_timeout = args.ready_timeout_deprecated
    if args.workers > 1:
        from .workers import supervise

        return supervise(args)
    with StopControl(args.count, args.duration) as stop:
        twin = Twin(open_twin_store(args.db), args.twin_key)
        twin.start_sweeper()  # liveness (device.silent) and stream checks, once a second

        def on_results(results: Sequence[Any]) -> None:
            if args.json:
                for r in results:
                    sys.stdout.write(output.dumps(output.result_json(r)) + "\n")
                sys.stdout.flush()
            stop.counted(len(results))

        ing = MqttIngest(args.mqtt, twin, client_id=args.client_id or DEFAULT_CLIENT_ID,
                         options=_options(args), share=args.share,
                         session_expiry=args.session_expiry, batch_wait=args.batch_ms / 1000.0,
                         on_results=on_results)
        where = getattr(twin.store, "path", "the twin database")  # never a URL's password

        def _ready() -> None:
            if (ing.subscribed.wait(args.ready_timeout if args.ready_timeout else None)
                    and not stop.stopped):
                say(f"serving {ing.sub_topic} on {args.mqtt} into {where}")
            elif not stop.stopped:
                say(f"not subscribed after {args.ready_timeout:g}s ({ing.last_error}); "
                    "still retrying")

        threading.Thread(target=_ready, daemon=True).start()
        try:
            st = ing.run(stop.event)
        except ClientIdInUse as exc:
            raise fail(str(exc), EXIT_STATE) from None
        finally:
            twin.close()
    extra = "".join(f", {n} {what}" for n, what in (
        (st.retained, "retained dropped"), (st.failed_batches, "failed batch attempts"),
        (st.poisoned, "set aside")) if n)
    say(f"stopped; {st.received} frames, {st.stored} stored, {st.duplicates} "
        f"duplicates re-acknowledged, {st.refused} refused{extra}")
    return 0


def _conn_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("MQTT connection")
    g.add_argument("--ca", metavar="FILE",
                   help="CA certificate file (PEM); enables TLS (default: the system's CAs for "
                        "mqtts://, plain TCP for mqtt://)")
    g.add_argument("--cert", metavar="FILE",
                   help="client certificate (PEM) for mutual TLS (default: none)")
    g.add_argument("--key", metavar="FILE",
                   help="client certificate's private key (PEM) (default: in --cert)")
    g.add_argument("--username", help="broker user name (default: from the URL, else none)")
    g.add_argument("--password-file", metavar="FILE",
                   help="file holding the broker password, one line; never on the command "
                        "line (default: from the URL, else none)")
    g.add_argument("--client-id",
                   help="MQTT client id (default: send, twinlink-<kid>-<random>; serve, "
                        "twinlink-ingest)")
    g.add_argument("--reconnect-max", type=seconds, default=30.0, metavar="S",
                   help="longest reconnect backoff in seconds (jittered)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    send = sub.choices["send"]
    _conn_args(send)
    g = send.add_argument_group("MQTT outbox")
    g.add_argument("--outbox-capacity", type=positive_int, default=DEFAULT_CAPACITY, metavar="N",
                   help="most unacknowledged frames kept")
    g.add_argument("--when-full", choices=["refuse", "block"], default="refuse",
                   help="full outbox: refuse new readings at once (exit 5), or wait up to "
                        "--timeout for room")
    g.add_argument("--window", type=positive_int, default=64, metavar="N",
                   help="frames in flight per device; at most the twin's replay window")
    g.add_argument("--resend-after", type=seconds, default=10.0, metavar="S",
                   help="seconds without the twin's ack before a frame is published again")

    p = sub.choices["serve"]
    g = p.add_argument_group("MQTT ingest")
    g.add_argument("--share", metavar="GROUP",
                   help="use the shared subscription $share/GROUP/twinlink/+/t (several "
                        "ingest processes split the load; default: a plain subscription)")
    g.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="run N ingest processes on one shared subscription (--share, default "
                        "group 'twinlink'), client ids CLIENT_ID-1..N; a worker that dies is "
                        "restarted and its broker session resumes (needs a database several "
                        "processes share: PostgreSQL, or SQLite on one host)")
    g.add_argument("--session-expiry", type=positive_int, default=3600, metavar="S",
                   help="seconds the broker keeps the session and its queue while we are away")
    g.add_argument("--batch-ms", type=float, default=5.0, metavar="MS",
                   help="collect frames this long into one transaction")
    g.add_argument("--ready-timeout", type=seconds, default=30.0, metavar="S",
                   help="warn on stderr if not subscribed within S seconds (it keeps "
                        "retrying; 0: never warn)")
    g.add_argument("--timeout", dest="ready_timeout_deprecated", type=seconds,
                   help=argparse.SUPPRESS)
    _conn_args(p)
