"""MQTT on a real mosquitto: round trip, --jsonl, Device(link=MqttLink), the gateway mode the
serial bridge uses, TLS with client certificates and passwords, and a device that keeps its
readings on disk while the broker is down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mosquitto import (  # noqa: F401
    Proc,
    assert_exactly_once,
    broker_factory,
    free_port,
    make_tls,
    outbox_count,
    requires_mosquitto,
    running_ingest,
    start_send,
    start_serve,
    stored_count,
    twin_rig,
    wait_until,
)

from twinlink import Device, Twin
from twinlink.mqtt_link import MqttLink, for_device
from twinlink.outbox import OutboxFull
from twinlink.transport.mqtt import (
    MqttOptions,
    check_topic_root,
    parse_url,
    presence_topic,
    topic,
    topic_kid,
)

pytestmark = [pytest.mark.mqtt, requires_mosquitto]


def test_urls_and_topics() -> None:
    assert parse_url("mqtt://h").port == 1883 and not parse_url("mqtt://h").tls
    u = parse_url("mqtts://user:p%40ss@broker.example:9999")
    assert (u.host, u.port, u.tls, u.username, u.password) == ("broker.example", 9999, True,
                                                              "user", "p@ss")
    with pytest.raises(ValueError):
        parse_url("http://h")
    assert topic_kid("twinlink/0a1b/t") == b"\x0a\x1b"
    for bad in ("twinlink/0A1B/t", "twinlink/xyz/t", "twinlink/01/a", "x/01/t", "twinlink//t",
                "twinlink/01020304050607/t", "twinlink/01/t/x", "twinlink/_twin"):
        assert topic_kid(bad) is None
    # A deployment's own root, one or several levels.
    assert topic(b"\x01", "a", "acme/plant-1") == "acme/plant-1/01/a"
    assert topic_kid("acme/plant-1/01/t", "t", "acme/plant-1") == b"\x01"
    for bad in ("twinlink/01/t", "acme/plant-1x/01/t", "acme/01/t", "acme/plant-1/01/a"):
        assert topic_kid(bad, "t", "acme/plant-1") is None
    assert presence_topic("acme") == "acme/_twin"
    for root in ("", "a/+", "#", "a//b", "/a", "a/", "$SYS", "sp ace", "x" * 129, "é", None):
        with pytest.raises(ValueError):
            check_topic_root(root)
    assert check_topic_root("A.b_c-9/x") == "A.b_c-9/x"


def test_cli_round_trip_with_jsonl(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=False)
    out = open(tmp_path / "serve.jsonl", "wb")
    serve = Proc(["serve", "--mqtt", broker.url, "--db", str(rig.db), "--twin-key",
                  str(rig.twin_key), "--jsonl"], stdout=out.fileno())
    wait_until(lambda: "serving" in serve.stderr(), 20, what="serve to subscribe")
    send = start_send(broker.url, rig.bundle("pump"), rig.state, 50, timeout=30)
    assert send.wait(30) == 0, send.stderr()
    assert_exactly_once(rig.db, set(range(50)))
    assert serve.terminate() == 0  # SIGTERM: clean shutdown
    out.close()
    lines = [json.loads(x) for x in (tmp_path / "serve.jsonl").read_text().splitlines()]
    assert [x["seq"] for x in lines] == list(range(50))
    assert lines[3] == {"ok": True, "device": "pump", "seq": 3, "payload": {"i": 3},
                        "provenance": "signed", "time": lines[3]["time"]}
    assert "50 stored" in serve.stderr()


def test_device_link_and_in_process_ingest(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=False)
    with Twin(rig.db, rig.twin_key) as twin, running_ingest(broker.url, twin, batch_wait=0.002):
        dev = Device.load(rig.bundle("pump"), rig.state)
        dev.link = for_device(dev, broker.url, timeout=5)
        try:
            for i in range(30):
                dev.send({"temp": 20 + i / 10})
            assert dev.link.flush(20) == 0
            assert dev.link.stats.acks >= 1 and dev.link.stats.released == 30
        finally:
            dev.close()
    assert_exactly_once(rig.db, set(range(30)))


def test_gateway_mode_releases_on_puback(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    """What the serial bridge uses: no device key, frames of any device, send() + close()."""
    rig = twin_rig(tmp_path, ("pump", "valve"))
    broker = broker_factory(persistence=False)
    serve = start_serve(broker.url, rig.db, rig.twin_key)
    frames = []
    for name in ("pump", "valve"):
        d = Device.load(rig.bundle(name), rig.state)
        frames += d.seal_many([{"i": i} for i in range(20)])
        d.close()
    link = MqttLink(broker.url, outbox=tmp_path / "gw.outbox", timeout=5)
    assert not link.e2e
    for f in frames:
        link.send(f)
    assert link.flush(20) == 0
    link.close()
    wait_until(lambda: stored_count(rig.db) == 40, 20, what="40 readings stored")
    serve.terminate()


def test_queues_on_disk_and_never_waits_for_a_broker_that_is_down(tmp_path: Path) -> None:
    """With no broker, send() only writes the outbox; a full outbox refuses (after the
    when_full="block" wait); flush() gives up after its timeout; close() keeps the frames.
    (How long each of those waits is a benchmark matter, not asserted here.)"""
    rig = twin_rig(tmp_path)
    dev = Device.load(rig.bundle("pump"), rig.state)
    url = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens here
    link = for_device(dev, url, timeout=0.5, capacity=10, when_full="block",
                      options=MqttOptions(connect_timeout=1.0, backoff_max=0.5))
    dev.link = link
    for i in range(10):
        dev.send({"i": i})
    assert link.pending() == 10 and outbox_count(link.outbox.path) == 10  # durable, on disk
    with pytest.raises(OutboxFull):
        dev.send({"i": 10})
    assert link.flush(0.2) == 10
    wait_until(lambda: "cannot reach broker" in link.last_error, 10, what="a failed connect")
    assert not link.connected and link.stats.sent == 0
    dev.close()
    dev2 = Device.load(rig.bundle("pump"), rig.state)
    link2 = for_device(dev2, url, start=False)
    assert link2.pending() == 10  # still queued for the next run
    link2.close()
    dev2.close()


def test_tls_with_client_certificate_and_password(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    tls = make_tls(tmp_path / "tls")
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=False, tls=tls,
                            passwords={"pump": "pump-secret", "twin": "twin-secret"})
    assert broker.url.startswith("mqtts://")
    (tmp_path / "pump.pw").write_text("pump-secret\n")
    (tmp_path / "twin.pw").write_text("twin-secret\n")
    tls_args = ["--ca", str(tls.ca), "--cert", str(tls.client_cert), "--key", str(tls.client_key)]
    serve = start_serve(broker.url, rig.db, rig.twin_key, *tls_args, "--username", "twin",
                        "--password-file", str(tmp_path / "twin.pw"))
    send = start_send(broker.url, rig.bundle("pump"), rig.state, 100, *tls_args, "--username",
                      "pump", "--password-file", str(tmp_path / "pump.pw"), timeout=30)
    assert send.wait(40) == 0, send.stderr()
    assert_exactly_once(rig.db, set(range(100)))
    # A wrong password is refused by the broker: the device keeps its readings and says why.
    (tmp_path / "bad.pw").write_text("nope\n")
    bad = start_send(broker.url, rig.bundle("pump"), rig.state, 3, *tls_args, "--username",
                     "pump", "--password-file", str(tmp_path / "bad.pw"), timeout=2)
    assert bad.wait(30) == 6
    assert "3 reading(s) still awaiting" in bad.stderr() and "refused" in bad.stderr()
    # Without the client certificate the TLS handshake fails.
    nocert = start_send(broker.url, rig.bundle("pump"), rig.state, 0, "--ca", str(tls.ca),
                        "--username", "pump", "--password-file", str(tmp_path / "pump.pw"),
                        timeout=2)
    assert nocert.wait(30) == 6
    serve.terminate()
    assert stored_count(rig.db) == 100


def test_flat_connection_settings_as_the_bridge_passes_them(tmp_path: Path) -> None:
    rig = twin_rig(tmp_path)
    (tmp_path / "pw").write_text("s3cret\n")
    dev = Device.load(rig.bundle("pump"), rig.state)
    link = for_device(dev, "mqtts://127.0.0.1:1", username="pump",
                      password_file=str(tmp_path / "pw"), reconnect_max=2, timeout=1,
                      start=False)
    assert link.opts.password == "s3cret" and link.opts.backoff_max == 2.0 and link.url.tls
    assert link.outbox.path.parent == rig.state
    link.close()
    dev.close()


def test_flat_settings_of_the_wrong_type_name_the_key(tmp_path: Path) -> None:
    rig = twin_rig(tmp_path)
    dev = Device.load(rig.bundle("pump"), rig.state)
    try:
        for bad, key in (({"keepalive": "30"}, "keepalive"), ({"username": 7}, "username"),
                         ({"reconnect_max": True}, "reconnect_max")):
            with pytest.raises(TypeError, match=key):
                for_device(dev, "mqtt://127.0.0.1:1", start=False, **bad)
    finally:
        dev.close()
