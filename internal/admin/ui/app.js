// Meridian status page: polls /status (and /v1/members where served) on
// the same origin and renders the fleet. Read-only: it sends only GETs.
// Fields it does not know are shown as they are (Details columns, Other
// fields), so /status may grow before this page learns to lay them out.
"use strict";
(() => {
  const POLL_MS = 2000;
  const STATUS_KNOWN = new Set(["gateway", "region", "uptime_seconds", "peers", "legs", "members", "regions", "links", "fleet"]);
  const PEER_KNOWN = new Set(["gateway", "address", "link", "profile", "passthrough", "connected", "up", "rtt_ms", "session_failures",
    "last_error", "region", "loss", "goodput_bps", "path"]);
  const MEMBER_KNOWN = new Set(["name", "gateway", "region", "state", "reach", "address", "rtt_ms", "pool", "compatible", "bad_metadata"]);
  const DOWN_STATES = new Set(["dead", "failed", "left", "down", "unreachable", "incompatible"]);
  const WARN_STATES = new Set(["suspect", "joining", "leaving"]);

  let membersServed = true; // until /v1/members answers 404
  let renders = 0;

  const $ = (id) => document.getElementById(id);

  function td(text, cls) {
    const c = document.createElement("td");
    c.textContent = text === undefined || text === null ? "" : String(text);
    if (cls) c.className = cls;
    return c;
  }

  function row(cells, cls, data) {
    const r = document.createElement("tr");
    if (cls) r.className = cls;
    for (const [k, v] of Object.entries(data || {})) r.dataset[k] = v;
    for (const c of cells) r.appendChild(c);
    return r;
  }

  function li(text, cls) {
    const e = document.createElement("li");
    e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  const isNum = (x) => typeof x === "number" && isFinite(x);
  const fmtInt = (n) => (isNum(n) ? Math.round(n).toLocaleString("en-US") : "");
  const fmtRTT = (ms) => (isNum(ms) && ms > 0 ? (ms < 10 ? ms.toFixed(2) : ms.toFixed(0)) + " ms" : "");
  const fmtLoss = (x) => (isNum(x) ? (100 * x).toFixed(2) + " %" : "");

  function fmtRate(bps) {
    if (!isNum(bps)) return "";
    for (const [d, u] of [[1e9, "Gbit/s"], [1e6, "Mbit/s"], [1e3, "kbit/s"]]) if (bps >= d) return (bps / d).toFixed(1) + " " + u;
    return bps + " bit/s";
  }

  function fmtSecs(s) {
    if (!isNum(s)) return "";
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return d ? `${d}d${h}h` : h ? `${h}h${m}m` : m ? `${m}m${s % 60}s` : `${s}s`;
  }

  function fmtValue(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  // extras lists an object's fields that are not in known and not empty.
  function extras(o, known) {
    const out = [];
    for (const [k, v] of Object.entries(o || {})) {
      if (known.has(k) || v === "" || v === null || v === false || (Array.isArray(v) && v.length === 0)) continue;
      out.push(k + "=" + fmtValue(v));
    }
    return out.join("; ");
  }

  const pick = (o, ...keys) => {
    for (const k of keys) if (o && o[k] !== undefined && o[k] !== null) return o[k];
    return undefined;
  };
  const regionOf = (ref) => (typeof ref === "string" && ref.includes("/") ? ref.slice(0, ref.indexOf("/")) : ref || "");
  const arr = (x) => (Array.isArray(x) ? x : []);

  async function getJSON(path) {
    const r = await fetch(path, { cache: "no-store", credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!r.ok) {
      const e = new Error(`${path}: HTTP ${r.status}${r.status === 401 ? " (this page needs read access to /status: a client certificate, or status in admin.open)" : ""}`);
      e.status = r.status;
      throw e;
    }
    return r.json();
  }

  // regions builds region → gateway name → entry, from the fleet view
  // where /status or /v1/members carries one, then from what this
  // gateway's own peers and legs imply.
  function regions(st, ms) {
    const out = new Map();
    const gw = (region, name) => {
      region = region || "?";
      if (!out.has(region)) out.set(region, new Map());
      const g = out.get(region);
      if (name && !g.has(name)) g.set(name, { name, states: [] });
      return name ? g.get(name) : null;
    };
    // An explicit list of regions: names, or objects with gateways.
    for (const r of arr(st.regions)) {
      if (typeof r === "string") { gw(r); continue; }
      const rn = pick(r, "name", "region");
      gw(rn);
      for (const g of arr(pick(r, "gateways", "members"))) {
        if (typeof g === "string") gw(rn, g);
        else addMember(gw(rn, pick(g, "name", "gateway")), g);
      }
    }
    const members = [arr(st.members), arr(st.fleet && st.fleet.members), arr(ms && ms.members)].find((m) => m.length) || [];
    for (const m of members) addMember(gw(m.region, pick(m, "name", "gateway")), m);
    // What this gateway's own status implies.
    const self = gw(st.region, st.gateway);
    if (self && !self.states.length) self.states.push("self");
    for (const p of arr(st.peers)) {
      let region = p.region;
      for (const l of arr(st.legs)) {
        if (!region && l.peer === p.gateway) region = regionOf(l.direction === "in" ? l.from : l.to);
      }
      const e = gw(region, p.gateway);
      const up = pick(p, "connected", "up");
      if (!e.derived && !e.states.length) { e.derived = true; e.states.push(up ? "peer, connected" : "peer, not connected"); e.down = !up; }
      if (!e.address) e.address = p.address;
      if (!e.rtt && up) e.rtt = p.rtt_ms;
    }
    for (const l of arr(st.legs)) { gw(regionOf(l.from)); gw(regionOf(l.to)); }
    return out;
  }

  function addMember(e, m) {
    if (!e) return;
    if (typeof m !== "object") return;
    const state = String(pick(m, "state") || "member");
    e.states.push((m.pool ? `${state} (${m.pool})` : state) + (m.compatible === false ? ", incompatible" : ""));
    if (DOWN_STATES.has(state) || m.compatible === false) e.down = true;
    if (WARN_STATES.has(state)) e.warn = true;
    e.reach = e.reach || m.reach;
    e.address = e.address || pick(m, "address", "addr");
    e.rtt = e.rtt || m.rtt_ms;
    const x = extras(m, MEMBER_KNOWN);
    if (x) e.extra = e.extra ? e.extra + " | " + x : x;
    if (m.bad_metadata) e.badMeta = m.bad_metadata;
  }

  // links are this gateway's peers (one row per link and peer), then any
  // links /status lists, then the legs gossip reports (/v1/members health).
  function links(st, ms) {
    const out = [];
    for (const p of arr(st.peers)) {
      const up = pick(p, "connected", "up");
      let path = p.path || [p.address, p.profile].filter(Boolean).join(" · ");
      if (p.passthrough) path += " · passthrough";
      out.push({ link: p.link, from: st.gateway, to: p.gateway, up, rtt: p.rtt_ms, loss: p.loss, goodput: p.goodput_bps, path,
        failures: p.session_failures, err: p.last_error, extra: extras(p, PEER_KNOWN) });
    }
    for (const k of arr(st.links)) {
      if (typeof k !== "object") continue;
      out.push({ link: pick(k, "link", "name"), from: pick(k, "from", "gateway"), to: pick(k, "to", "peer"), up: pick(k, "up", "connected"),
        rtt: k.rtt_ms, loss: k.loss, goodput: k.goodput_bps, path: k.path, failures: k.session_failures, err: k.last_error,
        extra: extras(k, new Set(["link", "name", "from", "gateway", "to", "peer", "up", "connected", "rtt_ms", "loss", "goodput_bps", "path", "session_failures", "last_error"])) });
    }
    const health = (ms && ms.health) || (st.fleet && st.fleet.health) || {};
    for (const name of Object.keys(health).sort()) {
      const rep = health[name] || {};
      const age = Date.parse(pick(rep, "Received", "received"));
      for (const l of arr(pick(rep, "Legs", "legs"))) {
        const rtt = pick(l, "RTT", "rtt");
        const backlog = pick(l, "Backlog", "backlog");
        const x = ["gossiped"];
        if (isFinite(age)) x.push(Math.max(0, Math.round((Date.now() - age) / 1000)) + " s ago");
        if (isNum(backlog)) x.push("backlog " + fmtInt(backlog) + " B");
        out.push({ link: pick(l, "Leg", "leg"), from: name, to: pick(l, "Peer", "peer"), up: pick(l, "Up", "up"),
          rtt: isNum(rtt) ? rtt / 1e6 : undefined, loss: pick(l, "Loss", "loss"), goodput: pick(l, "Goodput", "goodput"), extra: x.join(", ") });
      }
    }
    return out;
  }

  function render(st, ms) {
    $("gateway").textContent = `${st.gateway || "?"} · region ${st.region || "?"}`;
    document.title = `Meridian ${st.gateway || ""}`;
    const peers = arr(st.peers), legs = arr(st.legs);
    const upPeers = peers.filter((p) => pick(p, "connected", "up")).length;
    $("summary").textContent = `up ${fmtSecs(st.uptime_seconds)} · ${peers.length} peer(s), ${upPeers} connected · ${legs.length} leg(s) · updated ${new Date().toLocaleTimeString()}`;

    const rf = document.createDocumentFragment();
    const rs = regions(st, ms);
    for (const rn of [...rs.keys()].sort()) {
      const gws = [...rs.get(rn).values()].sort((a, b) => a.name.localeCompare(b.name));
      if (!gws.length) rf.appendChild(row([td(rn), td("—", "muted"), td(""), td(""), td(""), td(""), td("")], "", { region: rn }));
      for (const g of gws) {
        const cls = g.down ? "down" : g.warn ? "warn" : "";
        rf.appendChild(row([td(rn), td(g.name), td(g.states.join(", ")), td(g.reach), td(g.address), td(fmtRTT(g.rtt), "num"),
          td([g.badMeta && "bad metadata: " + g.badMeta, g.extra].filter(Boolean).join(" | "), "extra")], cls, { region: rn, gateway: g.name }));
      }
    }
    $("regions").tBodies[0].replaceChildren(rf);

    const lf = document.createDocumentFragment();
    for (const k of links(st, ms)) {
      const health = k.up === undefined ? "?" : k.up ? "up" : "down";
      lf.appendChild(row([td(k.link), td(k.from), td(k.to), td(health, "state-" + health), td(fmtRTT(k.rtt), "num"), td(fmtLoss(k.loss), "num"),
        td(fmtRate(k.goodput), "num"), td(k.path), td(fmtInt(k.failures), "num"), td(k.err, "err"), td(k.extra, "extra")],
        k.up === false ? "down" : "", { link: k.link || "", from: k.from || "", to: k.to || "" }));
    }
    $("links").tBodies[0].replaceChildren(lf);

    const gf = document.createDocumentFragment(), fenced = [], dlq = [], errors = [];
    let dead = 0;
    for (const p of peers) if (p.last_error) errors.push(`peer ${p.gateway} (link ${p.link}): ${p.last_error}`);
    for (const l of legs) {
      const cls = l.fenced ? "fenced" : l.connected ? "" : "down";
      gf.appendChild(row([td(l.leg), td(l.direction), td(l.from), td(l.to), td(l.peer), td(l.connected ? "connected" : "not connected"),
        td(fmtInt(l.records), "num"), td(fmtInt(l.lag_records), "num"), td(isNum(l.lag_seconds) ? l.lag_seconds.toFixed(1) : "", "num"),
        td(fmtInt(l.dead_letters), "num"), td(l.fenced), td(l.last_error, "err")], cls, { leg: `${l.leg}:${l.direction}` }));
      if (l.fenced) fenced.push(`route ${l.route}, leg ${l.leg} (${l.direction}): ${l.fenced}`);
      if (l.dead_letters > 0) { dead += l.dead_letters; dlq.push(`leg ${l.leg} (${l.direction}, route ${l.route}): ${fmtInt(l.dead_letters)} record(s)`); }
      if (l.last_error) errors.push(`leg ${l.leg} (${l.direction}): ${l.last_error}`);
      if (l.failed_txns > 0) errors.push(`leg ${l.leg}: ${fmtInt(l.failed_txns)} destination transaction(s) failed and retried`);
      for (const q of arr(l.quarantined)) errors.push(`leg ${l.leg}: ${q.topic}/${q.partition} quarantined since ${q.since} (${q.kind}: ${q.reason}), ${q.probes} probe(s) refused`);
      for (const g of arr(l.source_gaps)) errors.push(`leg ${l.leg}: ${g.topic}/${g.partition} offsets ${g.from}-${g.to - 1} (${g.records} records) deleted at the source before they were mirrored`);
    }
    if (dlq.length) dlq.unshift(`${fmtInt(dead)} dead letter(s) in all`);
    $("legs").tBodies[0].replaceChildren(gf);
    $("fenced").replaceChildren(...fenced.map((s) => li(s)));
    $("dlq").replaceChildren(...dlq.map((s) => li(s)));
    $("errors").replaceChildren(...errors.map((s) => li(s, "err")));

    const other = {};
    for (const [k, v] of Object.entries(st)) if (!STATUS_KNOWN.has(k)) other[k] = v;
    $("other-section").hidden = Object.keys(other).length === 0;
    $("other").textContent = Object.keys(other).length ? JSON.stringify(other, null, 2) : "";

    // For tests and the curious: when the first render finished, in ms
    // since navigation started, and how many renders there were.
    renders++;
    const root = document.documentElement;
    if (!root.dataset.firstRenderMs) root.dataset.firstRenderMs = performance.now().toFixed(1);
    root.dataset.renders = String(renders);
  }

  function banner(text) {
    const b = $("banner");
    b.textContent = text || "";
    b.hidden = !text;
  }

  async function tick() {
    try {
      const st = await getJSON("/status");
      let ms = null;
      if (membersServed) {
        try {
          ms = await getJSON("/v1/members");
        } catch (e) {
          if (e.status === 404) membersServed = false;
        }
      }
      render(st, ms);
      banner("");
    } catch (e) {
      banner(`cannot read status: ${e.message}; retrying every ${POLL_MS / 1000} s (the data below is stale)`);
    }
    setTimeout(tick, POLL_MS);
  }

  tick();
})();
