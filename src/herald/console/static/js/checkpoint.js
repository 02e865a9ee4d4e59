// "Audit checkpoint" panel: latest checkpoint details and a "Verify now" button running the
// full log verification (js/verify.js) with a <progress> and a result line.

import { errorText } from './api.js';
import { h, newId, replace, statusLine } from './dom.js';
import { fetchCheckpoint, noteSigner, verifyLog } from './verify.js';

/**
 * Build the panel. opts.headingLevel ('h2'|'h3'), opts.title. Returns {el, refresh, stop}.
 */
export function checkpointPanel(opts = {}) {
  const details = h('dl', { class: 'facts' });
  const progressId = newId('progress');
  const progressLabel = h('label', { for: progressId }, 'Verification progress');
  const progress = h('progress', { id: progressId, max: '1', value: '0' });
  const progressWrap = h('div', { class: 'progress-wrap' }, progressLabel, progress);
  progressWrap.hidden = true;
  const progressText = statusLine('status small');
  const result = h('p', { class: 'result', role: 'status', 'aria-live': 'polite' });
  const button = h('button', { type: 'button' }, 'Verify now');
  let current = null;
  let busy = false;
  let stopped = false;

  function showCheckpoint(cp) {
    current = cp;
    if (!cp) {
      replace(details, h('div', null, h('dt', null, 'Checkpoint'),
        h('dd', null, 'No checkpoint has been signed yet.')));
      return;
    }
    replace(details,
      h('div', null, h('dt', null, 'Size'), h('dd', { class: 'cp-size' }, `${cp.size} entries`)),
      h('div', null, h('dt', null, 'Root'), h('dd', null, h('code', { class: 'hash' }, cp.root))),
      h('div', null, h('dt', null, 'Origin'), h('dd', null, cp.origin)),
      h('div', null, h('dt', null, 'Signer'), h('dd', null, noteSigner(cp.note))),
      h('div', null, h('dt', null, 'Seen at'), h('dd', null, new Date().toLocaleTimeString())));
  }

  async function refresh() {
    if (busy) return; // keep the checkpoint being verified on screen
    try {
      const cp = await fetchCheckpoint();
      if (!busy && !stopped) showCheckpoint(cp);
    } catch (err) {
      if (!stopped) replace(details, h('div', null, h('dt', null, 'Checkpoint'),
        h('dd', null, errorText(err))));
    }
  }

  button.addEventListener('click', async () => {
    busy = true;
    button.disabled = true;
    result.className = 'result';
    result.textContent = '';
    progressWrap.hidden = false;
    progress.max = 1;
    progress.value = 0;
    try {
      const cp = await fetchCheckpoint();
      if (!cp) throw new Error('No checkpoint has been signed yet.');
      showCheckpoint(cp);
      const out = await verifyLog(cp, ({ done, total, text }) => {
        progress.max = Math.max(1, total);
        progress.value = done;
        progressText.textContent = text;
      });
      progress.value = progress.max;
      result.classList.add('ok');
      result.textContent = out.mode === 'tree'
        ? `Verified: ${out.entries} entries, root matches checkpoint`
        : `Verified: ${out.entries} entries, inclusion proofs match checkpoint`;
      progressText.textContent = out.mode === 'tree'
        ? 'Signature valid; every leaf hash recomputed; Merkle tree hash equals the signed root.'
        : 'Signature valid; your tenant\'s leaf hashes recomputed; each entry proven included.';
    } catch (err) {
      result.classList.add('bad');
      result.textContent = `Verification failed: ${errorText(err)}`;
    } finally {
      busy = false;
      if (!stopped) button.disabled = false;
    }
  });

  const Heading = opts.headingLevel || 'h2';
  const el = h('section', { class: 'card checkpoint', 'aria-labelledby': `${progressId}-h` },
    h(Heading, { id: `${progressId}-h` }, opts.title || 'Audit checkpoint'),
    details, h('div', { class: 'actions' }, button), progressWrap, progressText, result);
  refresh();
  return { el, refresh, stop: () => { stopped = true; } };
}
