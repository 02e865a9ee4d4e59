// Tiny DOM helpers. Text is always set with textContent / text nodes: never HTML strings
// (the console runs under Trusted Types, so innerHTML and friends would throw anyway).

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Append children (nodes, strings, numbers, arrays; null/false skipped) to a parent. */
function appendAll(parent, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) appendAll(parent, child);
    else if (child instanceof Node) parent.append(child);
    else parent.append(document.createTextNode(String(child)));
  }
}

/** Set attributes: `on*` functions become listeners, booleans toggle, `class` and `for` map. */
function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key === 'value' && 'value' in el) {
      el.value = value;
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
}

/** h('button', {type: 'button', onclick: f}, 'Label') -> HTMLElement. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

/** Same as h() but in the SVG namespace (charts). */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  }
  appendAll(el, children);
  return el;
}

/** Replace all children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  appendAll(el, children);
  return el;
}

let uid = 0;
/** A unique id for label/for and aria-describedby pairs. */
export function newId(prefix = 'f') {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled form field: returns {wrap, input}. `kind` is input|select|textarea. */
export function field(label, kind = 'input', attrs = {}, options = []) {
  const id = newId('field');
  const input = h(kind, { id, ...attrs });
  if (kind === 'select') {
    for (const opt of options) {
      const [value, text] = Array.isArray(opt) ? opt : [opt, opt];
      input.append(h('option', { value }, text));
    }
  }
  const hint = attrs['data-hint'];
  let hintEl = null;
  if (hint) {
    hintEl = h('p', { class: 'hint', id: `${id}-hint` }, hint);
    input.setAttribute('aria-describedby', hintEl.id);
    input.removeAttribute('data-hint');
  }
  const wrap = h('div', { class: 'field' }, h('label', { for: id }, label), input, hintEl);
  return { wrap, input };
}

/** An alert region (role=alert) that is empty until set; `.show(text)` / `.clear()`. */
export function alertBox() {
  const el = h('div', { class: 'alert', role: 'alert' });
  el.hidden = true;
  el.show = (text) => {
    el.textContent = text;
    el.hidden = !text;
  };
  el.clear = () => el.show('');
  return el;
}

/** A polite live status line. */
export function statusLine(cls = 'status') {
  return h('p', { class: cls, role: 'status', 'aria-live': 'polite' });
}

/** A table inside a horizontally scrolling wrapper. headers: [text], rows: [[cell]]. */
export function table(caption, headers, rows, opts = {}) {
  const head = h('tr', null, headers.map((t) => h('th', { scope: 'col' }, t)));
  const body = rows.map((cells) =>
    h('tr', null, cells.map((c, i) =>
      i === 0 && opts.rowHeaders ? h('th', { scope: 'row' }, c) : h('td', null, c))));
  const tbl = h('table', { class: opts.class || 'data' },
    caption ? h('caption', { class: opts.captionHidden ? 'visually-hidden' : null }, caption) : null,
    h('thead', null, head), h('tbody', null, body));
  // Wide tables scroll inside this wrapper (browsers make such scrollers keyboard-focusable).
  return h('div', { class: 'table-wrap' }, tbl);
}

/** Format an ISO time in the browser's locale, keeping the ISO text as a title. */
export function time(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return h('time', { datetime: iso, title: iso }, d.toLocaleString());
}

/** A state word as a badge (raw state text, so tests can find e.g. "delivered"). */
export function stateBadge(state) {
  const known = ['pending', 'sending', 'delivered', 'retrying', 'failed', 'dead', 'expired',
    'waiting', 'skipped', 'suppressed'];
  const cls = known.includes(state) ? `state state-${state}` : 'state';
  return h('span', { class: cls }, String(state));
}
