// #/audit: latest checkpoint and full in-browser verification of the audit log.

import { h } from '../dom.js';
import { checkpointPanel } from '../checkpoint.js';

export function render(main, ctx) {
  const panel = checkpointPanel({ title: 'Latest checkpoint' });
  main.append(
    h('h1', null, 'Audit log'),
    h('p', null, 'Herald records every message and every administrative change in an ',
      'append-only Merkle tree log (RFC 9162). Every few seconds the server signs a ',
      'checkpoint: the tree size and root hash, as an Ed25519 signed note.'),
    panel.el,
    h('section', { class: 'card', 'aria-labelledby': 'what-h' },
      h('h2', { id: 'what-h' }, 'What "Verify now" checks'),
      h('ol', null,
        h('li', null, 'The checkpoint note\'s Ed25519 signature verifies under the published ',
          'audit key (', h('code', null, '/.well-known/herald-audit-key'), '), whose key hash ',
          'matches the key.'),
        h('li', null, 'Every entry\'s leaf hash, SHA-256(0x00 ‖ entry), is recomputed in this ',
          'browser from the entry text.'),
        ctx.isGlobal
          ? h('li', null, 'The Merkle tree hash of all entries up to the checkpoint size is ',
            'recomputed and must equal the signed root: no entry was changed, removed or ',
            'reordered.')
          : h('li', null, 'Your tenant\'s entries are each proven included in the signed tree ',
            'with an RFC 9162 inclusion proof (you see only your tenant\'s entries).')),
      h('p', { class: 'muted' }, 'All hashing and signature checks run locally with WebCrypto; ',
        'the server is not trusted to say that the log is intact.')));
  return () => panel.stop();
}
