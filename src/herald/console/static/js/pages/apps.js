// #/apps: tenants (global operators), apps with scopes/secrets/keys, and the data key.

import { api, errorText, seg } from '../api.js';
import { alertBox, field, h, replace, statusLine, table, time } from '../dom.js';
import { secretPanel } from '../secret.js';
import { noTenant } from './common.js';

const SCOPE_HINT = 'Separate scopes with spaces or new lines. Examples: publish:orders.> ' +
  'subscribe:alerts.* messages:read admin';

/** "a b\nc" -> ["a", "b", "c"]. */
export function parseScopes(text) {
  return String(text || '').split(/[\s,]+/).filter(Boolean);
}

/** Run an async action with a button disabled and errors shown in `alert`. */
async function act(button, alert, fn) {
  if (button) button.disabled = true;
  alert.clear();
  try {
    return await fn();
  } catch (err) {
    alert.show(errorText(err));
    return undefined;
  } finally {
    if (button && button.isConnected) button.disabled = false;
  }
}

export function render(main, ctx) {
  main.append(h('h1', null, 'Apps & keys'));
  let stopped = false;
  const timers = new Set();
  if (ctx.isGlobal) main.append(tenantsSection(ctx));
  if (!ctx.tenant) {
    main.append(noTenant(ctx));
    return () => { stopped = true; };
  }
  const t = seg(ctx.tenant);

  // --- Apps -------------------------------------------------------------------------------
  const appsAlert = alertBox();
  const appsStatus = statusLine();
  const appsList = h('div', { class: 'app-list' }, h('p', { class: 'muted' }, 'Loading…'));
  const createSecret = h('div');

  const name = field('Name', 'input', { name: 'app-name', autocomplete: 'off', required: true });
  const scopes = field('Scopes', 'textarea', { name: 'scopes', rows: '3', spellcheck: 'false',
    placeholder: 'publish:orders.>\nsubscribe:orders.*', 'data-hint': SCOPE_HINT });
  const createAlert = alertBox();
  const createButton = h('button', { type: 'submit' }, 'Create app');
  const createForm = h('form', { class: 'stack', novalidate: true }, name.wrap, scopes.wrap, createAlert,
    h('div', { class: 'form-actions' }, createButton));
  createForm.addEventListener('submit', (event) => {
    event.preventDefault();
    if (!name.input.value.trim()) {
      createAlert.show('Enter a name for the app.');
      name.input.focus();
      return;
    }
    act(createButton, createAlert, async () => {
      const app = await api(`/v1/admin/tenants/${t}/apps`, { method: 'POST',
        body: { name: name.input.value.trim(), scopes: parseScopes(scopes.input.value) } });
      name.input.value = '';
      scopes.input.value = '';
      replace(createSecret, secretPanel(`App ${app.name} created`, [
        ['Client ID', app.client_id], ['Client secret', app.client_secret]]));
      appsStatus.textContent = `App ${app.name} created.`;
      await loadApps();
    });
  });

  main.append(
    h('section', { class: 'card', 'aria-labelledby': 'create-app-h' },
      h('h2', { id: 'create-app-h' }, 'Create app'), createForm, createSecret),
    h('section', { class: 'card', 'aria-labelledby': 'apps-h' },
      h('h2', { id: 'apps-h' }, 'Apps'), appsAlert, appsStatus, appsList));

  async function loadApps() {
    try {
      const body = await api(`/v1/admin/tenants/${t}/apps`);
      const apps = body.apps || [];
      if (stopped) return;
      replace(appsList, apps.length ? apps.map((app) => appCard(app)) :
        h('p', { class: 'muted' }, 'No apps yet.'));
    } catch (err) {
      appsAlert.show(errorText(err));
    }
  }

  /** One app: facts, actions, keys. */
  function appCard(app) {
    const headingId = `app-${app.client_id}`.replace(/[^A-Za-z0-9_-]/g, '_');
    const alert = alertBox();
    const status = statusLine();
    const extra = h('div'); // edit form or secret panel
    const facts = h('dl', { class: 'facts' });
    const cid = seg(app.client_id);
    let current = app;

    function drawFacts() {
      replace(facts,
        h('div', null, h('dt', null, 'Client ID'), h('dd', null, h('code', null, current.client_id))),
        h('div', null, h('dt', null, 'Scopes'), h('dd', null, current.scopes ?
          h('ul', { class: 'inline-list' }, parseScopes(current.scopes).map((x) =>
            h('li', null, h('code', null, x)))) : 'none')),
        h('div', null, h('dt', null, 'Status'), h('dd', null,
          h('span', { class: current.disabled ? 'state state-failed' : 'state state-delivered' },
            current.disabled ? 'disabled' : 'enabled'))),
        h('div', null, h('dt', null, 'Created'), h('dd', null, time(current.created_at))));
      toggle.textContent = current.disabled ? 'Enable' : 'Disable';
    }

    const edit = h('button', { type: 'button', class: 'secondary' }, 'Edit scopes');
    const toggle = h('button', { type: 'button', class: 'secondary' });
    const rotate = h('button', { type: 'button', class: 'secondary' }, 'Rotate secret');

    edit.addEventListener('click', () => {
      const f = field('Scopes', 'textarea', { rows: '3', spellcheck: 'false',
        value: parseScopes(current.scopes).join('\n'), 'data-hint': SCOPE_HINT });
      const save = h('button', { type: 'submit' }, 'Save scopes');
      const cancel = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
      const form = h('form', { class: 'stack inline-form' }, f.wrap,
        h('div', { class: 'form-actions' }, save, cancel));
      const close = () => { extra.replaceChildren(); edit.disabled = false; edit.focus(); };
      cancel.addEventListener('click', close);
      form.addEventListener('submit', (event) => {
        event.preventDefault();
        act(save, alert, async () => {
          current = await api(`/v1/admin/apps/${cid}/scopes`, { method: 'PUT',
            body: { scopes: parseScopes(f.input.value) } });
          drawFacts();
          status.textContent = 'Scopes saved.';
          close();
        });
      });
      edit.disabled = true;
      replace(extra, form);
      f.input.focus();
    });

    toggle.addEventListener('click', () => act(toggle, alert, async () => {
      const verb = current.disabled ? 'enable' : 'disable';
      current = await api(`/v1/admin/apps/${cid}:${verb}`, { method: 'POST' });
      drawFacts();
      status.textContent = current.disabled ? 'App disabled.' : 'App enabled.';
    }));

    rotate.addEventListener('click', () => act(rotate, alert, async () => {
      const out = await api(`/v1/admin/apps/${cid}:rotate-secret`, { method: 'POST' });
      replace(extra, secretPanel('New client secret', [['Client ID', out.client_id],
        ['Client secret', out.client_secret]]));
      status.textContent = 'Secret rotated: the old secret no longer works.';
    }));

    drawFacts();
    return h('article', { class: 'app-card', 'aria-labelledby': headingId },
      h('h3', { id: headingId }, current.name),
      facts,
      h('div', { class: 'actions' }, edit, toggle, rotate),
      alert, status, extra,
      keysBlock(app, headingId));
  }

  /** Keys of one app: list, add Ed25519 (PEM), add HMAC (secret shown once), revoke. */
  function keysBlock(app, headingId) {
    const cid = seg(app.client_id);
    const alert = alertBox();
    const status = statusLine();
    const list = h('div', null, h('p', { class: 'muted' }, 'Loading keys…'));
    const shown = h('div');
    const pem = field('Ed25519 public key (PEM)', 'textarea', { rows: '4', spellcheck: 'false',
      placeholder: '-----BEGIN PUBLIC KEY-----\n…\n-----END PUBLIC KEY-----' });
    const addEd = h('button', { type: 'button' }, 'Add Ed25519 key');
    const addHmac = h('button', { type: 'button', class: 'secondary' }, 'Add HMAC key');

    async function load() {
      try {
        const body = await api(`/v1/admin/apps/${cid}/keys`);
        if (stopped) return;
        const keys = body.keys || [];
        replace(list, keys.length ? table(`Keys of ${app.name}`,
          ['Key ID', 'Algorithm', 'Created', 'Revoked', 'Action'],
          keys.map((k) => [h('code', null, k.keyid), k.algorithm, time(k.created_at),
            k.revoked_at ? time(k.revoked_at) : '—', k.revoked_at ? '' : revokeCell(k)]),
          { captionHidden: true }) : h('p', { class: 'muted' }, 'No signing keys.'));
      } catch (err) {
        alert.show(errorText(err));
      }
    }

    function revokeCell(k) {
      const cell = h('div', { class: 'confirm' });
      const start = h('button', { type: 'button', class: 'small danger' }, 'Revoke');
      start.addEventListener('click', () => {
        const yes = h('button', { type: 'button', class: 'small danger' }, 'Confirm');
        const no = h('button', { type: 'button', class: 'small secondary' }, 'Cancel');
        no.addEventListener('click', () => { replace(cell, start); start.focus(); });
        yes.addEventListener('click', () => act(yes, alert, async () => {
          await api(`/v1/admin/apps/${cid}/keys/${seg(k.keyid)}:revoke`, { method: 'POST' });
          status.textContent = `Key ${k.keyid} revoked.`;
          await load();
        }));
        replace(cell, h('span', null, 'Revoke this key? Signatures made with it stop verifying.'),
          yes, no);
        yes.focus();
      });
      cell.append(start);
      return cell;
    }

    addEd.addEventListener('click', () => {
      if (!pem.input.value.trim()) {
        alert.show('Paste an Ed25519 public key in PEM form first.');
        pem.input.focus();
        return;
      }
      act(addEd, alert, async () => {
        const key = await api(`/v1/admin/apps/${cid}/keys`, { method: 'POST',
          body: { algorithm: 'ed25519', public_key: pem.input.value.trim() } });
        pem.input.value = '';
        status.textContent = `Ed25519 key ${key.keyid} added.`;
        await load();
      });
    });

    addHmac.addEventListener('click', () => act(addHmac, alert, async () => {
      const key = await api(`/v1/admin/apps/${cid}/keys`, { method: 'POST',
        body: { algorithm: 'hmac-sha256' } });
      replace(shown, secretPanel('New HMAC key', [['Key ID', key.keyid], ['HMAC secret', key.secret]]));
      status.textContent = `HMAC key ${key.keyid} added.`;
      await load();
    }));

    load();
    return h('section', { class: 'keys', 'aria-label': `Keys of ${app.name}` },
      h('h4', null, 'Signing keys'), list, pem.wrap,
      h('div', { class: 'actions' }, addEd, addHmac), alert, status, shown);
  }

  // --- Data key ---------------------------------------------------------------------------
  const dkAlert = alertBox();
  const dkFacts = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  const dkProgressLabel = h('label', { for: 'dk-progress' }, 'Re-encryption progress');
  const dkProgress = h('progress', { id: 'dk-progress', max: '1', value: '0' });
  const dkProgressWrap = h('div', { class: 'progress-wrap' }, dkProgressLabel, dkProgress);
  dkProgressWrap.hidden = true;
  const dkStatus = statusLine();
  const dkRotate = h('button', { type: 'button' }, 'Rotate data key');

  function drawDataKey(dk) {
    const versions = dk.versions || [];
    replace(dkFacts,
      h('p', null, 'Current version: ', h('strong', { class: 'dk-version' }, String(dk.version))),
      versions.length ? table('Data key versions', ['Version', 'Created'],
        versions.map((v) => [String(v.version), time(v.created_at)]),
        { captionHidden: true, rowHeaders: true }) : null);
    const re = dk.reencryption;
    if (re) {
      dkProgressWrap.hidden = false;
      dkProgress.max = Math.max(1, re.total || 0);
      dkProgress.value = Math.min(re.done || 0, dkProgress.max);
      dkStatus.textContent = re.running
        ? `Re-encrypting to version ${re.target}: ${re.done} of ${re.total} messages.`
        : `Re-encryption to version ${re.target} finished: ${re.done} of ${re.total} messages.`;
    }
    return Boolean(re && re.running);
  }

  async function pollDataKey() {
    if (stopped) return;
    try {
      const running = drawDataKey(await api(`/v1/admin/tenants/${t}/data-key`));
      if (running && !stopped) {
        dkRotate.disabled = true;
        const id = setTimeout(() => { timers.delete(id); pollDataKey(); }, 1000);
        timers.add(id);
      } else {
        dkRotate.disabled = false;
      }
    } catch (err) {
      dkAlert.show(errorText(err));
      dkRotate.disabled = false;
    }
  }

  dkRotate.addEventListener('click', () => act(dkRotate, dkAlert, async () => {
    const out = await api(`/v1/admin/tenants/${t}/data-key:rotate`, { method: 'POST' });
    dkStatus.textContent = `Rotated to data key version ${out.version}; re-encrypting…`;
    await pollDataKey();
  }));

  main.append(h('section', { class: 'card', 'aria-labelledby': 'dk-h' },
    h('h2', { id: 'dk-h' }, 'Data key'),
    h('p', { class: 'muted' }, 'Message content is encrypted with the tenant\'s data key. ',
      'Rotating creates a new version and re-encrypts stored messages in the background.'),
    dkFacts, h('div', { class: 'actions' }, dkRotate), dkProgressWrap, dkStatus, dkAlert));

  loadApps();
  pollDataKey();
  return () => {
    stopped = true;
    for (const id of timers) clearTimeout(id);
  };
}

