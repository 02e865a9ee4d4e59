// #/dashboard: throughput chart, active streams, deliveries by state, dead letters,
// audit checkpoint. Refreshes every 5 s while shown.

import { api, errorText, query, seg } from '../api.js';
import { alertBox, h, replace, statusLine, table, time } from '../dom.js';
import { lineChart } from '../charts.js';
import { checkpointPanel } from '../checkpoint.js';
import { noTenant } from './common.js';

const REFRESH_MS = 5000;
const STATES = ['pending', 'sending', 'waiting', 'retrying', 'delivered', 'failed', 'dead',
  'expired', 'skipped', 'suppressed'];

export function render(main, ctx) {
  main.append(h('h1', null, 'Dashboard'));
  if (!ctx.tenant) {
    main.append(noTenant(ctx));
    return null;
  }
  const t = seg(ctx.tenant);
  const alert = alertBox();
  const updated = statusLine('status small');
  const chartBox = h('div', { class: 'chart-box' }, h('p', { class: 'muted' }, 'Loading…'));
  const streams = h('p', { class: 'big-number' }, '…');
  const nodes = h('p', { class: 'muted small' });
  const deadCount = h('p', { class: 'big-number' }, '…');
  const byState = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  const deadAlert = alertBox();
  const deadStatus = statusLine();
  const deadList = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  const checkpoint = checkpointPanel({ title: 'Audit checkpoint' });

  main.append(
    h('p', { class: 'muted' }, `Tenant ${ctx.tenantName || ctx.tenant}: the last hour, refreshed every 5 seconds.`),
    updated,
    alert,
    h('section', { class: 'card', 'aria-labelledby': 'tp-h' },
      h('h2', { id: 'tp-h' }, 'Throughput and failures'), chartBox),
    h('div', { class: 'grid' },
      h('section', { class: 'card', 'aria-labelledby': 'st-h' },
        h('h2', { id: 'st-h' }, 'Active streams'), streams, nodes),
      h('section', { class: 'card', 'aria-labelledby': 'dl-count-h' },
        h('h2', { id: 'dl-count-h' }, 'Dead-letter count'), deadCount),
      checkpoint.el),
    h('section', { class: 'card', 'aria-labelledby': 'ds-h' },
      h('h2', { id: 'ds-h' }, 'Deliveries by state'), byState),
    h('section', { class: 'card', 'aria-labelledby': 'dead-h' },
      h('h2', { id: 'dead-h' }, 'Dead letters'), deadAlert, deadStatus, deadList));

  // Re-render a box only when its data changed, so focus and open <details> survive.
  const last = new Map();
  const changed = (key, data) => {
    const text = JSON.stringify(data);
    if (last.get(key) === text) return false;
    last.set(key, text);
    return true;
  };

  function renderOverview(o) {
    streams.textContent = String(o.streams ?? 0);
    nodes.textContent = o.nodes == null ? 'on the node answering' : `across ${o.nodes} node(s)`;
    deadCount.textContent = String(o.dead_letters ?? 0);
    if (changed('series', [o.start, o.series])) {
      lastOverview = o;
      drawChart();
    }
    if (changed('states', o.deliveries)) renderByState(o.deliveries || []);
  }

  let lastOverview = null;
  let chartWidth = 0;
  function drawChart() {
    const o = lastOverview;
    if (!o) return;
    const se = o.series || {};
    chartWidth = chartBox.clientWidth || 640;
    replace(chartBox, lineChart({
      title: 'Messages per minute',
      start: o.start,
      bucket: o.bucket || 60,
      width: chartWidth,
      series: [
        { key: 'published', label: 'Published', values: se.published || [], cls: 's-published' },
        { key: 'delivered', label: 'Delivered', values: se.delivered || [], cls: 's-delivered' },
        { key: 'failed', label: 'Failed', values: se.failed || [], cls: 's-failed' },
      ],
    }));
  }
  // Redraw when the box width changes noticeably (rotation, window resize).
  const resize = new ResizeObserver(() => {
    if (Math.abs(chartBox.clientWidth - chartWidth) > 24) drawChart();
  });
  resize.observe(chartBox);

  function renderByState(rows) {
    if (!rows.length) {
      replace(byState, h('p', { class: 'muted' }, 'No deliveries yet.'));
      return;
    }
    const channels = [...new Set(rows.map((r) => r.channel))].sort();
    const extra = [...new Set(rows.map((r) => r.state))].filter((x) => !STATES.includes(x));
    const states = [...STATES.filter((x) => rows.some((r) => r.state === x)), ...extra];
    const count = (c, st) => rows.filter((r) => r.channel === c && r.state === st)
      .reduce((a, r) => a + r.count, 0);
    replace(byState, table('Deliveries by channel and state', ['Channel', ...states],
      channels.map((c) => [c, ...states.map((st) => String(count(c, st)))]),
      { rowHeaders: true, captionHidden: true }));
  }

  async function retry(d, button) {
    button.disabled = true;
    deadAlert.clear();
    try {
      await api(`/v1/admin/tenants/${t}/deliveries/${seg(d.id)}:retry`, { method: 'POST' });
      deadStatus.textContent = `Delivery ${d.id} queued for retry.`;
      await refreshDead();
    } catch (err) {
      deadAlert.show(`Retry of ${d.id} failed: ${errorText(err)}`);
      button.disabled = false;
    }
  }

  function renderDead(list) {
    if (!list.length) {
      replace(deadList, h('p', { class: 'muted' }, 'No dead letters.'));
      return;
    }
    replace(deadList, table('Dead letters', ['Updated', 'Message', 'Channel', 'Recipient',
      'Attempts', 'Last error', 'Action'], list.map((d) => [
      time(d.updated_at),
      h('a', { href: `#/messages/${encodeURIComponent(d.message_id)}` }, d.message_id),
      d.channel, d.recipient || '—', String(d.attempts ?? 0), d.last_error || '—',
      h('button', { type: 'button', class: 'small',
        onclick: (e) => retry(d, e.currentTarget) }, 'Retry'),
    ]), { captionHidden: true }));
  }

  async function refreshDead() {
    const body = await api(`/v1/admin/tenants/${t}/deliveries${query({ state: 'dead', limit: 50 })}`);
    const list = body.deliveries || [];
    if (changed('dead', [list, body.next])) {
      renderDead(list);
      if (body.next) {
        deadList.append(h('p', { class: 'muted small' }, `Showing ${list.length} dead letters; ` +
          'more exist: search the Messages page with State "dead".'));
      }
    }
  }

  let inflight = false;
  async function refresh() {
    if (inflight) return;
    inflight = true;
    try {
      const o = await api(`/v1/admin/tenants/${t}/overview${query({ window: 3600, bucket: 60 })}`);
      renderOverview(o);
      await refreshDead();
      checkpoint.refresh();
      alert.clear();
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
    } catch (err) {
      alert.show(`Could not load the dashboard: ${errorText(err)}`);
    } finally {
      inflight = false;
    }
  }

  refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return () => {
    clearInterval(timer);
    resize.disconnect();
    checkpoint.stop();
  };
}
