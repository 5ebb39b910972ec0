// raftq console (docs/console.md). Plain JS, no framework, no build step.
//
// Every request goes to the node that served this page (the CSP allows
// nothing else): GET /status and GET /cluster/nodes once a second, GET
// .../event and .../events when a queue is opened, the admin routes on
// demand. Data reaches the DOM through textContent only: event bodies are
// whatever clients enqueued.
"use strict";

/** How often the page asks the node for /status and /cluster/nodes. */
const POLL_MS = 1000;
/** Rate samples kept per queue for its sparkline (5 minutes at 1/s). */
const HISTORY_SAMPLES = 300;
/** Polls whose rates the number beside a sparkline averages. */
const RATE_WINDOW = 5;
/** Events shown in a queue's "last events" list. */
const PEEK_EVENTS = 10;
const SPARK_W = 120;
/** Samples a sparkline's width stands for until more are kept. */
const SPARK_MIN_SAMPLES = 60;
const SPARK_H = 22;

const page = {
  token: null, // the API token typed in; memory only
  status: null,
  nodes: null,
  view: "cluster",
  selectedQueue: null,
  /** queue name -> {t, head, done, enq: [], deq: []} */
  rates: new Map(),
  maze: null, // {t, lines, rates: []}
  timer: null,
  pending: null, // the admin action awaiting confirmation
};

const $ = (id) => document.getElementById(id);

class AuthError extends Error {}

/** An element with text children (strings become text nodes). */
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "data") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

/**
 * JSON with node ids intact: they are u64 and most exceed 2^53, which
 * JSON.parse would round. Integers that a double cannot hold are kept as
 * their source text (the reviver's third argument).
 */
function parseJson(text) {
  return JSON.parse(text, (key, value, context) =>
    typeof value === "number" && !Number.isSafeInteger(value) && context && typeof context.source === "string"
      ? context.source
      : value);
}

const idText = (id) => (id === null || id === undefined ? "" : String(id));
const fmt = (n) => (n === null || n === undefined ? "—" : String(n));

function headers(extra, token) {
  const h = Object.assign({}, extra);
  const bearer = token ?? page.token;
  if (bearer) h.Authorization = "Bearer " + bearer;
  return h;
}

async function getJson(path, accept) {
  const res = await fetch(path, {
    headers: headers(accept ? { Accept: accept } : {}),
    cache: "no-store",
    redirect: "manual",
  });
  if (res.status === 401) throw new AuthError("token refused");
  if (res.status === 204) return null;
  const text = await res.text();
  if (!res.ok) throw new Error(errorText(res.status, text));
  return parseJson(text);
}

function errorText(status, text) {
  try {
    const body = JSON.parse(text);
    return `${status} ${body.code}: ${body.error}`;
  } catch {
    return `${status} ${text.slice(0, 200)}`;
  }
}

// ---------------------------------------------------------------- polling

async function poll() {
  page.timer = null;
  try {
    const [status, nodes] = await Promise.all([getJson("/status"), getJson("/cluster/nodes")]);
    page.status = status;
    page.nodes = nodes;
    showApp();
    sample(status);
    render();
    setConn("live · " + new Date().toLocaleTimeString(), false);
  } catch (e) {
    if (e instanceof AuthError) {
      showLogin(page.token ? "The node refused this token." : "");
      return; // polling resumes after a sign-in
    }
    setConn("node unreachable: " + e.message, true);
  }
  page.timer = setTimeout(poll, POLL_MS);
}

function setConn(text, bad) {
  const conn = $("conn");
  conn.textContent = text;
  conn.classList.toggle("bad", bad);
}

function showLogin(message) {
  page.status = null;
  page.nodes = null;
  for (const view of document.querySelectorAll(".view")) view.hidden = true;
  $("tabs").hidden = true;
  $("node-summary").textContent = "sign in to see this node";
  setConn("", false);
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("token-input").focus();
}

function showApp() {
  $("login").hidden = true;
  $("tabs").hidden = false;
  showView(page.view);
}