/** Global operators: list tenants and create one (form built on demand). */
function tenantsSection(ctx) {
  const alert = alertBox();
  const status = statusLine();
  const list = h('div');
  const formBox = h('div');
  const open = h('button', { type: 'button', class: 'secondary' }, 'New tenant');

  replace(list, ctx.tenants.length ? table('Tenants', ['Name', 'ID', 'Created', 'Shredded'],
    ctx.tenants.map((x) => [x.name, h('code', null, x.id), time(x.created_at),
      x.shredded ? 'yes' : 'no']), { captionHidden: true, rowHeaders: true })
    : h('p', { class: 'muted' }, 'No tenants yet.'));

  open.addEventListener('click', () => {
    const f = field('Tenant name', 'input', { autocomplete: 'off', required: true });
    const create = h('button', { type: 'submit' }, 'Create tenant');
    const cancel = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
    const form = h('form', { class: 'stack inline-form', novalidate: true }, f.wrap,
      h('div', { class: 'form-actions' }, create, cancel));
    cancel.addEventListener('click', () => { formBox.replaceChildren(); open.hidden = false; open.focus(); });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      if (!f.input.value.trim()) {
        alert.show('Enter a tenant name.');
        f.input.focus();
        return;
      }
      act(create, alert, async () => {
        const tenant = await api('/v1/admin/tenants', { method: 'POST',
          body: { name: f.input.value.trim() } });
        await ctx.reloadTenants(tenant.id);
        ctx.navigate('#/apps'); // re-render with the new tenant selected
      });
    });
    open.hidden = true;
    replace(formBox, form);
    f.input.focus();
  });

  const section = h('section', { class: 'card', 'aria-labelledby': 'tenants-h' },
    h('h2', { id: 'tenants-h' }, 'Tenants'), list,
    h('div', { class: 'actions' }, open), formBox, alert, status);
  if (!ctx.tenants.length) open.click(); // first run: the form is what is needed
  return section;
}
