"""Test kit for the dashboard: a real ``twinlink dashboard`` process, a real ingest on a second
store object, and a small Server-Sent Events client on a raw HTTP connection."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from conftest import CLI, cli_env

import twinlink

URL_LINE = re.compile(r"dashboard on (http://[^ ]+/)")


class Dash:
    """A ``twinlink dashboard`` subprocess (SIGKILL-able and restartable on the same port)."""

    def __init__(self, db: Path, *extra: str, port: int = 0, poll: float = 0.1,
                 keepalive: float = 15.0, listen_host: str = "127.0.0.1") -> None:
        self.db, self.extra = db, extra
        self.port, self.poll, self.keepalive, self.host = port, poll, keepalive, listen_host
        self.proc: Optional[subprocess.Popen[str]] = None
        self.url = ""
        self.stderr: list[str] = []

    def start(self, timeout: float = 60) -> Dash:
        args = [*CLI, "dashboard", "--db", str(self.db), "--listen",
                f"{self.host}:{self.port}", "--poll", str(self.poll), "--keepalive",
                str(self.keepalive), *self.extra]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=cli_env())
        lines: queue.Queue[Optional[str]] = queue.Queue()
        proc = self.proc

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                self.stderr.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        end = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.1, end - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise AssertionError("the dashboard did not start: " + "".join(self.stderr))
            if line is None:
                raise AssertionError(f"the dashboard exited ({proc.wait()}): "
                                     + "".join(self.stderr))
            m = URL_LINE.search(line)
            if m:
                self.url = m.group(1)
                self.port = int(self.url.rsplit(":", 1)[1].strip("/"))
                return self

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as a crash or an OOM kill would leave it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    # -- HTTP -------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None,
                headers: Optional[dict[str, str]] = None, token: Optional[str] = None
                ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=h)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def get_json(self, path: str, token: Optional[str] = None, status: int = 200) -> Any:
        code, _, body = self.request("GET", path, token=token)
        assert code == status, (code, body[:300])
        return json.loads(body)


@dataclass
class SseMessage:
    event: str
    id: str
    data: Any


@dataclass
class SseClient:
    """A blocking SSE reader on one HTTP connection (the tests' EventSource)."""

    port: int
    path: str
    last_event_id: Optional[str] = None
    token: Optional[str] = None
    comments: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Accept": "text/event-stream"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self.conn.request("GET", self.path, headers=headers)
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, (self.resp.status, self.resp.read()[:300])
        assert self.resp.getheader("Content-Type", "").startswith("text/event-stream")

    def next(self) -> SseMessage:
        """The next message (comments are collected on the side). Raises on a closed stream
        or the connection's timeout."""
        event, ident, data = "message", "", []
        while True:
            raw = self.resp.fp.readline()
            if not raw:
                raise EOFError("stream closed")
            line = raw.decode("utf-8").rstrip("\r\n")
            if line == "":
                if data:
                    if ident:
                        self.last_event_id = ident
                    return SseMessage(event, ident, json.loads("\n".join(data)))
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "id":
                ident = value
            elif name == "data":
                data.append(value)

    def next_comment(self) -> str:
        """Skip to the next comment line (``: …``) and return its text."""
        while True:
            raw = self.resp.fp.readline()
            if not raw:
                raise EOFError("stream closed")
            if raw.startswith(b":"):
                return raw.decode().rstrip("\r\n")[1:].strip()

    def take(self, n: int) -> list[SseMessage]:
        return [self.next() for _ in range(n)]

    def close(self) -> None:
        self.conn.close()


class Ingest:
    """A real ingest on its own store object: seal with real devices, open with a Twin."""

    def __init__(self, rig: Any) -> None:
        self.rig = rig
        self.twin = twinlink.Twin(rig.db, rig.twin_key_path)
        self.devices: dict[str, twinlink.Device] = {}
        self.frames: list[bytes] = []

    def device(self, name: str) -> twinlink.Device:
        if name not in self.devices:
            self.devices[name] = self.rig.device(name)
        return self.devices[name]

    def send(self, name: str, reading: dict[str, Any], n: int = 1) -> list[Any]:
        """Seal and store ``n`` readings of ``name``; return the twin's results."""
        dev = self.device(name)
        frames = [dev.seal(reading) for _ in range(n)]
        self.frames.extend(frames)
        results = self.twin.open_many(frames)
        for r in results:
            assert not isinstance(r, Exception), r
        return results

    def send_raw(self, name: str, plaintext: bytes) -> Any:
        frame = self.device(name).seal_raw(plaintext)
        self.frames.append(frame)
        result = self.twin.open_many([frame])[0]
        assert not isinstance(result, Exception), result
        return result

    def close(self) -> None:
        for d in self.devices.values():
            d.close()
        self.twin.close()


def write_tokens(path: Path, lines: list[tuple[str, str, str]], mode: int = 0o600) -> Path:
    path.write_text("# NAME ROLE TOKEN\n" + "".join(f"{n} {r} {t}\n" for n, r, t in lines))
    os.chmod(path, mode)
    return path


ADMIN_TOKEN = "adm-" + "A" * 40
READ_TOKEN = "rd-" + "b" * 40
