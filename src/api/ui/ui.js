// Baton's status page: reads this node's public API (same origin) and renders it.
// No framework and no build step. Every value from the server goes into the page as
// text (textContent), never as markup. With auth on, the API key lives in this tab's
// sessionStorage and goes out as `Authorization: Bearer`; the event feed is read with
// fetch() streaming, since EventSource cannot send that header.
'use strict';

const CLUSTER_EVERY_MS = 2000;
const LOCKS_EVERY_MS = 1000;
const LIST_LIMIT = 200;
const FEED_KEEP = 100;
const FEED_RETRY_MS = [500, 1000, 2000, 5000];
const KEY_STORE = 'baton.api-key';
const PREFIX_STORE = 'baton.prefix';

const $ = (id) => document.getElementById(id);
const state = {
  key: sessionStorage.getItem(KEY_STORE) || '',
  prefix: sessionStorage.getItem(PREFIX_STORE) || '',
  locks: [],
  feed: null, // the AbortController of the running feed
  feedFailures: 0,
  locksTimer: 0,
  needKey: false,
};

class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `HTTP ${status}`);
    this.status = status;
    this.code = problem && problem.code;
  }
}

function headers() {
  return state.key ? { Authorization: `Bearer ${state.key}` } : {};
}

async function api(path) {
  const resp = await fetch(path, { headers: headers(), cache: 'no-store' });
  if (!resp.ok) {
    const problem = await resp.json().catch(() => null);
    const err = new ApiError(resp.status, problem);
    if (resp.status === 401) askForKey(err.message);
    throw err;
  }
  return resp.json();
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) tr.append(c instanceof Node ? c : el('td', c));
  return tr;
}

// ---- the API key ----

function askForKey(why) {
  state.needKey = true;
  $('key-panel').hidden = false;
  $('key-button').hidden = false;
  $('key-error').textContent = state.key ? why : '';
  $('key-input').focus();
}

$('key-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  state.key = $('key-input').value.trim();
  $('key-input').value = '';
  if (state.key) sessionStorage.setItem(KEY_STORE, state.key);
  else sessionStorage.removeItem(KEY_STORE);
  $('key-panel').hidden = true;
  state.needKey = false;
  restart();
});

$('key-forget').addEventListener('click', () => {
  state.key = '';
  sessionStorage.removeItem(KEY_STORE);
  stopFeed();
  askForKey('');
});

$('key-button').addEventListener('click', () => {
  $('key-panel').hidden = !$('key-panel').hidden;
  if (!$('key-panel').hidden) $('key-input').focus();
});

// ---- the cluster ----

function role(c, m) {
  if (m.id === c.leader_id) return 'leader';
  if (m.id === c.node_id) return c.state;
  return m.voter ? 'follower' : 'learner';
}

async function refreshCluster() {
  if (state.needKey) return;
  let c;
  try {
    c = await api('/v1/cluster');
    $('cluster-error').textContent = '';
  } catch (e) {
    $('cluster-error').textContent = `cannot read /v1/cluster: ${e.message}`;
    return;
  }
  const leader = c.leader_id === null ? 'none' : `node ${c.leader_id}`;
  $('served-by').textContent = `served by node ${c.node_id} (${c.state})`;
  $('cluster-summary').textContent =
    `leader: ${leader} · term ${c.term} · last log ${c.last_log_index ?? '–'} · committed ${c.committed_index ?? '–'}` +
    ` · applied ${c.applied_index ?? '–'} · snapshot ${c.snapshot_index ?? '–'} · ${c.locks_stored} locks stored` +
    (c.quorum ? ` · ${c.quorum.detail}` : '');
  const peers = new Map((c.peers || []).map((p) => [p.id, p]));
  const tbody = $('nodes');
  tbody.replaceChildren();
  for (const m of c.members) {
    const r = role(c, m);
    const roleCell = el('td', m.id === c.node_id ? `${r} (this node)` : r, r === 'leader' ? 'leader' : '');
    const peer = peers.get(m.id);
    let reach = el('td', m.id === c.node_id ? '–' : 'not known to be down', 'muted');
    if (peer && peer.reachable === false) reach = el('td', `no: ${peer.error ?? 'unreachable'}`, 'bad');
    else if (peer && peer.reachable) reach = el('td', 'yes', 'ok');
    const tr = row([el('td', m.id), el('td', m.api), roleCell, reach,
      el('td', m.matched_index ?? '–', 'num'), el('td', m.lag ?? '–', 'num')]);
    tr.dataset.node = String(m.id);
    tr.dataset.role = r;
    tbody.append(tr);
  }
  const note = $('lag-note');
  note.replaceChildren();
  if (c.state !== 'leader' && c.leader_id !== null) {
    const l = c.members.find((m) => m.id === c.leader_id);
    note.append('Replication progress is known to the leader only: ');
    if (l) {
      const a = el('a', `open this page on node ${l.id}`);
      a.href = `${location.protocol}//${l.api}/ui`;
      note.append(a, '.');
    }
  }
}

// ---- the locks ----

// Counted on this browser's clock against the lease's end in cluster time (the
// leader's clock, which is wall-clock time): a skewed browser clock shifts it.
function countdown(td) {
  const ms = Number(td.dataset.expires) - Date.now();
  td.textContent = ms <= 0 ? 'expiring' : `${(ms / 1000).toFixed(1)} s`;
  td.classList.toggle('soon', ms < 2000);
}

function tick() {
  for (const td of document.querySelectorAll('td[data-expires]')) countdown(td);
}

