"""``twinlink demo``: provision a twin and two devices, stream over a real pty serial line
(:class:`~twinlink.transport.serial.SerialLink` → virtual cable →
:class:`~twinlink.ingest.SerialReceiver`),
then replay, tamper and impersonate, and show the twin refusing each attempt.

Needs no broker and no hardware. Exits 0 only if every reading arrived exactly once and every
attack was refused for the expected reason (the demo checks itself).
"""

from __future__ import annotations

import json
import os
import queue
import random
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from . import backends as backend
from . import keys
from .device import Device
from .errors import LineError, TwinlinkError
from .ingest.serial import SerialReceiver
from .testing import VirtualCable
from .transport import framing
from .transport.serial import SerialLink
from .twin import Reading, Twin


def run_demo(count: int = 10, keep: str | None = None, out: TextIO | None = None) -> int:
    out = out or open(os.devnull, "w")
    say = lambda s: (out.write(s + "\n"), out.flush())  # noqa: E731
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="twinlink-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    from .provision import provision

    tk = keys.TwinKey.generate()
    keys.write_private(work / "twin.key", tk.to_pem(), overwrite=True)
    keys.write_public(work / "twin.pub", tk.public_pem(), overwrite=True)
    db = str(work / "twin.db")
    for f in Path(work).glob("twin.db*"):
        f.unlink()
    # pump-17 trusts one firmware-update key (kept offline in real life; in memory here).
    from . import update

    update_pub = keys.DeviceKey.generate().public
    for name in ("pump-17", "valve-3"):
        settings = (dict(update.add_update_trust({}, [update_pub], "example.com", "pump-v2"))
                    if name == "pump-17" else None)
        provision(name, work / "twin.pub", work / "keys", db=db, force=True, settings=settings)
    say(f"twinlink demo — backend {backend.explain()}")
    say(f"  workspace {work}: twin key, twin.db, keys/pump-17.device, keys/valve-3.device")

    # The operator's plausible range for the pump's temperature (a QC setting in the twin).
    from .store import open_store

    with open_store(db) as store:
        store.set_qc_config({"series": {"pump-17": {"temp": {"min": -20.0, "max": 150.0}}}},
                            why="demo: the pump's plausible temperature range")
    cable = VirtualCable()
    say(f"  serial link: two pty pairs joined by a virtual cable; device side {cable.a}, "
        f"twin side {cable.b}")
    twin = Twin(db, work / "twin.key")
    results: list[dict[str, Any]] = []

    def on_result(r: Reading | TwinlinkError) -> None:
        # Runs on the receiver's serial I/O thread (see twinlink.transport.serial).
        if isinstance(r, LineError):
            say(f"  ~ line error ({r}) — noise, not shown to the twin")
            results.append({"ok": False, "error": "line"})
        elif isinstance(r, Reading):
            bad = {n: f for n, f in (r.flags or {}).items() if f in (3, 4)}
            if bad:
                verdict = ", ".join(f"{n} {'FAIL' if f == 4 else 'SUSPECT'}"
                                    for n, f in bad.items())
                say(f"  ⚑ {r.device:8} seq {r.seq:<3} {json.dumps(r.payload)} — authentic, stored,"
                    f" but flagged {verdict}")
            else:
                say(f"  ✓ {r.device:8} seq {r.seq:<3} {json.dumps(r.payload)}")
            results.append({**r.to_json(), "flagged": bool(bad)})
        else:
            say(f"  ✗ refused: {r.reason:14} {r}")
            results.append({"ok": False, "error": r.reason})

    receiver = SerialReceiver(cable.b, twin, on_result=on_result)
    downlinked: queue.SimpleQueue[bytes] = queue.SimpleQueue()  # frames the device side read
    link = SerialLink(cable.a, on_frame=downlinked.put)

    def wire(frame: bytes, raw: bytes | None = None) -> None:
        # Wait for the twin's verdict so the story prints in order (the link itself is async).
        before = len(results)
        if raw is None:
            link.send(frame)
        else:
            cable.inject(raw)
        deadline = time.monotonic() + 5
        while len(results) == before and time.monotonic() < deadline:
            time.sleep(0.002)

    state = work / "state"
    pump = Device.load(work / "keys" / "pump-17.device", state)
    valve = Device.load(work / "keys" / "valve-3.device", state)
    say(f"\n1. streaming {count} readings from each device")
    rng = random.Random(17)
    captured: list[bytes] = []
    for i in range(count):
        f1 = pump.seal({"temp": round(20 + rng.random() * 3, 2), "rpm": 1400 + i})
        f2 = valve.seal({"open": i % 3 != 0, "flow": round(rng.random() * 5, 3)})
        wire(f1)
        wire(f2)
        captured.append(f1)

    say("\n2. attacks and faults")
    say("  replaying an old pump-17 frame:")
    wire(captured[1])
    say("  flipping one ciphertext bit (CRC recomputed, so the line check passes):")
    bad = bytearray(pump.seal({"temp": 99.9}))
    bad[-70] ^= 0x01
    wire(bytes(bad))
    say("  relabelling a valve-3 frame with pump-17's kid:")
    vf = bytearray(valve.seal({"open": True}))
    pump_kid = pump.kid
    vf[8 : 8 + len(pump_kid)] = pump_kid  # d2 84 46 a2 01 27 04 41 <kid>
    wire(bytes(vf))
    say("  a frame from a device the twin never registered:")
    stranger_dir = work / "stranger"
    provision("stranger", work / "twin.pub", stranger_dir, kid=b"\xee\xee", force=True)
    with Device.load(stranger_dir / "stranger.device", state) as stranger:
        wire(stranger.seal({"temp": -40}))
    say("  line noise in the middle of a frame:")
    good = framing.wire(pump.seal({"temp": 21.0}), flush_prefix=True)
    noisy = bytearray(good)
    noisy[len(noisy) // 2] ^= 0x40
    wire(b"", bytes(noisy))
    say("  an authentic lie: pump-17 itself signs a temperature of 900 °C (a tampered sensor):")
    wire(pump.seal({"temp": 900.0, "rpm": 1400 + count}))
    in_sync, forged_refused = _downlink_story(say, twin, pump, receiver, downlinked, wire)
    update_refused = _update_story(say, twin, pump, receiver, downlinked, wire)
    say("  revoking valve-3, then it sends again:")
    twin.revoke("valve-3", "demo: device reported stolen")
    wire(valve.seal({"open": False}))
    receiver.close()
    link.close()
    cable.close()
    pump.close()
    valve.close()

    refused: dict[str, int] = {}
    for r in results:
        if not r["ok"]:
            refused[r["error"]] = refused.get(r["error"], 0) + 1
    accepted = sum(1 for r in results if r["ok"])
    say("\n3. the twin's view")
    st = twin.store.status("pump-17")  # type: ignore[attr-defined]
    say(f"  pump-17: {st['accepted']} accepted, {st['refused']} refused, "
        f"last seq {st['last_seq']}, "
        f"state {json.dumps({k: v['value'] for k, v in st['state'].items()})}")
    say(f"  accepted {accepted} readings; refused {json.dumps(refused)}")
    flagged = sum(1 for r in results if r.get("flagged"))
    say(f"  flagged {flagged} authentic reading(s) as false; open detections on pump-17: "
        + (", ".join(twin.detector.state("pump-17").get("open", [])) if twin.detector else "-"))
    events = twin.store.events(limit=50, audit=False)
    say(f"\n4. security events for a SIEM ({len(events)} stored; Elastic Common Schema, one a "
        "line):")
    from . import siem
    from .events import normalise

    ecs = siem.renderer("ecs")
    shown = [next((e for e in events if e["outcome"] == kind), None)
             for kind in ("blocked", "detected")]  # one refusal, one detection
    for e in shown:
        if e is not None:
            say("  " + ecs(normalise(e), siem.Options(hostname="demo")))
    say(f"  … all of them: twinlink twin events --db {db} --format ecs   (or rfc5424, cef, "
        "ocsf; 'twinlink events forward' sends them to a collector)")
    twin.close()
    expected = {"replay": 1, "bad_signature": 2, "unknown_device": 1, "line": 1, "revoked": 1}
    ok = (accepted == 2 * count + 3 and refused == expected and flagged == 1 and in_sync
          and forged_refused and update_refused)
    say(f"\n{'demo passed' if ok else 'demo FAILED'}: expected {2 * count + 3} accepted (1 "
        f"flagged), {expected}, the desired state in sync, the forged command and the forged "
        "firmware update refused")
    say(f"see it in a browser: twinlink dashboard --db {db}   (then open "
        "http://127.0.0.1:8080/; or run the demo with --dashboard)")
    if not keep:
        say(f"(workspace {work} can be removed; use --keep DIR to choose it)")
    return 0 if ok else 1


def _down_the_cable(say: Any, twin: Twin, pump: Device, receiver: SerialReceiver,
                    downlinked: queue.SimpleQueue[bytes], what: str) -> dict[str, Any]:
    """Send pump-17's due downlink frame down the cable and hand it to the device; return the
    reports it produced (none if it did not arrive or was refused)."""
    from .ingest.downlink import Downlinker

    for _kid, frame in Downlinker(twin, poll=0.0).due(kids=[pump.kid]):
        receiver.link.send(frame)
    try:
        return pump.handle_downlink(downlinked.get(timeout=5))
    except (queue.Empty, TwinlinkError) as exc:
        say(f"    {what} did not arrive ({exc or 'timeout'})")
        return {}


def _downlink_story(say: Any, twin: Twin, pump: Device, receiver: SerialReceiver,
                    downlinked: queue.SimpleQueue[bytes], wire: Any) -> tuple[bool, bool]:
    """The twin changes pump-17's sampling interval (authenticated end to end, back over the
    same cable); then someone on the line forges a command. Returns (the twin shows the desired
    state in sync, the device refused the forged command)."""
    from . import downlink
    from .oscore import derive_context

    say("  the twin sets pump-17's sampling interval to 5 s (desired state, sent down the "
        "cable):")
    seen: list[str] = []
    pump.on_event = lambda kind, detail: seen.append(kind)

    def apply(values: dict[str, Any]) -> None:
        say(f"    pump-17 applies {json.dumps(values)}")

    pump.on_desired(apply)
    twin.store.set_desired("pump-17", {"interval": 5})
    reports = _down_the_cable(say, twin, pump, receiver, downlinked, "the desired state")
    wire(pump.seal({"temp": 21.4, **reports}))  # the device reports what it applied
    view = twin.store.desired_view("pump-17")
    in_sync = [r["status"] for r in view] == ["in sync"]
    say(f"    twin: interval desired {view[0]['desired']}, reported {view[0]['reported']}: "
        f"{view[0]['status']}")
    say("  someone on the line sends pump-17 a forged 'open_valve' command (no key):")
    fake = derive_context(os.urandom(32), downlink.DOWNLINK_SID, b"", pump.id_context)
    command = downlink.encode_command(1, "open_valve", None, int(time.time()) + 60)
    forged = downlink.seal_downlink(fake, pump.kid, downlink.next_piv(None), command,
                                    pump.id_context)
    receiver.link.send(forged)
    try:
        pump.handle_downlink(downlinked.get(timeout=5))
    except queue.Empty:
        pass
    except TwinlinkError as exc:
        say(f"    ✗ pump-17 refused it: {seen[-1] if seen else exc.reason} ({exc})")
    return in_sync, seen[-1:] == ["downlink.forged"]


def _update_story(say: Any, twin: Twin, pump: Device, receiver: SerialReceiver,
                  downlinked: queue.SimpleQueue[bytes], wire: Any) -> bool:
    """Someone with the twin's database offers pump-17 firmware signed by a key of their own:
    the device checks the manifest before it takes any byte of the image and refuses it; the
    twin records ``update.rejected``. Returns whether all of that happened."""
    import hashlib

    from . import update

    installed: list[int] = []
    pump.on_update(lambda path, m: installed.append(m.seq))
    image = b"\x00evil firmware" * 512
    vendor = update.vendor_uuid("example.com")
    forged = update.make_manifest(os.urandom(32), seq=99, vendor_id=vendor,
                                  class_id=update.class_uuid(vendor, "pump-v2"),
                                  digest=hashlib.sha256(image).digest(), size=len(image))
    say(f"  someone with the twin's database offers pump-17 firmware seq 99 ({len(image)} "
        f"bytes), signed by a key that is not pump-17's update key ({len(forged)}-byte "
        "manifest):")
    twin.store.offer_update("pump-17", forged, image)
    reports = _down_the_cable(say, twin, pump, receiver, downlinked, "the offer")
    wire(pump.seal({"temp": 21.5, **reports}))  # the device reports its verdict
    view = twin.store.update_view("pump-17") or {}
    refused = (view.get("status") == "rejected" and view.get("sent") == 0 and not installed
               and any(e["type"] == "update.rejected" for e in twin.store.events("pump-17")))
    say(f"    ✗ pump-17 refused it before any image byte: {view.get('reason')} "
        f"({view.get('sent')} image bytes sent, nothing installed); the twin recorded "
        "update.rejected")
    return refused
