// Herald dashboard: follows /admin/live (the hub's own SSE) and keeps every
// figure, chart and table current without reloading. When the sign-in ends
// (the admin token expires), the page says so and offers to sign in again.
"use strict";

const $ = (id) => document.getElementById(id);
const page = document.body.dataset.page;
const history = [];
const MAX_POINTS = 1800;

const fmt = (n) => (n >= 1e6 ? (n / 1e6).toFixed(1) + "M" : n >= 1e4 ? (n / 1e3).toFixed(1) + "k" : Math.round(n).toString());
const ms = (v) => (v == null ? "–" : v < 10 ? v.toFixed(2) + " ms" : Math.round(v) + " ms");
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
function ago(t) {
  if (!t) return "–";
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m ago";
  if (s < 86400) return Math.floor(s / 3600) + "h ago";
  return Math.floor(s / 86400) + "d ago";
}
function setText(id, text) { const el = $(id); if (el) el.textContent = text; }
// "showing 500 of 812 topics" under a list cut at --dashboard-rows.
function setMore(id, shown, total, what) {
  const el = $(id);
  if (!el) return;
  el.hidden = shown >= total;
  el.textContent = `showing ${shown} of ${total} ${what}`;
}

function drawLine(svg, values, cls, max) {
  const w = 600, h = 120, n = values.length;
  if (n < 2) return "";
  const x = (i) => (i / (MAX_POINTS - 1)) * w + (w - ((n - 1) / (MAX_POINTS - 1)) * w);
  const y = (v) => h - 4 - (v / (max || 1)) * (h - 12);
  const pts = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  return `<polyline class="line ${cls}" points="${pts}"/>`;
}
function drawCharts() {
  const streams = $("chart-streams"), rates = $("chart-rates");
  if (!streams || !rates) return;
  const s = history.map((p) => p.streams);
  const maxS = Math.max(1, ...s);
  streams.innerHTML = drawLine(streams, s, "", maxS * 1.1) + `<text x="4" y="12" font-size="10" fill="currentColor" opacity=".5">${fmt(maxS)}</text>`;
  const p = history.map((x) => x.publish_rate), d = history.map((x) => x.delivery_rate);
  const maxR = Math.max(1, ...p, ...d) * 1.1;
  rates.innerHTML = drawLine(rates, p, "pub", maxR) + drawLine(rates, d, "del", maxR) + `<text x="4" y="12" font-size="10" fill="currentColor" opacity=".5">${fmt(maxR / 1.1)}/s</text>`;
}

// Sortable, filterable tables that keep their order across live updates.
const sortState = {};
function sortRows(table, rows) {
  const st = sortState[table];
  if (!st) return rows;
  return rows.slice().sort((a, b) => {
    const x = a[st.key] ?? "", y = b[st.key] ?? "";
    const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return st.dir * c;
  });
}
document.querySelectorAll("table.sortable th[data-key]").forEach((th) => {
  th.addEventListener("click", () => {
    const table = th.closest("table").id, key = th.dataset.key;
    const prev = sortState[table];
    sortState[table] = { key, dir: prev && prev.key === key ? -prev.dir : key === "name" || key === "remote" ? 1 : -1 };
    th.closest("tr").querySelectorAll("th").forEach((h) => h.classList.remove("sorted-asc", "sorted-desc"));
    th.classList.add(sortState[table].dir > 0 ? "sorted-asc" : "sorted-desc");
    render(lastSnapshot);
  });
});
for (const id of ["topic-filter", "conn-filter", "metric-filter"]) {
  const input = $(id);
  if (!input) continue;
  input.addEventListener("input", () => {
    if (id === "metric-filter") {
      const q = input.value.toLowerCase();
      document.querySelectorAll("#metrics tbody tr").forEach((tr) => (tr.hidden = !tr.textContent.toLowerCase().includes(q)));
    } else render(lastSnapshot);
  });
}
const filterText = (id) => ($(id) ? $(id).value.toLowerCase() : "");

