// Herald inbox — a complete browser client for a recipient's live notifications.
//
// Copy from it: it shows, in one file and without dependencies, how a web app
//   1. turns a subscriber token into a single-use stream ticket (POST /v1/stream-tickets),
//   2. opens the WebSocket stream with that ticket (tokens never go into URLs),
//   3. shows messages as they arrive and acknowledges them ({type: "ack", id}),
//   4. survives network drops: reconnects with exponential backoff and jitter, a fresh
//      ticket each time, `since=<last message id>` so the server replays what was missed,
//      and de-duplicates by message id,
//   5. notices a silent, half-open connection (no heartbeats) and the browser's
//      online/offline events,
//   6. stops instead of looping when the token itself is refused (expired or revoked),
//   7. enables Web Push: service worker, VAPID key, pushManager.subscribe, then
//      POST /v1/webpush/subscriptions.
//
// The page runs under a strict Content-Security-Policy with Trusted Types enforced: no
// innerHTML anywhere; every element is made with createElement and filled with
// textContent, so a message's title or body can never become markup.

// ---------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------

/** sessionStorage key of the subscriber token: kept for reconnects, gone with the tab. */
const TOKEN_KEY = 'herald-inbox-token';
/** Backoff: first retry after ~BACKOFF_BASE ms, doubling per failure, capped (plus jitter). */
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 10_000;
/** A ticket request that takes longer than this is treated as a failed attempt. */
const TICKET_TIMEOUT_MS = 10_000;
/**
 * Heartbeats: the server sends {type: "heartbeat"} on idle streams (every ~20 s by default,
 * HERALD_HEARTBEAT_INTERVAL) and states that interval in its "ready" frame (`heartbeat`,
 * seconds). The client also widens it to the largest gap it observes, and declares the
 * connection dead after HEARTBEAT_MISSES gaps without any frame. Before "ready" (or from
 * an older server without the field) it assumes the documented default.
 */
const HEARTBEAT_DEFAULT_MS = 20_000;
const HEARTBEAT_MISSES = 3;
const HEARTBEAT_FLOOR_MS = 5_000; // never sooner: a busy machine may delay one heartbeat
/** A socket that has not said {type: "ready"} (and sends nothing) by then is given up. */
const READY_TIMEOUT_MS = 15_000;
/** Keep the page light: only the newest notifications stay in the list. */
const MAX_ITEMS = 200;
/** WebSocket close codes of Herald (docs/api.md, "GET /v1/stream"). */
const CLOSE = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001, // server shutting down: reconnect
  BAD_REQUEST: 4400, // bad pattern or `since` cursor
  UNAUTHORIZED: 4401, // ticket or token invalid, expired or revoked
  FORBIDDEN: 4403, // topics outside the token's scope
  SLOW_CONSUMER: 4408, // we fell behind: reconnect with since
  RATE_LIMITED: 4429,
});
/** The only script URL the Trusted Types policy will vouch for. */
const SW_URL = '/console/inbox-sw.js';
const SW_SCOPE = '/console/';

// ---------------------------------------------------------------------------------------
// Page elements
// ---------------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('connect-form'),
  token: $('token'),
  connect: $('connect'),
  disconnect: $('disconnect'),
  status: $('status'),
  statusBox: document.querySelector('.conn'),
  statusDetail: $('status-detail'),
  connectError: $('connect-error'),
  streamError: $('stream-error'),
  resumed: $('resumed'),
  empty: $('empty'),
  list: $('notifications'),
  push: $('enable-push'),
  pushSteps: $('push-steps'),
  pushError: $('push-error'),
};

