"""The twinlink command as a user runs it: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import select
import subprocess

import pytest
from conftest import CLI, cli_env

from twinlink.store import AUDIT_REASONS


def run(*args, stdin="", check=True, cwd=None):
    p = subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
        cwd=cwd,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"{args}: rc={p.returncode}\n{p.stderr}")
    return p


def seal_args(tmp):
    """``twinlink seal`` for the provisioned pump-17 with its state in ``tmp/st``."""
    return ["seal", "--device", str(tmp / "keys/pump-17.device"), "--state", str(tmp / "st")]


def seal(tmp, stdin, check=True):
    return run(*seal_args(tmp), stdin=stdin, check=check)


@pytest.fixture
def setup(tmp_path):
    run("keygen", "twin", "--out", str(tmp_path / "keys"))
    db = str(tmp_path / "twin.db")
    run(
        "provision",
        "pump-17",
        "--twin-pub",
        str(tmp_path / "keys/twin.pub"),
        "--out",
        str(tmp_path / "keys"),
        "--db",
        db,
    )
    return tmp_path, db


def test_keygen_and_provision_files(setup):
    tmp, db = setup
    k = tmp / "keys"
    for name, mode in (("twin.key", 0o600), ("pump-17.key", 0o600), ("pump-17.device", 0o600)):
        assert os.stat(k / name).st_mode & 0o777 == mode
    assert (k / "twin.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    lst = run("twin", "list", "--db", db, "--json").stdout.splitlines()
    assert json.loads(lst[0])["name"] == "pump-17" and json.loads(lst[0])["kid"] == "01"


def test_seal_then_open_pipeline(setup):
    tmp, db = setup
    lines = '{"temp": 21.5}\n{"temp": 22.0, "hum": 40}\n'
    frames = seal(tmp, lines).stdout
    assert len(frames.splitlines()) == 2
    out = run(
        "open",
        "--db",
        db,
        "--twin-key",
        str(tmp / "keys/twin.key"),
        stdin=frames + frames.splitlines()[0] + "\nzz\n",
    ).stdout
    objs = [json.loads(x) for x in out.splitlines()]
    assert objs[0] == {
        "ok": True,
        "device": "pump-17",
        "seq": 0,
        "payload": {"temp": 21.5},
        "provenance": "signed",
        "time": objs[0]["time"],
    }
    assert objs[1]["payload"] == {"temp": 22.0, "hum": 40}
    assert objs[2]["ok"] is False and objs[2]["error"] == "replay"
    assert objs[3]["ok"] is False and objs[3]["error"] == "malformed"
    show = json.loads(run("twin", "show", "pump-17", "--db", db, "--json").stdout)
    assert show["accepted"] == 2 and show["state"]["hum"]["value"] == 40
    ev = [json.loads(x) for x in run("twin", "events", "--db", db, "--json").stdout.splitlines()]
    assert [e["reason"] for e in ev if e["reason"] not in AUDIT_REASONS] == ["replay", "malformed"]


def test_open_reports_each_reason(setup, tmp_path):
    tmp, db = setup
    run(
        "provision",
        "valve",
        "--twin-pub",
        str(tmp / "keys/twin.pub"),
        "--out",
        str(tmp / "keys"),
        "--db",
        db,
    )
    run(
        "provision",
        "ghost",
        "--twin-pub",
        str(tmp / "keys/twin.pub"),
        "--out",
        str(tmp / "other"),
        "--kid",
        "0f0f",
    )

    def seal_as(name, d="keys"):
        return run(
            "seal",
            "--device",
            str(tmp / d / f"{name}.device"),
            "--state",
            str(tmp / "st"),
            stdin='{"v": 1}\n',
        ).stdout.strip()

    good = seal_as("pump-17")
    flipped = good[:-2] + ("00" if good[-2:] != "00" else "01")
    ghost = seal_as("ghost", "other")
    valve = seal_as("valve")
    run("twin", "revoke", "valve", "--db", db)
    out = run(
        "open",
        "--db",
        db,
        "--twin-key",
        str(tmp / "keys/twin.key"),
        stdin="\n".join([flipped, good, ghost, valve, good[:40]]) + "\n",
    ).stdout
    reasons = [json.loads(x).get("error", "ok") for x in out.splitlines()]
    assert reasons == ["bad_signature", "ok", "unknown_device", "revoked", "malformed"]


def test_seal_streams_each_line_immediately(setup):
    tmp, _ = setup
    p = subprocess.Popen(
        [*CLI, *seal_args(tmp)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        for i in range(3):
            p.stdin.write(json.dumps({"i": i}) + "\n")
            p.stdin.flush()
            ready, _, _ = select.select([p.stdout], [], [], 20)
            assert ready, "no frame written before the next input line"
            assert len(p.stdout.readline().strip()) > 100
    finally:
        p.stdin.close()
        p.wait(20)
    assert p.returncode == 0


def test_inspect_dump_and_verdict(setup):
    tmp, db = setup
    f = seal(tmp, '{"temp": 1}\n').stdout.strip()
    text = run("inspect", f).stdout
    # protected header {1: -8, 4: kid, 10: kid context}: the device's fresh context is named
    assert "kid" in text and "18([h'a3012704" in text and "seq" in text
    (tmp / "frame.hex").write_text(f)
    j = json.loads(
        run(
            "inspect",
            str(tmp / "frame.hex"),
            "--db",
            db,
            "--twin-key",
            str(tmp / "keys/twin.key"),
            "--json",
        ).stdout
    )
    assert j["frame"]["seq"] == 0 and j["verdict"]["ok"] is True
    assert j["verdict"]["payload"] == {"temp": 1} and j["verdict"]["window"] == "fresh"
    # inspect is a dry run: the frame is still fresh for open
    out = run("open", "--db", db, "--twin-key", str(tmp / "keys/twin.key"), stdin=f + "\n").stdout
    assert json.loads(out)["ok"] is True
    long = seal(tmp, json.dumps({f"sensor-{i}": i * 1.5 for i in range(8)}) + "\n").stdout
    assert len(long.strip()) > 255  # longer than a file name may be: still read as hex
    # A new process restarts past the durably reserved chunk: stored 0, so 0 + K(1024) + F(1).
    assert json.loads(run("inspect", long.strip(), "--json").stdout)["frame"]["seq"] == 1025
    bad = json.loads(run("inspect", "d2840102", "--json").stdout)
    assert "malformed" in bad["frame"]


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["open", "--db", "/nonexistent/twin.db", "--twin-key", "/x"], 7, "no twin database"),
        (["seal", "--device", "/nonexistent.device"], 3, "cannot read"),
        (["twin", "show", "nobody", "--db", "{db}"], 7, "no device nobody"),
        (["inspect", "not-hex"], 2, "neither a file nor hex"),
        (["provision", "x", "--twin-pub", "/nope.pub", "--out", "{tmp}/o"], 3, "cannot read"),
    ],
)
def test_errors_are_one_line_with_hint_and_code(setup, args, code, needle):
    tmp, db = setup
    args = [a.format(db=db, tmp=tmp) for a in args]
    p = run(*args, check=False)
    assert p.returncode == code, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("twinlink: ") and " — " in lines[0]
    assert needle in lines[0] and "Traceback" not in p.stderr


def test_bad_json_line_is_skipped_and_reported(setup):
    tmp, _ = setup
    p = seal(tmp, '[1,2]\n{"a": 1}\n', check=False)
    assert p.returncode == 1 and "line 1 skipped" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stdout.splitlines()) == 1  # the good line after it was still sealed


def test_insecure_bundle_refused(setup):
    tmp, _ = setup
    os.chmod(tmp / "keys/pump-17.device", 0o644)
    p = run("seal", "--device", str(tmp / "keys/pump-17.device"), stdin="", check=False)
    assert p.returncode == 3 and "chmod 600" in p.stderr


def test_state_locked_exit_code(setup):
    tmp, _ = setup
    holder = subprocess.Popen(
        [*CLI, *seal_args(tmp)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        holder.stdin.write('{"a": 1}\n')
        holder.stdin.flush()
        holder.stdout.readline()  # the holder has the lock once it sealed
        p = seal(tmp, '{"a": 1}\n', check=False)
        assert p.returncode == 4 and "another process" in p.stderr
    finally:
        holder.stdin.close()
        holder.wait(20)


def test_debug_shows_traceback(setup):
    p = run("--debug", "inspect", "not-hex", check=False)
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_doctor_and_version():
    out = json.loads(run("doctor", "--json").stdout)
    assert out["backend"] in ("native", "python") and out["why"]
    assert "backend" in run("--version").stdout


def test_demo_runs_and_checks_itself(tmp_path):
    p = run("demo", "--count", "4", "--keep", str(tmp_path / "demo"))
    assert "demo passed" in p.stdout
    assert "refused: replay" in p.stdout and "refused: bad_signature" in p.stdout


def test_rekey_keeps_history_and_updates_the_bundle(setup):
    tmp, db = setup
    bundle, key = str(tmp / "keys/pump-17.device"), str(tmp / "keys/twin.key")
    before = seal(tmp, '{"v": 1}\n').stdout
    assert json.loads(run("open", "--db", db, "--twin-key", key, stdin=before).stdout)["ok"]
    p = run("twin", "rekey", "pump-17", "--db", db, "--salt", "a1b2", "--bundle", bundle)
    assert "updated" in p.stderr and os.stat(bundle).st_mode & 0o777 == 0o600
    after = seal(tmp, '{"v": 2}\n').stdout
    out = json.loads(run("open", "--db", db, "--twin-key", key, stdin=after).stdout)
    assert out["ok"] and out["seq"] == 0  # a fresh counter in the new context
    show = json.loads(run("twin", "show", "pump-17", "--db", db, "--json").stdout)
    # epoch 1: the device's first (fresh) context; 2: the operator's re-key; 3: the context
    # the device started under the new salt (new salt, no state for it yet: a fresh context)
    assert show["epoch"] == 3 and show["accepted"] == 2
    again = run("twin", "rekey", "pump-17", "--db", db, "--salt", "a1b2", check=False)
    assert again.returncode == 7 and "already used" in again.stderr  # a registry conflict