let lastSnapshot = null;
function render(snap) {
  if (!snap) return;
  const s = snap.sample;
  setText("m-streams", fmt(s.streams));
  setText("m-connections", fmt(s.connections));
  setText("m-publish", fmt(s.publish_rate));
  setText("m-delivery", fmt(s.delivery_rate));
  setText("m-published", fmt(s.published));
  setText("m-delivered", fmt(s.delivered));
  setText("m-p50", ms(s.p50_ms));
  setText("m-p99", ms(s.p99_ms));
  setText("m-topics", fmt(s.topics));
  const store = $("store-pill");
  if (store) { store.className = "pill " + (s.store_healthy ? "ok" : "bad"); store.textContent = s.store_healthy ? "store ok" : "store failing"; }

  if (page === "overview" && $("topics")) {
    const q = filterText("topic-filter");
    const rows = sortRows("topics", snap.topics.filter((t) => t.name.toLowerCase().includes(q)));
    $("topics").tBodies[0].innerHTML = rows.map((t) =>
      `<tr><td><a href="/admin/topics/${encodeURIComponent(t.name)}">${esc(t.name)}</a></td><td class="num">${t.subscribers}</td><td class="num">${fmt(t.retained)}</td><td class="num">${ago(t.last_event_ms)}</td><td class="num">${t.publish_rate.toFixed(1)}</td></tr>`).join("");
    const empty = $("topics-empty");
    if (empty) empty.hidden = snap.topics.length > 0;
    setMore("topics-more", snap.topics.length, snap.topics_total, "topics, those with the most subscribers");
  }
  if (page === "connections" && $("connections")) {
    const q = filterText("conn-filter");
    const rows = sortRows("connections", snap.connections.filter((c) => JSON.stringify(c).toLowerCase().includes(q)));
    setText("c-count", s.streams);
    setMore("c-more", snap.connections.length, s.streams, "streams, the oldest first");
    $("connections").tBodies[0].innerHTML = rows.map((c) =>
      `<tr><td class="num">${c.id}</td><td>${esc(c.remote)}</td><td class="ua" title="${esc(c.user_agent)}">${esc(c.user_agent)}</td><td>${esc(c.subject || "—")}</td><td>${esc(c.topics.join(", "))}</td><td class="num">${ago(c.connected_ms)}</td><td class="num">${fmt(c.events_sent)}</td><td class="num">${fmt(c.lag)}</td><td><button class="danger" data-disconnect="${c.id}">Disconnect</button></td></tr>`).join("");
  }
  if (page === "topic" && $("topic-connections")) {
    const name = $("topic-connections").dataset.topic;
    const matches = (p) => (p.endsWith("*") ? name.startsWith(p.slice(0, -1)) : p === name);
    const subs = snap.connections.filter((c) => c.topics.some(matches));
    $("topic-connections").tBodies[0].innerHTML = subs.map((c) =>
      `<tr><td>${esc(c.remote)}</td><td>${esc(c.subject || "—")}</td><td class="num">${fmt(c.events_sent)}</td><td class="num">${fmt(c.lag)}</td></tr>`).join("");
    const t = snap.topics.find((x) => x.name === name);
    setText("t-subscribers", t ? t.subscribers : subs.length);
    setText("t-buffered", t ? t.buffered : 0);
    if (t) setText("t-retained", fmt(t.retained));
    setMore("tc-more", subs.length, t ? Math.max(t.subscribers, subs.length) : subs.length, "streams");
  }
}

document.addEventListener("click", async (e) => {
  const id = e.target.dataset && e.target.dataset.disconnect;
  if (!id) return;
  if (!confirm(`Disconnect stream #${id}? The client will reconnect and resume.`)) return;
  const r = await fetch(`/admin/connections/${id}/disconnect`, { method: "POST", headers: { "X-Herald-Confirm": "disconnect" } });
  if (!r.ok && r.status !== 404) alert("Disconnect failed: " + (await r.text()));
});

