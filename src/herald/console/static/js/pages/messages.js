// #/messages: metadata search (topic, recipient, state, time range) with cursor paging.

import { api, errorText, query, seg } from '../api.js';
import { alertBox, field, h, replace, stateBadge, statusLine, table, time } from '../dom.js';
import { noTenant } from './common.js';

const STATES = ['pending', 'sending', 'delivered', 'retrying', 'failed', 'dead', 'expired',
  'waiting', 'skipped', 'suppressed'];

/** datetime-local value (browser local time) -> ISO 8601 UTC, or '' when empty. */
export function localToIso(value) {
  if (!value) return '';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

/** Delivery counts {state: n} as a list of "n state" badges. */
export function stateSummary(counts) {
  const entries = Object.entries(counts || {}).filter(([, n]) => n > 0);
  if (!entries.length) return h('span', { class: 'muted' }, 'none');
  return h('ul', { class: 'inline-list' }, entries.map(([st, n]) =>
    h('li', null, stateBadge(st), ` ${n}`)));
}

export function render(main, ctx) {
  main.append(h('h1', null, 'Messages'),
    h('p', { class: 'notice' }, 'Operators see message metadata only, never message content: ',
      'titles, bodies and data are encrypted at rest with the tenant\'s data key.'));
  if (!ctx.tenant) {
    main.append(noTenant(ctx));
    return null;
  }
  const t = seg(ctx.tenant);
  const topic = field('Topic', 'input', { name: 'topic', placeholder: 'e.g. orders.created',
    autocomplete: 'off' });
  const recipient = field('Recipient', 'input', { name: 'recipient', autocomplete: 'off' });
  const state = field('State', 'select', { name: 'state' }, [['', 'Any state'], ...STATES]);
  const since = field('Since', 'input', { type: 'datetime-local', name: 'since' });
  const until = field('Until', 'input', { type: 'datetime-local', name: 'until' });
  const alert = alertBox();
  const status = statusLine();
  const results = h('div');
  const more = h('button', { type: 'button', class: 'secondary' }, 'More');
  more.hidden = true;
  const form = h('form', { class: 'search-form', role: 'search', 'aria-label': 'Search messages' },
    topic.wrap, recipient.wrap, state.wrap, since.wrap, until.wrap,
    h('div', { class: 'form-actions' }, h('button', { type: 'submit' }, 'Search')));
  main.append(form, alert, status, results, h('div', { class: 'actions' }, more));

  let rows = [];
  let next = null;
  let params = {};
  let controller = null;

  function draw() {
    if (!rows.length) {
      replace(results, h('p', { class: 'muted' }, 'No messages match.'));
      return;
    }
    replace(results, table('Messages', ['Time', 'ID', 'Topic', 'App', 'Recipients', 'Deliveries'],
      rows.map((m) => [
        time(m.created_at),
        h('a', { href: `#/messages/${encodeURIComponent(m.id)}`, class: 'mono' }, m.id),
        m.topic,
        m.app_id || '—',
        (m.recipients || []).join(', ') || '—',
        stateSummary(m.deliveries),
      ]), { captionHidden: true }));
  }

  async function load(append) {
    if (controller) controller.abort();
    controller = new AbortController();
    alert.clear();
    status.textContent = 'Searching…';
    more.disabled = true;
    try {
      const body = await api(`/v1/admin/tenants/${t}/messages${query({ ...params, limit: 50,
        before: append ? next : '' })}`, { signal: controller.signal });
      rows = append ? rows.concat(body.messages || []) : (body.messages || []);
      next = body.next || null;
      draw();
      status.textContent = `${rows.length} message${rows.length === 1 ? '' : 's'} shown` +
        (next ? '; more are available.' : '.');
      more.hidden = !next;
    } catch (err) {
      if (err.name === 'AbortError') return;
      status.textContent = '';
      alert.show(errorText(err));
    } finally {
      more.disabled = false;
    }
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    params = {
      topic: topic.input.value.trim(),
      recipient: recipient.input.value.trim(),
      state: state.input.value,
      since: localToIso(since.input.value),
      until: localToIso(until.input.value),
    };
    load(false);
  });
  more.addEventListener('click', () => load(true));
  load(false);
  return () => { if (controller) controller.abort(); };
}
