"""A real mosquitto broker for tests: free port, generated config, killable and restartable.

Import the fixtures into a test module (``from mosquitto import broker_factory``); nothing here
relies on a system service. Also: TLS material generated with ``cryptography``, and helpers to
run ``twinlink serve`` / ``twinlink send`` as real subprocesses.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "twinlink"]

requires_mosquitto = pytest.mark.skipif(
    not os.path.exists(MOSQUITTO), reason="mosquitto not installed (apt-get install mosquitto)")


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.02,
               what: str = "condition") -> None:
    """Poll ``pred`` until it is true; fail the test after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


@dataclass
class Tls:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls(d: Path) -> Tls:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(path: Path, k: ec.EllipticCurvePrivateKey) -> None:
        path.write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        path.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("twinlink test CA"))
          .issuer_name(name("twinlink test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        k = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
             .public_key(k.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage(
                 [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                 critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        return b.sign(ca_key, hashes.SHA256()), k

    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    sc, sk = leaf("localhost", True)
    (d / "server.pem").write_bytes(sc.public_bytes(pem))
    write_key(d / "server.key", sk)
    cc, ck = leaf("pump-client", False)
    (d / "client.pem").write_bytes(cc.public_bytes(pem))
    write_key(d / "client.key", ck)
    return Tls(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem",
               d / "client.key")


class Broker:
    """One mosquitto process on a fixed free port; ``kill``/``stop``/``start`` keep the port."""

    def __init__(self, workdir: Path, persistence: bool = True, tls: Tls | None = None,
                 passwords: dict[str, str] | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.persistence = persistence
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [f"listener {self.port} 127.0.0.1",
                 f"persistence {'true' if persistence else 'false'}",
                 f"persistence_location {self.dir}/",
                 "autosave_interval 1",
                 "max_queued_messages 200000",
                 "max_inflight_messages 0",
                 "log_type error", "log_type warning", "log_type notice",
                 f"log_dest file {self.dir}/mosquitto.log"]
        if os.geteuid() == 0:
            # Run as root, mosquitto would switch to user "mosquitto", which cannot read the
            # test's private temp dir (persistence, log, certificates): stay the same user.
            lines.append("user root")
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.server_cert}",
                      f"keyfile {tls.server_key}", "require_certificate true",
                      "tls_version tlsv1.2"]
        if passwords:
            pwfile = self.dir / "passwd"
            pwfile.write_text("")
            for user, pw in passwords.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, pw], check=True,
                               capture_output=True, timeout=10)
            lines += [f"password_file {pwfile}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def listening() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited {self.proc.returncode}: {err}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False

        wait_until(listening, timeout, what="mosquitto to listen")

    def kill(self) -> None:
        """SIGKILL: no goodbye, no final save."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown (with persistence, the state is saved)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def restart(self, kill: bool = True) -> None:
        self.kill() if kill else self.stop()
        self.start()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """``broker_factory(persistence=True, tls=None, passwords=None)`` → a started Broker."""
    made: list[Broker] = []

    def make(**kw: object) -> Broker:
        b = Broker(tmp_path / f"broker{len(made)}", **kw)  # type: ignore[arg-type]
        made.append(b)
        b.start()
        return b

    yield make
    for b in made:
        b.kill()


# -- raw MQTT clients (attackers, probes) ----------------------------------------------------------

def raw_client(port: int, client_id: str = "attacker") -> mqtt.Client:
    """A plain paho client on the local broker, its network loop running; ``loop_stop`` it."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def publish(c: mqtt.Client, topic: str, payload: bytes, retain: bool = False) -> None:
    """Publish at QoS 1 and wait for the broker's PUBACK."""
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)


class AckCapture:
    """Collects every end-to-end ack published under ``root`` (what an eavesdropper on the
    broker captures), through a raw client whose loop is running."""

    def __init__(self, c: mqtt.Client, root: str = "twinlink") -> None:
        self.got: list[bytes] = []
        self._lock = threading.Lock()
        done = threading.Event()
        c.message_callback_add(f"{root}/+/a", self._on_message)
        c.on_subscribe = lambda *a: done.set()
        c.subscribe(f"{root}/+/a", qos=1)
        if not done.wait(10):
            raise AssertionError("the ack capture was not subscribed")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.got.append(bytes(msg.payload))


@contextmanager
def running_ingest(url: str, twin: Any, **kw: Any) -> Iterator[Any]:
    """An in-process :class:`~twinlink.ingest.MqttIngest` on its own thread, subscribed; stopped
    (and checked to have returned, never raised) on exit."""
    from twinlink.ingest import MqttIngest

    ing = MqttIngest(url, twin, **kw)
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            ing.run(stop)
        except BaseException as exc:  # the test fails on it below
            failure.append(exc)

    t = threading.Thread(target=run, name="test-ingest")
    t.start()
    try:
        wait_until(ing.subscribed.is_set, 10, what=f"the ingest to subscribe ({ing.last_error})")
        yield ing
    finally:
        stop.set()
        t.join(20)
    assert not t.is_alive() and not failure, failure


# -- twinlink processes -----------------------------------------------------------------------

class Proc:
    """A twinlink subprocess whose stderr is collected by a thread (never blocks the pipe)."""

    def __init__(self, args: list[str], stdin: bytes | None = None,
                 stdout: int | None = subprocess.DEVNULL) -> None:
        self.args = args
        self.p = subprocess.Popen(CLI + args, env=env(), stdin=subprocess.PIPE,
                                  stdout=stdout, stderr=subprocess.PIPE)
        self.err: list[str] = []
        self._t = threading.Thread(target=self._drain, daemon=True)
        self._t.start()
        if self.p.stdin is not None:
            if stdin:
                threading.Thread(target=self._feed, args=(stdin,), daemon=True).start()
            else:
                self.p.stdin.close()

    def _feed(self, data: bytes) -> None:
        assert self.p.stdin is not None
        try:
            self.p.stdin.write(data)
            self.p.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def _drain(self) -> None:
        assert self.p.stderr is not None
        for line in self.p.stderr:
            self.err.append(line.decode(errors="replace"))

    def stderr(self) -> str:
        return "".join(self.err)

    def wait(self, timeout: float) -> int:
        rc = self.p.wait(timeout)
        self._t.join(5)
        return rc

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        self._t.join(5)

    def terminate(self, timeout: float = 15.0) -> int:
        if self.p.poll() is None:
            self.p.terminate()
        return self.wait(timeout)


def start_serve(url: str, db: Path, twin_key: Path, *extra: str, ready: float = 20.0) -> Proc:
    """``twinlink serve`` as a subprocess; returns once it has subscribed."""
    p = Proc(["serve", "--mqtt", url, "--db", str(db), "--twin-key", str(twin_key),
              "--reconnect-max", "0.5", *extra])
    wait_until(lambda: "serving" in p.stderr() or p.p.poll() is not None, ready,
               what="twinlink serve to subscribe")
    assert p.p.poll() is None, p.stderr()
    return p


def start_send(url: str, bundle: Path, state: Path, n: int, *extra: str, timeout: float = 120,
               start: int = 0) -> Proc:
    """``twinlink send --mqtt`` with ``n`` readings ``{"i": start + k}`` on stdin."""
    data = "".join(f'{{"i": {start + k}}}\n' for k in range(n)).encode()
    return Proc(["send", "--device", str(bundle), "--state", str(state), "--mqtt", url,
                 "--timeout", str(timeout), "--reconnect-max", "0.5", "--resend-after", "2",
                 *extra], stdin=data)


def _reader(db: Path):
    from twinlink.store import SQLiteStore

    return SQLiteStore(str(db), readonly=True)


def stored(db: Path) -> list[int]:
    """Every stored seq (with repeats, if any) from the twin database, read-only."""
    with _reader(db) as store:
        return sorted(r["seq"] for r in store.readings(limit=1 << 30))


def stored_count(db: Path) -> int:
    from twinlink.store import StorageError

    try:
        with _reader(db) as store:
            return store.count_readings()
    except StorageError:  # not created yet by the ingest under test
        return 0


def events(db: Path) -> list[tuple[str, str]]:
    """Security events (refusals; audit events left out), oldest first."""
    with _reader(db) as store:
        return [(e["reason"], e["detail"]) for e in store.events(limit=1 << 30, audit=False)]


def outbox_count(path: Path) -> int:
    if not path.exists():
        return 0
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(con.execute("SELECT COUNT(*) FROM frames").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def assert_exactly_once(db: Path, expected: set[int]) -> None:
    seqs = stored(db)
    lost = expected - set(seqs)
    dup = len(seqs) - len(set(seqs))
    extra = set(seqs) - expected
    assert not lost and not dup and not extra, (
        f"stored {len(seqs)}, lost {len(lost)} (e.g. {sorted(lost)[:5]}), duplicated {dup}, "
        f"unexpected {sorted(extra)[:5]}")
    assert len(seqs) == len(expected)


@dataclass
class TwinRig:
    root: Path
    db: Path
    twin_key: Path
    state: Path

    def bundle(self, name: str) -> Path:
        return self.root / "keys" / f"{name}.device"

    def outbox(self, name: str) -> Path:
        return next(self.state.glob(f"{name}-*.outbox"))


def twin_rig(root: Path, names: tuple[str, ...] = ("pump",), window: int = 512) -> TwinRig:
    """A twin key and database with devices registered with replay window ``window``."""
    from twinlink import keys
    from twinlink.provision import provision
    from twinlink.store import SQLiteStore

    tk = keys.TwinKey.generate()
    keys.write_private(root / "twin.key", tk.to_pem())
    keys.write_public(root / "twin.pub", tk.public_pem())
    store = SQLiteStore(str(root / "twin.db"))
    try:
        for i, name in enumerate(names, 1):
            kid = bytes([i])
            provision(name, root / "twin.pub", root / "keys", kid=kid)
            store.register(name, keys.load_public(root / "keys" / f"{name}.pub"), kid,
                           window=window)
    finally:
        store.close()
    return TwinRig(root, root / "twin.db", root / "twin.key", root / "state")