/** A small element factory: el('p', {className: 'x'}, 'text', child, …). No HTML strings. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('aria-') || key === 'role') node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// ---------------------------------------------------------------------------------------
// Connection state
// ---------------------------------------------------------------------------------------

const state = {
  token: null, // the subscriber token (also in sessionStorage)
  wanted: false, // the user wants a connection (Connect pressed, not Disconnect)
  ws: null, // the current WebSocket, or null
  ready: false, // the server sent {type: "ready"} on the current socket
  generation: 0, // bumps on every attempt: late events of older sockets are ignored
  attempt: 0, // failed attempts since the last successful "ready" (drives the backoff)
  retryTimer: 0,
  everConnected: false,
  lastId: null, // id of the newest message received: `since` of the next connection
  resumingFrom: null, // the `since` the current connection was opened with
  newOnThisSocket: 0, // messages new to the list that arrived before "ready" (replayed)
  unauthorizedCloses: 0, // consecutive 4401 closes without a "ready" in between
  lastFrameAt: 0, // performance.now() of the last frame of any type
  lastHeartbeatAt: 0,
  heartbeatGapMs: 0, // largest gap seen between two heartbeats (0: not learnt yet)
  watchdog: 0,
};
/** Message id → its <li>: de-duplicates replays and double deliveries. */
const items = new Map();
/** Ids acknowledged while disconnected: sent once the stream is ready again. */
const pendingAcks = new Set();

function setStatus(text, kind, detail = '') {
  ui.status.textContent = text;
  ui.statusBox.dataset.state = kind;
  ui.statusDetail.textContent = detail;
  const live = kind !== 'disconnected';
  ui.disconnect.disabled = !live;
}

function showError(target, message) {
  target.textContent = message;
}

// ---------------------------------------------------------------------------------------
// 1. Stream ticket: POST /v1/stream-tickets with the subscriber token as bearer
// ---------------------------------------------------------------------------------------

class TokenRefused extends Error {}

/**
 * A single-use ticket (valid 30 s) for one WebSocket connection. Browsers cannot set an
 * Authorization header on a WebSocket, and a long-lived token must not go into a URL, so
 * the token buys a ticket and only the ticket goes into the query string.
 */
async function fetchTicket(token) {
  let response;
  try {
    response = await fetch('/v1/stream-tickets', {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(TICKET_TIMEOUT_MS),
      cache: 'no-store',
    });
  } catch (err) {
    throw new Error(`ticket request failed: ${err.message || err.name}`);
  }
  if (response.status === 401) {
    // The token itself is expired, revoked or malformed: retrying cannot help.
    throw new TokenRefused(await problemDetail(response));
  }
  if (!response.ok) {
    const detail = await problemDetail(response);
    const transient = response.status >= 500 || response.status === 408 || response.status === 429;
    const error = new Error(`ticket request answered ${response.status}: ${detail}`);
    error.permanent = !transient; // e.g. 403: retrying the same request cannot succeed
    error.retryAfter = Number(response.headers.get('Retry-After')) || 0;
    throw error;
  }
  const body = await response.json();
  return body.ticket;
}

/** The `detail` (or `title`) of an RFC 9457 problem answer; never a raw body. */
async function problemDetail(response) {
  try {
    const problem = await response.json();
    return String(problem.detail || problem.title || response.statusText);
  } catch {
    return response.statusText || `HTTP ${response.status}`;
  }
}

// ---------------------------------------------------------------------------------------
// 2. WebSocket: connect, read frames, reconnect
// ---------------------------------------------------------------------------------------

