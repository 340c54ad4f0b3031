// The rumor dashboard: one stream of snapshots from GET /v1/ui/events, rendered as it arrives.
// EventSource cannot send an Authorization header, so the stream is a fetch() whose body is parsed as Server-Sent
// Events here. The token comes from the URL fragment (#token=..., never sent to the server) or the form shown after
// a 401, and stays in this tab's sessionStorage. Everything from the node is written with textContent, never as HTML.
"use strict";

const WINDOW_S = 120;
const STATUSES = ["alive", "suspect", "dead", "left"];
const samples = [];  // {t, statuses: {member: status}, keys, writes}
let retryDelayMs = 500;

function token() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has("token")) {
    sessionStorage.setItem("rumor-token", fragment.get("token"));
    window.history.replaceState(null, "", location.pathname);  // the token leaves the address bar
  }
  return sessionStorage.getItem("rumor-token");
}

function setConnection(state, text) {
  const el = document.getElementById("connection");
  el.dataset.state = state;
  el.textContent = text;
}

async function* sseEvents(body) {
  // Splits the byte stream into events: lines "event:", "data:", blank line ends one; comments are skipped.
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", name = "", data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (data.length) yield { event: name || "message", data: data.join("\n") };
        name = ""; data = [];
      } else if (!line.startsWith(":")) {
        const at = line.indexOf(":");
        const field = at < 0 ? line : line.slice(0, at);
        const text = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
        if (field === "event") name = text;
        else if (field === "data") data.push(text);
      }
    }
  }
}

async function connect() {
  const headers = { Accept: "text/event-stream" };
  const secret = token();
  if (secret) headers.Authorization = "Bearer " + secret;
  setConnection("connecting", "connecting…");
  let response;
  try {
    response = await fetch("/v1/ui/events", { headers, cache: "no-store" });
  } catch (error) {
    return retry("cannot reach the node: " + error.message);
  }
  if (response.status === 401) {
    sessionStorage.removeItem("rumor-token");
    document.getElementById("token-form").hidden = false;
    setConnection("unauthorized", "this node needs its API token");
    return;
  }
  if (!response.ok) return retry("the node answered " + response.status);
  document.getElementById("token-form").hidden = true;
  setConnection("live", "live");
  retryDelayMs = 500;
  try {
    for await (const event of sseEvents(response.body)) {
      if (event.event === "snapshot") render(JSON.parse(event.data));
    }
    retry("the node ended the stream");
  } catch (error) {
    retry("connection lost: " + error.message);
  }
}

function retry(reason) {
  setConnection("retrying", reason + "; retrying");
  setTimeout(connect, retryDelayMs);
  retryDelayMs = Math.min(retryDelayMs * 2, 10000);
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function seconds(value) {
  return value === null || value === undefined ? "–" : value.toFixed(1) + " s";
}

function render(snapshot) {
  document.getElementById("node").textContent = snapshot.node;
  const convergence = snapshot.convergence;
  const verdict = document.getElementById("verdict");
  verdict.dataset.verdict = convergence.verdict;
  verdict.textContent = convergence.verdict;
  document.getElementById("summary").textContent = convergence.summary;
  document.getElementById("alive").textContent =
    snapshot.members.filter((m) => m.status === "alive").length + " / " + snapshot.members.length;
  document.getElementById("keys").textContent = snapshot.keys;
  document.getElementById("writes").textContent =
    snapshot.writes_per_s === null ? "–" : snapshot.writes_per_s.toFixed(1);

  const statuses = {};
  for (const m of snapshot.members) statuses[m.id] = m.status;
  samples.push({ t: snapshot.t, statuses, keys: snapshot.keys, writes: snapshot.writes_per_s || 0 });
  while (samples.length && samples[0].t < snapshot.t - WINDOW_S) samples.shift();

  renderMembers(snapshot.members, convergence.peers);
  renderTimeline(snapshot.t);
  spark("keys-spark", samples.map((h) => h.keys));
  spark("writes-spark", samples.map((h) => h.writes));
  renderEvents(snapshot.events);
}

function renderMembers(members, peers) {
  const byId = {};
  for (const p of peers) byId[p.id] = p;
  const rows = members.map((m) => {
    const row = el("tr");
    row.dataset.member = m.id;
    row.dataset.status = m.status;
    if (m.self) row.className = "self";
    const peer = byId[m.id];
    let agreement = "this node";
    if (!m.self) {
      agreement = !peer ? "–" : peer.root_match === true ? (peer.answered ? "agrees" : "agreed (stale)")
        : peer.root_match === false ? "differs" : "unknown";
      if (peer && !peer.answered && peer.note) agreement += " · " + peer.note;
    }
    row.dataset.agreement = agreement.split(" ")[0];
    row.append(el("td", m.id), el("td", m.status, "status " + m.status), el("td", m.incarnation),
      el("td", m.gossip_addr), el("td", m.http_addr || "–"), el("td", agreement),
      el("td", peer ? (peer.differing_ranges ?? "–") : ""),
      el("td", peer ? seconds(peer.last_exchange_s_ago) + " ago" : ""),
      el("td", peer ? seconds(peer.lag_s) : ""),
      el("td", peer && peer.backlog_groups !== null ? peer.backlog_groups + " groups / " + peer.backlog_bytes + " B" : ""));
    return row;
  });
  document.querySelector("#members tbody").replaceChildren(...rows);
}

function renderTimeline(now) {
  const svg = document.getElementById("timeline");
  const ns = "http://www.w3.org/2000/svg";
  const members = [...new Set(samples.flatMap((h) => Object.keys(h.statuses)))].sort();
  const height = 100 / Math.max(members.length, 1);
  const shapes = [];
  members.forEach((member, i) => {
    for (let k = 0; k < samples.length; k++) {
      const status = samples[k].statuses[member];
      if (!status) continue;
      const start = samples[k].t, end = k + 1 < samples.length ? samples[k + 1].t : now + 1;
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", 60 + ((start - (now - WINDOW_S)) / WINDOW_S) * 540);
      rect.setAttribute("width", Math.max(Math.min(end - start, WINDOW_S) / WINDOW_S * 540, 2));
      rect.setAttribute("y", i * height + 2);
      rect.setAttribute("height", Math.max(height - 4, 1));
      rect.setAttribute("fill", getComputedStyle(document.documentElement).getPropertyValue("--" + status));
      shapes.push(rect);
    }
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", 2);
    label.setAttribute("y", i * height + height / 2 + 3);
    label.textContent = member;
    shapes.push(label);
  });
  svg.replaceChildren(...shapes);
}

function spark(id, values) {
  const svg = document.getElementById(id);
  if (values.length < 2) return;
  const max = Math.max(...values, 1);
  const points = values.map((v, i) => (i / (values.length - 1)) * 120 + "," + (29 - (v / max) * 28)).join(" ");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points);
  svg.replaceChildren(line);
}

function renderEvents(events) {
  const items = events.slice().reverse().map((e) => {
    const when = new Date(e.t * 1000).toLocaleTimeString();
    const was = e.was ? " (was " + e.was + ")" : " (new)";
    return el("li", when + "  " + e.member + " is " + e.status + was + ", incarnation " + e.incarnation,
      STATUSES.includes(e.status) ? e.status : "");
  });
  document.getElementById("events").replaceChildren(...items);
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("rumor-token", document.getElementById("token").value);
  connect();
});
document.getElementById("window").textContent = WINDOW_S;
connect();
