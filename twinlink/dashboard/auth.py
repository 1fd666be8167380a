"""Who may use the dashboard: the token file, bearer tokens, session cookies, origin checks.

The token file (``--token-file``, mode 0600 or stricter, else refused) holds one token a line::

    # NAME     ROLE    TOKEN
    alice      admin   q0Yw7oCk7x0m3lU0m1qz8mH9dS1-8o8Vq8Gm3rJg2xY
    grafana    read    0f3b2c...

``NAME`` follows the device-name rule (it appears in audit events), ``ROLE`` is ``read`` or
``admin``, ``TOKEN`` is at least 32 printable ASCII characters without spaces (e.g.
``python3 -c 'import secrets; print(secrets.token_urlsafe(32))'``). Names and tokens are
unique. Errors name the line, never the token.

A request authenticates with ``Authorization: Bearer TOKEN`` (API clients) or with the session
cookie a browser gets from ``/login`` (an HMAC over name, role and expiry keyed by the token
itself: it survives a dashboard restart and dies when the token is removed or changed).
Tokens are compared in constant time (digests, every entry, no early exit) and never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import urlsplit

from ..errors import KeyFileError
from ..fileio import read_regular
from ..naming import NAME_RULE, is_device_name

ROLE_READ = "read"
ROLE_ADMIN = "admin"
ROLES = (ROLE_READ, ROLE_ADMIN)
MIN_TOKEN = 32
MAX_TOKEN = 512
_TOKEN = re.compile(r"[!-~]+")  # printable ASCII, no space
SESSION_COOKIE = "twinlink_session"
_SESSION_CONTEXT = b"twinlink-dashboard-session/1"


class TokenFileError(KeyFileError):
    """The token file is missing, unsafe (group/world-accessible) or malformed."""

    reason = "token_file"


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a token's name and role (``anonymous`` without a token file)."""

    name: str
    role: str
    via: str = "token"  # "token" (Authorization header), "session" (cookie) or "none"

    @property
    def admin(self) -> bool:
        return self.role == ROLE_ADMIN


ANONYMOUS = Principal("anonymous", ROLE_READ, "none")


@dataclass(frozen=True)
class _Entry:
    name: str
    role: str
    secret: bytes = field(repr=False)
    digest: bytes = field(repr=False)


class Tokens:
    """The parsed token file. ``repr`` shows names and roles only."""

    def __init__(self, entries: list[tuple[str, str, str]]) -> None:
        self._entries: list[_Entry] = []
        self._by_name: dict[str, _Entry] = {}
        for name, role, token in entries:
            raw = token.encode("ascii")
            e = _Entry(name, role, raw, hashlib.sha256(raw).digest())
            self._entries.append(e)
            self._by_name[name] = e

    def __repr__(self) -> str:
        return "Tokens(" + ", ".join(f"{e.name}:{e.role}" for e in self._entries) + ")"

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokens:
        """Read and check a token file; raise :class:`TokenFileError` (one line, no secret)."""
        where = os.fspath(path)
        try:
            data, st = read_regular(where, 1 << 20)
        except OSError as exc:
            raise TokenFileError(f"cannot read token file {where}: "
                                 f"{exc.strerror or exc}") from None
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise TokenFileError(
                f"token file {where} is accessible by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); run 'chmod 600 {where}'")
        return cls.parse(data, where)

    @classmethod
    def parse(cls, data: bytes, where: str = "token file") -> Tokens:
        """Parse token-file content (see the module docstring)."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise TokenFileError(f"{where} is not UTF-8 text") from None
        entries: list[tuple[str, str, str]] = []
        names: set[str] = set()
        secrets: set[str] = set()
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 3:
                raise TokenFileError(f"{where} line {n}: want 'NAME ROLE TOKEN'")
            name, role, token = parts
            if not is_device_name(name):
                raise TokenFileError(f"{where} line {n}: token name must be {NAME_RULE}")
            if role not in ROLES:
                raise TokenFileError(f"{where} line {n}: role must be 'read' or 'admin'")
            if not (MIN_TOKEN <= len(token) <= MAX_TOKEN and _TOKEN.fullmatch(token)):
                raise TokenFileError(f"{where} line {n}: the token must be {MIN_TOKEN} to "
                                     f"{MAX_TOKEN} printable ASCII characters")
            if name in names:
                raise TokenFileError(f"{where} line {n}: token name {name} is used twice")
            if token in secrets:
                raise TokenFileError(f"{where} line {n}: this token is already given to "
                                     "another name")
            names.add(name)
            secrets.add(token)
            entries.append((name, role, token))
        if not entries:
            raise TokenFileError(f"{where} holds no token")
        return cls(entries)

    def check_bearer(self, token: str) -> Optional[Principal]:
        """The principal whose token this is, or None. Every entry is compared (digests, in
        constant time), so the time taken says nothing about which token nearly matched."""
        try:
            presented = hashlib.sha256(token.encode("ascii")).digest()
        except UnicodeEncodeError:
            return None
        found: Optional[_Entry] = None
        for e in self._entries:
            if hmac.compare_digest(presented, e.digest):
                found = e
        return None if found is None else Principal(found.name, found.role, "token")

    @staticmethod
    def _mac(e: _Entry, expiry: int) -> str:
        msg = b"|".join((_SESSION_CONTEXT, e.name.encode(), e.role.encode(),
                         str(expiry).encode()))
        tag = hmac.new(e.secret, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(tag).decode().rstrip("=")

    def make_session(self, principal: Principal, ttl: float,
                     now: Optional[float] = None) -> str:
        """A session cookie value for ``principal`` valid for ``ttl`` seconds."""
        e = self._by_name[principal.name]
        expiry = int((time.time() if now is None else now) + ttl)
        return f"{e.name}.{expiry}.{self._mac(e, expiry)}"

    def check_session(self, value: str, now: Optional[float] = None) -> Optional[Principal]:
        """The principal of a session cookie value, or None (bad, expired, token gone)."""
        parts = value.rsplit(".", 2)  # a name may hold dots; expiry and tag cannot
        if len(parts) != 3:
            return None
        name, expiry_text, tag = parts
        e = self._by_name.get(name)
        if e is None or not expiry_text.isdigit() or len(expiry_text) > 12:
            return None
        expiry = int(expiry_text)
        if not hmac.compare_digest(tag.encode(), self._mac(e, expiry).encode()):
            return None
        if expiry < (time.time() if now is None else now):
            return None
        return Principal(e.name, e.role, "session")


def bearer_token(header: Optional[str]) -> Optional[str]:
    """The token of an ``Authorization: Bearer TOKEN`` header, else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def same_origin(origin: Optional[str], fetch_site: Optional[str], scheme: str,
                host: Optional[str]) -> bool:
    """Whether a state-changing browser request comes from this dashboard's own pages.

    Browsers send ``Origin`` on every POST and ``Sec-Fetch-Site`` on every request; a request
    without ``Origin`` is refused (a browser always sends one for POST, so only a non-browser
    client lacks it, and those authenticate with a bearer token instead of a cookie).
    """
    if fetch_site is not None and fetch_site != "same-origin":
        return False
    if not origin or not host or origin == "null":
        return False
    parts = urlsplit(origin)
    return parts.scheme == scheme and parts.netloc.lower() == host.lower() and not parts.path
