"""The legacy-sensor bridge: parsing, config, and recorded transcripts through real ptys."""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import threading
import tty
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

import pytest
from conftest import CLI, cli_env

from twinlink.bridge import (
    Bridge,
    ConfigError,
    Delivery,
    LineParser,
    MalformedLine,
    RegexTimeout,
    SensorConfig,
    config_from_dict,
    load_config,
    parse_transcript,
    parse_value,
)
from twinlink.ingest import SerialReceiver
from twinlink.testing import VirtualCable
from twinlink.transport.serial import SerialLink
from twinlink.twin import Reading

DATA = Path(__file__).parent / "data"


def _lines(name: str) -> list[str]:
    return (DATA / name).read_bytes().decode("latin-1").replace("\r\n", "\n").split("\n")[:-1]


def _sensor(name: str) -> SensorConfig:
    cfg = tomllib.loads((DATA / "bridge.toml").read_text())
    return next(SensorConfig(**s) for s in cfg["sensor"] if s["name"] == name)


def test_values_are_numbers_and_text_only_where_configured():
    assert parse_value("t", "21") == 21 and isinstance(parse_value("t", "21"), int)
    assert parse_value("t", "-1.5e1") == -15.0
    assert parse_value("t", ".5") == 0.5
    assert parse_value("t", "TRUE") is True
    assert parse_value("id", "007", keep_string=True) == "007"
    for bad in ("2#.5", "nan", "inf", "1,5", "", "12abc"):
        with pytest.raises(MalformedLine):
            parse_value("t", bad)


def test_csv_kv_and_regex_parsers():
    csvp = LineParser(_sensor("boiler-1"))
    assert csvp.parse("61.2, 1.82 ,12.0,OK\r") == {"temp": 61.2, "pressure": 1.82, "flow": 12.0,
                                                   "status": "OK"}
    assert csvp.parse("temp,pressure,flow,status") is None  # repeated header
    assert csvp.parse("BOILERCTL v2.3") is None and csvp.parse("   ") is None
    assert csvp.parse("61.2,1.82,,OK") == {"temp": 61.2, "pressure": 1.82, "status": "OK"}
    with pytest.raises(MalformedLine, match="missing temp"):
        csvp.parse(",1.82,12,OK")
    kv = LineParser(_sensor("ws7"))
    assert kv.parse("id=WS7 T=18.03 RH=36,P=1013.9; rain=false") == {
        "id": "WS7", "T": 18.03, "RH": 36, "P": 1013.9, "rain": False}
    for bad in ("id=WS7 RH", "T=1 T=2", "=3", "T="):
        with pytest.raises(MalformedLine):
            kv.parse(bad)
    rx = LineParser(SensorConfig("tank", format="regex",
                                 pattern=r"\S+ \S+ tank=(?P<tank>\d+) level: (?P<level>[\d.]+) cm"))
    assert rx.parse("2024-05-01 12:00:00 tank=3 level: 55.2 cm") == {"tank": 3, "level": 55.2}
    with pytest.raises(MalformedLine):
        rx.parse("2024-05-01 12:00:00 tank=3 level: ?? cm")


@pytest.mark.parametrize("bad, match", [
    ({"format": "xml"}, "format must be"),
    ({"format": "csv", "columns": []}, "needs columns"),
    ({"format": "regex", "pattern": "(unclosed"}, "pattern is not a valid regex"),
    ({"format": "regex", "pattern": r"\d+"}, "named groups"),
])
def test_sensor_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        SensorConfig("s", **bad)


_BAD_SENSOR_VALUES = {
    "name": [5, ""],
    "port": [5, ["/dev/ttyUSB0"]],
    "baudrate": ["fast", 9600.0, True, 0],
    "format": [["csv"], 1],
    "columns": [3, "temp,pressure", ["temp", 2]],
    "delimiter": [1, ";;"],
    "pair_separator": [1, "", "(unclosed"],
    "assign": [1, ""],
    "pattern": [1],
    "strings": ["status", [1]],
    "require": ["temp", [None]],
    "units": ["x", {"temp": 1}, ["Cel"]],
    "ignore": [1, "[unclosed"],
    "encoding": [8, "no-such-codec"],
    "max_line": ["1024", 0, 1.5],
    "regex_timeout": ["fast", 0, float("nan"), True],
}


