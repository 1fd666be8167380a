"""The dashboard's aiohttp application: pages, JSON API, stream, metrics and access control.

Routes (docs/API.md is the reference, :mod:`.openapi` the machine-readable description):

- pages: ``/`` (fleet), ``/devices/{name}``, ``/devices/{name}/plot.svg``, ``/events``,
  ``/login``, ``/logout``; admin forms ``POST /devices/{name}/revoke|reanchor|qc``;
- JSON: ``/api/v1/devices``, ``/api/v1/devices/{name}``, ``/api/v1/devices/{name}/readings``,
  ``/api/v1/readings``, ``/api/v1/events``, ``/api/v1/stream``, ``/api/v1/whoami``,
  ``/api/v1/devices/{name}/qc``, ``/api/v1/openapi.json``; admin
  ``POST /api/v1/devices/{name}/revoke|reanchor`` and ``PUT /api/v1/devices/{name}/qc``;
- ``/metrics`` (Prometheus), ``/healthz``, ``/static/…``.

Every store query runs on a small thread pool, each thread with its own read-only store object
(:func:`twinlink.store.open_store`, never SQL); admin actions run on one thread with a
read-write store opened on first use. Every response carries a strict Content-Security-Policy
(script and style from this origin only, no inline script) and the templates autoescape, so a
device-supplied string is always text.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Awaitable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web

from .. import __version__
from .. import events as _events
from .. import metrics as _metrics
from ..errors import TwinlinkError, UnknownDevice
from ..naming import printable
from ..store import RegistryError, StorageError, TwinStore, open_store
from . import model, plot, qcbounds, stream
from .auth import ANONYMOUS, SESSION_COOKIE, Principal, Tokens, bearer_token, same_origin
from .openapi import spec as openapi_spec

log = logging.getLogger("twinlink.dashboard")

HERE = Path(__file__).resolve().parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"
MAX_LIMIT = 1000
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


@dataclass
class Settings:
    """How one dashboard runs (the CLI fills it from its options)."""

    db: str
    host: str = "127.0.0.1"
    port: int = 8080
    tokens: Optional[Tokens] = None
    poll_interval: float = 0.25
    keepalive: float = 15.0
    silent_after: float = 300.0
    session_ttl: float = 12 * 3600.0
    workers: int = 4


class ApiError(Exception):
    """An expected refusal of one request: status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- parameters ---------------------------------------------------------------------------------


def _int_param(q: Mapping[str, str], name: str, default: Optional[int], lo: int = 0,
               hi: int = 2**62) -> Optional[int]:
    text = q.get(name)
    if text is None or text == "":
        return default
    try:
        n = int(text)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if not lo <= n <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}")
    return n


def _time_param(q: Mapping[str, str], name: str) -> Optional[float]:
    from ..timefmt import parse_time  # the CLI's one time grammar (ISO 8601 or seconds)

    text = q.get(name)
    if text is None or text.strip() == "":
        return None
    try:
        t = parse_time(text)
    except ValueError:
        raise ApiError(400, f"{name}: give ISO 8601 (2026-11-30T16:38:27Z; no offset = UTC) "
                            "or Unix seconds") from None
    if not math.isfinite(t):
        raise ApiError(400, f"{name} must be finite")
    return t


def _list_param(q: Any, name: str) -> list[str]:
    out: list[str] = []
    for v in q.getall(name, []):
        out.extend(x for x in v.split(",") if x)
    return out


def _event_filter(q: Any, device: Optional[str]) -> model.EventFilter:
    types = _list_param(q, "type")
    known = {t.name for t in _events.types()}
    for t in types:
        if t not in known:
            raise ApiError(400, f"unknown event type {printable(t)[:40]!r}; see "
                                "'twinlink events types'")
    outcomes = _list_param(q, "outcome")
    for o in outcomes:
        if o not in _events.OUTCOMES:
            raise ApiError(400, f"outcome must be one of {', '.join(_events.OUTCOMES)}")
    audit = q.get("audit", "1") not in ("0", "false", "no")
    return model.EventFilter(device, types, outcomes, _time_param(q, "since"),
                             _time_param(q, "until"), audit)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, separators=(",", ":")), status=status,
                        content_type="application/json")


