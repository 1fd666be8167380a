"""The CLI's one grammar, as a user meets it: help everywhere, global flags anywhere, --json on
every command that prints data, ISO 8601 timestamps, shell completion, the one JSON-lines
policy on all three readers, terminal-safe names, ``serve --serial`` and readings export."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CLI, cli_env
from mosquitto import Proc, broker_factory, wait_until  # noqa: F401

from twinlink import senml
from twinlink.cli import build_parser
from twinlink.cli.jsonl import MAX_LINE
from twinlink.cli.output import iso, parse_time
from twinlink.ingest import SerialReceiver
from twinlink.testing import VirtualCable
from twinlink.transport.serial import SerialLink
from twinlink.twin import Reading

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TWIN_ACTIONS = ["list", "show", "events", "readings", "register", "revoke", "reanchor", "rekey"]
posix_only = pytest.mark.skipif(os.name != "posix", reason="needs POSIX ptys")


def run(*args, stdin: str | bytes = "", check=True, env=None):
    p = subprocess.run([*CLI, *args], input=stdin, capture_output=True,
                       text=not isinstance(stdin, bytes), env=env or cli_env(), timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"{args}: rc={p.returncode}\n{p.stderr}")
    return p


def jsonl(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines()]


@pytest.fixture
def twin_db(rig):
    """A twin with pump-17 registered and two readings stored through ``open``."""
    rig.provision("pump-17")
    dev = rig.device("pump-17")
    try:
        frames = [dev.seal({"temp": 21.5}), dev.seal({"temp": 22.0, "door": "open"})]
    finally:
        dev.close()
    run("open", "--db", str(rig.db), "--twin-key", str(rig.twin_key_path),
        stdin="".join(f.hex() + "\n" for f in frames))
    return rig


# -- help and grammar --------------------------------------------------------------------------


def test_no_arguments_prints_help_and_exits_0():
    p = run()
    assert p.stdout.startswith("usage: twinlink") and "exit codes:" in p.stdout
    for cmd in ("keygen", "seal", "open", "twin", "send", "serve", "monitor", "completion"):
        assert f"    {cmd} " in p.stdout
    group = run("twin")
    assert group.stdout.startswith("usage: twinlink twin")
    assert all(a in group.stdout for a in TWIN_ACTIONS)


@pytest.mark.parametrize("action", TWIN_ACTIONS)
def test_each_twin_action_has_its_own_help_with_an_example(action):
    out = run("twin", action, "--help").stdout
    assert out.startswith(f"usage: twinlink twin {action}")
    assert "examples:\n" in out and f"twinlink twin {action}" in out.split("examples:")[1]
    assert "TWINLINK_DB" in out  # --db's default is documented, environment variable included
    others = set(TWIN_ACTIONS) - {action}
    assert f"usage: twinlink twin {action}" in out and not any(
        f"usage: twinlink twin {o}" in out for o in others)


def _parsers(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_option_is_documented_with_its_default():
    undocumented = []
    for path, parser in _parsers(build_parser()):
        fmt = parser._get_formatter()
        for a in parser._actions:
            if not a.option_strings or a.help == argparse.SUPPRESS:
                continue
            text = fmt._expand_help(a) if a.help else ""
            if not text or (a.nargs != 0 and not a.required
                            and "default" not in text and "required" not in text):
                undocumented.append((" ".join(path), a.option_strings, text))
    assert not undocumented, undocumented


def test_one_json_flag_and_one_timeout_meaning():
    for path, parser in _parsers(build_parser()):
        opts = {o: a for a in parser._actions for o in a.option_strings}
        if "--jsonl" in opts:  # the deprecated alias: hidden, same destination as --json
            assert opts["--jsonl"].help == argparse.SUPPRESS
            assert opts["--jsonl"].dest == opts["--json"].dest == "json"
        if "--timeout" in opts and opts["--timeout"].help != argparse.SUPPRESS:
            assert "seconds to wait for" in opts["--timeout"].help, path
    serve = run("serve", "--help").stdout
    assert "--ready-timeout" in serve and "--timeout" not in serve


def test_global_flags_after_the_subcommand(twin_db):
    db = str(twin_db.db)
    for argv in (["inspect", "not-hex", "--debug"], ["--debug", "inspect", "not-hex"],
                 ["twin", "show", "nobody", "--db", db, "--debug"]):
        p = run(*argv, check=False)
        assert p.returncode != 0 and "Traceback" in p.stderr, argv
    assert "Traceback" not in run("twin", "show", "nobody", "--db", db, check=False).stderr
    for argv in (["twin", "list", "--version"], ["doctor", "--version"], ["--version"]):
        assert run(*argv).stdout.startswith("twinlink "), argv
    assert json.loads(run("doctor", "-v", "--json").stdout)["backend"]
    # --db may also come before the action
    assert jsonl(run("twin", "--db", db, "list", "--json").stdout)[0]["name"] == "pump-17"


def test_db_defaults_to_the_environment_variable(twin_db):
    env = {**cli_env(), "TWINLINK_DB": str(twin_db.db)}
    out = run("twin", "list", "--json", env=env).stdout
    assert jsonl(out)[0]["name"] == "pump-17"
    helptext = " ".join(run("open", "--help", env=env).stdout.split())
    assert "default $TWINLINK_DB if set, else twin.db" in helptext
    assert f"(now:{twin_db.db})" in "".join(helptext.split())  # help wraps at hyphens too


# -- JSON and timestamps -----------------------------------------------------------------------


def test_json_on_every_command_that_prints_data(twin_db, tmp_path):
    rig, db, key = twin_db, str(twin_db.db), str(twin_db.twin_key_path)
    frame = None
    dev = rig.device("pump-17")
    try:
        frame = dev.seal({"v": 1}).hex()
    finally:
        dev.close()
    outputs = {
        "keygen": run("keygen", "device", "spare", "--out", str(tmp_path / "k"), "--json"),
        "provision": run("provision", "valve", "--twin-pub", str(rig.root / "twin.pub"),
                         "--out", str(tmp_path / "k"), "--db", db, "--json"),
        "inspect": run("inspect", frame, "--db", db, "--twin-key", key, "--json"),
        "open": run("open", "--db", db, "--twin-key", key, "--json", stdin=frame + "\n"),
        "doctor": run("doctor", "--json"),
        "list": run("twin", "list", "--db", db, "--json"),
        "show": run("twin", "show", "pump-17", "--db", db, "--json"),
        "events": run("twin", "events", "--db", db, "--json"),
        "readings": run("twin", "readings", "--db", db, "--json"),
        "revoke": run("twin", "revoke", "valve", "--db", db, "--json"),
        "rekey": run("twin", "rekey", "pump-17", "--db", db, "--json"),
        "reanchor": run("twin", "reanchor", "pump-17", "--floor", "0", "--db", db, "--json"),
        "register": run("twin", "register", "spare", "--pub", str(tmp_path / "k/spare.pub"),
                        "--db", db, "--json"),
        "list-alias": run("twin", "list", "--db", db, "--jsonl"),  # deprecated, still works
    }
    for name, p in outputs.items():
        objs = jsonl(p.stdout)
        assert objs and all(isinstance(o, dict) for o in objs), name
    assert jsonl(outputs["register"].stdout)[0]["name"] == "spare"
    assert jsonl(outputs["revoke"].stdout)[0]["status"] == "revoked"
    assert jsonl(outputs["open"].stdout)[0]["ok"] is True
    assert jsonl(outputs["list-alias"].stdout) == jsonl(run("twin", "list", "--db", db,
                                                            "--json").stdout)


def test_timestamps_are_iso_8601_utc_with_milliseconds(twin_db):
    db = str(twin_db.db)
    show = json.loads(run("twin", "show", "pump-17", "--db", db, "--json").stdout)
    assert ISO.match(show["registered_at"]) and ISO.match(show["last_seen"])
    assert all(ISO.match(s["time"]) for s in show["state"].values())
    for e in jsonl(run("twin", "events", "--db", db, "--json").stdout):
        assert ISO.match(e["at"])
    for r in jsonl(run("twin", "readings", "--db", db, "--json").stdout):
        assert ISO.match(r["received_at"]) and ISO.match(r["time"])
    for d in jsonl(run("twin", "list", "--db", db, "--json").stdout):
        assert ISO.match(d["registered_at"])
    # human output too
    first = run("twin", "events", "--db", db).stdout.splitlines()[0]
    assert ISO.match(first.split()[0])
    human = run("twin", "show", "pump-17", "--db", db).stdout
    assert ISO.match(re.search(r"registered_at\s+(\S+)", human).group(1))
    assert ISO.match(run("twin", "readings", "--db", db).stdout.splitlines()[1].split()[0])


def test_iso_and_parse_time_round_trip():
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    assert iso(1796143107.1234) == "2026-12-01T16:38:27.123Z"
    assert iso(None) is None and iso(1e20) == 1e20  # beyond year 9999: stays a number
    assert parse_time("2026-12-01T16:38:27.123Z") == pytest.approx(1796143107.123)
    assert parse_time("2026-12-01T18:38:27.123+02:00") == pytest.approx(1796143107.123)
    assert parse_time("2026-12-01T16:38:27.123") == pytest.approx(1796143107.123)  # UTC
    assert parse_time("2026-12-01") == parse_time("2026-12-01T00:00:00Z") == 1796083200
    assert parse_time("1796143107.5") == 1796143107.5
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")


# -- completion ---------------------------------------------------------------------------------


def _bash_complete(script: str, *words: str) -> list[str]:
    words_q = " ".join(f"'{w}'" for w in words)
    prog = (f"{script}\nCOMP_WORDS=({words_q}); COMP_CWORD={len(words) - 1}; COMPREPLY=();"
            ' _twinlink; printf "%s\\n" "${COMPREPLY[@]}"')
    out = subprocess.run(["bash", "--norc", "-c", prog], capture_output=True, text=True,
                         timeout=30, cwd="/")
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_bash_completion_follows_the_parser():
    script = run("completion", "bash").stdout
    assert "complete -o filenames -F _twinlink twinlink" in script
    assert _bash_complete(script, "twinlink", "se") == ["seal", "send", "serve"]
    assert _bash_complete(script, "twinlink", "twin", "re") == [
        "readings", "register", "revoke", "reanchor", "rekey", "retention"]
    assert _bash_complete(script, "twinlink", "twin", "--db", "x.db", "readings", "--format",
                          "") == ["table", "csv", "jsonl"]
    assert _bash_complete(script, "twinlink", "--debug", "twin", "rekey", "--b") == ["--bundle"]
    assert _bash_complete(script, "twinlink", "completion", "") == ["bash", "zsh"]
    assert "--ready-timeout" in _bash_complete(script, "twinlink", "serve", "--")


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh not installed")
def test_zsh_completion_follows_the_parser(tmp_path):
    script = run("completion", "zsh").stdout
    assert script.startswith("#compdef twinlink")
    (tmp_path / "_twinlink").write_text(script)
    assert subprocess.run(["zsh", "-n", str(tmp_path / "_twinlink")]).returncode == 0
    # Outside a completion widget: stand-ins for compadd/_files record what would be offered.
    prog = ("compdef(){ :; }; compadd(){ [[ $1 == -- ]] && shift; print -r -- \"$*\"; (( $# )); };"
            " _files(){ print -r -- FILES; }; source " + str(tmp_path / "_twinlink") + ";"
            " words=(twinlink twin readings --format ''); CURRENT=5; _twinlink;"
            " words=(twinlink twin --db x l); CURRENT=5; _twinlink;"
            " words=(twinlink send --device ''); CURRENT=4; _twinlink")
    out = subprocess.run(["zsh", "-f", "-c", prog], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "table csv jsonl"
    assert lines[1].split()[0] == "list" and "rekey" in lines[1].split()
    assert lines[2] == "FILES"


# -- the one JSON-lines policy ------------------------------------------------------------------

BAD_INPUT = [
    b'{"i": 0}',
    b"not json",  # 2
    b"[1, 2]",  # 3: not an object
    b'{"i": NaN}',  # 4: not RFC 8259
    b'{"i": "\xff\xfe"}',  # 5: not UTF-8
    b'{"i": "' + b"x" * (MAX_LINE + 10) + b'"}',  # 6: too long
    b"{}",  # 7: nothing to seal
    b'{"i": {"nested": 1}}',  # 8: a value the device cannot encode
    b"",  # blank: ignored
    b'{"i": 1}',
    b'{"i": 2}',
]
BAD_LINES = [2, 3, 4, 5, 6, 7, 8]
GOOD = [{"i": 0}, {"i": 1}, {"i": 2}]


def _assert_policy(stderr: str) -> None:
    skipped = [int(m) for m in re.findall(r"twinlink: line (\d+) skipped: ", stderr)]
    assert skipped == BAD_LINES, stderr
    assert "Traceback" not in stderr


def test_json_lines_policy_seal(rig):
    bundle = rig.provision("p")
    p = run("seal", "--device", str(bundle), "--state", str(rig.root / "st"),
            stdin=b"\n".join(BAD_INPUT) + b"\n", check=False)
    assert p.returncode == 1
    _assert_policy(p.stderr.decode())
    frames = p.stdout.decode().split()
    with rig.twin() as twin:
        assert [twin.open(bytes.fromhex(f)).payload for f in frames] == GOOD


@posix_only
def test_json_lines_policy_send_serial(rig):
    bundle = rig.provision("p")
    results: list = []
    with VirtualCable() as cable, rig.twin() as twin:
        rx = SerialReceiver(cable.b, twin, on_result=results.append)
        try:
            p = run("send", "--device", str(bundle), "--state", str(rig.root / "st"),
                    "--serial", cable.a, "--timeout", "10", "--json",
                    stdin=b"\n".join(BAD_INPUT) + b"\n", check=False)
            assert rx.wait_for(len(GOOD), 20), rx.counts
        finally:
            rx.close()
    err = p.stderr.decode()
    assert p.returncode == 1, err
    _assert_policy(err)
    assert [r.payload for r in results if isinstance(r, Reading)] == GOOD
    # What serial can honestly say: sent, never stored.
    assert "sent 3 readings" in err and "no end-to-end acknowledgement" in err
    assert "stored" not in err
    assert json.loads(p.stdout) == {"sent": 3, "skipped": len(BAD_LINES)}


@pytest.mark.mqtt
def test_json_lines_policy_send_mqtt_and_stored_report(tmp_path, broker_factory):  # noqa: F811
    from mosquitto import MOSQUITTO, start_serve, stored, twin_rig

    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto not installed")
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=False)
    serve = start_serve(broker.url, rig.db, rig.twin_key)
    try:
        send = Proc(["send", "--device", str(rig.bundle("pump")), "--state", str(rig.state),
                     "--mqtt", broker.url, "--timeout", "30", "--json"],
                    stdin=b"\n".join(BAD_INPUT) + b"\n", stdout=subprocess.PIPE)
        rc = send.wait(60)
        out = send.p.stdout.read().decode()
    finally:
        serve.terminate()
    err = send.stderr()
    assert rc == 1, err  # everything good stored, but some lines were bad
    _assert_policy(err)
    assert "twinlink: stored 3, pending 0" in err
    assert json.loads(out) == {"stored": 3, "refused": 0, "pending": 0,
                               "skipped": len(BAD_LINES)}
    assert stored(rig.db) == [0, 1, 2]


# -- names on a terminal ------------------------------------------------------------------------

HOSTILE = "evil\x1b]0;owned\x07\x1b[2J\u202ename\x9b31m"


def _legacy_rename(db: Path, old: str, new: str) -> None:
    """Simulate a database written before names were validated: the one place a test writes
    SQL, because the library refuses such a name at registration."""
    con = sqlite3.connect(db)
    try:
        con.execute("UPDATE devices SET name = ? WHERE name = ?", (new, old))
        con.commit()
    finally:
        con.close()


def _assert_terminal_safe(text: str) -> None:
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]", text), repr(text)
    assert "\\x1b" in text  # shown escaped, not dropped


def test_hostile_legacy_name_is_escaped_on_the_terminal(twin_db):
    db = str(twin_db.db)
    _legacy_rename(twin_db.db, "pump-17", HOSTILE)
    _assert_terminal_safe(run("twin", "list", "--db", db).stdout)
    _assert_terminal_safe(run("twin", "show", HOSTILE, "--db", db).stdout)
    _assert_terminal_safe(run("twin", "events", "--db", db).stdout)
    _assert_terminal_safe(run("twin", "readings", "--db", db).stdout)
    # JSON keeps the exact name, escaped as JSON does
    assert jsonl(run("twin", "list", "--db", db, "--json").stdout)[0]["name"] == HOSTILE
    assert "\x1b" not in run("twin", "list", "--db", db, "--json").stdout


@posix_only
def test_hostile_legacy_name_is_escaped_in_monitor(rig):
    dev = rig.device("bench")
    _legacy_rename(rig.db, "bench", HOSTILE)
    try:
        with VirtualCable() as cable:
            proc = Proc(["monitor", cable.b, "--db", str(rig.db), "--twin-key",
                         str(rig.twin_key_path), "--count", "2"], stdout=subprocess.PIPE)
            wait_until(lambda: "listening" in proc.stderr(), 20, what="monitor to listen")
            link = SerialLink(cable.a)
            try:
                link.send(dev.seal({"t": 1}))
                link.send(dev.seal({"t": 2}))
                assert proc.wait(30) == 0, proc.stderr()
            finally:
                link.close()
    finally:
        dev.close()
    _assert_terminal_safe(proc.p.stdout.read().decode())


# -- serve --serial -----------------------------------------------------------------------------


def _serve_serial(rig, port: str, *extra: str) -> Proc:
    p = Proc(["serve", "--serial", port, "--db", str(rig.db), "--twin-key",
              str(rig.twin_key_path), *extra], stdout=subprocess.PIPE)
    wait_until(lambda: "serving" in p.stderr() or p.p.poll() is not None, 20,
               what="serve --serial to start")
    assert p.p.poll() is None, p.stderr()
    return p


@posix_only
def test_serve_serial_stores_and_prints_json_until_count(rig):
    dev = rig.device("pump")
    try:
        with VirtualCable() as cable:
            serve = _serve_serial(rig, cable.b, "--json", "--count", "4")
            link = SerialLink(cable.a)
            try:
                first = dev.seal({"temp": 20.0})
                link.send(first)
                link.send(dev.seal({"temp": 20.5}))
                link.send(first)  # a replay: refused, and counted as a frame
                link.send(dev.seal({"temp": 21.0}))
                assert serve.wait(30) == 0, serve.stderr()  # --count 4 stops it
            finally:
                link.close()
    finally:
        dev.close()
    objs = jsonl(serve.p.stdout.read().decode())
    assert [o.get("error", "ok") for o in objs] == ["ok", "ok", "replay", "ok"]
    assert objs[0]["device"] == "pump" and ISO.match(objs[0]["time"])
    assert "4 frames, 3 stored, 1 refused" in serve.stderr()
    readings = jsonl(run("twin", "readings", "pump", "--db", str(rig.db), "--json").stdout)
    assert [r["payload"]["temp"] for r in readings] == [20.0, 20.5, 21.0]


@posix_only
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_serial_stops_cleanly_on_a_signal(rig, sig):
    rig.provision("quiet")  # creates the database
    with VirtualCable() as cable:
        serve = _serve_serial(rig, cable.b)
        serve.p.send_signal(sig)
        assert serve.wait(30) == 0, serve.stderr()
    assert "stopped; 0 frames" in serve.stderr() and "Traceback" not in serve.stderr()


@posix_only
def test_serve_serial_duration_and_missing_port(rig, tmp_path):
    rig.provision("quiet")
    with VirtualCable() as cable:
        serve = _serve_serial(rig, cable.b, "--duration", "0.5")
        assert serve.wait(30) == 0, serve.stderr()
    gone = run("serve", "--serial", str(tmp_path / "ttyNONE"), "--db", str(rig.db),
               "--twin-key", str(rig.twin_key_path), check=False)
    assert gone.returncode == 5 and "Traceback" not in gone.stderr
    both = run("serve", "--serial", "x", "--mqtt", "mqtt://h", "--twin-key", "k", check=False)
    assert both.returncode == 2 and "exactly one of" in both.stderr


# -- readings export ----------------------------------------------------------------------------


def test_readings_csv_and_jsonl_with_since_until(rig):
    rig.provision("pump")
    dev = rig.device("pump")
    try:
        def stamp(reading, units=None):
            return dev.seal_raw(senml.encode(reading, time.time(), units))

        early = [stamp({"temp": 1.0}, {"temp": "Cel"})]
        mid = [stamp({"temp": 2.0, "note": "=HYPERLINK(\"x\")"}, {"temp": "Cel"}),
               stamp({"temp": 3.0}, {"temp": "Cel"})]
        late = [stamp({"temp": 4.0}, {"temp": "Cel"})]
    finally:
        dev.close()
    with rig.twin() as twin:
        twin.open_many(early)
        t0 = time.time()
        wait_until(lambda: time.time() > t0, 5, step=0.001, what="the clock to move")
        twin.open_many(mid)
        t1 = time.time()
        wait_until(lambda: time.time() > t1, 5, step=0.001, what="the clock to move")
        twin.open_many(late)
    db = str(rig.db)
    rng = ["--since", repr(t0), "--until", repr(t1)]
    rows = list(csv.DictReader(io.StringIO(
        run("twin", "readings", "pump", "--db", db, *rng, "--format", "csv").stdout)))
    assert [(r["name"], r["value"], r["unit"]) for r in rows] == [
        ("temp", "2.0", "Cel"), ("note", "'=HYPERLINK(\"x\")", ""), ("temp", "3.0", "Cel")]
    assert all(ISO.match(r["received_at"]) and ISO.match(r["time"]) for r in rows)
    objs = jsonl(run("twin", "readings", "--db", db, *rng, "--format", "jsonl").stdout)
    assert [o["payload"]["temp"] for o in objs] == [2.0, 3.0]
    assert objs[0]["payload"]["note"] == '=HYPERLINK("x")'  # jsonl keeps the exact text
    assert objs[0]["units"] == {"temp": "Cel", "note": None}
    # ISO bounds, open-ended ranges, and a range with no limit returns every reading
    everything = jsonl(run("twin", "readings", "--db", db, "--since", "2000-01-01T00:00Z",
                           "--json").stdout)
    assert [o["payload"]["temp"] for o in everything] == [1.0, 2.0, 3.0, 4.0]
    newest = jsonl(run("twin", "readings", "--db", db, "--since", repr(t0), "--limit", "1",
                       "--json").stdout)
    assert [o["payload"]["temp"] for o in newest] == [4.0]
    bad = run("twin", "readings", "--db", db, "--since", "yesterday", check=False)
    assert bad.returncode == 2 and "ISO 8601" in bad.stderr


def test_readings_pages_through_a_long_range(rig, monkeypatch):
    """More readings in the range than one page: every one comes out once, in order."""
    from twinlink.cli import twin_cmds

    rig.provision("pump")
    dev = rig.device("pump")
    try:
        frames = dev.seal_many([{"i": i} for i in range(25)])
    finally:
        dev.close()
    with rig.twin() as twin:
        twin.open_many(frames)
        monkeypatch.setattr(twin_cmds, "PAGE", 7)
        args = build_parser().parse_args(["twin", "readings", "--since", "0"])
        rows = list(twin_cmds._rows(twin.store, args))
    assert [r["payload"]["i"] for r in rows] == list(range(25))
