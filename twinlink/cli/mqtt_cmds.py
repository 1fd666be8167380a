"""MQTT commands: ``send --mqtt`` (device, through the durable outbox), ``serve --mqtt`` and
``outbox`` (what a device's outbox holds: pending frames and dead letters).

``send`` and ``serve`` are declared in :mod:`.commands`; this module adds their MQTT options.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import keys, transport
from ..device import Device, state_path
from ..mqtt_link import MqttLink
from ..outbox import DEFAULT_CAPACITY, Outbox, OutboxFull
from ..store import ClientIdInUse
from ..transport.mqtt import TOPIC_ROOT, MqttOptions, check_topic_root, connect_options
from . import output
from .commands import STATE_HELP
from .common import (
    EXIT_PENDING,
    EXIT_REFUSED,
    EXIT_REGISTRY,
    EXIT_STATE,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    StopControl,
    add_command,
    add_json,
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


def _root(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return check_topic_root(text)
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None


def send_mqtt(args: argparse.Namespace) -> int:
    """``twinlink send --mqtt URL``: exit 0 once the twin acknowledged everything queued.

    Readings are read, sealed and queued in batches as stdin delivers them (bad lines follow
    the JSON-lines policy); ``--timeout`` then bounds the wait for the twin's acknowledgements.
    What is reported as stored is what the twin acknowledged end to end, never more; what it
    refused for good is reported too (exit 8) and kept in the outbox's dead letters.
    """
    if args.mqtt.split("://", 1)[0].lower() not in transport.MQTT_SCHEMES:
        raise fail(f"{args.mqtt} is not a broker URL", EXIT_USAGE, "use mqtt://host:port")
    root = _root(args.topic_root)
    dev = Device.load(args.device, args.state)
    lines = ReadingLines(utf8_stdin(), check=dev.encode)
    outbox = Path(dev.state_path).with_suffix(".outbox")
    link = dev.link = transport.open(
        args.mqtt, device=dev, outbox=outbox, client_id=args.client_id, options=_options(args),
        timeout=args.timeout, capacity=args.outbox_capacity, when_full=args.when_full,
        window=args.window, resend_after=args.resend_after, topic_root=root)
    assert isinstance(link, MqttLink)  # the scheme was checked above
    return send_through_outbox(args, dev, link, lines, outbox)


def send_through_outbox(args: argparse.Namespace, dev: Device, link: Any,
                        lines: ReadingLines, outbox: Path) -> int:
    """Seal stdin's readings in batches into ``link``'s durable outbox (an MQTT link, or a
    serial link with acks), wait ``--timeout`` for the twin's acks, report and return the exit
    code: 8 if the twin refused readings for good, 6 if some are still pending, 5 for a full
    outbox, else the JSON-lines code. Closes ``dev`` (and so the link)."""
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
    # Read once the link has stopped, so the numbers describe the same moment.
    stored, refused, left = link.stats.released, link.stats.refused, len(link.outbox)
    if args.json:
        output.emit({"stored" if link.e2e else "delivered_to_broker": stored,
                     "refused": refused, "pending": left, "skipped": lines.bad})
    see = f"twinlink outbox --device {args.device}" + (
        f" --state {args.state}" if args.state else "")
    ref = f", refused {refused} (see: {see})" if refused else ""
    if full is not None:
        say(f"{full}; stored {stored}{ref}, pending {left}: readings after the first {queued} "
            "not queued — retry when the broker and twin are back")
        return EXIT_TRANSPORT
    if not link.e2e:
        # Without an end-to-end acknowledgement (lite bundle) a release means the broker has
        # the frame, not that the twin stored it.
        say(f"delivered {stored} to the broker, pending {left} (a lite bundle has no "
            "end-to-end acknowledgement; check the twin)")
    elif left:
        why = f" (last error: {link.last_error})" if link.last_error else ""
        say(f"stored {stored}{ref}, pending {left}: {left} reading(s) still awaiting the "
            f"twin's acknowledgement after {args.timeout:g}s; kept in {outbox} for the next "
            f"run{why}")
    else:
        say(f"stored {stored}{ref}, pending 0")
    if refused:
        return EXIT_REFUSED
    if left:
        return EXIT_PENDING
    return lines.exit_code


def serve_mqtt(args: argparse.Namespace) -> int:
    """``twinlink serve --mqtt URL``: the ingest service until SIGTERM/SIGINT, --count or
    --duration."""
    from ..ingest.mqtt import MqttIngest, TopicRootTaken
    from ..twin import Twin

    if args.ready_timeout_deprecated is not None:
        say("serve --timeout is deprecated: use --ready-timeout")
        args.ready_timeout = args.ready_timeout_deprecated
    if args.workers > 1:
        from .workers import supervise

        root = _root(args.topic_root)
        if root is None:
            with open_twin_store(args.db) as store:
                root = store.topic_root() or TOPIC_ROOT
        return supervise(args, root)
    with StopControl(args.count, args.duration) as stop:
        twin = Twin(open_twin_store(args.db), args.twin_key)
        recorded = twin.store.topic_root()
        root = _root(args.topic_root) or recorded or TOPIC_ROOT
        if recorded is not None and root != recorded:
            say(f"serving topic root {root!r}, not {recorded!r} which {args.db} records: "
                "devices provisioned from it publish under the recorded one")
        twin.start_sweeper()  # liveness (device.silent) and stream checks, once a second

        def on_results(results: Sequence[Any]) -> None:
            if args.json:
                for r in results:
                    sys.stdout.write(output.dumps(output.result_json(r)) + "\n")
                sys.stdout.flush()
            stop.counted(len(results))

        ing = MqttIngest(args.mqtt, twin, client_id=args.client_id,
                         options=_options(args), share=args.share,
                         session_expiry=args.session_expiry, batch_wait=args.batch_ms / 1000.0,
                         on_results=on_results, topic_root=root)
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
        except TopicRootTaken as exc:
            raise fail(str(exc), EXIT_REGISTRY) from None
        except ClientIdInUse as exc:
            raise fail(str(exc), EXIT_STATE) from None
        finally:
            twin.close()
    extra = "".join(f", {n} {what}" for n, what in (
        (st.retained, "retained dropped"), (st.failed_batches, "failed batch attempts"),
        (st.poisoned, "set aside")) if n)
    say(f"stopped; {st.received} frames, {st.stored} stored, {st.duplicates} "
        f"duplicates re-acknowledged, {st.refused} refused ({st.nacks} negatively "
        f"acknowledged){extra}")
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    """``twinlink outbox --device BUNDLE``: what the device's MQTT outbox holds."""
    bundle = keys.Bundle.load(args.device)
    path = state_path(bundle, args.state).with_suffix(".outbox")
    if not path.exists():
        raise fail(f"no outbox at {path}", EXIT_USAGE,
                   "give the --state directory 'twinlink send --mqtt' used")
    with Outbox(path) as box:
        pending = box.pending_by_context()
        letters = box.dead_letters(args.limit)
        n_dead = box.count_dead_letters()
    ctx_name = (lambda c: "base" if c is None else c.hex())  # noqa: E731
    if args.json:
        output.emit({"outbox": str(path), "pending": sum(pending.values()),
                     "pending_by_context": {ctx_name(c): n for (_, c), n in pending.items()},
                     "dead_letters": n_dead,
                     "refused": [{"kid": d.kid.hex(), "kid_context": ctx_name(d.kid_context),
                                  "seq": d.seq, "reason": d.reason, "digest": d.digest.hex(),
                                  "queued_at": output.iso(d.added),
                                  "refused_at": output.iso(d.refused_at),
                                  "frame": d.frame.hex()} for d in letters]})
        return 0
    by_ctx = ", ".join(f"context {ctx_name(c)}: {n}" for (_, c), n in pending.items())
    print(f"{path}: {sum(pending.values())} pending" + (f" ({by_ctx})" if by_ctx else "")
          + f", {n_dead} dead letter(s)")
    for d in letters:
        print(f"  seq {d.seq:<8} context {ctx_name(d.kid_context):<16} {d.reason:<16} refused "
              f"{output.iso(d.refused_at)}  digest {d.digest.hex()}")
    if n_dead > len(letters):
        print(f"  … {n_dead - len(letters)} more (--limit)")
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
                        "twinlink-ingest, plus a hash of the topic root if it is not twinlink)")
    g.add_argument("--reconnect-max", type=seconds, default=30.0, metavar="S",
                   help="longest reconnect backoff in seconds (jittered)")
    g.add_argument("--topic-root", metavar="ROOT",
                   help="MQTT topic root of the deployment: topics are ROOT/<kid>/t (default: "
                        "send, the bundle's topic_root setting; serve, the one --db records; "
                        "else twinlink)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    send = sub.choices["send"]
    _conn_args(send)
    g = send.add_argument_group("outbox (MQTT, and serial with --acks)")
    g.add_argument("--outbox-capacity", type=positive_int, default=DEFAULT_CAPACITY, metavar="N",
                   help="most unacknowledged frames kept")
    g.add_argument("--when-full", choices=["refuse", "block"], default="refuse",
                   help="full outbox: refuse new readings at once (exit 5), or wait up to "
                        "--timeout for room")
    g.add_argument("--window", type=positive_int, default=64, metavar="N",
                   help="frames in flight per device; at most the twin's replay window")
    g.add_argument("--resend-after", type=seconds, default=10.0, metavar="S",
                   help="seconds without the twin's ack before a frame is published again")

    p = add_command(
        sub, "outbox", "list what a device's outbox holds (pending, dead letters)",
        description="Show the frames a device's durable outbox ('send --mqtt', or 'send --serial "
                    "--acks') still holds, per security context, "
                    "and its dead letters: readings the twin refused for good (bad payload, too "
                    "old, retired context, revoked, conflict), with the reason. Opening the "
                    "outbox needs it to be idle (no 'send' running on it).",
        examples=["twinlink outbox --device keys/pump-17.device --state state",
                  "twinlink outbox --device keys/pump-17.device --json"])
    p.add_argument("--device", required=True, metavar="BUNDLE", help="device bundle (NAME.device)")
    p.add_argument("--state", metavar="DIR", help=STATE_HELP + "; the one 'send' used")
    p.add_argument("--limit", type=positive_int, default=100, metavar="N",
                   help="list at most N dead letters")
    add_json(p, "print one JSON object: counts, and each dead letter with its frame in hex")
    p.set_defaults(func=cmd_outbox)

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