function showView(view) {
  page.view = view;
  for (const section of document.querySelectorAll(".view")) {
    section.hidden = section.id !== "view-" + view;
  }
  for (const tab of document.querySelectorAll(".tab")) {
    tab.classList.toggle("active", tab.dataset.view === view);
  }
}

// ------------------------------------------------------------------ rates

/** Enqueue and dequeue rates per queue from the change of head and front. */
function sample(status) {
  const now = performance.now();
  for (const [name, q] of Object.entries(status.queues || {})) {
    const done = q.head_seq - q.pending; // events done: front - 1
    const prev = page.rates.get(name);
    if (!prev) {
      page.rates.set(name, { t: now, head: q.head_seq, done, enq: [], deq: [] });
      continue;
    }
    const dt = (now - prev.t) / 1000;
    if (dt <= 0) continue;
    // A restore or snapshot install can move pointers back: no negative rates.
    push(prev.enq, Math.max(0, (q.head_seq - prev.head) / dt));
    push(prev.deq, Math.max(0, (done - prev.done) / dt));
    Object.assign(prev, { t: now, head: q.head_seq, done });
  }
  const maze = status.maze;
  if (maze) {
    const prev = page.maze;
    const rates = prev ? prev.rates : [];
    if (prev && now > prev.t) push(rates, Math.max(0, (maze.source_lines - prev.lines) / ((now - prev.t) / 1000)));
    page.maze = { t: now, lines: maze.source_lines, rates };
  }
}

function push(series, value) {
  series.push(value);
  if (series.length > HISTORY_SAMPLES) series.shift();
}

/** The mean of the last RATE_WINDOW samples: one poll is too jumpy to read. */
function rateText(series) {
  if (!series.length) return "—";
  const last = series.slice(-RATE_WINDOW);
  return (last.reduce((a, b) => a + b, 0) / last.length).toFixed(1);
}

function sparkline(enq, deq) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", SPARK_W);
  svg.setAttribute("height", SPARK_H);
  svg.setAttribute("viewBox", `0 0 ${SPARK_W} ${SPARK_H}`);
  const max = Math.max(1, ...enq, ...deq);
  for (const [series, cls] of [[enq, "enq"], [deq, "deq"]]) {
    if (series.length < 2) continue;
    // The first minute fills the width as it comes; later samples squeeze
    // up to HISTORY_SAMPLES into it.
    const step = SPARK_W / (Math.max(series.length, SPARK_MIN_SAMPLES) - 1);
    const x0 = SPARK_W - step * (series.length - 1);
    const points = series
      .map((v, i) => `${(x0 + i * step).toFixed(1)},${(SPARK_H - 1 - (v / max) * (SPARK_H - 2)).toFixed(1)}`)
      .join(" ");
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("class", cls);
    line.setAttribute("points", points);
    svg.append(line);
  }
  return svg;
}

// ------------------------------------------------------------------ views

function render() {
  renderHeader();
  renderCluster();
  renderQueues();
  renderMaze();
  renderAdminChoices();
  // Only while someone looks at it: two linearizable reads a second.
  if (page.selectedQueue && page.view === "queues") peek(page.selectedQueue);
}

function renderHeader() {
  const s = page.status;
  const leader = s.leader_id === null ? "none" : idText(s.leader_id);
  $("node-summary").textContent =
    `node ${idText(s.node_id)} · ${s.removed ? "removed" : s.role}${contactNote(s)} · leader ${leader} · ` +
    `term ${s.term} · cluster ${s.cluster_id} · v${s.version}`;
}

/** A node out of contact says so: a leader no quorum has acknowledged for
 * over a second (cut off: its writes fail), or a follower that has not
 * heard from its leader for that long. */
function contactNote(s) {
  const silent = s.role === "leader" ? s.quorum_ack_ms : s.leader_contact_ms;
  if (typeof silent !== "number" || silent <= 1000) return "";
  const what = s.role === "leader" ? "no quorum" : "no leader contact";
  return ` (${what} for ${(silent / 1000).toFixed(1)} s)`;
}

