"""A real rsyslogd for tests: foreground, private work directory, free loopback ports.

It listens with imtcp (plain, and TLS through the ``ossl`` driver when Debian's
rsyslog-openssl is installed) and imudp on 127.0.0.1, parses RFC 5424 structured data with
mmpstrucdata, and writes every message as one JSON object (``$!``) to ``out.jsonl``:
``rfc5424-sd`` holds the parsed SD elements, ``tl`` the header fields and the MSG. Nothing
here touches a system rsyslog: no imuxsock, no imklog, no /var paths.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mosquitto import Tls, free_port, wait_until

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
_MODDIRS = [Path("/usr/lib/x86_64-linux-gnu/rsyslog"), Path("/usr/lib/aarch64-linux-gnu/rsyslog"),
            Path("/usr/lib/rsyslog")]

requires_rsyslog = pytest.mark.skipif(
    not os.path.exists(RSYSLOGD), reason="rsyslogd not installed (apt-get install rsyslog)")


def has_module(name: str) -> bool:
    return any((d / f"{name}.so").exists() for d in _MODDIRS)


requires_rsyslog_tls = pytest.mark.skipif(
    not has_module("lmnsd_ossl"),
    reason="rsyslog's OpenSSL driver not installed (apt-get install rsyslog-openssl)")


class Rsyslog:
    """One rsyslogd; ``stop()``/``start()`` keep its ports and its output file."""

    def __init__(self, workdir: Path, tls: Tls | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tcp_port = free_port()
        self.udp_port = free_port()
        self.tls_port = free_port() if tls is not None else 0
        self.out = self.dir / "out.jsonl"
        self.pidfile = self.dir / "rsyslogd.pid"
        self.proc: subprocess.Popen[bytes] | None = None
        tls_input = ""
        if tls is not None:
            tls_input = (
                f'input(type="imtcp" address="127.0.0.1" port="{self.tls_port}" ruleset="tl"'
                ' name="imtcp-tls" streamDriver.name="ossl" streamDriver.mode="1"'
                ' streamDriver.authMode="anon"'
                f' streamDriver.CAFile="{tls.ca}" streamDriver.CertFile="{tls.server_cert}"'
                f' streamDriver.KeyFile="{tls.server_key}")\n')
        self.conf = self.dir / "rsyslog.conf"
        self.conf.write_text(f"""
global(workDirectory="{self.dir}" net.enableDNS="off" maxMessageSize="64k")
module(load="imtcp" maxSessions="50")
module(load="imudp")
module(load="mmpstrucdata")
template(name="tl_ts" type="string" string="%timereported:::date-rfc3339%")
template(name="tl_json" type="string" string="%$!%\\n")
ruleset(name="tl") {{
  action(type="mmpstrucdata")
  set $!tl!msgid = $msgid;
  set $!tl!pri = $pri;
  set $!tl!host = $hostname;
  set $!tl!app = $app-name;
  set $!tl!procid = $procid;
  set $!tl!ts = exec_template("tl_ts");
  set $!tl!msg = $msg;
  set $!tl!input = $inputname;
  action(type="omfile" file="{self.out}" template="tl_json")
}}
input(type="imtcp" address="127.0.0.1" port="{self.tcp_port}" ruleset="tl" name="imtcp")
input(type="imudp" address="127.0.0.1" port="{self.udp_port}" ruleset="tl" name="imudp")
{tls_input}""")

    def start(self, timeout: float = 20.0) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "rsyslogd.log", "ab"))

        def listening() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                log = (self.dir / "rsyslogd.log").read_text(errors="replace")
                raise RuntimeError(f"rsyslogd exited {self.proc.returncode}: {log[-2000:]}")
            ports = [self.tcp_port] + ([self.tls_port] if self.tls_port else [])
            try:
                for p in ports:
                    socket.create_connection(("127.0.0.1", p), 0.2).close()
                return True
            except OSError:
                return False

        wait_until(listening, timeout, what="rsyslogd to listen")

    def stop(self) -> None:
        """SIGTERM to the rsyslogd this object started; wait for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)

    def records(self) -> list[dict[str, Any]]:
        """Every message written so far (a partly written last line is left for later)."""
        if not self.out.exists():
            return []
        out = []
        for line in self.out.read_bytes().split(b"\n"):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def sd(self) -> list[dict[str, str]]:
        """The twinlink SD parameters of every message, with its header fields under
        ``_msgid``, ``_pri``, ``_msg`` …"""
        res = []
        for r in self.records():
            params = dict(r.get("rfc5424-sd", {}).get("twinlink@32473", {}))
            for k, v in r.get("tl", {}).items():
                params["_" + k] = v
            res.append(params)
        return res
