"""The attack catalogue: every scenario ``twinlink attack`` runs, as data.

To add a scenario, add an entry: ``action`` names a function in :mod:`twinlink.attack.actions`
(most take ``params``, e.g. the ``tamper`` action's ``mutation``), ``verdict`` and ``event`` say
what a sound twin does about it (BLOCKED: refused, nothing stored, no replay window moved, the
event recorded once per frame that reached the twin; DETECTED: the authentic frames stored and
the event raised; ACCEPTED: a control, stored with no event at all). ``event`` None on a BLOCKED
scenario means the attack leaves the twin nothing to record (a passive eavesdropper, a session
takeover that only costs time): then the action's own checks (nothing lost, nothing learned)
decide. ``needs`` lists what the scenario needs beyond one registered device, ``assumes`` what
it takes for granted (configuration, simulated time).

The roles: ``pump`` is the victim, ``valve`` a second device, ``old`` a revoked one, ``ghost``
an identity the twin never registered. Every run warms each device up with ``history``
genuine readings (default 20) before the scenario's own traffic.
"""

from __future__ import annotations

from .model import ACCEPTED, BLOCKED, DETECTED, Scenario

SPOOF = ("T0856", "Spoof Reporting Message")
AITM = ("T0830", "Adversary-in-the-Middle")
DOS = ("T0814", "Denial of Service")
EXPLOIT = ("T0866", "Exploitation of Remote Services")
BLOCK = ("T0804", "Block Reporting Message")
DENY_VIEW = ("T0815", "Denial of View")
SNIFF = ("T0842", "Network Sniffing")
VALID = ("T0859", "Valid Accounts")
COMMAND = ("T0855", "Unauthorized Command Message")

ALL = ("inproc", "serial", "mqtt")
MQTT = ("mqtt",)
SIM = "detectors on a simulated clock: one accepted frame per second unless stated"