/** Raft membership (/cluster/nodes) joined with gossip's view (/status members). */
function renderCluster() {
  const s = page.status;
  const raft = new Map((page.nodes?.nodes || []).map((n) => [idText(n.node_id), n]));
  const gossip = new Map((s.members || []).map((m) => [idText(m.node_id), m]));
  const ids = [...new Set([...raft.keys(), ...gossip.keys()])].sort();
  const self = idText(s.node_id);
  const leader = idText(s.leader_id);
  const isLeader = self === leader;
  const rows = ids.map((id) => {
    const n = raft.get(id);
    const m = gossip.get(id);
    let role;
    if (id === self && s.removed) role = "removed";
    else if (id === leader) role = "leader";
    else if (id === self) role = s.role;
    else if (n) role = n.voter ? "follower" : "learner";
    else role = "—";
    const member = n ? (n.voter ? "voter" : "learner") : "not a member";
    let applied = null;
    let lag = null;
    if (id === self) {
      applied = s.applied_index;
      // Behind the leader's commit as far as this node knows it.
      if (s.commit_index !== null && s.applied_index !== null) lag = Math.max(0, s.commit_index - s.applied_index);
    } else if (n && n.matched_index !== null && n.matched_index !== undefined) {
      applied = n.matched_index;
      if (isLeader && s.last_log_index !== null) lag = Math.max(0, s.last_log_index - n.matched_index);
    }
    const live = m ? m.live : false;
    let gossipText = m ? (m.live ? "live" : "unreachable") : "unknown";
    if (m && m.disk_low) gossipText += " · disk low";
    const classes = [];
    if (id === leader) classes.push("leader");
    if (id === self) classes.push("self");
    if (!n || (id === self && s.removed)) classes.push("removed");
    if (!live) classes.push("down");
    return el("tr", { class: classes.join(" "), data: { nodeId: id, role } },
      el("td", { class: "id" }, id),
      el("td", { class: "role" }, role),
      el("td", { class: "member" }, member),
      el("td", { class: "num" }, fmt(applied)),
      el("td", { class: "num" }, fmt(lag)),
      el("td", { class: "gossip" }, gossipText),
      el("td", { class: "addr" }, n ? n.api_url : m ? m.api_addr : ""),
      el("td", { class: "addr" }, n ? n.raft_addr : m ? m.raft_addr : ""),
      el("td", { class: "addr" }, m ? m.gossip_addr : ""));
  });
  $("members").tBodies[0].replaceChildren(...rows);
  $("cluster-meta").textContent =
    `term ${s.term} · commit ${fmt(s.commit_index)} · applied ${fmt(s.applied_index)} · ` +
    `last log ${fmt(s.last_log_index)} · snapshot ${fmt(s.snapshot_index)}`;
  $("cluster-note").textContent = isLeader
    ? "Applied / matched: replication progress the leader tracks; lag: entries behind its log."
    : "Served by a " + s.role + ": replication progress of the others is known to the leader only" +
      (s.leader_api_url ? ` (its console: ${s.leader_api_url}/ui/).` : ".");
  $("decision").textContent = s.membership_last_decision
    ? "Last membership decision: " + s.membership_last_decision
    : "";
}

function renderQueues() {
  const s = page.status;
  const work = s.work || {};
  const rows = Object.entries(s.queues || {}).map(([name, q]) => {
    const w = work[name] || { leased: 0, delayed: 0 };
    const r = page.rates.get(name) || { enq: [], deq: [] };
    const spark = el("td", { class: "spark" }, sparkline(r.enq, r.deq),
      el("span", { class: "rate-enq" }, rateText(r.enq)), " / ",
      el("span", { class: "rate-deq" }, rateText(r.deq)));
    return el("tr", { class: name === page.selectedQueue ? "selected" : "", data: { queue: name }, tabindex: "0" },
      el("td", { class: "name" }, name),
      el("td", { class: "num depth" }, q.pending),
      el("td", { class: "num" }, w.leased),
      el("td", { class: "num" }, w.delayed),
      el("td", { class: "num" }, fmt(q.front_seq)),
      el("td", { class: "num" }, q.head_seq),
      el("td", { class: "num" }, q.oldest_seq),
      el("td", { class: "num" }, q.retained),
      spark);
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "9", class: "note" }, "no queue yet")));
  $("queues").tBodies[0].replaceChildren(...rows);
}