def _sensor_cases():
    base = {"name": "s", "format": "kv"}
    for key, values in _BAD_SENSOR_VALUES.items():
        for value in values:
            fmt = "regex" if key == "pattern" else ("csv" if key == "columns" else "kv")
            table = {**base, "format": fmt, "columns": ["a"], "pattern": r"(?P<a>\d+)",
                     key: value}
            yield pytest.param(table, key, id=f"{key}={value!r}")


@pytest.mark.parametrize("table, key", list(_sensor_cases()))
def test_every_sensor_key_is_type_checked_and_named(table, key):
    """A wrong type or value of any [[sensor]] key is a ConfigError naming that key."""
    data = {"gateway": {"device": "d"}, "output": {"url": "loop://"}, "sensor": [table]}
    with pytest.raises(ConfigError) as exc:
        config_from_dict(data)
    assert key in str(exc.value), str(exc.value)
    assert "Traceback" not in str(exc.value)


@pytest.mark.parametrize("data, match", [
    ({"gateway": {"device": 5}}, r"\[gateway\]: device must be a string, not an integer"),
    ({"gateway": {"device": "d", "state": ["s"]}}, r"\[gateway\]: state must be a string"),
    ({"gateway": {"device": ""}}, r"\[gateway\]: device must not be empty"),
    ({"gateway": {"device": "d", "stat": "s"}}, r"\[gateway\]: stat is not a \[gateway\] key"),
    ({"gateway": "d"}, r"\[gateway\] needs device"),
    ({"output": {"url": []}}, r"\[output\]: url must be a string, not an array"),
    ({"output": {"url": ""}}, r"\[output\]: url must not be empty"),
    ({"output": {"url": "loop://", "write_timeout": "5"}},
     r"\[output\]: write_timeout must be a number, not a string"),
    ({"output": {"url": "loop://", "write_timeout": -1}}, r"write_timeout must be a number from"),
    ({"output": {"url": "loop://", "queue_size": 1.5}}, r"queue_size must be an integer"),
    ({"output": {"url": "loop://", "reconnect": "yes"}}, r"reconnect must be true or false"),
    ({"output": {"url": "mqtt://h", "password": 1234}}, r"password must be a string, not an int"),
    ({"output": {"url": "mqtt://h", "ca": True}}, r"ca must be a string, not a boolean"),
    ({"sensor": [5]}, r"sensor #1 must be a table"),
    ({"sensor": [{"columns": ["x"]}]}, r"sensor #1: needs a name"),
    ({"sensor": [{"name": "a b", "columns": ["x"]}]}, r"name must be 1-64 of"),
    ({"sensors": []}, r"unknown tables \['sensors'\]"),
])
def test_gateway_and_output_keys_are_type_checked(data, match):
    full = {"gateway": {"device": "d"}, "output": {"url": "loop://"},
            "sensor": [{"name": "a", "columns": ["x"]}], **data}
    with pytest.raises(ConfigError, match=match):
        config_from_dict(full)


def test_config_error_never_echoes_a_value():
    """A mistyped password must not end up in the log line that reports it."""
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"gateway": {"device": "d"},
                          "output": {"url": "mqtt://h", "password": ["hunter2-secret"]},
                          "sensor": [{"name": "a", "columns": ["x"]}]})
    assert "hunter2" not in str(exc.value)


def test_output_paths_are_relative_to_the_file(tmp_path):
    cfg = config_from_dict({"gateway": {"device": "d"},
                            "output": {"url": "mqtts://h", "ca": "ca.pem",
                                       "password_file": "/etc/pw", "keepalive": 30},
                            "sensor": [{"name": "a", "columns": ["x"]}]}, tmp_path)
    assert cfg.output_options == {"ca": str(tmp_path / "ca.pem"), "password_file": "/etc/pw",
                                  "keepalive": 30}