/** Open (or re-open) the stream. Safe to call at any time; supersedes any older attempt. */
async function connect() {
  clearTimeout(state.retryTimer);
  dropSocket();
  const generation = ++state.generation;
  state.wanted = true;
  const resuming = state.everConnected;
  setStatus(resuming ? 'Reconnecting…' : 'Connecting…', resuming ? 'reconnecting' : 'connecting',
    state.attempt > 0 ? `Attempt ${state.attempt + 1}` : '');

  let ticket;
  try {
    ticket = await fetchTicket(state.token);
  } catch (err) {
    if (generation !== state.generation) return; // superseded meanwhile
    if (err instanceof TokenRefused) {
      tokenRefused(err.message);
      return;
    }
    if (err.permanent) {
      stop(`The server refused a stream ticket (${err.message}).`);
      return;
    }
    scheduleReconnect(err.message, (err.retryAfter || 0) * 1000);
    return;
  }
  if (generation !== state.generation || !state.wanted) return;

  // A fresh ticket each time, and `since` = the last message we have: the server replays
  // everything after it that this token may see, before {type: "ready"}.
  const params = new URLSearchParams({ ticket });
  if (state.lastId) params.set('since', state.lastId);
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${scheme}://${location.host}/v1/stream?${params}`);
  state.ws = ws;
  state.ready = false;
  state.resumingFrom = state.lastId;
  state.newOnThisSocket = 0;
  state.lastFrameAt = performance.now();
  state.lastHeartbeatAt = 0;
  state.heartbeatGapMs = 0;
  startWatchdog(); // also covers a socket that never opens or never gets to "ready"

  ws.addEventListener('message', (event) => {
    if (ws !== state.ws) return;
    state.lastFrameAt = performance.now();
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return; // not JSON: not from Herald; ignore
    }
    onFrame(frame);
  });
  ws.addEventListener('close', (event) => {
    if (ws !== state.ws) return; // a socket we already gave up on
    onClose(event);
  });
  // 'error' is always followed by 'close', which decides what to do.
}

function onFrame(frame) {
  switch (frame.type) {
    case 'message':
      if (typeof frame.id !== 'string') break;
      if (addMessage(frame) && !state.ready) state.newOnThisSocket += 1;
      state.lastId = frame.id; // frames arrive in order: the last one is the newest
      break;
    case 'ready':
      // The server says how often an idle stream hears a heartbeat; until heartbeats are
      // seen, that is the gap the watchdog allows (several of them, see below).
      if (typeof frame.heartbeat === 'number' && frame.heartbeat > 0) {
        state.heartbeatGapMs = Math.max(state.heartbeatGapMs, frame.heartbeat * 1000);
      }
      state.ready = true;
      state.attempt = 0;
      state.unauthorizedCloses = 0;
      state.everConnected = true;
      setStatus('Connected', 'connected', `Topics: ${(frame.topics || []).join(', ')}`);
      showError(ui.streamError, '');
      showError(ui.connectError, '');
      if (state.resumingFrom !== null) {
        ui.resumed.textContent = `Resumed ${state.newOnThisSocket} missed`;
      }
      flushAcks();
      break;
    case 'heartbeat': {
      const now = performance.now();
      if (state.lastHeartbeatAt) {
        state.heartbeatGapMs = Math.max(state.heartbeatGapMs, now - state.lastHeartbeatAt);
      }
      state.lastHeartbeatAt = now;
      break;
    }
    case 'error':
      // A client frame was refused (e.g. an ack for an unknown id); the stream stays open.
      showError(ui.streamError, `Server: ${frame.problem?.detail || frame.problem?.title || 'error'}`);
      break;
    default:
      break; // unknown frame types are ignored: newer servers may add some
  }
}

function onClose(event) {
  state.ws = null;
  state.ready = false;
  stopWatchdog();
  if (!state.wanted) return;
  const reason = event.reason ? `: ${event.reason}` : '';
  switch (event.code) {
    case CLOSE.UNAUTHORIZED:
      // The ticket was refused (expired, already used) or the token was revoked since the
      // ticket was issued. The next ticket request tells which; a few in a row means stop.
      state.unauthorizedCloses += 1;
      if (state.unauthorizedCloses >= 3) {
        tokenRefused(`the server refused the stream${reason}`);
        return;
      }
      break;
    case CLOSE.FORBIDDEN:
      stop(`The token does not cover these topics${reason}.`);
      return;
    case CLOSE.BAD_REQUEST:
      if (state.resumingFrom) {
        // The resume cursor is gone (its message expired): connect without replay.
        ui.resumed.textContent = `Could not resume${reason}; continuing without replay.`;
        state.lastId = null;
        break;
      }
      stop(`The server refused the stream${reason}.`);
      return;
    default:
      break; // 1001 going away, 1006 network drop, 4408 slow consumer, 4429 …: retry
  }
  scheduleReconnect(`connection closed (${event.code})${reason}`,
    event.code === CLOSE.RATE_LIMITED ? 5_000 : 0);
}

