"""A real PostgreSQL for tests: Debian's server binaries, initdb + pg_ctl in a temp directory.

Nothing here touches a system cluster: each :class:`PgServer` is its own data directory on a
free port, its unix socket in that directory, started as an unprivileged user (the server
refuses root: as root the tests create and use the system user ``twinlinktest``). One server
per test session (:func:`pg_server`), a fresh database per test (:func:`pg_url`); tests that
kill or restart the server take a private one (:func:`pg_factory`).

Password authentication over TCP (scram-sha-256) like a real deployment, so the URL carries a
password: tests also check that it never shows.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TEST_USER = "twinlinktest"
SUPERUSER = "twinlink"
PASSWORD = "pw-" + os.urandom(6).hex()


def _find_bin() -> Path | None:
    env = os.environ.get("TWINLINK_PG_BIN")
    if env:
        return Path(env)
    root = Path("/usr/lib/postgresql")
    found = sorted(root.glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0) if root.is_dir() else []
    if found:
        return found[-1].parent
    which = shutil.which("pg_ctl")
    return Path(which).parent if which else None


PG_BIN = _find_bin()


def _psycopg_error() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def skip_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None."""
    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        return "PostgreSQL server binaries not found (apt-get install postgresql)"
    err = _psycopg_error()
    if err:
        return f"psycopg 3 not installed ({err}): pip install -e '.[test]'"
    return None


requires_postgres = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> str | None:
    """The user to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", TEST_USER], check=True, capture_output=True,
                       timeout=30)
    return TEST_USER


class PgServer:
    """One PostgreSQL server of our own; ``kill``/``stop``/``start`` keep its port and data."""

    def __init__(self, fsync: bool = False) -> None:
        assert PG_BIN is not None
        self.user = _server_user()
        self.dir = Path(tempfile.mkdtemp(prefix="twinlink-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.fsync = fsync
        self._names = itertools.count(1)
        if self.user is not None:
            shutil.chown(self.dir, self.user)
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.user is not None:
            shutil.chown(pwfile, self.user)
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                   f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                   "-E", "UTF8", "--no-sync", "--locale=C"])
        pwfile.unlink()
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.dir}'\nmax_connections = 200\n"
                    f"fsync = {'on' if fsync else 'off'}\n"
                    f"full_page_writes = {'on' if fsync else 'off'}\n"
                    "shared_buffers = 64MB\nlog_min_messages = warning\n")

    def _run(self, cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {r.stdout}{r.stderr}")
        return r

    def url(self, dbname: str = "postgres", password: str | None = PASSWORD) -> str:
        pw = f":{password}" if password is not None else ""
        return f"postgresql://{SUPERUSER}{pw}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l",
                   str(self.dir / "server.log"), "-w", "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop``: ``fast`` (sessions ended, clean), ``immediate`` (like a crash)."""
        if (self.data / "postmaster.pid").exists():
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                       "-t", "60", "stop"])

    def kill(self) -> None:
        """SIGKILL the postmaster (its backends follow); the next start recovers from WAL."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text().split()[0])
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        # Orphaned backends exit when they notice the postmaster is gone; start waits on them.

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = f"t{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def sql(self, url: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple]:
        """Run one statement on ``url`` as the superuser; its rows (if any)."""
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.execute(statement, params)  # type: ignore[call-overload]
            return cur.fetchall() if cur.description is not None else []

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server (started once, removed at the end)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A URL (with password) of a fresh database on the session's server."""
    return pg_server.new_database()


@pytest.fixture
def pg_factory() -> Iterator[Callable[..., PgServer]]:
    """``pg_factory(fsync=False)`` → a private, started server (for kill/restart tests)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    made: list[PgServer] = []

    def make(**kw: bool) -> PgServer:
        s = PgServer(**kw)
        made.append(s)
        s.start()
        return s

    yield make
    for s in made:
        s.destroy()
