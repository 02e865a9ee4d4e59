// Console shell: session probe, header (tenant picker, operator, sign out), hash router.

import { EXPIRED_EVENT, api, errorText, session } from './api.js';
import { h, replace } from './dom.js';
import * as login from './pages/login.js';
import * as dashboard from './pages/dashboard.js';
import * as messages from './pages/messages.js';
import * as message from './pages/message.js';
import * as apps from './pages/apps.js';
import * as audit from './pages/audit.js';

const TENANT_KEY = 'herald-console-tenant';
const EXPIRED_TEXT = 'Your session has expired. Sign in again.';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const account = document.getElementById('account');
const tenantSelect = document.getElementById('tenant-select');
const operatorName = document.getElementById('operator-name');
const signOut = document.getElementById('sign-out');

let tenants = [];
let cleanup = null; // function returned by the current page (stops timers)
let loginNotice = '';

/** Shared context handed to every page. */
const ctx = {
  get operator() { return session.operator; },
  get isGlobal() { return Boolean(session.operator) && !session.operator.tenant; },
  get tenant() { return tenantSelect.value || null; },
  get tenantName() {
    const t = tenants.find((x) => x.id === tenantSelect.value);
    return t ? t.name : '';
  },
  get tenants() { return tenants; },
  reloadTenants: (select) => loadTenants(select),
  navigate: (hash) => { if (location.hash === hash) route(); else location.hash = hash; },
};

/** Fill the "Tenant" select from GET /v1/admin/tenants. */
async function loadTenants(select) {
  const body = await api('/v1/admin/tenants');
  tenants = body.tenants || [];
  const wanted = select || sessionStorage.getItem(TENANT_KEY) || tenantSelect.value;
  replace(tenantSelect, tenants.length
    ? tenants.map((t) => h('option', { value: t.id }, t.shredded ? `${t.name} (shredded)` : t.name))
    : h('option', { value: '' }, 'No tenants yet'));
  if (tenants.some((t) => t.id === wanted)) tenantSelect.value = wanted;
  const fixed = !ctx.isGlobal || tenants.length <= 1;
  tenantSelect.disabled = fixed;
  tenantSelect.title = !ctx.isGlobal ? 'Your operator account belongs to this tenant' : '';
  if (tenantSelect.value) sessionStorage.setItem(TENANT_KEY, tenantSelect.value);
}

tenantSelect.addEventListener('change', () => {
  sessionStorage.setItem(TENANT_KEY, tenantSelect.value);
  route();
});

function setSignedIn(body) {
  session.csrf = body.csrf_token;
  session.operator = body.operator;
  session.expiresAt = body.expires_at || null;
  operatorName.textContent = body.operator.name +
    (body.operator.tenant ? '' : ' (global operator)');
  nav.hidden = false;
  account.hidden = false;
}

function setSignedOut() {
  session.csrf = null;
  session.operator = null;
  nav.hidden = true;
  account.hidden = true;
  tenants = [];
  replace(tenantSelect);
}

/** Called by the login page after POST /console/api/session succeeded. */
async function onLogin(body) {
  setSignedIn(body);
  loginNotice = '';
  try {
    await loadTenants();
  } catch (err) {
    if (!session.operator) return; // 401 already sent us to the login page
    console.warn('tenants', errorText(err));
  }
  ctx.navigate('#/dashboard');
}

signOut.addEventListener('click', async () => {
  signOut.disabled = true;
  try {
    await api('/console/api/session', { method: 'DELETE', quiet401: true });
  } catch (err) {
    if (err.status !== 401) console.warn('sign out', errorText(err));
  } finally {
    signOut.disabled = false;
  }
  setSignedOut();
  sessionStorage.removeItem(TENANT_KEY);
  loginNotice = '';
  ctx.navigate('#/login');
});

window.addEventListener(EXPIRED_EVENT, () => {
  if (!nav.hidden || location.hash !== '#/login') {
    setSignedOut();
    loginNotice = EXPIRED_TEXT;
    ctx.navigate('#/login');
  }
});

/** Parse the hash into [page, param]. */
function parseHash() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  const name = parts[0] || '';
  if (name === 'messages' && parts[1]) return [message, parts[1], 'messages'];
  const table = { login, dashboard, messages, apps, audit };
  return [table[name] || null, null, name];
}

function route() {
  if (cleanup) {
    try { cleanup(); } catch (err) { console.warn(err); }
    cleanup = null;
  }
  let [page, param, name] = parseHash();
  if (!session.operator) {
    if (name !== 'login') {
      history.replaceState(null, '', '#/login');
    }
    page = login;
    name = 'login';
  } else if (!page || page === login) {
    history.replaceState(null, '', '#/dashboard');
    page = dashboard;
    name = 'dashboard';
  }
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.route === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.replaceChildren();
  const opts = page === login ? { notice: loginNotice, onLogin } : {};
  const result = page.render(main, { ...ctx, param, ...opts });
  cleanup = typeof result === 'function' ? result : null;
  const heading = main.querySelector('h1');
  document.title = heading ? `${heading.textContent} · Herald console` : 'Herald console';
}

window.addEventListener('hashchange', () => {
  route();
  main.focus({ preventScroll: true });
});

/** Boot: GET /console/api/session decides whether we are signed in. */
async function boot() {
  try {
    const body = await api('/console/api/session', { quiet401: true });
    setSignedIn(body);
    try {
      await loadTenants();
    } catch (err) {
      console.warn('tenants', errorText(err));
    }
  } catch (err) {
    setSignedOut();
    if (err.status !== 401) loginNotice = errorText(err);
  }
  route();
}

boot();