/** Exponential backoff with "equal jitter": half the delay fixed, half random; capped. */
function scheduleReconnect(why, atLeastMs = 0) {
  clearTimeout(state.retryTimer);
  dropSocket();
  const exp = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** state.attempt);
  const delay = Math.max(atLeastMs, exp / 2 + Math.random() * (exp / 2));
  state.attempt += 1;
  setStatus('Reconnecting…', 'reconnecting', `${why} — next attempt in ${Math.ceil(delay / 1000)} s`);
  state.retryTimer = setTimeout(connect, delay);
}

/** Forget the current socket (its late events are ignored) and close it if still open. */
function dropSocket() {
  stopWatchdog();
  const ws = state.ws;
  state.ws = null;
  state.ready = false;
  if (ws && ws.readyState <= WebSocket.OPEN) {
    try {
      ws.close(CLOSE.NORMAL, 'client reconnecting');
    } catch {
      /* already closing */
    }
  }
}

function stop(message) {
  state.wanted = false;
  clearTimeout(state.retryTimer);
  dropSocket();
  setStatus('Disconnected', 'disconnected');
  if (message) showError(ui.connectError, message);
}

/** The token is dead: stop, forget it and ask for a new one (never loop on it). */
function tokenRefused(detail) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  stop(`Your subscriber token was refused (${detail}). It has expired or was revoked: paste a new one and press Connect.`);
  ui.token.value = '';
  ui.token.focus();
}

// -- half-open connections: no heartbeat for a while means the connection is dead --------

function startWatchdog() {
  stopWatchdog();
  state.watchdog = setInterval(() => {
    const gap = state.heartbeatGapMs || HEARTBEAT_DEFAULT_MS;
    const limit = state.ready ? Math.max(HEARTBEAT_FLOOR_MS, gap * HEARTBEAT_MISSES) : READY_TIMEOUT_MS;
    const silent = performance.now() - state.lastFrameAt;
    if (silent > limit) {
      scheduleReconnect(state.ready
        ? `no heartbeat for ${Math.round(silent / 1000)} s`
        : 'the server did not answer in time');
    }
  }, 1_000);
}

function stopWatchdog() {
  clearInterval(state.watchdog);
  state.watchdog = 0;
}

// -- the browser's own network events ----------------------------------------------------

window.addEventListener('offline', () => {
  // The socket may linger half-open while offline; give it up now and wait for 'online'
  // (the backoff keeps trying meanwhile, in case 'online' never comes).
  if (!state.wanted) return;
  scheduleReconnect('the browser went offline', BACKOFF_CAP_MS);
});

window.addEventListener('online', () => {
  if (!state.wanted) return;
  // Back online: try now rather than at the end of the backoff.
  state.attempt = 0;
  connect();
});

// ---------------------------------------------------------------------------------------
// 3. Notifications: render, de-duplicate, acknowledge
// ---------------------------------------------------------------------------------------