// The sign-in has ended: stop following and offer to sign in again.
let signedOut = false;
const streams = { live: null, tail: null };
function signOut(why) {
  if (signedOut) return;
  signedOut = true;
  if (streams.live) streams.live.close();
  if (streams.tail) streams.tail.abort();
  const pill = $("live-pill");
  if (pill) { pill.className = "pill bad"; pill.textContent = "signed out"; }
  setText("signed-out-why", why);
  $("signed-out").hidden = false;
}
const expiredWhy = (data) => { try { return JSON.parse(data).message; } catch { return "Your admin token expired; sign in again."; } };

function follow() {
  const pill = $("live-pill");
  const live = new EventSource("/admin/live");
  streams.live = live;
  live.addEventListener("open", () => { pill.className = "pill ok"; pill.textContent = "live"; });
  live.addEventListener("error", async () => {
    if (signedOut) return;
    pill.className = "pill wait"; pill.textContent = "reconnecting";
    // EventSource gives up on a refusal and cannot say why: ask.
    if (live.readyState !== EventSource.CLOSED) return;
    const r = await fetch("/admin/live", { method: "HEAD" }).catch(() => null);
    if (r && (r.status === 401 || r.status === 403)) signOut("Your sign-in is no longer valid.");
    else setTimeout(follow, 3000);
  });
  live.addEventListener("herald.expired", (e) => signOut(expiredWhy(e.data)));
  live.addEventListener("history", (e) => { history.splice(0, history.length, ...JSON.parse(e.data)); drawCharts(); });
  live.addEventListener("snapshot", (e) => {
    lastSnapshot = JSON.parse(e.data);
    history.push(lastSnapshot.sample);
    if (history.length > MAX_POINTS) history.shift();
    render(lastSnapshot);
    drawCharts();
  });
}

// The topic's live tail, from the dashboard's own route (authorised by the
// sign-in, not counted as a subscriber). It resumes from the last id after
// a drop, and shows events of every type.
async function tail() {
  const list = $("tail");
  if (!list) return;
  const topic = list.dataset.topic;
  const state = $("tail-state");
  let lastId = "";
  const show = (ev) => {
    if (ev.type === "herald.expired") return signOut(expiredWhy(ev.data));
    $("tail-empty").hidden = true;
    if (ev.id) { lastId = ev.id; setText("t-last", ev.id); }
    const li = document.createElement("li");
    li.innerHTML = `<div class="meta">${esc(ev.id || "–")} · <span class="type">${esc(ev.type)}</span> · ${new Date().toLocaleTimeString()}</div><pre>${esc(ev.data)}</pre>`;
    list.prepend(li);
    while (list.children.length > 200) list.lastChild.remove();
  };
  while (!signedOut) {
    const controller = new AbortController();
    streams.tail = controller;
    try {
      const headers = lastId ? { "Last-Event-ID": lastId } : {};
      const response = await fetch(`/admin/topics/${encodeURIComponent(topic)}/tail`, { headers, signal: controller.signal });
      if (response.status === 401 || response.status === 403) return signOut("Your sign-in is no longer valid.");
      if (!response.ok) {
        state.textContent = `error ${await refusal(response)}`;
        state.classList.add("notice");
        await new Promise((r) => setTimeout(r, 3000));
        continue;
      }
      state.textContent = "live";
      state.classList.remove("notice");
      await readEvents(response, show);
    } catch (err) {
      /* network drop: retry below */
    }
    if (signedOut) return;
    state.textContent = "reconnecting…";
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function tickUptime() {
  const el = $("uptime");
  if (!el) return;
  const started = Number(el.dataset.started);
  setInterval(() => {
    const s = Math.floor((Date.now() - started) / 1000);
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    el.textContent = d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
  }, 1000);
}

document.querySelectorAll("[data-ms]").forEach((el) => (el.textContent = ago(Number(el.dataset.ms))));
follow();
tail();
tickUptime();