function queuePath(queue, rest) {
  return queue === "default" ? "/" + rest : `/queues/${encodeURIComponent(queue)}/${rest}`;
}

let peeking = false;

/** The queue's front and last events: linearizable reads, nothing taken. */
async function peek(queue) {
  if (peeking) return;
  peeking = true;
  $("queue-detail").hidden = false;
  $("detail-name").textContent = queue;
  try {
    const q = page.status?.queues?.[queue];
    const head = q ? q.head_seq : 0;
    const oldest = q ? q.oldest_seq : 1;
    const after = Math.max(0, head - PEEK_EVENTS, oldest - 1);
    const [front, events] = await Promise.all([
      getJson(queuePath(queue, "event"), "application/json"),
      getJson(queuePath(queue, `events?after=${after}&limit=${PEEK_EVENTS}`)),
    ]);
    if (page.selectedQueue !== queue) return;
    $("detail-front").textContent = front ? `#${front.seq}  ${front.event}` : "(nothing available)";
    const rows = (events?.events || []).map((e) =>
      el("tr", {}, el("td", { class: "num" }, e.seq), el("td", {}, e.event)));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "2", class: "note" }, "no retained events")));
    $("detail-events").tBodies[0].replaceChildren(...rows);
    $("detail-error").textContent = "";
  } catch (e) {
    $("detail-error").textContent = e.message;
  } finally {
    peeking = false;
  }
}

function renderMaze() {
  const m = page.status.maze;
  const body = $("maze").tBodies[0];
  if (!m) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "2", class: "note" }, "maze disabled on this node (--no-maze)")));
    return;
  }
  const rows = [
    ["connected users", m.clients_connected],
    ["source connections", m.source_connections],
    ["source lines / s", page.maze ? rateText(page.maze.rates) : "—"],
    ["source lines (total)", m.source_lines],
    ["rejected source lines", m.source_rejected_lines],
    ["gap skips", m.gap_skips],
    ["slow disconnects", m.slow_disconnects],
    ["bad hellos", m.bad_hellos],
    ["notifications sent", m.notifications_sent],
    ["notifications dropped", m.notifications_dropped],
    ["stream epoch", m.stream?.epoch],
    ["stream next seq", m.stream?.next_seq],
    ["stream pending", m.stream?.pending],
    ["follow edges", m.stream?.follow_edges],
  ];
  body.replaceChildren(...rows.map(([k, v]) => el("tr", { data: { counter: k } }, el("td", {}, k), el("td", { class: "num" }, fmt(v)))));
}

// ------------------------------------------------------------------ admin

function options(select, entries) {
  const keep = select.value;
  select.replaceChildren(...entries.map(([value, label]) => el("option", { value }, label)));
  if (entries.some(([value]) => value === keep)) select.value = keep;
}

function renderAdminChoices() {
  const s = page.status;
  const voters = (s.voters || []).map(idText);
  const leader = idText(s.leader_id);
  options($("transfer-to"), [["", "the most caught-up voter"],
    ...voters.filter((v) => v !== leader).map((v) => [v, "node " + v]),
  ]);
  const members = [...new Set([...voters, ...(s.learners || []).map(idText), ...(s.members || []).map((m) => idText(m.node_id))])];
  options($("remove-id"), members.map((v) => [v, "node " + v + (v === leader ? " (leader)" : "")]));
}

