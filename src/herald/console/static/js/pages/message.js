// #/messages/<id>: one message's metadata, its deliveries, and in-page verification of its
// audit inclusion proof against the signed checkpoint.

import { api, errorText, seg } from '../api.js';
import { alertBox, h, replace, stateBadge, table, time } from '../dom.js';
import { verifyMessageAudit } from '../verify.js';
import { noTenant } from './common.js';

function fact(label, value) {
  return h('div', null, h('dt', null, label), h('dd', null, value ?? '—'));
}

export function render(main, ctx) {
  const id = ctx.param;
  main.append(h('p', { class: 'crumbs' }, h('a', { href: '#/messages' }, '← Messages')),
    h('h1', null, 'Message'),
    h('p', { class: 'notice' }, 'Operators see metadata only, never message content: the ',
      'content is encrypted at rest.'));
  if (!ctx.tenant) {
    main.append(noTenant(ctx));
    return null;
  }
  const alert = alertBox();
  const body = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  main.append(alert, body);
  let stopped = false;
  let retryTimer = null;

  async function load() {
    try {
      const m = await api(`/v1/admin/tenants/${seg(ctx.tenant)}/messages/${seg(id)}`);
      if (!stopped) show(m);
    } catch (err) {
      if (stopped) return;
      replace(body);
      alert.show(err.status === 404 ? `Message ${id} was not found in this tenant.` : errorText(err));
    }
  }

  function show(m) {
    const deliveries = Array.isArray(m.deliveries) ? m.deliveries : [];
    replace(body,
      h('section', { class: 'card', 'aria-labelledby': 'meta-h' },
        h('h2', { id: 'meta-h' }, 'Metadata'),
        h('dl', { class: 'facts' },
          fact('ID', h('code', null, m.id)),
          fact('Topic', m.topic),
          fact('App', m.app_id),
          fact('Priority', m.priority != null ? String(m.priority) : null),
          fact('Category', m.category),
          fact('Created', time(m.created_at)),
          fact('Expires', time(m.expires_at)),
          fact('Recipients', (m.recipients || []).join(', ') || null),
          fact('Audit index', m.audit ? String(m.audit.index) : null),
          fact('Leaf hash', m.audit ? h('code', { class: 'hash' }, m.audit.leaf_hash) : null))),
      h('section', { class: 'card', 'aria-labelledby': 'deliv-h' },
        h('h2', { id: 'deliv-h' }, 'Deliveries'),
        deliveries.length
          ? table('Deliveries', ['Channel', 'Endpoint', 'Recipient', 'State', 'Attempts',
            'Last error', 'Updated'], deliveries.map((d) => [d.channel, d.endpoint || '—',
            d.recipient || '—', stateBadge(d.state), String(d.attempts ?? 0),
            d.last_error || '—', time(d.updated_at)]), { captionHidden: true })
          : h('p', { class: 'muted' }, 'No deliveries.')),
      proofSection(m));
  }

  function proofSection(m) {
    const steps = h('ol', { class: 'steps' });
    const result = h('p', { class: 'result', role: 'status', 'aria-live': 'polite' });
    const again = h('button', { type: 'button', class: 'secondary' }, 'Verify again');
    const section = h('section', { class: 'card', 'aria-labelledby': 'proof-h' },
      h('h2', { id: 'proof-h' }, 'Audit inclusion proof'),
      h('p', { class: 'muted' }, 'Your browser checks that this message\'s audit entry is in ',
        'the append-only log: it recomputes the leaf hash from the entry, verifies the ',
        'RFC 9162 inclusion proof up to the checkpoint root, and verifies the checkpoint\'s ',
        'Ed25519 signature with the published audit key.'),
      steps, result, h('div', { class: 'actions' }, again));
    if (!m.audit) {
      result.textContent = 'This message has no audit reference.';
      again.hidden = true;
      return section;
    }
    let autoRetries = 4;
    async function run() {
      clearTimeout(retryTimer);
      if (stopped) return;
      again.disabled = true;
      steps.replaceChildren();
      result.className = 'result';
      result.textContent = 'Verifying…';
      const outcome = await verifyMessageAudit(m.audit, ({ label, ok, detail }) => {
        const [cls, mark] = ok === null ? ['wait', 'Waiting'] : ok ? ['pass', 'Passed'] : ['fail', 'Failed'];
        steps.append(h('li', { class: cls }, h('span', { class: 'mark' }, mark), ': ', label,
          detail ? h('span', { class: 'detail' }, ` — ${detail}`) : null));
      }).catch((err) => {
        steps.append(h('li', { class: 'fail' }, h('span', { class: 'mark' }, 'Failed'), ': ',
          errorText(err)));
        return 'failed';
      });
      if (stopped) return;
      if (outcome === 'verified') {
        result.classList.add('ok');
        result.textContent = 'Inclusion verified';
      } else if (outcome === 'pending') {
        result.textContent = 'This message is not yet in a signed checkpoint (checkpoints are ' +
          'signed every few seconds). Try again shortly.';
        if (autoRetries > 0) { // try again by itself a few times
          autoRetries -= 1;
          retryTimer = setTimeout(run, 5000);
        }
      } else {
        result.classList.add('bad');
        result.textContent = 'Inclusion NOT verified: see the failed step above.';
      }
      again.disabled = false;
    }
    again.addEventListener('click', run);
    run();
    return section;
  }

  load();
  return () => {
    stopped = true;
    clearTimeout(retryTimer);
  };
}
