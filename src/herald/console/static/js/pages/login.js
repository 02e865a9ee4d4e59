// #/login: name + password form. POST /console/api/session.

import { api, errorText } from '../api.js';
import { alertBox, field, h } from '../dom.js';

export function render(main, ctx) {
  const name = field('Name', 'input', { name: 'username', autocomplete: 'username',
    required: true, autocapitalize: 'none', spellcheck: 'false' });
  const password = field('Password', 'input', { type: 'password', name: 'password',
    autocomplete: 'current-password', required: true });
  const alert = alertBox();
  const submit = h('button', { type: 'submit' }, 'Sign in');
  const form = h('form', { class: 'stack', novalidate: true }, name.wrap, password.wrap, alert, submit);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    alert.clear();
    if (!name.input.value || !password.input.value) {
      alert.show('Enter your name and password.');
      (name.input.value ? password.input : name.input).focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Signing in…';
    try {
      const body = await api('/console/api/session', {
        method: 'POST',
        body: { name: name.input.value, password: password.input.value },
        quiet401: true,
      });
      password.input.value = '';
      await ctx.onLogin(body);
    } catch (err) {
      alert.show(err.status === 401 && !err.problem ? 'Wrong name or password.' : errorText(err));
      password.input.value = '';
      password.input.focus();
    } finally {
      submit.disabled = false;
      submit.textContent = 'Sign in';
    }
  });

  const notice = alertBox();
  main.append(h('section', { class: 'card login-card', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'Sign in'),
    h('p', { class: 'muted' }, 'Operators sign in with the name and password created with ',
      h('code', null, 'herald admin create'), '.'),
    notice, form));
  if (ctx.notice) notice.show(ctx.notice);
  name.input.focus();
}
