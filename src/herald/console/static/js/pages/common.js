// Bits shared by several pages.

import { h } from '../dom.js';

/** Shown when no tenant exists or is selected. */
export function noTenant(ctx) {
  return h('div', { class: 'card' },
    h('p', null, 'No tenant is selected.'),
    ctx.isGlobal
      ? h('p', null, 'Create a tenant under ', h('a', { href: '#/apps' }, 'Apps & keys'),
        ', then choose it in the Tenant menu.')
      : h('p', null, 'Your operator account has no tenant.'));
}
