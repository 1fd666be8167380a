// twinlink dashboard: live updates over one EventSource per page.
// Every device-supplied string goes into the page through textContent or an attribute set by
// the DOM, never as markup. The server renders the page at cursor "synced" and streams from an
// earlier cursor, so rows between the two are shown once (ids are de-duplicated) and counters
// only count what lies past "synced".
"use strict";

(function () {
  const body = document.body;
  const page = body.dataset.page;

  function parseCursor(text) {
    const m = /^r(\d+)\.e(\d+)$/.exec(text || "");
    return m ? { r: Number(m[1]), e: Number(m[2]) } : { r: 0, e: 0 };
  }
  const synced = parseCursor(body.dataset.synced);

  function iso(t) {
    if (typeof t !== "number" || !isFinite(t)) return "—";
    return new Date(t * 1000).toISOString().replace(/\.\d+Z$/, "Z");
  }
  function ago(t) {
    if (typeof t !== "number" || !isFinite(t)) return "never";
    const d = Math.max(0, Date.now() / 1000 - t);
    if (d >= 86400) return Math.floor(d / 86400) + " d ago";
    if (d >= 3600) return Math.floor(d / 3600) + " h ago";
    if (d >= 60) return Math.floor(d / 60) + " min ago";
    return Math.floor(d) + " s ago";
  }
  function valueText(v) {
    return typeof v === "string" ? v : JSON.stringify(v);
  }
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function field(root, name) {
    return root ? root.querySelector('[data-field="' + name + '"]') : null;
  }
  function setText(root, name, text) {
    const f = field(root, name);
    if (f) f.textContent = String(text);
    return f;
  }
  function bump(root, name, n) {
    const f = field(root, name);
    if (f) f.textContent = String((Number(f.textContent) || 0) + n);
  }
  const QC = { 1: "pass", 2: "not evaluated", 3: "suspect", 4: "fail", 9: "missing" };
  function setQc(badge, flag) {
    if (!badge || !(flag in QC)) return;
    badge.className = "qc qc-" + flag;
    badge.textContent = QC[flag];
  }
  function setSeen(root, t) {
    const f = field(root, "last_seen");
    if (!f) return;
    const old = Number(f.dataset.t);
    if (f.dataset.t === "" || !(old >= t)) {
      f.dataset.t = String(t);
      f.title = iso(t);
      f.textContent = ago(t);
    }
  }
  function setHealth(root, h) {
    const b = field(root, "health");
    if (!b) return;
    b.className = "badge h-" + h;
    b.textContent = h.replace("_", " ");
  }
  function refreshAges() {
    for (const f of document.querySelectorAll("[data-t]")) {
      if (f.dataset.t !== "") f.textContent = ago(Number(f.dataset.t));
    }
  }
  setInterval(refreshAges, 5000);

  // -- tables of events and readings --------------------------------------------------------

  function seenIds(table) {
    const ids = new Set();
    if (table) for (const tr of table.tBodies[0].rows) if (tr.dataset.id) ids.add(Number(tr.dataset.id));
    return ids;
  }
  function prepend(table, tr) {
    const tb = table.tBodies[0];
    tb.insertBefore(tr, tb.firstChild);
    const max = Number(table.dataset.max) || 50;
    while (tb.rows.length > max) tb.deleteRow(tb.rows.length - 1);
    const none = document.getElementById("noevents");
    if (none) none.remove();
  }
  function deviceLink(name) {
    const a = el("a", name);
    a.href = "/devices/" + encodeURIComponent(name);
    return a;
  }
  function eventRow(e, withDevice) {
    const tr = el("tr", null, "o-" + e.outcome);
    tr.dataset.id = String(e.id);
    tr.appendChild(el("td", iso(e.time)));
    if (withDevice) {
      const td = el("td");
      if (e.device) td.appendChild(deviceLink(e.device)); else td.textContent = e.kid || "—";
      tr.appendChild(td);
    }
    tr.appendChild(el("td", e.type));
    const o = el("td");
    o.appendChild(el("span", e.outcome, "outcome o-" + e.outcome));
    tr.appendChild(o);
    tr.appendChild(el("td", e.severity, "num"));
    tr.appendChild(el("td", e.count, "num"));
    tr.appendChild(el("td", e.seq === null ? "—" : e.seq, "num"));
    tr.appendChild(el("td", e.detail, "detail"));
    return tr;
  }
  function makeEventSink(table, withDevice) {
    const ids = seenIds(table);
    return function (e) {
      if (!table || ids.has(e.id)) return;
      if (table.dataset.audit === "0" && e.audit) return;
      ids.add(e.id);
      prepend(table, eventRow(e, withDevice));
    };
  }
  // What an event says about a device's state, applied to its row or header.
  function applyStateEvent(root, e) {
    if (!root) return;
    if (e.type === "device.revoked") { root.dataset.status = "revoked"; setHealth(root, "revoked"); }
    else if (e.type === "window.marked_lost") { root.dataset.lost = "1"; setHealth(root, "window_lost"); }
    else if (e.type === "window.reanchored") { root.dataset.lost = "0"; }
    if (e.outcome === "blocked" && e.id > synced.e) bump(root, "refused", e.count || 1);
  }
  function applyReading(root, r) {
    setSeen(root, r.received_at);
    setText(root, "last_seq", r.seq);
    if (r.id > synced.r) bump(root, "accepted", 1);
    if (root.dataset.status !== "revoked" && root.dataset.lost !== "1") setHealth(root, "online");
  }

  // -- pages --------------------------------------------------------------------------------

  function fleetPage() {
    const rows = new Map();
    const fleet = document.getElementById("fleet");
    for (const tr of fleet.tBodies[0].rows) if (tr.dataset.device) rows.set(tr.dataset.device, tr);
    const events = makeEventSink(document.getElementById("events"), true);
    return {
      reading: function (r) {
        const tr = rows.get(r.device);
        if (tr) applyReading(tr, r);
      },
      event: function (e) {
        events(e);
        if (e.device) applyStateEvent(rows.get(e.device), e);
      },
    };
  }

  function devicePage() {
    const head = document.getElementById("device");
    const name = head.dataset.device;
    const seriesTable = document.getElementById("series");
    const series = new Map();
    for (const tr of seriesTable.tBodies[0].rows) series.set(tr.dataset.series, tr);
    const readings = document.getElementById("readings");
    const shown = seenIds(readings);
    const events = makeEventSink(document.getElementById("events"), false);
    const card = document.querySelector(".cards");
    const plots = document.getElementById("plots");
    const period = plots.dataset.period;
    let plotTimer = null;
    let latestId = 0;

    function seriesRow(key) {
      let tr = series.get(key);
      if (tr) return tr;
      tr = el("tr");
      tr.dataset.series = key;
      tr.appendChild(el("td", key, "name"));
      const v = el("td", "", "value"); v.dataset.field = "value"; tr.appendChild(v);
      const u = el("td", ""); u.dataset.field = "unit"; tr.appendChild(u);
      const q = el("td"); const b = el("span", "—", "qc qc-none"); b.dataset.field = "qc";
      q.appendChild(b); tr.appendChild(q);
      const s = el("td", "", "num"); s.dataset.field = "seq"; tr.appendChild(s);
      const t = el("td", "—"); t.dataset.field = "time"; tr.appendChild(t);
      seriesTable.tBodies[0].appendChild(tr);
      series.set(key, tr);
      return tr;
    }
    function ensurePlot(key) {
      for (const img of plots.querySelectorAll("img.plot")) if (img.dataset.series === key) return;
      const none = document.getElementById("noplots");
      if (none) none.remove();
      const fig = el("figure");
      const img = el("img", null, "plot");
      img.dataset.series = key;
      img.alt = "plot of " + key;
      img.width = 640; img.height = 200;
      img.src = plotUrl(key);
      fig.appendChild(img);
      plots.appendChild(fig);
    }
    function plotUrl(key) {
      return "/devices/" + encodeURIComponent(name) + "/plot.svg?series=" +
        encodeURIComponent(key) + "&period=" + encodeURIComponent(period) + "&v=" + latestId;
    }
    function schedulePlots() {
      if (plotTimer !== null) return;
      plotTimer = setTimeout(function () {
        plotTimer = null;
        for (const img of plots.querySelectorAll("img.plot")) img.src = plotUrl(img.dataset.series);
      }, 2000);
    }
    return {
      reading: function (r) {
        if (r.device !== name || shown.has(r.id)) return;
        shown.add(r.id);
        latestId = Math.max(latestId, r.id);
        const tr = el("tr");
        tr.dataset.id = String(r.id);
        tr.appendChild(el("td", r.id, "num"));
        tr.appendChild(el("td", r.seq, "num"));
        tr.appendChild(el("td", iso(r.received_at)));
        tr.appendChild(el("td", valueText(r.payload), "payload"));
        tr.appendChild(el("td", r.flags === undefined ? "" : valueText(r.flags)));
        prepend(readings, tr);
        if (r.id <= synced.r) return; // the page already shows this state
        applyReading(head, r);
        setText(card, "provenance", r.provenance);
        setText(card, "source", r.source || "—");
        setSeen(card, r.received_at);
        setText(card, "last_seq", r.seq);
        const top = field(card, "window_top");
        if (top && !(Number(top.textContent) >= r.seq)) top.textContent = String(r.seq);
        bump(card, "accepted", 1);
        const p = r.payload;
        if (p && typeof p === "object" && !Array.isArray(p)) {
          for (const key of Object.keys(p)) {
            const row = seriesRow(key);
            setText(row, "value", valueText(p[key]));
            setText(row, "seq", r.seq);
            setText(row, "time", r.time === null ? "—" : iso(r.time));
            if (r.flags && key in r.flags) setQc(field(row, "qc"), r.flags[key]);
            if (typeof p[key] === "number") ensurePlot(key);
          }
        }
        schedulePlots();
      },
      event: function (e) {
        if (e.device !== name) return;
        events(e);
        applyStateEvent(head, e);
        if (e.outcome === "blocked" && e.id > synced.e) bump(card, "refused", e.count || 1);
      },
    };
  }

  function eventsPage() {
    const sink = makeEventSink(document.getElementById("events"), true);
    return { reading: function () {}, event: sink };
  }

  const pages = { fleet: fleetPage, device: devicePage, events: eventsPage };
  const url = body.dataset.stream;
  if (!url || !(page in pages)) return;
  const handlers = pages[page]();
  const live = document.getElementById("live");
  function state(s, text) {
    live.dataset.state = s;
    live.textContent = text;
  }
  const source = new EventSource(url);
  source.onopen = function () { state("live", "live"); };
  source.onerror = function () { state("reconnecting", "reconnecting…"); };
  source.addEventListener("reading", function (m) { handlers.reading(JSON.parse(m.data)); });
  source.addEventListener("event", function (m) { handlers.event(JSON.parse(m.data)); });
  window.addEventListener("pagehide", function () { source.close(); });
})();