def _iso(t: Any) -> str:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        return "—"
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    except (OverflowError, OSError, ValueError):
        return "—"


def _ago(t: Any, now: float) -> str:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        return "never"
    d = max(0.0, now - t)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if d >= size:
            return f"{int(d // size)} {unit} ago"
    return f"{int(d)} s ago"


def _value_text(v: Any) -> str:
    """A value as the page shows it: strings as they are, anything else as compact JSON (the
    same text the page's script writes for live rows, JSON.stringify)."""
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def _bound_text(v: Any) -> str:
    """A QC bound as the page shows it: -20 rather than -20.0, every digit of 0.1 + 0.2."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "—"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


# -- the application ------------------------------------------------------------------------------


class Dashboard:
    """One dashboard: settings, store threads, the stream hub, templates, metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._local = threading.local()
        self._stores: list[TwinStore] = []
        self._stores_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(settings.workers,
                                        thread_name_prefix="twinlink-dashboard-query")
        self._admin_pool = ThreadPoolExecutor(1, thread_name_prefix="twinlink-dashboard-admin")
        self._admin_store: Optional[TwinStore] = None
        self.hub = stream.Hub(self._open_readonly, settings.poll_interval)
        self.streams: set[asyncio.Task[Any]] = set()
        self.jinja = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
            lstrip_blocks=True)
        self.jinja.globals.update(iso=_iso, qc_labels=model.QC_LABELS, value_text=_value_text,
                                  bound_text=_bound_text,
                                  quote=lambda s: quote(str(s), safe=""),
                                  periods=list(plot.PERIODS), version=__version__)
        self.static = _load_static()
        self.metrics: Optional[_metrics.Metrics] = None
        self._sse_gauge: Any = None

    # -- stores ---------------------------------------------------------------------------

    def _open_readonly(self) -> TwinStore:
        s = open_store(self.settings.db, readonly=True)
        with self._stores_lock:
            self._stores.append(s)
        return s

    def _with_store(self, fn: Callable[[TwinStore], Any]) -> Any:
        s = getattr(self._local, "store", None)
        if s is None:
            s = self._local.store = self._open_readonly()
        return fn(s)

    async def q(self, fn: Callable[[TwinStore], Any]) -> Any:
        """Run ``fn(store)`` on a query thread (its own read-only store)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._with_store, fn)

    def _with_admin_store(self, fn: Callable[[TwinStore], Any]) -> Any:
        if self._admin_store is None:
            self._admin_store = open_store(self.settings.db, must_exist=True)
        return fn(self._admin_store)

    async def admin(self, fn: Callable[[TwinStore], Any]) -> Any:
        """Run ``fn(store)`` with the read-write store (one thread: actions are serialised)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._admin_pool, self._with_admin_store, fn)

    async def startup(self, app: web.Application) -> None:
        await self.q(lambda s: s.devices())  # fail now, not on the first request
        await self.hub.start()

    async def shutdown(self, app: web.Application) -> None:
        for task in list(self.streams):
            task.cancel()

    async def cleanup(self, app: web.Application) -> None:
        await self.hub.stop()
        self._pool.shutdown(wait=True)
        self._admin_pool.shutdown(wait=True)
        with self._stores_lock:
            stores, self._stores = self._stores, []
        if self._admin_store is not None:
            stores.append(self._admin_store)
        for s in stores:
            try:
                s.close()
            except Exception:  # noqa: S110 - closing at exit; nothing left to tell
                pass

    # -- rendering ------------------------------------------------------------------------

    def render(self, request: web.Request, template: str, status: int = 200,
               **ctx: Any) -> web.Response:
        principal: Principal = request["principal"]
        body = self.jinja.get_template(template).render(
            principal=principal, auth=self.settings.tokens is not None, now=time.time(),
            ago=_ago, static=self.static_url, **ctx)
        return web.Response(text=body, status=status, content_type="text/html")

    def static_url(self, name: str) -> str:
        return f"/static/{name}?v={self.static[name][2]}"


