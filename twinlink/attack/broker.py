"""A private mosquitto for one attack run: a free loopback port, a generated configuration in
the run's workspace, stopped (only this process, by its handle) when the run ends."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from ..errors import TransportError

__all__ = ["LocalBroker", "find_mosquitto"]


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary, or None if it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for cand in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.path.exists(cand):
            return cand
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBroker:
    """``with LocalBroker(workdir) as b: b.url`` — mosquitto on 127.0.0.1, anonymous, no
    persistence; raises :class:`TransportError` if it does not listen within ``timeout``."""

    def __init__(self, workdir: str | os.PathLike[str], binary: str | None = None,
                 timeout: float = 10.0) -> None:
        self.binary = binary or find_mosquitto()
        if self.binary is None:
            raise TransportError("mosquitto is not installed (apt-get install mosquitto)")
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                 "persistence false", "max_queued_messages 100000", "max_inflight_messages 0",
                 "log_type error", f"log_dest file {self.dir / 'mosquitto.log'}"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to "mosquitto", who cannot read our dir
        conf = self.dir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        self._proc = subprocess.Popen([self.binary, "-c", str(conf)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr \
                    else ""
                raise TransportError(f"mosquitto exited with {self._proc.returncode}: "
                                     f"{err.strip()[:200]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.close()
                    raise TransportError(f"mosquitto did not listen on port {self.port} "
                                         f"within {timeout:.0f} s") from None
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stop the broker this object started (SIGTERM, then SIGKILL after 5 s)."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self._proc.stderr is not None:
            self._proc.stderr.close()

    def __enter__(self) -> LocalBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