/** Add a message frame to the list (newest first); false when it was already there. */
function addMessage(frame) {
  if (typeof frame.id !== 'string' || items.has(frame.id)) return false;
  const id = frame.id;
  const titleId = `n-${id}`;
  const created = frame.created_at ? new Date(frame.created_at) : new Date();

  let bodyText = frame.body ?? '';
  if (frame.e2e) {
    // End-to-end content: Herald forwarded ciphertext it cannot read; only the device key
    // (see the Python SDK's DeviceKey) opens it. This demo page holds no device key.
    bodyText = 'End-to-end encrypted: open it with this device\'s key.';
  }

  const ackButton = el('button', {
    type: 'button',
    className: 'ack',
    textContent: 'Acknowledge',
    'aria-describedby': titleId,
  });
  ackButton.addEventListener('click', () => acknowledge(id));

  const item = el(
    'li',
    { className: 'note', dataset: { id }, tabIndex: -1, 'aria-labelledby': titleId },
    el('h3', { id: titleId, className: 'note-title', textContent: frame.title || '(no title)' }),
    bodyText ? el('p', { className: 'note-body', textContent: bodyText }) : null,
    el(
      'p',
      { className: 'note-meta' },
      el('span', { className: 'topic', textContent: frame.topic || '' }),
      el('time', { dateTime: created.toISOString(), textContent: created.toLocaleString() }),
    ),
    frame.data && Object.keys(frame.data).length
      ? el('details', {}, el('summary', { textContent: 'Data' }),
        el('pre', { textContent: JSON.stringify(frame.data, null, 2) }))
      : null,
    el('div', { className: 'note-actions' }, ackButton),
  );

  items.set(id, item);
  ui.list.prepend(item); // frames arrive oldest first, so prepending keeps newest on top
  ui.empty.hidden = true;
  while (ui.list.children.length > MAX_ITEMS) {
    const last = ui.list.lastElementChild;
    items.delete(last.dataset.id);
    last.remove();
  }
  return true;
}

/** {type: "ack", id}: marks this recipient's in-app delivery of the message `delivered`. */
function acknowledge(id) {
  const item = items.get(id);
  if (!item) return;
  if (state.ws && state.ready && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify({ type: 'ack', id }));
    markAcknowledged(item, 'Acknowledged');
  } else {
    pendingAcks.add(id); // sent as soon as the stream is ready again
    markAcknowledged(item, 'Acknowledgement queued');
  }
}

function flushAcks() {
  for (const id of pendingAcks) {
    state.ws.send(JSON.stringify({ type: 'ack', id }));
    const item = items.get(id);
    if (item) markAcknowledged(item, 'Acknowledged');
  }
  pendingAcks.clear();
}

function markAcknowledged(item, text) {
  const actions = item.querySelector('.note-actions');
  const hadFocus = actions.contains(document.activeElement);
  actions.replaceChildren(el('span', { className: 'acked', textContent: text }));
  item.classList.add('is-acked');
  if (hadFocus) item.focus(); // keep keyboard users in place
}

// ---------------------------------------------------------------------------------------
// 4. Web Push
// ---------------------------------------------------------------------------------------

/**
 * Trusted Types: navigator.serviceWorker.register() is a script sink, so under
 * `require-trusted-types-for 'script'` it takes a TrustedScriptURL. The page's CSP allows
 * exactly one policy, "herald-sw", and this policy vouches for exactly one URL.
 */
let swPolicy = null;
function serviceWorkerUrl() {
  if (!window.trustedTypes) return SW_URL; // browsers without Trusted Types take a string
  swPolicy ??= window.trustedTypes.createPolicy('herald-sw', {
    createScriptURL: (url) => {
      if (url !== SW_URL) throw new TypeError(`herald-sw: refusing script URL ${url}`);
      return url;
    },
  });
  return swPolicy.createScriptURL(SW_URL);
}

/** Shows one step of the Web Push set-up: "<step>: <outcome>". */
function pushStep(label, outcome, ok) {
  ui.pushSteps.append(
    el('li', { className: ok ? 'ok' : 'failed' },
      el('span', { className: 'step-mark', 'aria-hidden': 'true', textContent: ok ? '✓' : '✗' }),
      `${label}: ${outcome}`),
  );
}