SCENARIOS: tuple[Scenario, ...] = (
    # -- controls: genuine traffic, stored, no event ----------------------------------------
    Scenario("ctl-in-order", "Control: an in-order stream of genuine readings", "control",
             ACCEPTED, None, ALL, params={"n": 40}, needs=("clock",), assumes=SIM),
    Scenario("ctl-reorder", "Control: genuine frames reordered inside the replay window",
             "control", ACCEPTED, None, ALL, params={"n": 40, "shuffle": 3},
             needs=("clock",),
             assumes=SIM + "; permuted in blocks of 3: no frame later than the gap "
                           "detector's grace of 3 intervals"),
    Scenario("ctl-qos1-duplicate",
             "Control: the broker redelivers a stored frame (QoS 1, PUBACK lost in a crash)",
             "qos1_duplicate", ACCEPTED, None, MQTT, needs=("own_ingest", "clock"),
             assumes="an ingest that dies between its commit and its PUBACK (fault injected)"),
    Scenario("ctl-line-noise", "Control: line noise with a wrong CRC between genuine frames",
             "line_noise", ACCEPTED, None, ("serial",), params={"n": 20},
             needs=("clock",), assumes=SIM),
    # -- replay --------------------------------------------------------------------------------
    Scenario("replay-exact", "Exact replay of captured, stored frames", "replay",
             BLOCKED, "frame.replay", ALL, SPOOF, {"which": "stored"}),
    Scenario("replay-below-window", "Replay of a stored frame that fell below the window",
             "replay", BLOCKED, "frame.too_old", ALL, SPOOF, {"which": "old"}),
    Scenario("replay-cross-stream",
             "Cross-stream replay: the twin's own acknowledgement injected as telemetry",
             "replay_ack_as_telemetry", BLOCKED, "frame.malformed", ALL, SPOOF),
    Scenario("replay-after-rekey",
             "Replay of frames sealed before an operator re-key", "replay_after_rekey",
             BLOCKED, "frame.decrypt_failed", ALL, SPOOF, needs=("operator",),
             assumes="the operator re-keys the device (new Master Salt); its old frames "
                     "verify but no longer decrypt"),
    Scenario("replay-delayed-release",
             "Captured frames held back, then released after the window moved on",
             "delayed_release", BLOCKED, "frame.too_old", ALL, AITM),
    # -- integrity -----------------------------------------------------------------------------
    Scenario("flip-ciphertext", "One bit flipped in the ciphertext", "tamper",
             BLOCKED, "frame.bad_signature", ALL, AITM, {"mutation": "flip_ciphertext"}),
    Scenario("flip-signature", "One bit flipped in the signature", "tamper",
             BLOCKED, "frame.bad_signature", ALL, AITM, {"mutation": "flip_signature"}),
    Scenario("truncate-every-offset", "The frame truncated at every offset", "tamper",
             BLOCKED, "frame.malformed", ALL, AITM, {"mutation": "truncations"}),
    Scenario("serial-crc-recomputed",
             "Serial tampering: ciphertext bit flipped, CRC recomputed (no line error)",
             "tamper", BLOCKED, "frame.bad_signature", ("serial",), AITM,
             {"mutation": "flip_ciphertext"}),
    Scenario("alg-substitution", "Protected header alg EdDSA replaced by ES256 (-7)", "tamper",
             BLOCKED, "frame.malformed", ALL, AITM, {"mutation": "alg_es256"}),
    Scenario("alg-relabel", "Protected header alg -8 relabelled as Ed25519 (-19)", "tamper",
             BLOCKED, "frame.bad_signature", ALL, AITM, {"mutation": "alg_ed25519"}),
    Scenario("header-added", "A content-type parameter added to the protected header",
             "tamper", BLOCKED, "frame.malformed", ALL, AITM, {"mutation": "header_added"}),
    Scenario("header-unprotected", "A kid added to the (unsigned) unprotected header",
             "tamper", BLOCKED, "frame.malformed", ALL, AITM,
             {"mutation": "header_unprotected"}),
    Scenario("header-removed", "The kid removed from the protected header", "tamper",
             BLOCKED, "frame.malformed", ALL, AITM, {"mutation": "header_removed"}),
    Scenario("tag-wrong", "CBOR tag 18 (COSE_Sign1) replaced by 98 (COSE_Sign)", "tamper",
             BLOCKED, "frame.malformed", ALL, AITM, {"mutation": "tag_wrong"}),
    Scenario("tag-missing", "CBOR tag 18 removed", "tamper",
             BLOCKED, "frame.malformed", ALL, AITM, {"mutation": "tag_missing"}),
    Scenario("downgrade-encrypt0", "Downgrade: the bare inner COSE_Encrypt0, signature dropped",
             "tamper", BLOCKED, "frame.malformed", ALL, AITM, {"mutation": "bare_encrypt0"}),
    Scenario("downgrade-senml", "Downgrade: a plain SenML reading in CBOR, no COSE", "forge",
             BLOCKED, "frame.malformed", ALL, AITM, {"kind": "senml"}),
    Scenario("downgrade-json", "Downgrade: a plain JSON reading", "forge",
             BLOCKED, "frame.malformed", ALL, AITM, {"kind": "json"}),
    Scenario("lite-for-signed",
             "A lite (unsigned) frame claiming a device registered for signed frames",
             "tamper", BLOCKED, "frame.bad_signature", ALL, AITM, {"mutation": "as_lite"}),
    # -- identity ------------------------------------------------------------------------------
    Scenario("kid-swap", "A second device's frame relabelled with the victim's kid",
             "kid_swap", BLOCKED, "frame.bad_signature", ALL, SPOOF, needs=("second_device",)),
    Scenario("unknown-kid", "A well-formed, signed frame from an identity never registered",
             "unknown_kid", BLOCKED, "frame.unknown_device", ALL, SPOOF),
    Scenario("revoked-device", "Frames of a device an operator revoked", "revoked",
             BLOCKED, "frame.revoked_device", ALL, VALID, needs=("operator",)),
    Scenario("topic-spoof",
             "Topic spoofing: a second device's frame on the victim's topic, and one on a "
             "topic naming no kid", "topic_spoof", BLOCKED, "frame.topic_mismatch", MQTT,
             SPOOF, needs=("second_device",)),
    # -- MQTT abuse ----------------------------------------------------------------------------
    Scenario("retained-telemetry",
             "Retained-message poisoning of the telemetry topic (a forged frame, retained)",
             "retained_telemetry", BLOCKED, "frame.bad_signature", MQTT, SPOOF,
             needs=("own_ingest",),
             assumes="the ingest is restarted with a new session after the poisoning"),
    Scenario("retained-ack", "Retained-message poisoning of the device's ack topic",
             "retained_ack", BLOCKED, None, MQTT, COMMAND, needs=("own_ingest",),
             assumes="the device's subscription takes no retained messages (MQTT 5 Retain "
                     "Handling 2), so there is nothing for it to record"),
    Scenario("ack-forged", "Forged acknowledgements sent to a device with frames pending",
             "ack_forged", BLOCKED, "ack.forged", MQTT, COMMAND, needs=("own_ingest",)),
    Scenario("ack-replayed", "Captured acknowledgements replayed to the device",
             "ack_replayed", BLOCKED, None, MQTT, COMMAND, needs=("own_ingest",),
             assumes="acks v2 (docs/PROTOCOL.md §15): an ack is an idempotent, authenticated "
                     "claim naming frames by (seq, digest), with no replay window; a replayed "
                     "one is opened, names only frames already released and changes nothing, "
                     "so there is nothing for the device to record"),
    Scenario("twin-root-taken",
             "A second twin (another key) started on the topic root this twin serves",
             "rival_twin", BLOCKED, None, MQTT, needs=("own_ingest",),
             assumes="a misconfiguration guard, not a defence against a hostile client: the "
                     "second twin reads the retained presence on <root>/_twin and refuses "
                     "before it subscribes (serve exits 7); a client that ignores presence is "
                     "kept off the root only by the broker's ACLs"),
    Scenario("clientid-takeover",
             "Client-id takeover of the ingest's MQTT session (nothing may be lost)",
             "takeover", BLOCKED, None, MQTT, DENY_VIEW, {"n": 30}, needs=("own_ingest",),
             assumes="the device resends what the twin has not acknowledged"),
    Scenario("wildcard-eavesdrop",
             "A '#' subscriber sees no plaintext value, name or unit", "eavesdrop",
             BLOCKED, None, MQTT, SNIFF, {"n": 10}),
    Scenario("flood-garbage", "Publish flood of garbage while the victim sends", "flood",
             BLOCKED, "frame.malformed", ("inproc", "mqtt"), DOS,
             {"kind": "garbage", "n": 1000, "genuine": 20}),
    Scenario("flood-forgery", "Flood of forged frames under the victim's kid", "flood",
             BLOCKED, "frame.bad_signature", ALL, DOS,
             {"kind": "forgery", "n": 500, "genuine": 20}),
    # -- the parser ----------------------------------------------------------------------------
    Scenario("oversize", "A frame larger than the 65 535-byte maximum", "tamper",
             BLOCKED, "frame.oversize", ALL, EXPLOIT, {"mutation": "oversize"}),
    Scenario("cbor-malformed", "Malformed CBOR corpus: RFC 8949 Appendix F, indefinite "
             "lengths, duplicate keys, deep nesting, huge declared lengths", "tamper",
             BLOCKED, "frame.malformed", ALL, EXPLOIT, {"mutation": "malformed_corpus"}),
    # -- availability and authentic lies -------------------------------------------------------
    Scenario("silence", "The device is silenced (its frames blocked)", "silence",
             DETECTED, "device.silent", ("inproc", "mqtt"), BLOCK,
             needs=("clock",), assumes=SIM + "; the twin sweeps 10 s later"),
    Scenario("selective-drop", "Three frames in the middle of the stream dropped",
             "selective_drop", DETECTED, "stream.seq_gap", ("inproc", "serial"), BLOCK,
             needs=("clock",), assumes=SIM + "; the twin sweeps after the 3-interval grace"),
    Scenario("value-out-of-range", "Authentic reading outside the operator's bounds",
             "lie", DETECTED, "value.out_of_range", ALL, SPOOF,
             {"values": [900.0], "qc": {"series": {"pump": {"temp": {"min": -20.0,
                                                                     "max": 150.0}}}}},
             needs=("clock", "operator"),
             assumes="the operator bounded pump/temp to -20..150 Cel"),
    Scenario("value-spike", "Authentic one-sample spike", "lie", DETECTED, "value.spike",
             ("inproc",), SPOOF, {"values": ["normal"] * 3 + [35.0, "normal"]}, needs=("clock",),
             assumes=SIM + "; 20 readings of history (the spike test needs 16)"),
    Scenario("value-flatline", "Authentic stuck value (the same reading 15 times)", "lie",
             DETECTED, "value.flatline", ("inproc",), SPOOF, {"values": [21.25] * 15},
             needs=("clock",), assumes=SIM + "; 20 varying readings of history"),
    Scenario("value-drift", "Authentic slow drift away from the daily cycle", "drift",
             DETECTED, "value.drift", ("inproc",), SPOOF, needs=("clock",),
             assumes="4.5 days of readings every 10 minutes on the simulated clock (drift "
                     "learns a daily baseline for 2.5 days), then +1 K/h"),
    Scenario("timestamp-skew", "Authentic frame whose SenML time is an hour in the future",
             "lie", DETECTED, "device.clock_skew", ("inproc", "mqtt"), SPOOF,
             {"values": ["normal"], "time_offset": 3600.0}, needs=("clock",), assumes=SIM),
    Scenario("seq-jump", "Authentic frame a million sequence numbers ahead", "seq_jump",
             DETECTED, "stream.seq_jump", ("inproc", "mqtt"), DOS, needs=("clock",),
             assumes=SIM),
    Scenario("rate-burst", "Authentic burst: 80 frames twenty times faster than usual", "lie",
             DETECTED, "device.rate_anomaly", ("inproc",), DOS,
             {"values": ["normal"] * 80, "step": 0.05}, needs=("clock",), assumes=SIM),
)


def by_id() -> dict[str, Scenario]:
    """The catalogue by scenario id (ids are unique: a test checks it)."""
    return {sc.id: sc for sc in SCENARIOS}
