// The supermq web console's behaviour: a single page app over the admin API (/api/v1/*),
// with plain fetch and EventSource, no libraries. Each page is a <section> of index.html
// chosen by the URL's hash; the API key, when the node wants one, lives in sessionStorage.
"use strict";

const KEY_STORE = "supermq.apiKey";
const POLL_MS = 2000;
const CHART_POINTS = 30;

// ---- small helpers -------------------------------------------------------------------------

/** An element with attributes and children (strings become text: nothing is parsed as HTML). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function $(id) {
  return document.getElementById(id);
}

function fillTable(id, rows, empty) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(...rows);
  if (rows.length === 0) {
    const columns = $(id).querySelectorAll("thead th").length || 1;
    body.append(el("tr", {}, el("td", { colspan: columns, class: "empty" }, empty)));
  }
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function duration(secs) {
  const d = Math.floor(secs / 86400);
  const h = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60);
  const s = secs % 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

/** A base64 payload as text when it is UTF-8, else as a byte count. */
function payloadText(b64) {
  let raw;
  try {
    raw = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  } catch (_) {
    return "(not base64)";
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(raw);
  } catch (_) {
    return `(${raw.length} bytes, binary)`;
  }
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

// ---- the API and its key -------------------------------------------------------------------

/** Thrown when the node wants a key: the dialog is open, the page reloads once one is given. */
class NeedKey extends Error {}

function apiKey() {
  return sessionStorage.getItem(KEY_STORE);
}

function askForKey(refused) {
  const problem = $("key-problem");
  problem.hidden = !refused;
  problem.textContent = refused ? "That key was refused." : "";
  const dialog = $("key-dialog");
  if (!dialog.open) dialog.showModal();
  $("key-input").focus();
}

/** One API call; the parsed JSON answer (null when there is no body). */
async function api(method, path, body) {
  const headers = {};
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    askForKey(Boolean(key));
    throw new NeedKey("an API key is needed");
  }
  const text = await response.text();
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch (_) {
      json = text;
    }
  }
  if (!response.ok) {
    const message = json && json.message ? json.message : `HTTP ${response.status}`;
    throw new Error(`${method} ${path}: ${message}`);
  }
  return { status: response.status, json };
}

async function get(path) {
  return (await api("GET", path)).json;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== "" && value !== undefined && value !== null) search.set(name, value);
  }
  return search.toString();
}

// ---- overview ------------------------------------------------------------------------------

async function loadOverview() {
  const [nodes, routes, matrixData] = await Promise.all([
    get("/api/v1/nodes"),
    get("/api/v1/routes"),
    get("/api/v1/cluster/routes"),
  ]);
  fillTable(
    "nodes",
    nodes.data.map((n) =>
      el(
        "tr",
        { "data-node": n.name },
        el("td", {}, n.name),
        el("td", { class: n.status === "running" ? "ok" : "warn" }, n.status),
        el("td", {}, n.version),
        el("td", {}, duration(n.uptime_secs)),
        el("td", {}, n.connections),
        el("td", {}, n.sessions),
        el("td", {}, n.subscriptions),
        el("td", {}, n.retained),
        el("td", {}, bytes(n.memory_bytes)),
      ),
    ),
    "no nodes answered",
  );
  const missing = (nodes.meta && nodes.meta.missing_nodes) || [];
  $("nodes-missing").hidden = missing.length === 0;
  $("nodes-missing").textContent = `Did not answer: ${missing.join(", ")}`;

  // The nodes that answered are this one and the peers it has routes to: this node is the
  // one name that is not a peer.
  const peers = new Map(routes.data.map((r) => [r.peer, r]));
  const here = nodes.data.map((n) => n.name).find((name) => !peers.has(name)) || "this node";
  $("this-node").textContent = here;
  const all = [...new Set([...nodes.data.map((n) => n.name), ...missing, ...peers.keys()])].sort();
  // A row per node that answered, with its routes to every other node.
  const rows = new Map(matrixData.data.map((n) => [n.node, new Map(n.routes.map((r) => [r.peer, r]))]));
  const matrix = $("route-matrix");
  matrix.querySelector("thead").replaceChildren(
    el("tr", {}, el("th", {}, "from \\ to"), ...all.map((name) => el("th", {}, name))),
  );
  const row = (from) =>
    el(
      "tr",
      {},
      el("th", {}, from),
      ...all.map((to) => {
        if (to === from) return el("td", { class: "self" }, "—");
        const routes = rows.get(from);
        if (!routes) return el("td", { class: "down", title: "did not answer" }, "?");
        const route = routes.get(to);
        if (!route) return el("td", { class: "down", title: "no route" }, "down");
        const rtt = route.rtt_us ? `${(route.rtt_us / 1000).toFixed(1)} ms` : "up";
        const strained = route.pending_bytes > 0 || route.dropped > 0;
        const title = `pending ${bytes(route.pending_bytes)}, dropped ${route.dropped}`;
        return el("td", { class: strained ? "strained" : "up", title }, rtt);
      }),
    );
  matrix.querySelector("tbody").replaceChildren(...all.map(row));

  fillTable(
    "routes",
    routes.data.map((r) =>
      el(
        "tr",
        {},
        el("td", {}, r.peer),
        el("td", {}, r.address),
        el("td", {}, duration(r.connected_secs)),
        el("td", {}, r.rtt_us ? `${(r.rtt_us / 1000).toFixed(2)} ms` : "—"),
        el("td", {}, r.in_msgs),
        el("td", {}, r.out_msgs),
        el("td", {}, bytes(r.in_bytes)),
        el("td", {}, bytes(r.out_bytes)),
        el("td", {}, bytes(r.pending_bytes)),
        el("td", {}, r.dropped),
      ),
    ),
    "no routes (a single node, or no peer is connected)",
  );
  await sampleRate();
}