def test_config_file_and_its_errors(tmp_path):
    cfg = load_config(DATA / "bridge.toml")
    assert [s.name for s in cfg.sensors] == ["boiler-1", "ws7"]
    assert cfg.device == DATA / "keys" / "gateway.device"  # relative to the file
    assert cfg.output == "/dev/ttyUSB0" and cfg.output_options == {"write_timeout": 5.0}
    with pytest.raises(ConfigError, match="unknown keys"):
        config_from_dict({"gateway": {"device": "d"}, "output": {"url": "loop://"},
                          "sensor": [{"name": "a", "columns": ["x"], "colums": 1}]})
    with pytest.raises(ConfigError, match="no sensors"):
        config_from_dict({"gateway": {"device": "d"}, "output": {"url": "loop://"}})
    with pytest.raises(ConfigError, match=r"\[output\]"):
        config_from_dict({"gateway": {"device": "d"}, "sensor": {"name": "a", "columns": ["x"]}})
    (tmp_path / "bad.toml").write_text("[gateway\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_transcript_dry_run_counts():
    res = parse_transcript(_sensor("boiler-1"), _lines("boiler-1.log"))
    ok = [r for r in res if r.error is None]
    bad = [r for r in res if r.error is not None]
    assert len(ok) == 52
    assert len(bad) == 6
    assert [b.detail for b in bad][-1] == "line longer than 1024 bytes"
    assert "temp: '60#9' is not a number" in bad[1].detail
    assert all(isinstance(v, (int, float)) for r in ok for k, v in r.values.items()
               if k != "status")


def _pty() -> tuple[int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.close(slave)
    os.set_blocking(master, False)
    return master, path


def _feed(master: int, data: bytes, rng: random.Random) -> None:
    """Write like a slow UART: random chunk sizes, so lines arrive split across reads."""
    i = 0
    while i < len(data):
        n = rng.randrange(1, 200)
        try:
            i += os.write(master, data[i:i + n])
        except BlockingIOError:
            select.select([], [master], [], 1.0)  # until the reader has drained some


def _config(rig, out_url: str, ports: dict[str, str]) -> dict:
    data = tomllib.loads((DATA / "bridge.toml").read_text())
    data["gateway"] = {"device": str(rig.provision("gateway")), "state": str(rig.root / "state")}
    data["output"] = {"url": out_url, "write_timeout": 5.0}
    for s in data["sensor"]:
        s["port"] = ports[s["name"]]
    return data


def test_bridge_forwards_recorded_transcripts_through_ptys(rig):
    (m1, p1), (m2, p2) = _pty(), _pty()
    results = []
    try:
        with VirtualCable() as cable, rig.twin() as twin:
            cfg = config_from_dict(_config(rig, cable.a, {"boiler-1": p1, "ws7": p2}))
            rx = SerialReceiver(cable.b, twin, on_result=results.append)
            bridge = Bridge.from_config(cfg)
            try:
                bridge.start()
                rng = random.Random(7)
                _feed(m1, (DATA / "boiler-1.log").read_bytes(), rng)
                _feed(m2, (DATA / "weather-ws7.log").read_bytes(), rng)
                want = 52 + 27
                assert rx.wait_for(want, 60), (rx.counts, bridge.counts)
            finally:
                bridge.close()
                rx.close()
            assert bridge.per_sensor["boiler-1"] == {"forwarded": 52, "malformed": 6}
            assert bridge.per_sensor["ws7"] == {"forwarded": 27, "malformed": 3}
            # The bridge wrote exactly 79 frames, and exactly those arrived.
            assert bridge.delivery() == Delivery("serial", 79, False, None, 0, 79)
            assert rx.counts == {"ok": 79}
            assert bridge.summary().startswith(
                "queued 79, sent 79 (no end-to-end acknowledgement on serial); malformed 9")
            readings = [r for r in results if isinstance(r, Reading)]
            assert {r.device for r in readings} == {"gateway"}
            boiler = [r.payload for r in readings if "boiler-1:temp" in r.payload]
            ws7 = [r.payload for r in readings if "ws7:T" in r.payload]
            assert len(boiler) == 52 and len(ws7) == 27
            assert isinstance(boiler[0]["boiler-1:temp"], float)
            assert boiler[0]["boiler-1:status"] == "OK"
            assert ws7[0]["ws7:id"] == "WS7" and isinstance(ws7[0]["ws7:RH"], int)
            units = {(rec.name, rec.unit) for r in readings for rec in r.records}
            assert ("boiler-1:temp", "Cel") in units
            st = twin.store.status("gateway")
            assert st["accepted"] == 79 and "boiler-1:pressure" in st["state"]
    finally:
        os.close(m1)
        os.close(m2)


def test_bridge_survives_a_failing_output(rig, tmp_path):
    """A send that fails is counted; the bridge goes on with the next line."""
    gone = str(tmp_path / "ttyOUT")
    cfg = config_from_dict(_config(rig, "loop://", {"boiler-1": "", "ws7": ""}))
    bridge = Bridge.from_config(cfg)
    try:
        bridge.output.close()  # swap the configured loop:// link for one whose port is gone
        bridge.output = SerialLink(gone, require_open=False, queue_size=2)
        for line in ["61.0,1.8,12,OK"] * 4 + ["garbage"]:
            bridge.handle_line("boiler-1", line)
        assert bridge.counts == {"forwarded": 2, "send_failed": 2, "malformed": 1}
    finally:
        bridge.close(timeout=0)
    # Two were queued for a port that never came back: the bridge must not call them sent.
    assert bridge.delivery() == Delivery("serial", 2, False, None, 2, 0)
    assert bridge.summary() == ("queued 2, sent 0 (no end-to-end acknowledgement on serial), 2 "
                                "never written (the port stayed down); malformed 1, send "
                                "failures 2")


def test_bridge_cli_parse_dry_run():
    out = subprocess.run([*CLI, "bridge", "--config", str(DATA / "bridge.toml"), "--sensor", "ws7",
                          "--parse", str(DATA / "weather-ws7.log")],
                         capture_output=True, text=True, env=cli_env(), timeout=30)
    assert out.returncode == 0, out.stderr
    objs = [json.loads(x) for x in out.stdout.splitlines()]
    assert sum(o["ok"] for o in objs) == 27
    assert [o["error"] for o in objs if not o["ok"]] == ["malformed_line"] * 3
    assert objs[0] == {"ok": True, "sensor": "ws7", "seq": None,
                       "reading": {"id": "WS7", "T": 18.03, "RH": 36, "P": 1013.9, "rain": False}}


def test_bridge_cli_bad_config_is_one_line(tmp_path):
    (tmp_path / "b.toml").write_text('[gateway]\ndevice="x"\n[output]\nurl="loop://"\n')
    out = subprocess.run([*CLI, "bridge", "--config", str(tmp_path / "b.toml")],
                         capture_output=True, text=True, env=cli_env(), timeout=30)
    assert out.returncode != 0
    assert out.stderr.startswith("twinlink: no sensors") and "Traceback" not in out.stderr


def test_bridge_cli_says_queued_not_forwarded_without_a_broker(rig, tmp_path):
    """``twinlink bridge`` end to end: sensor lines on a pty, MQTT output with no broker. Its
    closing line must say the readings are queued and none stored."""
    from mosquitto import free_port

    master, port = _pty()
    data = _config(rig, "", {"boiler-1": port, "ws7": port})
    data["sensor"] = [s for s in data["sensor"] if s["name"] == "boiler-1"]
    out_url = f"mqtt://127.0.0.1:{free_port()}"
    (tmp_path / "b.toml").write_text(
        "[gateway]\n"
        f"device = {json.dumps(data['gateway']['device'])}\n"
        f"state = {json.dumps(data['gateway']['state'])}\n"
        f"[output]\nurl = {json.dumps(out_url)}\nreconnect_max = 0.5\n"
        f"[[sensor]]\nname = \"boiler-1\"\nport = {json.dumps(port)}\n"
        'columns = ["temp", "pressure", "flow", "status"]\nstrings = ["status"]\n')
    try:
        proc = subprocess.Popen([*CLI, "bridge", "--config", str(tmp_path / "b.toml"), "--jsonl",
                                 "--count", "2", "--duration", "120"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=cli_env())
        try:
            assert proc.stderr is not None
            started = proc.stderr.readline()  # printed once the sensor port is open
            assert started.startswith("bridge: 1 sensor(s)"), started + proc.stderr.read()
            os.write(master, b"61.0,1.8,12,OK\n61.1,1.8,12,OK\n")
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        os.close(master)
    assert proc.returncode == 0, err
    assert [json.loads(x)["ok"] for x in out.splitlines()] == [True, True]
    assert "forwarded" not in err
    assert ("bridge: queued 2, stored 0 (acknowledged end to end by the twin), 2 awaiting the "
            "twin's acknowledgement") in err


@pytest.mark.mqtt
def test_bridge_forwards_over_mqtt_to_the_ingest(rig):
    """The gateway path integrators use: legacy lines -> bridge -> mosquitto -> serve -> twin."""
    from mosquitto import MOSQUITTO, Broker, start_serve, stored_count, wait_until

    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)")
    broker = Broker(rig.root / "broker")
    broker.start()
    serve = None
    try:
        data = _config(rig, broker.url, {"boiler-1": "", "ws7": ""})
        data["output"] = {"url": broker.url, "write_timeout": 5.0}  # a serial-only key
        with pytest.raises(ConfigError, match="write_timeout"):
            Bridge.from_config(config_from_dict(data))
        data["output"] = {"url": broker.url, "reconnect_max": 0.5}
        cfg = config_from_dict(data)
        serve = start_serve(broker.url, rig.db, rig.twin_key_path)
        bridge = Bridge.from_config(cfg)
        try:
            lines = _lines("boiler-1.log")
            for line in lines:
                bridge.handle_line("boiler-1", line)
            wait_until(lambda: stored_count(rig.db) == 52, 60, what="52 readings stored")
        finally:
            bridge.close(timeout=30)  # waits for the twin's acknowledgements, not for 30 s
        assert bridge.counts["forwarded"] == 52 and bridge.counts["malformed"] == 6
        assert bridge.delivery() == Delivery("mqtt", 52, True, 52, 0)
        assert bridge.summary().startswith(
            "queued 52, stored 52 (acknowledged end to end by the twin); malformed 6")
        with rig.twin() as twin:
            st = twin.store.status("gateway")
            assert st["accepted"] == 52 and "boiler-1:temp" in st["state"]
    finally:
        if serve is not None:
            serve.terminate()
        broker.kill()


@pytest.mark.parametrize("table", [
    {"format": "regex", "pattern": r"(?P<v>(a|aa)+)"},
    {"format": "kv", "ignore": r"^(a|aa)+$"},
    {"format": "kv", "pair_separator": r"(?:a|aa)+$|;"},
], ids=["pattern", "ignore", "pair_separator"])
def test_a_pathological_line_cannot_stall_the_gateway(rig, table):
    """Each operator-written regex runs with a time limit: a line that makes it backtrack
    catastrophically is counted as malformed, and the next lines are still sealed and stored.
    (The stdlib ``re`` would take longer than the age of the universe on these lines.)"""
    cfg = SensorConfig("probe", strings=["v"], regex_timeout=0.05, **table)
    evil = "a" * 1000 + "!"
    good = "aaaa" if table["format"] == "regex" else "v=aaaa;n=1"
    results = []
    with VirtualCable() as cable, rig.twin() as twin:
        with SerialReceiver(cable.b, twin, on_result=results.append) as rx:
            bridge = Bridge([cfg], rig.device("gw-regex"), SerialLink(cable.a))
            try:
                worker = threading.Thread(target=lambda: [bridge.handle_line("probe", x)
                                                          for x in (evil, good, evil, good)])
                worker.start()
                worker.join(60)  # a bound against a hang, not a timing claim
                assert not worker.is_alive(), "the bridge is stuck in a regex"
                assert rx.wait_for(2, 60), rx.counts
            finally:
                bridge.close()
    assert bridge.counts == {"malformed": 2, "regex_timeout": 2, "forwarded": 2}
    assert [r.payload["probe:v"] for r in results if isinstance(r, Reading)] == ["aaaa"] * 2
    assert "past the regex time limit" in bridge.summary()
    with pytest.raises(RegexTimeout, match=r"regex ran past its 0.05 s limit"):
        LineParser(cfg).parse(evil)


def test_mqtt_without_a_broker_reports_queued_not_stored(rig):
    """The reported bug: with no broker, two readings were "forwarded". They are queued in the
    gateway's outbox; none is stored until the twin acknowledges it."""
    from mosquitto import free_port

    data = _config(rig, "", {"boiler-1": "", "ws7": ""})
    data["output"] = {"url": f"mqtt://127.0.0.1:{free_port()}", "reconnect_max": 0.5}
    bridge = Bridge.from_config(config_from_dict(data))
    try:
        for line in ["61.0,1.8,12,OK", "61.1,1.8,12,OK"]:
            assert bridge.handle_line("boiler-1", line).error is None
        assert bridge.delivery() == Delivery("mqtt", 2, True, 0, 2)
    finally:
        bridge.close(timeout=0.2)
    assert bridge.delivery() == Delivery("mqtt", 2, True, 0, 2)
    assert bridge.summary().startswith(
        "queued 2, stored 0 (acknowledged end to end by the twin), 2 awaiting the twin's "
        "acknowledgement")