function ask(text, action) {
  page.pending = action;
  $("confirm-text").textContent = text;
  $("confirm").hidden = false;
  $("admin-result").textContent = "";
}

async function adminRequest(method, path) {
  const token = $("admin-token").value || page.token;
  const res = await fetch(path, { method, headers: headers({}, token), cache: "no-store", redirect: "manual" });
  // Writes go to the leader: a follower answers 307 to another origin,
  // which this page may not call (connect-src 'self').
  if (res.type === "opaqueredirect" || res.status === 307) {
    const leaderUrl = page.status?.leader_api_url;
    throw new Error("This node is not the leader: admin changes are made there. " +
      (leaderUrl ? `Open ${leaderUrl}/ui/ and repeat the action.` : "No leader is known right now."));
  }
  if (!res.ok) throw new Error(errorText(res.status, await res.text()));
  return res;
}

async function runAdmin(action) {
  const result = $("admin-result");
  result.textContent = "working…";
  try {
    result.textContent = await action();
  } catch (e) {
    result.textContent = e.message;
  }
}

function transfer() {
  const to = $("transfer-to").value;
  ask(`Hand leadership from node ${idText(page.status.leader_id)} to ${to ? "node " + to : "the most caught-up voter"}?`,
    async () => {
      const res = await adminRequest("POST", "/cluster/leader/transfer" + (to ? "?to=" + encodeURIComponent(to) : ""));
      return await res.text();
    });
}

function removeMember() {
  const id = $("remove-id").value;
  if (!id) return;
  ask(`Remove node ${id} from the cluster for good? It is never added back; wipe its data dir before reusing it.`,
    async () => {
      const res = await adminRequest("DELETE", "/cluster/nodes/" + encodeURIComponent(id));
      return await res.text();
    });
}

function backup() {
  ask("Download a backup of this node's applied state? It is held in the browser's memory until saved.",
    async () => {
      const res = await adminRequest("GET", "/cluster/backup");
      const disposition = res.headers.get("Content-Disposition") || "";
      const name = (/filename="([^"]+)"/.exec(disposition) || [])[1] || "raftq-backup.snap";
      const blob = await res.blob();
      const url = URL.createObjectURL(blob);
      const link = el("a", { href: url, download: name });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      return `saved ${name} (${blob.size} bytes, applied index ${res.headers.get("Raftq-Applied-Index")})`;
    });
}

// ------------------------------------------------------------------ wiring

function start() {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
  }
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    page.token = $("token-input").value;
    $("token-input").value = "";
    $("login-error").textContent = "checking…";
    if (page.timer) clearTimeout(page.timer);
    poll();
  });
  const openQueue = (event) => {
    const row = event.target.closest("tr[data-queue]");
    if (!row) return;
    page.selectedQueue = row.dataset.queue;
    for (const r of $("queues").tBodies[0].rows) r.classList.toggle("selected", r === row);
    peek(page.selectedQueue);
  };
  $("queues").tBodies[0].addEventListener("click", openQueue);
  $("queues").tBodies[0].addEventListener("keydown", (event) => {
    if (event.key === "Enter") openQueue(event);
  });
  $("detail-refresh").addEventListener("click", () => page.selectedQueue && peek(page.selectedQueue));
  $("detail-close").addEventListener("click", () => {
    page.selectedQueue = null;
    $("queue-detail").hidden = true;
  });
  $("transfer-btn").addEventListener("click", transfer);
  $("remove-btn").addEventListener("click", removeMember);
  $("backup-btn").addEventListener("click", backup);
  $("confirm-yes").addEventListener("click", () => {
    const action = page.pending;
    page.pending = null;
    $("confirm").hidden = true;
    if (action) runAdmin(action);
  });
  $("confirm-no").addEventListener("click", () => {
    page.pending = null;
    $("confirm").hidden = true;
  });
  const initial = location.hash.slice(1);
  if (["cluster", "queues", "maze", "admin"].includes(initial)) page.view = initial;
  poll();
}

start();
