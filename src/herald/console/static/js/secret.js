// "Shown once" panel for client secrets and HMAC keys, with Copy buttons.

import { h } from './dom.js';

/** Select the text of an element (fallback when the clipboard API is unavailable). */
function selectText(el) {
  const range = document.createRange();
  range.selectNodeContents(el);
  const sel = window.getSelection();
  sel.removeAllRanges();
  sel.addRange(range);
}

/** A value with a "Copy" button; `label` names the value in the status text. */
function copyRow(label, value) {
  const code = h('code', { class: 'secret-value' }, value);
  const note = h('span', { class: 'copy-note', role: 'status', 'aria-live': 'polite' });
  const button = h('button', { type: 'button', class: 'small secondary' }, 'Copy');
  button.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(value);
      note.textContent = `${label} copied.`;
    } catch {
      selectText(code);
      note.textContent = 'Copying is blocked here: the text is selected, press Ctrl+C (⌘C).';
    }
  });
  return h('div', { class: 'secret-row' }, h('dt', null, label),
    h('dd', null, code, button, note));
}

/**
 * A panel (role=region) listing [label, value] pairs that are shown only once.
 * onDismiss removes it.
 */
export function secretPanel(title, pairs, onDismiss) {
  const heading = h('h3', { tabindex: '-1' }, title);
  const panel = h('section', { class: 'secret-panel', role: 'region', 'aria-label': title },
    heading,
    h('p', { class: 'warning' }, h('strong', null, 'Save this now: '),
      'the secret is not shown again. Store it in your secret manager before leaving this page.'),
    h('dl', null, pairs.map(([label, value]) => copyRow(label, value))),
    h('button', { type: 'button', class: 'secondary', onclick: () => {
      panel.remove();
      if (onDismiss) onDismiss();
    } }, 'I have saved it'));
  queueMicrotask(() => heading.focus());
  return panel;
}