function renderLocks() {
  const tbody = $('locks');
  tbody.replaceChildren();
  for (const l of state.locks) {
    const exp = el('td', '', 'num');
    exp.dataset.expires = String(Date.parse(l.expires_at));
    countdown(exp);
    exp.title = `expires at ${l.expires_at} (cluster time), TTL ${l.ttl_ms} ms`;
    const tr = row([el('td', l.key, 'key'), el('td', l.owner), el('td', l.token, 'num'), exp, el('td', l.waiters, 'num')]);
    tr.dataset.key = l.key;
    tbody.append(tr);
  }
  if (state.locks.length === 0) {
    const td = el('td', state.prefix ? `no lock held under “${state.prefix}”` : 'no lock held', 'muted');
    td.colSpan = 5;
    tbody.append(row([td]));
  }
}

async function refreshLocks() {
  clearTimeout(state.locksTimer);
  // Polling stops while the page waits for a key; `restart` starts it again.
  if (state.needKey) return;
  const q = new URLSearchParams({ limit: String(LIST_LIMIT) });
  if (state.prefix) q.set('prefix', state.prefix);
  try {
    let page;
    let note = '';
    try {
      page = await api(`/v1/locks?${q}`);
    } catch (e) {
      // No leader: this node's own replica is still worth seeing.
      if (e.status !== 503) throw e;
      q.set('consistency', 'local');
      page = await api(`/v1/locks?${q}`);
      note = `this node's replica (no leader: ${e.message})`;
    }
    state.locks = page.locks;
    if (page.next_cursor) note = `${note ? `${note}; ` : ''}the first ${page.locks.length} only`;
    $('locks-note').textContent = note;
    $('locks-error').textContent = '';
    renderLocks();
  } catch (e) {
    $('locks-error').textContent = `cannot list the locks: ${e.message}`;
  } finally {
    state.locksTimer = setTimeout(refreshLocks, LOCKS_EVERY_MS);
  }
}

// ---- the event feed: GET /v1/events?prefix= over fetch() ----

function stopFeed() {
  if (state.feed) state.feed.abort();
  state.feed = null;
}

function showEvent(name, data) {
  const tbody = $('events');
  if (name === 'reset') {
    const td = el('td', `reset: ${data.reason}`, 'muted');
    td.colSpan = 5;
    tbody.prepend(row([el('td', new Date().toLocaleTimeString()), td]));
  } else {
    const tr = row([el('td', new Date().toLocaleTimeString()), el('td', name), el('td', data.key, 'key'),
      el('td', data.app ? `${data.owner} (${data.app})` : data.owner), el('td', data.token ?? '–', 'num'),
      el('td', data.index, 'num')]);
    tr.className = 'fresh';
    tr.dataset.event = name;
    tr.dataset.key = data.key;
    tbody.prepend(tr);
  }
  while (tbody.rows.length > FEED_KEEP) tbody.deleteRow(-1);
}

// One SSE block ("event:", "data:" lines; comments and ids ignored).
function dispatch(block) {
  let name = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) name = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  if (data.length === 0) return;
  let parsed;
  try {
    parsed = JSON.parse(data.join('\n'));
  } catch {
    return;
  }
  showEvent(name, parsed);
  // The list is the truth; an event only says it changed.
  clearTimeout(state.locksTimer);
  state.locksTimer = setTimeout(refreshLocks, 50);
}

async function runFeed() {
  stopFeed();
  const ctl = new AbortController();
  state.feed = ctl;
  const q = state.prefix ? `?${new URLSearchParams({ prefix: state.prefix })}` : '';
  try {
    const resp = await fetch(`/v1/events${q}`, {
      headers: { ...headers(), Accept: 'text/event-stream' },
      cache: 'no-store',
      signal: ctl.signal,
    });
    if (!resp.ok) {
      const problem = await resp.json().catch(() => null);
      throw new ApiError(resp.status, problem);
    }
    $('feed-state').textContent = state.prefix ? `(live, keys starting with “${state.prefix}”)` : '(live, every key)';
    state.feedFailures = 0;
    // The list may have changed while the stream was down.
    refreshLocks();
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        dispatch(buf.slice(0, end));
        buf = buf.slice(end + 2);
      }
    }
    throw new Error('the stream ended');
  } catch (e) {
    if (ctl.signal.aborted) return;
    if (e.status === 401) {
      askForKey(e.message);
      $('feed-state').textContent = '(needs an API key)';
      return;
    }
    // This key may not read every key under the prefix: retrying will not help, a
    // narrower prefix (which starts a new feed) may.
    if (e.status === 403) {
      $('feed-state').textContent = `(not allowed: ${e.message})`;
      return;
    }
    const wait = FEED_RETRY_MS[Math.min(state.feedFailures, FEED_RETRY_MS.length - 1)];
    state.feedFailures += 1;
    $('feed-state').textContent = `(reconnecting: ${e.message})`;
    setTimeout(() => {
      if (state.feed === ctl) runFeed();
    }, wait);
  }
}

// ---- wiring ----

$('prefix').value = state.prefix;
$('filter-form').addEventListener('submit', (ev) => ev.preventDefault());
let prefixTimer = 0;
$('prefix').addEventListener('input', () => {
  clearTimeout(prefixTimer);
  prefixTimer = setTimeout(() => {
    state.prefix = $('prefix').value.trim();
    sessionStorage.setItem(PREFIX_STORE, state.prefix);
    $('events').replaceChildren();
    runFeed();
    refreshLocks();
  }, 300);
});

function restart() {
  refreshCluster();
  refreshLocks();
  runFeed();
}

if (state.key) $('key-button').hidden = false;
setInterval(refreshCluster, CLUSTER_EVERY_MS);
// The countdowns move between two reads of the list.
setInterval(tick, 250);
restart();