def _load_static() -> dict[str, tuple[bytes, str, str]]:
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
             ".txt": "text/plain"}
    out = {}
    for p in sorted((HERE / "static").iterdir()):
        if p.is_file() and p.suffix in types:
            data = p.read_bytes()
            out[p.name] = (data, types[p.suffix], hashlib.sha256(data).hexdigest()[:12])
    return out


# -- middleware -----------------------------------------------------------------------------------

_PUBLIC = ("/healthz", "/login", "/static/", "/favicon.ico")


def _is_api(path: str) -> bool:
    return path.startswith("/api/") or path in ("/metrics", "/healthz")


def _host_allowed(request: web.Request, settings: Settings) -> bool:
    """Without tokens, answer only requests addressed to a loopback name (DNS rebinding: a
    page on another site must not reach the dashboard through a name it controls)."""
    host = (request.host or "").lower()
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in LOOPBACK_HOSTS or name == settings.host.lower()


def make_guard(dash: Dashboard) -> Callable[..., Awaitable[web.StreamResponse]]:
    settings = dash.settings

    @web.middleware
    async def guard(request: web.Request, handler: Callable[..., Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        path = request.path
        api = _is_api(path)
        try:
            tokens = settings.tokens
            if tokens is None:
                if not _host_allowed(request, settings):
                    raise ApiError(421, "this dashboard answers only on its loopback address")
                request["principal"] = ANONYMOUS
            else:
                principal = None
                token = bearer_token(request.headers.get("Authorization"))
                if token is not None:
                    principal = tokens.check_bearer(token)
                    if principal is None:
                        raise ApiError(401, "the token is not valid")
                else:
                    cookie = request.cookies.get(SESSION_COOKIE)
                    if cookie:
                        principal = tokens.check_session(cookie)
                if principal is None and not path.startswith(_PUBLIC):
                    if api or request.method != "GET":
                        raise ApiError(401, "authentication required: send 'Authorization: "
                                            "Bearer TOKEN'")
                    raise web.HTTPSeeOther("/login?" + urlencode({"next": request.path_qs}))
                request["principal"] = principal or ANONYMOUS
                if (request.method not in ("GET", "HEAD", "OPTIONS")
                        and (principal is None or principal.via == "session")
                        and not same_origin(request.headers.get("Origin"),
                                            request.headers.get("Sec-Fetch-Site"),
                                            request.scheme, request.host)):
                    raise ApiError(403, "cross-origin request refused")
            return await handler(request)
        except ApiError as exc:
            return _error(dash, request, exc.status, str(exc), api)
        except web.HTTPException as exc:
            if exc.status >= 400 and api:
                return _json({"error": exc.reason}, exc.status)
            raise
        except UnknownDevice as exc:
            return _error(dash, request, 404, str(exc), api)
        except StorageError as exc:
            log.warning("dashboard: %s", exc)
            return _error(dash, request, 503, "the twin database is unavailable", api)

    return guard


def _error(dash: Dashboard, request: web.Request, status: int, message: str,
           api: bool) -> web.Response:
    if api:
        resp = _json({"error": message}, status)
        if status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="twinlink"'
        return resp
    request.setdefault("principal", ANONYMOUS)
    return dash.render(request, "error.html", status=status, status_code=status,
                       message=message)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    svg = response.content_type == "image/svg+xml"
    h.setdefault("Content-Security-Policy", SVG_CSP if svg else CSP)
    h["X-Content-Type-Options"] = "nosniff"
    # not no-referrer: with it a browser sends "Origin: null" on form posts, which the
    # same-origin check must refuse
    h["Referrer-Policy"] = "same-origin"
    h["X-Frame-Options"] = "DENY"
    h["Cross-Origin-Opener-Policy"] = "same-origin"
    h["Cross-Origin-Resource-Policy"] = "same-origin"
    if not request.path.startswith("/static/"):
        h.setdefault("Cache-Control", "no-store")


# -- handlers -------------------------------------------------------------------------------------


def _admin(request: web.Request) -> Principal:
    p: Principal = request["principal"]
    if not p.admin:
        raise ApiError(403, "this action needs an admin token")
    return p


def _name(request: web.Request) -> str:
    return request.match_info["name"]


def _cursor_param(request: web.Request, default: stream.Cursor) -> stream.Cursor:
    text = request.headers.get("Last-Event-ID") or request.query.get("after")
    if not text:
        return default
    try:
        return stream.parse_cursor(text)
    except stream.BadCursor as exc:
        raise ApiError(400, str(exc)) from None


def _limit(q: Mapping[str, str], default: int = 100) -> int:
    n = _int_param(q, "limit", default, 1, MAX_LIMIT)
    assert n is not None
    return n


#: ``?done=`` of a page after an admin form, and what the page says.
DONE = {"revoked": "revoked", "reanchored": "re-anchored", "qc": "QC bounds set"}


def routes(dash: Dashboard) -> web.RouteTableDef:
    r = web.RouteTableDef()
    settings = dash.settings

    async def snapshot(fn: Callable[[TwinStore], Any]) -> tuple[stream.Cursor, Any,
                                                                   stream.Cursor]:
        """Cursor before, the data, cursor after: a page streams from ``before`` and counts
        live only what lies past ``after`` (no row is lost, no counter counts one twice)."""
        def work(s: TwinStore) -> tuple[stream.Cursor, Any, stream.Cursor]:
            before = stream.Cursor(*model.newest_ids(s))
            data = fn(s)
            return before, data, stream.Cursor(*model.newest_ids(s))
        result: tuple[stream.Cursor, Any, stream.Cursor] = await dash.q(work)
        return result

    # -- pages --------------------------------------------------------------------------

    @r.get("/")
    async def fleet_page(request: web.Request) -> web.Response:
        def data(s: TwinStore) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            return (model.fleet(s, settings.silent_after),
                    model.newest_events(s, model.EventFilter(audit=False), 20)[0])
        before, (devices, events), after = await snapshot(data)
        return dash.render(request, "fleet.html", devices=devices,
                           events=list(reversed(events)), before=before, after=after,
                           stream_url="/api/v1/stream?" + urlencode({"after": str(before)}))

    @r.get("/devices/{name}")
    async def device_page(request: web.Request) -> web.Response:
        name = _name(request)
        period = request.query.get("period", plot.DEFAULT_PERIOD)
        if period not in plot.PERIODS:
            raise ApiError(400, f"period must be one of {', '.join(plot.PERIODS)}")

        def data(s: TwinStore) -> tuple[dict[str, Any], list[dict[str, Any]],
                                        list[dict[str, Any]], dict[str, Any]]:
            rows = s.readings(name, 50)
            detail = model.device_detail(s, name, settings.silent_after, recent=rows)
            readings = [model.reading(x) for x in rows]
            events = model.newest_events(s, model.EventFilter(name), 50)[0]
            return detail, readings, events, qcbounds.view(s, name)
        before, (detail, readings, events, bounds), after = await snapshot(data)
        # a plot for every series whose latest value is a number (the script adds plots for
        # series that turn up later)
        numeric = [x for x in detail["series"] if plot.is_number(x["value"])]
        q = urlencode({"after": str(before), "device": name})
        return dash.render(request, "device.html", d=detail, readings=list(reversed(readings)),
                           events=list(reversed(events)), before=before, after=after,
                           period=period, plots=numeric, stream_url="/api/v1/stream?" + q,
                           bounds=bounds["series"], bound_keys=qcbounds.BOUND_KEYS,
                           done=DONE.get(request.query.get("done", ""), ""))

    @r.get("/devices/{name}/plot.svg")
    async def plot_svg(request: web.Request) -> web.Response:
        name = _name(request)
        series = request.query.get("series", "")
        period = request.query.get("period", plot.DEFAULT_PERIOD)
        if not series or period not in plot.PERIODS:
            raise ApiError(400, f"give series= and period= (one of {', '.join(plot.PERIODS)})")
        t1 = time.time()
        t0 = t1 - plot.PERIODS[period]

        def data(s: TwinStore) -> tuple[list[Any], Optional[str], bool]:
            st = s.status(name)
            rows = s.readings(name, plot.MAX_READINGS, since=t0)
            state: Mapping[str, Any] = st["state"].get(series) or {}
            unit = state.get("unit")
            return plot.points(rows, series), unit, len(rows) >= plot.MAX_READINGS
        pts, unit, capped = await dash.q(data)
        note = f"newest {plot.MAX_READINGS} readings" if capped else f"{len(pts)} points"
        body = plot.svg(series, unit, pts, t0, t1, note)
        return web.Response(text=body, content_type="image/svg+xml")

    @r.get("/events")
    async def events_page(request: web.Request) -> web.Response:
        q = request.query
        device = q.get("device") or None
        flt = _event_filter(q, device)
        limit = _limit(q, 200)

        def data(s: TwinStore) -> tuple[tuple[list[dict[str, Any]], bool], list[str]]:
            return (model.newest_events(s, flt, limit),
                    [d.name for d in s.devices()])
        before, ((events, complete), names), after = await snapshot(data)
        live = flt.until is None
        sq: list[tuple[str, str]] = [("after", str(before)), ("kinds", "events")]
        if device:
            sq.append(("device", device))
        sq += [("type", t) for t in sorted(flt.types)]
        sq += [("outcome", o) for o in sorted(flt.outcomes)]
        if not flt.audit:
            sq.append(("audit", "0"))
        return dash.render(
            request, "events.html", events=list(reversed(events)), complete=complete,
            scan=model.SCAN_LIMIT, names=names, types=[t.name for t in _events.types()],
            outcomes=_events.OUTCOMES, f=flt, limit=limit, before=before, after=after,
            since_text=q.get("since", ""), until_text=q.get("until", ""),
            stream_url=("/api/v1/stream?" + urlencode(sq)) if live else "")

    @r.get("/login")
    async def login_page(request: web.Request) -> web.Response:
        return dash.render(request, "login.html", next=_safe_next(request.query.get("next")),
                           failed=False)

    @r.post("/login")
    async def login(request: web.Request) -> web.Response:
        tokens = settings.tokens
        form = await request.post()
        nxt = _safe_next(str(form.get("next", "/")))
        if tokens is None:
            raise web.HTTPSeeOther(nxt)
        p = tokens.check_bearer(str(form.get("token", "")).strip())
        if p is None:
            log.info("dashboard: a login with a wrong token from %s", request.remote)
            return dash.render(request, "login.html", status=401, next=nxt, failed=True)
        resp = web.HTTPSeeOther(nxt)
        resp.set_cookie(SESSION_COOKIE, tokens.make_session(p, settings.session_ttl),
                        max_age=int(settings.session_ttl), httponly=True, samesite="Strict",
                        path="/", secure=request.secure)
        log.info("dashboard: token %s logged in", p.name)
        return resp

    @r.post("/logout")
    async def logout(request: web.Request) -> web.Response:
        resp = web.HTTPSeeOther("/login" if settings.tokens is not None else "/")
        resp.del_cookie(SESSION_COOKIE, path="/")
        return resp

    @r.post("/devices/{name}/revoke")
    async def revoke_form(request: web.Request) -> web.Response:
        form = await request.post()
        await _revoke(request, str(form.get("reason", "")))
        raise web.HTTPSeeOther(f"/devices/{quote(_name(request), safe='')}?done=revoked")

    @r.post("/devices/{name}/reanchor")
    async def reanchor_form(request: web.Request) -> web.Response:
        form = await request.post()
        floor = _int_param({"floor": str(form.get("floor", ""))}, "floor", None, 0, 2**40 - 1)
        if floor is None:
            raise ApiError(400, "give the new floor")
        await _reanchor(request, floor, form.get("force") == "1")
        raise web.HTTPSeeOther(f"/devices/{quote(_name(request), safe='')}?done=reanchored")

    @r.post("/devices/{name}/qc")
    async def qc_form(request: web.Request) -> web.Response:
        _admin(request)  # before reading the form: a read token learns nothing from a 400
        form = await request.post()
        bounds: dict[str, Any] = {}
        for key in qcbounds.BOUND_KEYS:
            text = str(form.get(key, "")).strip()
            if text:
                try:
                    bounds[key] = float(text)
                except ValueError:
                    raise ApiError(400, f"{key} must be a number") from None
        body = {"series": {str(form.get("series", "")).strip(): bounds or None},
                "reason": str(form.get("reason", ""))}
        await _set_bounds(request, body)
        raise web.HTTPSeeOther(f"/devices/{quote(_name(request), safe='')}?done=qc")

    # -- admin actions --------------------------------------------------------------------

    async def _revoke(request: web.Request, reason: str) -> None:
        p = _admin(request)
        name = _name(request)
        why = f"by dashboard token {p.name}" + (f": {reason.strip()[:200]}" if reason.strip()
                                                 else "")
        await dash.admin(lambda s: s.revoke(name, why=why))
        log.info("dashboard: token %s revoked %s", p.name, printable(name))

    async def _reanchor(request: web.Request, floor: int, force: bool) -> int:
        p = _admin(request)
        name = _name(request)
        why = f"by dashboard token {p.name}"
        try:
            prev: int = await dash.admin(lambda s: s.reanchor(name, floor, force, why=why))
        except RegistryError as exc:
            raise ApiError(409, str(exc)) from None
        log.info("dashboard: token %s re-anchored %s at %d", p.name, printable(name), floor)
        return prev

    async def _set_bounds(request: web.Request, body: Any) -> dict[str, Any]:
        p = _admin(request)
        name = _name(request)
        try:
            changes, reason = qcbounds.parse(body)
        except qcbounds.BoundsError as exc:
            raise ApiError(400, str(exc)) from None
        why = (f"QC bounds of {qcbounds.describe(changes)} set by dashboard token {p.name}"
               + (f": {reason[:200]}" if reason else ""))
        try:
            view: dict[str, Any] = await dash.admin(
                lambda s: qcbounds.set_bounds(s, name, changes, why))
        except qcbounds.BoundsError as exc:
            raise ApiError(400, str(exc)) from None
        log.info("dashboard: token %s set QC bounds of %s", p.name, printable(name))
        return view

    @r.post("/api/v1/devices/{name}/revoke")
    async def api_revoke(request: web.Request) -> web.Response:
        body = await _json_body(request)
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise ApiError(400, "reason must be a string")
        await _revoke(request, reason)
        return _json({"ok": True, "device": _name(request), "status": "revoked"})

    @r.post("/api/v1/devices/{name}/reanchor")
    async def api_reanchor(request: web.Request) -> web.Response:
        body = await _json_body(request)
        floor, force = body.get("floor"), body.get("force", False)
        if type(floor) is not int or not 0 <= floor <= 2**40 - 1:
            raise ApiError(400, "floor must be an integer from 0 to 2**40-1")
        if not isinstance(force, bool):
            raise ApiError(400, "force must be true or false")
        prev = await _reanchor(request, floor, force)
        return _json({"ok": True, "device": _name(request), "floor": floor,
                      "previous_top": prev})

    # -- JSON -----------------------------------------------------------------------------

    @r.get("/api/v1/devices")
    async def api_devices(request: web.Request) -> web.Response:
        devices = await dash.q(lambda s: model.fleet(s, settings.silent_after))
        return _json({"devices": devices})

    @r.get("/api/v1/devices/{name}")
    async def api_device(request: web.Request) -> web.Response:
        name = _name(request)
        return _json(await dash.q(lambda s: model.device_detail(s, name,
                                                                settings.silent_after)))

    async def _readings(request: web.Request, name: Optional[str]) -> web.Response:
        q = request.query
        limit = _limit(q)
        after_id = _int_param(q, "after_id", None)
        since, until = _time_param(q, "since"), _time_param(q, "until")
        if after_id is not None and (since is not None or until is not None):
            raise ApiError(400, "give after_id (paging forward) or since/until, not both")

        def data(s: TwinStore) -> list[dict[str, Any]]:
            if name is not None:
                s.device(name)  # 404 for an unknown device, not an empty page
            rows = s.readings(name, limit, since=since, until=until, after_id=after_id)
            return [model.reading(x) for x in rows]
        rows = await dash.q(data)
        nxt = None
        if after_id is not None or (since is None and until is None):
            last = rows[-1]["id"] if rows else (after_id or 0)
            params = {"after_id": str(last), "limit": str(limit)}
            if name is None and q.get("device"):
                params["device"] = q["device"]
            nxt = request.path + "?" + urlencode(params)
        return _json({"readings": rows, "next": nxt, "more": len(rows) == limit})

    @r.get("/api/v1/devices/{name}/readings")
    async def api_device_readings(request: web.Request) -> web.Response:
        return await _readings(request, _name(request))

    @r.get("/api/v1/readings")
    async def api_readings(request: web.Request) -> web.Response:
        return await _readings(request, request.query.get("device") or None)

    @r.get("/api/v1/events")
    async def api_events(request: web.Request) -> web.Response:
        q = request.query
        device = q.get("device") or None
        flt = _event_filter(q, device)
        limit = _limit(q)
        after_id = _int_param(q, "after_id", None)
        if after_id is None:
            events, complete = await dash.q(lambda s: model.newest_events(s, flt, limit))
            last = events[-1]["id"] if events else None
            return _json({"events": events, "complete": complete,
                          "next": None if last is None else _next(request, last, limit),
                          "more": False})
        events, cursor, more = await dash.q(
            lambda s: model.events_after(s, flt, after_id, limit))
        return _json({"events": events, "next": _next(request, cursor, limit), "more": more,
                      "complete": True})

    @r.get("/api/v1/devices/{name}/qc")
    async def api_qc(request: web.Request) -> web.Response:
        name = _name(request)
        return _json(await dash.q(lambda s: qcbounds.view(s, name)))

    @r.put("/api/v1/devices/{name}/qc")
    async def api_set_qc(request: web.Request) -> web.Response:
        _admin(request)
        body = await _json_body(request)
        return _json(await _set_bounds(request, body))

    @r.get("/api/v1/whoami")
    async def whoami(request: web.Request) -> web.Response:
        p: Principal = request["principal"]
        return _json({"name": p.name, "role": p.role, "auth": p.via})

    @r.get("/api/v1/openapi.json")
    async def openapi(request: web.Request) -> web.Response:
        return _json(openapi_spec())

    @r.get("/api/v1/stream")
    async def sse(request: web.Request) -> web.StreamResponse:
        q = request.query
        kinds = frozenset(_list_param(q, "kinds")) or stream.KINDS
        if not kinds <= stream.KINDS:
            raise ApiError(400, "kinds is readings, events or both")
        device = q.get("device") or None
        flt_e = _event_filter(q, device)
        if flt_e.since is not None or flt_e.until is not None:
            raise ApiError(400, "the stream has no since/until: it starts at a cursor")
        flt = stream.StreamFilter(kinds, device, flt_e.types, flt_e.outcomes, flt_e.audit)
        cursor = _cursor_param(request, dash.hub.cursor)
        if device is not None:
            await dash.q(lambda s: s.device(device))  # 404 for a device that does not exist
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        await resp.write(b"retry: 1000\n: twinlink stream from " + str(cursor).encode()
                         + b"\n\n")
        task = asyncio.current_task()
        if task is not None:
            dash.streams.add(task)
        try:
            await stream.serve_client(dash.hub, flt, cursor, resp.write, settings.keepalive,
                                      dash.q)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                dash.streams.discard(task)
        return resp

    # -- operations -------------------------------------------------------------------------

    @r.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        ok = dash.hub.healthy
        return _json({"ok": ok, "version": __version__, "cursor": str(dash.hub.cursor),
                      "streams": dash.hub.clients}, 200 if ok else 503)

    @r.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        m = dash.metrics
        if m is None:
            try:
                m = dash.metrics = _metrics.Metrics()
            except _metrics.MetricsUnavailable as exc:
                raise ApiError(501, str(exc)) from None
            dash._sse_gauge = m._pc.Gauge("twinlink_dashboard_streams",
                                          "Open /api/v1/stream connections of this dashboard",
                                          registry=m.registry)
        metrics_obj = m

        def collect(s: TwinStore) -> bytes:
            counts = _metrics.device_counts(s)
            for state in _metrics.DEVICE_STATES:
                metrics_obj.devices.labels(state).set(counts.get(state, 0))
            for d in s.devices():
                seen = s.status(d.name)["last_seen"]
                if seen is not None:
                    metrics_obj.last_seen.labels(d.name).set(seen)
            dash._sse_gauge.set(dash.hub.clients)
            return metrics_obj.render()
        body = await dash.q(collect)
        return web.Response(body=body, headers={
            "Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    @r.get("/static/{file}")
    async def static(request: web.Request) -> web.Response:
        item = dash.static.get(request.match_info["file"])
        if item is None:
            raise web.HTTPNotFound()
        data, ctype, tag = item
        return web.Response(body=data, content_type=ctype,
                            headers={"Cache-Control": "public, max-age=86400",
                                     "ETag": f'"{tag}"'})

    @r.get("/favicon.ico")
    async def favicon(request: web.Request) -> web.Response:
        raise web.HTTPFound("/static/favicon.svg")

    return r


def _next(request: web.Request, after_id: int, limit: int) -> str:
    params = [(k, v) for k, v in request.query.items() if k not in ("after_id", "limit")]
    params += [("after_id", str(after_id)), ("limit", str(limit))]
    return request.path + "?" + urlencode(params)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    if request.content_type != "application/json":
        raise ApiError(415, "send application/json")
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _safe_next(nxt: Optional[str]) -> str:
    """A same-site path to return to after login (never another site: no open redirect)."""
    if not nxt or not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt:
        return "/"
    return nxt


DASHBOARD = web.AppKey("dashboard", Dashboard)


def create_app(settings: Settings) -> web.Application:
    """The aiohttp application for ``settings`` (store threads start on app startup)."""
    dash = Dashboard(settings)
    app = web.Application(middlewares=[make_guard(dash)], client_max_size=64 * 1024)
    app[DASHBOARD] = dash
    app.add_routes(routes(dash))
    app.on_startup.append(dash.startup)
    app.on_shutdown.append(dash.shutdown)
    app.on_cleanup.append(dash.cleanup)
    app.on_response_prepare.append(_security_headers)
    return app


class ListenError(TwinlinkError, OSError):
    """The dashboard cannot listen on the address it was given."""

    reason = "listen"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP literal or ``localhost``) only reaches this machine."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


async def serve(settings: Settings, on_ready: Callable[[str], None], stop: asyncio.Event,
                access_log: bool = False) -> None:
    """Serve until ``stop`` is set; ``on_ready(url)`` runs once the socket listens.

    Raises :class:`ListenError` when the address cannot be bound, StorageError when the
    database cannot be read.
    """
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0,
                           access_log=logging.getLogger("twinlink.dashboard.access")
                           if access_log else None,
                           access_log_format='%a "%r" %s %b %Tfs')
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host.strip("[]"), settings.port,
                           reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise ListenError(f"cannot listen on {settings.host}:{settings.port}: "
                              f"{exc.strerror or exc}") from None
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"{'http'}://{shown}:{port}/")
        await stop.wait()
    finally:
        await runner.cleanup()
