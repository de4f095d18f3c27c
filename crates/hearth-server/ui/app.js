// The shell: the API client (with the browser's key), toasts, the server indicator and the
// router that loads a page module per path. Pages export `render(main, params)` and may return
// a function that stops what they started (timers, streams) when the page is left.

const KEY = 'hearth.apiKey';

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.param = e.param || null;
    this.retryAfter = null;
  }
}

export function headers(extra = {}) {
  const key = localStorage.getItem(KEY);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

/** fetch with the key; a 401 asks for one and tries again once. */
export async function request(path, opts = {}, asked = false) {
  const res = await fetch(path, { ...opts, headers: headers(opts.headers || {}) });
  if (res.status === 401 && !asked) {
    await askKey();
    return request(path, opts, true);
  }
  if (!res.ok) {
    const body = await res.json().catch(() => null);
    const err = new ApiError(res.status, body);
    err.retryAfter = res.headers.get('retry-after');
    throw err;
  }
  return res;
}

/** JSON in, JSON out. */
export async function api(path, { method = 'GET', body, signal } = {}) {
  const opts = { method, signal };
  if (body !== undefined) {
    opts.body = JSON.stringify(body);
    opts.headers = { 'Content-Type': 'application/json' };
  }
  const res = await request(path, opts);
  const type = res.headers.get('content-type') || '';
  return type.includes('json') ? res.json() : res.text();
}

let asking = null;
/** Asks for the key once, however many requests were refused meanwhile. */
function askKey() {
  if (asking) return asking;
  const dialog = document.getElementById('key-dialog');
  const input = document.getElementById('key-input');
  asking = new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      if (input.value) localStorage.setItem(KEY, input.value);
      asking = null;
      resolve();
    }, { once: true });
    dialog.showModal();
  });
  return asking;
}

/** Reads an SSE body, calling `onData` with each `data:` payload (parsed when JSON). */
export async function readEvents(res, onData) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        if (data === '[DONE]') return;
        let parsed = data;
        try { parsed = JSON.parse(data); } catch { /* plain text */ }
        onData(parsed);
      }
    }
  }
}

/** A toast worded by status: what went wrong and, where it helps, what to do. */
export function toast(err, kind = 'error') {
  let text = typeof err === 'string' ? err : err.message;
  if (err instanceof ApiError) {
    const lead = {
      400: err.param ? `Check “${err.param}”` : 'Bad request',
      401: 'API key needed', 403: 'Not allowed', 404: 'Not found', 409: 'Already exists',
      413: 'Too large', 429: 'Busy', 503: 'Unavailable',
    }[err.status] || `Error ${err.status}`;
    text = `${lead}: ${err.message}` + (err.status === 429 && err.retryAfter ? ` (retry in ${err.retryAfter} s)` : '');
  } else if (err instanceof TypeError) {
    text = `The server did not answer: ${err.message}`;
  }
  const box = el('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
  const close = el('button', { type: 'button', 'aria-label': 'Dismiss', onclick: () => box.remove() }, '×');
  box.append(close);
  document.getElementById('toasts').append(box);
  setTimeout(() => box.remove(), kind === 'error' ? 8000 : 3000);
}

/** `el('div', {class: 'x', onclick}, child, …)`: children are nodes or text (never HTML). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'value') node.value = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c !== undefined && c !== null && c !== false) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

export function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function when(unixSeconds) {
  return unixSeconds ? new Date(unixSeconds * 1000).toLocaleString() : '–';
}

/** A labelled form control. */
export function field(label, control, hint) {
  return el('label', { class: 'field' }, el('span', {}, label), control, hint ? el('small', {}, hint) : null);
}

// ---- server indicator ----

let online = null;
export async function checkServer() {
  const dot = document.getElementById('server-dot');
  const text = document.getElementById('server-text');
  const retry = document.getElementById('server-retry');
  try {
    const res = await fetch('/health', { cache: 'no-store' });
    online = res.ok;
  } catch {
    online = false;
  }
  dot.className = `dot ${online ? 'on' : 'off'}`;
  text.textContent = online ? 'online' : 'offline';
  retry.hidden = online;
  return online;
}

// ---- router ----

const routes = [
  [/^\/(inference)?$/, 'chat'],
  [/^\/registry$/, 'registry'],
  [/^\/models$/, 'models'],
  [/^\/models\/(.+)$/, 'model'],
  [/^\/knowledge$/, 'knowledge'],
  [/^\/training$/, 'training'],
  [/^\/status$/, 'status'],
];

let leave = null;
async function show() {
  const path = location.pathname;
  const main = document.getElementById('page');
  if (leave) { try { leave(); } catch { /* page already gone */ } leave = null; }
  main.replaceChildren();
  const found = routes.find(([re]) => re.test(path));
  if (!found) {
    main.append(el('h1', {}, 'Not found'), el('p', {}, el('a', { href: '/', 'data-link': true }, 'Back to chat')));
    return;
  }
  const [re, name] = found;
  const params = (path.match(re) || []).slice(1).map((p) => p && decodeURIComponent(p));
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.toggleAttribute('aria-current', a.dataset.nav === name || (name === 'model' && a.dataset.nav === 'registry'));
    if (a.hasAttribute('aria-current')) a.setAttribute('aria-current', 'page');
  }
  const page = await import(`./pages/${name}.js`);
  leave = (await page.render(main, params, new URLSearchParams(location.search))) || null;
}

export function navigate(url) {
  history.pushState(null, '', url);
  show();
}

document.addEventListener('click', (e) => {
  const a = e.target.closest('a[data-link]');
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', show);
document.getElementById('server-retry').addEventListener('click', async () => {
  if (await checkServer()) show();
});
checkServer();
setInterval(checkServer, 5000);
show();