/** The applicationServerKey is sent base64url; pushManager.subscribe wants bytes. */
function base64UrlToBytes(text) {
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

async function enableWebPush() {
  ui.pushSteps.replaceChildren();
  showError(ui.pushError, '');
  ui.push.disabled = true;
  try {
    if (!('serviceWorker' in navigator) || !('PushManager' in window)) {
      throw new Error('This browser does not support Web Push (no service worker or Push API).');
    }
    const token = state.token || ui.token.value.trim();
    if (!token) throw new Error('Paste a subscriber token first: Web Push is registered for its recipient.');

    // Step 1: the service worker shows pushes while no page is open (see inbox-sw.js).
    let registration;
    try {
      registration = await navigator.serviceWorker.register(serviceWorkerUrl(), { scope: SW_SCOPE });
      await navigator.serviceWorker.ready;
      pushStep('Service worker', `registered (scope ${new URL(registration.scope).pathname})`, true);
    } catch (err) {
      pushStep('Service worker', 'not registered', false);
      throw new Error(`The service worker could not be registered: ${err.name}: ${err.message}`);
    }

    // Step 2: the server's VAPID public key: pushes signed with its private key only.
    let key;
    try {
      const response = await fetch('/v1/webpush/vapid-key', { cache: 'no-store' });
      if (!response.ok) throw new Error(await problemDetail(response));
      key = (await response.json()).public_key;
      pushStep('VAPID key', 'fetched', true);
    } catch (err) {
      pushStep('VAPID key', 'not available', false);
      throw new Error(`The server's VAPID key could not be fetched: ${err.message}`);
    }

    // Step 3: the browser's push service issues an endpoint (asks for permission first).
    let subscription;
    try {
      subscription = await registration.pushManager.subscribe({
        userVisibleOnly: true, // every push shows a notification (browsers require it)
        applicationServerKey: base64UrlToBytes(key),
      });
      pushStep('Push subscription', 'created by the browser', true);
    } catch (err) {
      pushStep('Push subscription', 'refused by the browser', false);
      throw new Error(
        `The browser's push service refused the subscription: ${err.name}: ${err.message}` +
        ' (headless browsers and private windows have no push service; notification permission may be blocked)',
      );
    }

    // Step 4: Herald stores the endpoint and keys for the token's recipient.
    const response = await fetch('/v1/webpush/subscriptions', {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ subscription: subscription.toJSON() }),
    });
    if (!response.ok) {
      pushStep('Herald', `refused (${response.status})`, false);
      throw new Error(`Herald did not register the subscription: ${await problemDetail(response)}`);
    }
    const created = await response.json();
    pushStep('Herald', `subscription registered (endpoint ${created.endpoint_id})`, true);
  } catch (err) {
    showError(ui.pushError, err.message);
  } finally {
    ui.push.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------
// 5. Wiring
// ---------------------------------------------------------------------------------------

function start(token) {
  if (state.token && token !== state.token) {
    // Another token may be another recipient (or tenant): start a fresh list, no resume.
    items.clear();
    pendingAcks.clear();
    ui.list.replaceChildren();
    ui.empty.hidden = false;
    ui.resumed.textContent = '';
    state.lastId = null;
    state.everConnected = false;
  }
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  showError(ui.connectError, '');
  state.attempt = 0;
  state.unauthorizedCloses = 0;
  connect();
}

ui.form.addEventListener('submit', (event) => {
  event.preventDefault();
  const token = ui.token.value.trim();
  if (!token) {
    showError(ui.connectError, 'Paste a subscriber token first.');
    ui.token.focus();
    return;
  }
  start(token);
});

ui.disconnect.addEventListener('click', () => {
  stop('');
  ui.statusDetail.textContent = 'Disconnected by you.';
});

ui.push.addEventListener('click', enableWebPush);

// A token in the fragment (#token=…) is taken and removed from the address bar and
// history at once; fragments are never sent to servers, unlike query strings.
function tokenFromFragment() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get('token');
  if (token) history.replaceState(null, '', location.pathname + location.search);
  return token;
}

const initial = tokenFromFragment() || sessionStorage.getItem(TOKEN_KEY);
if (initial) {
  ui.token.value = initial;
  start(initial);
}
