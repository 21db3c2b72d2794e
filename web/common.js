// What every page shares: the token (kept in this tab's session storage), the sign-in
// panel (paste a token, or "sign in as" on an embedded development node), JSON calls to
// the node's API with errors shown rather than swallowed, small DOM helpers, and the
// connection badge.

const TOKEN_KEY = 'fleetcast.token';

/** The node's page settings (`/web/config.json`). */
export async function pageConfig() {
  try {
    const r = await fetch('/web/config.json');
    return await r.json();
  } catch {
    return { tileUrl: null, devSignIn: false };
  }
}

/** The claims of a JWT, unverified (the node verifies; the page only reads them). */
export function claimsOf(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(atob(part).split('').map((c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join(''));
    return JSON.parse(json);
  } catch {
    return null;
  }
}

export const auth = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set token(t) { if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY); },
  get claims() { const t = this.token; return t ? claimsOf(t) : null; },
  expired() { const c = this.claims; return !c || (c.exp && c.exp * 1000 <= Date.now()); },
};

/** `el('div', {class: 'x', onclick: f}, child, 'text')`. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export const $ = (sel, root = document) => root.querySelector(sel);

/** A failed API call: the contract's error code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

/** A JSON call with the page's token; throws `ApiError` on an error answer. */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (auth.token) headers.Authorization = 'Bearer ' + auth.token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let r;
  try {
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, 'UNREACHABLE', 'the node did not answer: ' + e.message);
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) {
    const code = (data && data.error) || 'HTTP_' + r.status;
    throw new ApiError(r.status, code, (data && data.message) || code);
  }
  return data;
}

/** Shows an error (or a notice) in the page's live region, for a while. */
export function toast(message, kind = 'error') {
  let box = $('#toasts');
  if (!box) {
    box = el('div', { id: 'toasts', role: 'status', 'aria-live': 'polite' });
    document.body.append(box);
  }
  const item = el('div', { class: 'toast ' + kind }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === 'error' ? 8000 : 4000);
}

/** Runs `f`; shows what failed instead of swallowing it. */
export async function attempt(what, f) {
  try {
    return await f();
  } catch (e) {
    toast(`${what}: ${e.code ? e.code + ' — ' : ''}${e.message}`);
    return undefined;
  }
}

/** Sets the connection badge: `live`, `connecting`, `lost` or `off`. */
export function setLink(state, text) {
  const b = $('#link');
  if (!b) return;
  b.dataset.state = state;
  b.textContent = text || { live: 'live', connecting: 'connecting…', lost: 'connection lost — reconnecting', off: 'offline' }[state];
}

/** A token in the URL's query string for EventSource, which cannot set headers. */
export function withToken(path, params = {}) {
  const q = new URLSearchParams(params);
  q.set('token', auth.token || '');
  return path + (path.includes('?') ? '&' : '?') + q.toString();
}

/**
 * Shows the sign-in panel until the page has a token one of `roles` holds, then calls
 * `start(claims)`. `roles` empty = any role.
 */
export async function signIn(roles, start, defaults = {}) {
  const cfg = await pageConfig();
  const ok = (c) => c && !(c.exp && c.exp * 1000 <= Date.now()) && (!roles.length || roles.includes(c.role));
  const who = $('#who');
  const showWho = (c) => {
    if (!who) return;
    who.replaceChildren(
      el('span', {}, `${c.name || c.sub} · ${c.role}${c.tenant ? ' · ' + c.tenant : ''}`),
      el('button', { type: 'button', class: 'link', onclick: () => { auth.token = null; location.reload(); } }, 'sign out'),
    );
  };
  if (ok(auth.claims)) {
    showWho(auth.claims);
    start(auth.claims, cfg);
    return;
  }
  const why = auth.claims && !ok(auth.claims)
    ? (auth.expired() ? 'Your token has expired.' : `This page needs a ${roles.join(' or ')} token.`) : '';
  const pasted = el('textarea', { id: 'token-input', rows: 4, required: true, 'aria-label': 'token', placeholder: 'eyJhbGciOi…' });
  const panel = el('section', { class: 'signin card', 'aria-labelledby': 'signin-title' },
    el('h2', { id: 'signin-title' }, 'Sign in'),
    why && el('p', { class: 'warn' }, why),
    el('form', {
      id: 'token-form',
      onsubmit: (e) => {
        e.preventDefault();
        const t = pasted.value.trim().replace(/^Bearer\s+/i, '');
        const c = claimsOf(t);
        if (!c) { toast('that is not a JWT'); return; }
        if (!ok(c)) { toast(c.exp * 1000 <= Date.now() ? 'that token has expired' : `this page needs ${roles.join(' or ')}`); return; }
        auth.token = t;
        location.reload();
      },
    },
    el('label', { for: 'token-input' }, 'Paste a token (', el('code', {}, 'fleetcast token --sub … --role …'), ')'),
    pasted,
    el('button', { type: 'submit' }, 'Use this token')),
  );
  if (cfg.devSignIn) {
    const role = el('select', { id: 'dev-role', 'aria-label': 'role' },
      ...(roles.length ? roles : ['PASSENGER', 'DRIVER', 'CONDUCTOR', 'ADMIN', 'BUSINESS']).map((r) => el('option', { value: r }, r)));
    const sub = el('input', { id: 'dev-sub', required: true, value: defaults.sub || '', 'aria-label': 'user id', placeholder: 'user id' });
    const name = el('input', { id: 'dev-name', value: defaults.name || '', 'aria-label': 'display name', placeholder: 'display name' });
    const tenant = el('input', { id: 'dev-tenant', value: '', 'aria-label': 'tenant', placeholder: 'default' });
    panel.append(el('form', {
      id: 'dev-form',
      onsubmit: async (e) => {
        e.preventDefault();
        const got = await attempt('sign in', () => api('POST', '/api/dev/token', {
          sub: sub.value.trim(), role: role.value, name: name.value.trim() || undefined, tenant: tenant.value.trim() || undefined,
        }));
        if (got) { auth.token = got.token; location.reload(); }
      },
    },
    el('h3', {}, 'Sign in as (development node only)'),
    el('div', { class: 'row' }, sub, role, name, tenant),
    el('button', { type: 'submit' }, 'Sign in as')));
  }
  $('main').replaceChildren(panel);
}

/** "12 s ago" for an ISO time. */
export function ago(iso) {
  if (!iso) return '—';
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

export function fmtKm(km) {
  if (km === undefined || km === null) return '—';
  return km < 1 ? `${Math.round(km * 1000)} m` : `${km.toFixed(km < 10 ? 1 : 0)} km`;
}

export function fmtEta(seconds) {
  if (seconds === undefined || seconds === null) return 'unknown';
  if (seconds < 60) return `${seconds} s`;
  return `${Math.round(seconds / 60)} min`;
}
