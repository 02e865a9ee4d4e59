// SVG line chart built with DOM APIs (createElementNS), plus a text alternative table.

import { h, s, table } from './dom.js';

const PAD = { left: 44, right: 12, top: 22, bottom: 34 };

/** A "nice" upper bound for the y axis (1, 2, 5 × 10^n). */
function niceMax(v) {
  if (v <= 4) return 4;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function clock(date) {
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/**
 * lineChart({title, start (ISO), bucket (s), series: [{key, label, values, cls}], width})
 * -> a <figure> with the SVG (role=img, aria-label summary), a legend and a details table.
 */
export function lineChart({ title, start, bucket, series, width = 640 }) {
  // Drawn at the container's pixel width so that labels keep their size on phones.
  const W = Math.max(280, Math.round(width));
  const H = W < 500 ? 200 : 240;
  const n = Math.max(1, ...series.map((x) => x.values.length));
  const t0 = new Date(start).getTime();
  const at = (i) => new Date(t0 + i * bucket * 1000);
  const max = niceMax(Math.max(0, ...series.flatMap((x) => x.values)));
  const iw = W - PAD.left - PAD.right;
  const ih = H - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (n === 1 ? iw / 2 : (i * iw) / (n - 1));
  const y = (v) => PAD.top + ih - (v / max) * ih;

  const totals = series.map((x) => [x.label, x.values.reduce((a, b) => a + b, 0)]);
  const minutes = Math.round((n * bucket) / 60);
  const summary = `${title}, last ${minutes} minutes: ` +
    totals.map(([l, t]) => `${t} ${l.toLowerCase()}`).join(', ') + '.';

  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img',
    'aria-label': summary, preserveAspectRatio: 'xMidYMid meet' });
  // Grid lines and y-axis labels.
  for (let k = 0; k <= 4; k += 1) {
    const v = (max * k) / 4;
    svg.append(
      s('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: 'grid' }),
      s('text', { x: PAD.left - 6, y: y(v) + 4, class: 'axis-label', 'text-anchor': 'end' },
        String(Math.round(v))));
  }
  // X-axis labels: about five evenly spaced times.
  const labels = Math.max(2, Math.floor(iw / 110));
  const step = Math.max(1, Math.ceil((n - 1) / labels));
  for (let i = 0; i < n; i += step) {
    svg.append(s('text', { x: x(i), y: H - PAD.bottom + 18, class: 'axis-label',
      'text-anchor': i === 0 ? 'start' : 'middle' }, clock(at(i))));
  }
  svg.append(
    s('line', { x1: PAD.left, x2: W - PAD.right, y1: y(0), y2: y(0), class: 'axis' }),
    s('text', { x: W - PAD.right, y: H - 2, class: 'axis-title', 'text-anchor': 'end' },
      `time (${bucket} s buckets)`),
    s('text', { x: 4, y: 12, class: 'axis-title' }, 'count'));
  // The lines themselves.
  for (const line of series) {
    const pts = line.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    svg.append(s('polyline', { points: pts, class: `series ${line.cls}`, fill: 'none' }));
  }

  const legend = h('ul', { class: 'legend', 'aria-hidden': 'true' },
    series.map((line) => h('li', null, h('span', { class: `swatch ${line.cls}` }),
      `${line.label} (${line.values.reduce((a, b) => a + b, 0)})`)));

  // Text alternative: only buckets with activity, to keep it short.
  const rows = [];
  for (let i = 0; i < n; i += 1) {
    const vals = series.map((line) => line.values[i] || 0);
    if (vals.some((v) => v > 0)) rows.push([clock(at(i)), ...vals.map(String)]);
  }
  const details = h('details', { class: 'chart-data' },
    h('summary', null, 'Chart data as a table'),
    rows.length
      ? table(`${title} per ${bucket} s bucket`, ['Time', ...series.map((l) => l.label)], rows,
        { rowHeaders: true })
      : h('p', null, 'No activity in this window.'));

  return h('figure', { class: 'chart-figure' },
    h('figcaption', null, title), svg, legend,
    details);
}