// Samples of this node's counters, oldest first: {t (ms), received, delivered}.
const samples = [];

function counter(metrics, name) {
  for (const line of metrics.split("\n")) {
    const [metric, value] = line.split(" ");
    if (metric === name) return Number(value);
  }
  return NaN;
}

async function sampleRate() {
  const response = await fetch("/metrics", {
    headers: apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {},
  });
  if (!response.ok) return;
  const text = await response.text();
  samples.push({
    t: Date.now(),
    received: counter(text, "supermq_messages_received_total"),
    delivered: counter(text, "supermq_messages_delivered_total"),
  });
  while (samples.length > CHART_POINTS + 1) samples.shift();
  drawRate();
}

/** Per second rates between consecutive samples. */
function rates() {
  const out = [];
  for (let i = 1; i < samples.length; i += 1) {
    const dt = (samples[i].t - samples[i - 1].t) / 1000;
    if (dt <= 0) continue;
    out.push({
      received: Math.max(0, (samples[i].received - samples[i - 1].received) / dt),
      delivered: Math.max(0, (samples[i].delivered - samples[i - 1].delivered) / dt),
    });
  }
  return out;
}

function drawRate() {
  const canvas = $("rate-chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width;
  const h = canvas.height;
  const pad = { left: 56, right: 12, top: 12, bottom: 24 };
  const data = rates();
  const top = Math.max(1, ...data.map((r) => Math.max(r.received, r.delivered))) * 1.1;
  ctx.clearRect(0, 0, w, h);
  ctx.font = "12px sans-serif";
  ctx.strokeStyle = "#d7dce3";
  ctx.fillStyle = "#5b6472";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i += 1) {
    const y = pad.top + ((h - pad.top - pad.bottom) * i) / 4;
    ctx.beginPath();
    ctx.moveTo(pad.left, y);
    ctx.lineTo(w - pad.right, y);
    ctx.stroke();
    ctx.fillText(((top * (4 - i)) / 4).toFixed(1), 4, y + 4);
  }
  ctx.fillText(`last ${(CHART_POINTS * POLL_MS) / 1000} s`, pad.left, h - 6);
  // Dashed delivered line: with one subscriber per message the two lines lie on each other.
  const series = [
    ["received", "#2f6fde", []],
    ["delivered", "#1f9d55", [6, 4]],
  ];
  const step = (w - pad.left - pad.right) / (CHART_POINTS - 1);
  series.forEach(([name, colour, dash], index) => {
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.setLineDash(dash);
    ctx.beginPath();
    data.forEach((r, i) => {
      const x = pad.left + step * (CHART_POINTS - data.length + i);
      const y = h - pad.bottom - ((h - pad.top - pad.bottom) * r[name]) / top;
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = colour;
    ctx.fillText(`● ${name}/s`, w - pad.right - 200 + index * 100, h - 6);
  });
  const last = data[data.length - 1];
  $("rate-now").textContent = last
    ? `Now: ${last.received.toFixed(1)} received/s, ${last.delivered.toFixed(1)} delivered/s`
    : "Collecting samples…";
}

// ---- clients -------------------------------------------------------------------------------

const clientsPage = { page: 1 };

async function loadClients() {
  const params = query({
    page: clientsPage.page,
    limit: 50,
    clientid: $("client-search").value.trim(),
    connected: $("client-connected").checked ? "true" : "",
  });
  const answer = await get(`/api/v1/clients?${params}`);
  fillTable(
    "clients",
    answer.data.map((c) =>
      el(
        "tr",
        { "data-clientid": c.clientid },
        el("td", {}, el("a", { href: "#clients", onclick: () => guard(showClient(c.clientid)) }, c.clientid)),
        el("td", {}, c.node),
        el("td", { class: c.connected ? "ok" : "muted" }, c.connected ? "yes" : "no"),
        el("td", {}, c.username || ""),
        el("td", {}, c.ip_address ? `${c.ip_address}:${c.port}` : ""),
        el("td", {}, c.proto_ver),
        el("td", {}, c.subscriptions),
        el("td", {}, c.queued),
        el(
          "td",
          {},
          c.connected
            ? el("button", { class: "kick danger", type: "button", onclick: () => guard(kick(c.clientid)) }, "Kick")
            : "",
        ),
      ),
    ),
    "no clients match",
  );
  pager("clients", clientsPage, answer.meta, loadClients);
}

async function showClient(clientid) {
  const c = await get(`/api/v1/clients/${encodeURIComponent(clientid)}`);
  $("client-details-id").textContent = clientid;
  const fields = [];
  for (const [name, value] of Object.entries(c)) {
    let shown = value === null ? "—" : value;
    if (name === "connected_at" && value) shown = new Date(value).toLocaleString();
    fields.push(el("dt", {}, name), el("dd", {}, shown));
  }
  $("client-details-fields").replaceChildren(...fields);
  $("client-details").hidden = false;
}

async function kick(clientid) {
  if (!window.confirm(`Disconnect ${clientid}? Its session stays.`)) return;
  await api("DELETE", `/api/v1/clients/${encodeURIComponent(clientid)}`);
  await loadClients();
}

/** Previous / next buttons and the "page n of m" text of a paged list. */
function pager(prefix, state, meta, reload) {
  const pages = Math.max(1, Math.ceil(meta.count / meta.limit));
  $(`${prefix}-page`).textContent = `page ${meta.page} of ${pages} (${meta.count} in all)`;
  $(`${prefix}-prev`).disabled = meta.page <= 1;
  $(`${prefix}-next`).disabled = !meta.hasnext;
  $(`${prefix}-prev`).onclick = () => {
    state.page -= 1;
    guard(reload());
  };
  $(`${prefix}-next`).onclick = () => {
    state.page += 1;
    guard(reload());
  };
}

// ---- subscriptions and groups --------------------------------------------------------------

const subsPage = { page: 1 };

async function loadSubscriptions() {
  const params = query({
    page: subsPage.page,
    limit: 100,
    clientid: $("subs-clientid").value.trim(),
    topic: $("subs-topic").value.trim(),
  });
  const [subs, groups] = await Promise.all([get(`/api/v1/subscriptions?${params}`), get("/api/v1/groups")]);
  fillTable(
    "subscriptions",
    subs.data.map((s) =>
      el(
        "tr",
        {},
        el("td", {}, s.node),
        el("td", {}, s.clientid),
        el("td", {}, s.topic),
        el("td", {}, s.qos),
        el("td", {}, s.group || "—"),
      ),
    ),
    "no subscriptions",
  );
  pager("subs", subsPage, subs.meta, loadSubscriptions);
  fillTable(
    "groups",
    groups.data.map((g) =>
      el(
        "tr",
        { "data-group": g.group },
        el("td", {}, g.group),
        el("td", {}, g.filter),
        el(
          "td",
          {},
          Object.entries(g.members)
            .map(([node, count]) => `${node}: ${count}`)
            .join(", "),
        ),
      ),
    ),
    "no consumer groups",
  );
}

// ---- retained messages ---------------------------------------------------------------------

const retainedPage = { page: 1 };

async function loadRetained() {
  const answer = await get(`/api/v1/retained?${query({ page: retainedPage.page, limit: 100 })}`);
  fillTable(
    "retained",
    answer.data.map((r) =>
      el(
        "tr",
        { "data-topic": r.topic },
        el("td", {}, r.topic),
        el("td", { class: "payload" }, payloadText(r.payload)),
        el("td", {}, r.qos),
        el(
          "td",
          {},
          el("button", { class: "delete danger", type: "button", onclick: () => guard(clearRetained(r.topic)) }, "Delete"),
        ),
      ),
    ),
    "no retained messages",
  );
  pager("retained", retainedPage, answer.meta, loadRetained);
}

async function clearRetained(topic) {
  if (!window.confirm(`Delete the retained message of ${topic} on every node?`)) return;
  // The topic is the rest of the path: its levels stay separated by "/".
  const path = topic.split("/").map(encodeURIComponent).join("/");
  await api("DELETE", `/api/v1/retained/${path}`);
  await loadRetained();
}

// ---- live messages -------------------------------------------------------------------------

let source = null;
const LIVE_ROWS = 500;

function stopLive() {
  if (source) source.close();
  source = null;
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
}

function startLive() {
  stopLive();
  const params = { filter: $("live-filter").value.trim() || "#" };
  // An EventSource cannot send headers, so the key travels in the URL (only this path takes it).
  if (apiKey()) params.key = apiKey();
  source = new EventSource(`/api/v1/events?${query(params)}`);
  const status = $("live-status");
  status.textContent = "connecting…";
  $("live-start").disabled = true;
  $("live-stop").disabled = false;
  source.onopen = () => {
    status.textContent = `watching ${params.filter}`;
  };
  source.onerror = () => {
    if (source && source.readyState === EventSource.CLOSED) {
      status.textContent = "closed by the node (a refused key, a bad filter or too many viewers)";
      stopLive();
    } else {
      status.textContent = "reconnecting…";
    }
  };
  source.addEventListener("message", (event) => {
    let m;
    try {
      m = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    addLiveRow(
      el(
        "tr",
        { "data-topic": m.topic },
        el("td", {}, new Date().toLocaleTimeString()),
        el("td", {}, m.topic),
        el("td", {}, m.qos),
        el("td", {}, m.retain ? "yes" : ""),
        el("td", { class: "payload" }, m.text !== undefined && m.text !== null ? m.text : payloadText(m.payload)),
      ),
    );
  });
  source.addEventListener("dropped", (event) => {
    addLiveRow(el("tr", { class: "warn" }, el("td", { colspan: 5 }, `${event.data} messages dropped: this page read too slowly`)));
  });
}

function addLiveRow(row) {
  const body = $("live-log").querySelector("tbody");
  body.prepend(row);
  while (body.children.length > LIVE_ROWS) body.lastChild.remove();
}

// ---- publish -------------------------------------------------------------------------------

async function publish() {
  const body = {
    topic: $("pub-topic").value,
    payload: $("pub-payload").value,
    payload_encoding: "plain",
    qos: Number($("pub-qos").value),
    retain: $("pub-retain").checked,
  };
  const result = $("pub-result");
  result.textContent = "";
  const answer = await api("POST", "/api/v1/publish", body);
  result.textContent =
    answer.status === 200 ? `Published (id ${answer.json.id}).` : "Published, but no subscriber matched.";
}

// ---- navigation ----------------------------------------------------------------------------

const pages = {
  overview: loadOverview,
  clients: loadClients,
  subscriptions: loadSubscriptions,
  retained: loadRetained,
  live: async () => {},
  publish: async () => {},
};

let timer = null;

function currentPage() {
  const name = location.hash.slice(1);
  return name in pages ? name : "overview";
}

/** Runs a page's promise, showing its failure (a needed key only opens the dialog). */
function guard(promise) {
  return promise.then(
    () => showError(""),
    (error) => {
      if (!(error instanceof NeedKey)) showError(error.message);
    },
  );
}

function show() {
  const name = currentPage();
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${name}`;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === name);
  clearInterval(timer);
  timer = null;
  if (name !== "live") stopLive();
  guard(pages[name]());
  // The overview follows the cluster as it changes; the other pages load when asked.
  if (name === "overview") timer = setInterval(() => guard(loadOverview()), POLL_MS);
  $("key-forget").hidden = !apiKey();
}

function init() {
  window.addEventListener("hashchange", show);
  $("key-form").addEventListener("submit", () => {
    sessionStorage.setItem(KEY_STORE, $("key-input").value.trim());
    $("key-input").value = "";
    show();
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    show();
  });
  $("client-search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    clientsPage.page = 1;
    guard(loadClients());
  });
  $("subs-search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    subsPage.page = 1;
    guard(loadSubscriptions());
  });
  $("retained-refresh").addEventListener("click", () => guard(loadRetained()));
  $("live-form").addEventListener("submit", (event) => {
    event.preventDefault();
    startLive();
  });
  $("live-stop").addEventListener("click", () => {
    stopLive();
    $("live-status").textContent = "stopped";
  });
  $("publish-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guard(publish());
  });
  show();
}

init();
