// The Wisp dashboard: plain JavaScript, no framework, no build step.
//
// Everything it shows comes from the admin API, called with the token the
// user signed in with (kept in this tab's sessionStorage, sent as a bearer
// header). Text that a guest or a client controls (names, log lines, error
// messages, outputs) is only ever set as text: every element is made by
// `el()`, which adds strings as text nodes; no markup is ever parsed.

const TOKEN_KEY = 'wisp-admin-token';
const SVG_NS = 'http://www.w3.org/2000/svg';
const MAX_LOG_LINES = 1000;
/** Most of a function's answer the invoke form shows. */
const MAX_OUTPUT_BYTES = 256 * 1024;
const MASK = '••••••';

// ------------------------------------------------------------- elements

/** Creates `tag` with `attrs` (`onclick` and the like are listeners, the
 *  others attributes; null and false are left out) and `children` (strings
 *  become text nodes). */
function el(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** Same as `el`, in the SVG namespace. */
function svgEl(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value == null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  node.append(...nodes(children));
  return node;
}

/** Flattens children; strings and numbers become text nodes. */
function nodes(children) {
  return children.flat(Infinity)
    .filter((c) => c != null && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
}

const $ = (selector, root = document) => root.querySelector(selector);

// ------------------------------------------------------------- formatting

const pad = (n) => String(n).padStart(2, '0');

function fmtTime(ms) {
  if (!ms) return 'never';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtRelative(ms) {
  if (!ms) return '';
  const s = Math.round((ms - Date.now()) / 1000);
  const abs = Math.abs(s);
  const span = abs < 90 ? `${abs} s` : abs < 5400 ? `${Math.round(abs / 60)} min`
    : abs < 172800 ? `${Math.round(abs / 3600)} h` : `${Math.round(abs / 86400)} d`;
  return s >= 0 ? `in ${span}` : `${span} ago`;
}

function fmtBytes(n) {
  if (n == null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

function fmtRate(x) {
  if (x >= 100) return x.toFixed(0);
  if (x >= 1) return x.toFixed(1);
  return x.toFixed(2);
}

const sum = (values) => values.reduce((a, v) => a + (v ?? 0), 0);

// ------------------------------------------------------------- messages

function setStatus(text) {
  show($('#status'), text);
  show($('#error'), '');
}

function setError(err) {
  // A page's request aborted by leaving it; or a 401 that signed out (its
  // message is in #signin-error).
  if (err?.name === 'AbortError' || !session.token) return;
  show($('#error'), err?.message ?? String(err));
  show($('#status'), '');
}

function clearMessages() {
  show($('#status'), '');
  show($('#error'), '');
}

function show(node, text) {
  node.textContent = text;
  node.hidden = !text;
}

// ------------------------------------------------------------- the API

/** An answer of the admin API that is not a success: `message` is the
 *  API's own words. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const session = {
  token: null,
  name: '',
  scopes: [],
};

function authHeaders() {
  return { Authorization: `Bearer ${session.token}` };
}

const fnPath = (name) => `/v1/functions/${encodeURIComponent(name)}`;

/** Calls the API; answers the parsed JSON (null when empty), or throws
 *  an ApiError with the API's message. A 401 ends the session. */
async function api(method, path, { json, signal, token } = {}) {
  const headers = { Authorization: `Bearer ${token ?? session.token}` };
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  }
  const resp = await fetch(path, { method, headers, body, signal });
  const text = await resp.text();
  if (!resp.ok) {
    const err = apiErrorOf(resp.status, text);
    if (resp.status === 401 && !token) signOut(err.message);
    throw err;
  }
  return text ? JSON.parse(text) : null;
}

function apiErrorOf(status, text) {
  try {
    const e = JSON.parse(text).error;
    if (typeof e?.message === 'string') return new ApiError(status, e.code, e.message);
  } catch {
    // not the API's JSON error: fall through
  }
  return new ApiError(status, 'http', `HTTP ${status}${text ? `: ${text.slice(0, 200)}` : ''}`);
}

const get = (path, signal) => api('GET', path, { signal });

/** Runs an action of the user's: its success in #status, its failure (the
 *  API's message) in #error. */
async function act(fn, success) {
  try {
    const result = await fn();
    setStatus(typeof success === 'function' ? success(result) : success);
    return result;
  } catch (err) {
    setError(err);
    return undefined;
  }
}

/** Runs `task` over `items`, at most `limit` at once. */
async function eachLimited(items, limit, task) {
  const queue = [...items];
  const workers = Array.from({ length: Math.min(limit, queue.length) }, async () => {
    while (queue.length) await task(queue.shift());
  });
  await Promise.all(workers);
}

// ------------------------------------------------------------- scopes

const has = (scope) => session.scopes.includes(scope);
const can = {
  admin: () => has('admin'),
  readAll: () => has('admin') || has('read:*'),
  deploy: (f) => has('admin') || has('deploy:*') || has(`deploy:${f}`),
  readFunction: (f) => can.readAll() || can.deploy(f),
  // The admin API's invoke needs `invoke:NAME` (or admin): a deploy scope
  // does not invoke (host/src/auth/scope.rs).
  invoke: (f) => has('admin') || has(`invoke:${f}`),
};

/** The functions a token names in its scopes (for one that may not list). */
function scopedFunctions() {
  const names = session.scopes
    .map((s) => /^(?:deploy|invoke):([a-z0-9-]+)$/.exec(s)?.[1])
    .filter(Boolean);
  return [...new Set(names)].sort();
}

// ------------------------------------------------------------- sign-in

async function signIn(token) {
  const who = await whoami(token);
  session.token = token;
  session.name = who.name;
  session.scopes = who.scopes ?? [];
  sessionStorage.setItem(TOKEN_KEY, token);
  showApp();
}

/** `GET /v1/whoami` with `token`: its name and scopes (any valid token
 *  may ask; a refused one gets 401 with the API's message). */
function whoami(token) {
  return api('GET', '/v1/whoami', { token });
}

function signOut(message = '') {
  sessionStorage.removeItem(TOKEN_KEY);
  session.token = null;
  session.scopes = [];
  leavePage();
  $('#chrome').replaceChildren();
  $('#main').replaceChildren();
  clearMessages();
  $('#signin').hidden = false;
  $('#signin-token').value = '';
  show($('#signin-error'), message);
}

function showApp() {
  $('#signin').hidden = true;
  show($('#signin-error'), '');
  $('#chrome').replaceChildren(header());
  route();
}

function header() {
  const link = (nav, href, text) => el('a', { 'data-nav': nav, href }, text);
  const links = [link('overview', '#/', 'Overview')];
  if (can.readAll() || session.scopes.some((s) => s.startsWith('deploy:'))) links.push(link('logs', '#/logs/', 'Logs'));
  if (can.readAll()) {
    links.push(link('events', '#/events', 'Events'), link('schedules', '#/schedules', 'Schedules'),
      link('jobs', '#/jobs', 'Jobs'));
  }
  return el('header', { class: 'bar' },
    el('a', { class: 'brand', href: '#/' }, 'Wisp'),
    el('nav', { id: 'nav' }, links),
    el('span', { class: 'spacer' }),
    el('span', { id: 'whoami', title: session.scopes.join(' ') }, session.name),
    el('button', { id: 'signout', type: 'button', onclick: () => signOut() }, 'Sign out'));
}

function setUpSignIn() {
  $('#signin').addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = $('#signin-token').value.trim();
    const button = $('#signin-submit');
    button.disabled = true;
    try {
      await signIn(token);
    } catch (err) {
      show($('#signin-error'), err.message);
    } finally {
      button.disabled = false;
    }
  });
}

// ------------------------------------------------------------- routing

/** The page being shown: its abort signal (fetches, the log stream) and
 *  what to stop when leaving it (timers). */
let page = null;

function leavePage() {
  if (!page) return;
  page.controller.abort();
  page.cleanups.forEach((f) => f());
  page = null;
}

function newPage() {
  const controller = new AbortController();
  const p = {
    controller,
    signal: controller.signal,
    cleanups: [],
    every(ms, fn) {
      if (controller.signal.aborted) return; // a page left while it loaded
      const id = setInterval(() => { if (!document.hidden) fn(); }, ms);
      p.cleanups.push(() => clearInterval(id));
    },
  };
  return p;
}

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
  const parts = path.split('/').filter(Boolean).map((p) => {
    try { return decodeURIComponent(p); } catch { return p; }
  });
  return { parts, params };
}

/** The pages by the hash's first segment (`#/functions/NAME`). */
const pages = {
  overview: overviewPage,
  functions: functionPage,
  logs: logsPage,
  events: eventsPage,
  schedules: schedulesPage,
  jobs: jobsPage,
};

function route() {
  if (!session.token) return;
  leavePage();
  clearMessages();
  const { parts, params } = parseHash();
  const section = parts[0] ?? 'overview';
  const render = pages[section] ?? notFoundPage;
  for (const a of document.querySelectorAll('#nav a')) {
    const current = a.dataset.nav === (section === 'functions' ? 'overview' : section);
    if (current) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  page = newPage();
  // Each page renders into a view of its own: one still loading when left
  // fills a view no longer shown.
  const view = el('div', { class: 'view' });
  $('#main').replaceChildren(view);
  render(view, page, parts[1], params).catch(setError);
}

async function notFoundPage(main) {
  main.append(el('h1', null, 'No such page'), el('p', null, el('a', { href: '#/' }, 'Overview')));
}

// ------------------------------------------------------------- tables

/** A table with a head row and an empty body, and a line shown when it
 *  has no rows. */
function table(id, headings, emptyText) {
  const tbody = el('tbody');
  const t = el('table', { id }, el('thead', null, el('tr', null, headings.map((h) => el('th', null, h)))), tbody);
  const empty = el('p', { class: 'empty', hidden: true }, emptyText);
  return { node: el('div', { class: 'table-wrap' }, t, empty), table: t, tbody, empty };
}

/** Makes `t`'s rows those of `items`, in order, keeping the row (and cell)
 *  elements of keys seen before: a periodic refresh does not replace what
 *  a user (or a test) is looking at. `columns` are `[class, fill(td, item)]`;
 *  `decorate(tr, item)` sets row attributes. */
function syncRows(t, items, keyAttr, keyOf, columns, decorate) {
  const old = new Map([...t.tbody.rows].map((tr) => [tr.getAttribute(keyAttr), tr]));
  items.forEach((item, i) => {
    const key = String(keyOf(item));
    let tr = old.get(key);
    old.delete(key);
    if (!tr) tr = el('tr', { [keyAttr]: key }, columns.map(([cls]) => el('td', { class: cls || null })));
    columns.forEach(([, fill], c) => fill(tr.cells[c], item));
    decorate?.(tr, item);
    if (t.tbody.rows[i] !== tr) t.tbody.insertBefore(tr, t.tbody.rows[i] ?? null);
  });
  old.forEach((tr) => tr.remove());
  t.empty.hidden = items.length > 0;
}

/** A column filler that sets the cell's content to `render(item)`, unless
 *  it is already that (a refresh leaves unchanged links alone). */
const text = (render) => (td, item) => {
  const fresh = nodes([render(item)]);
  const same = fresh.length === td.childNodes.length
    && fresh.every((n, i) => n.isEqualNode(td.childNodes[i]));
  if (!same) td.replaceChildren(...fresh);
};

/** The item each button cell's row shows now. */
const cellItems = new WeakMap();

/** A column filler with one button, shown when `visible(item)`; the button
 *  is kept across refreshes and acts on the row's current item. */
const buttonCell = (cls, label, visible, onClick) => (td, item) => {
  cellItems.set(td, item);
  let button = td.querySelector('button');
  if (!visible(item)) {
    button?.remove();
    return;
  }
  if (!button) {
    button = el('button', {
      type: 'button',
      class: cls,
      onclick: (event) => { event.stopPropagation(); onClick(cellItems.get(td)); },
    }, label);
    td.replaceChildren(button);
  }
};

/** Sets a select's options (`[value, label]`) unless they are already
 *  those, keeping the choice when it is still there. */
function setOptions(select, options) {
  const now = [...select.options].map((o) => o.value).join('\n');
  if (now === options.map(([v]) => v).join('\n')) return;
  const chosen = select.value;
  select.replaceChildren(...options.map(([value, label]) => el('option', { value }, label)));
  if (options.some(([v]) => v === chosen)) select.value = chosen;
}

function section(title, ...children) {
  return el('section', null, title ? el('h2', null, title) : null, children);
}

// ------------------------------------------------------------- charts

/** An empty chart for `series`; `drawChart` fills it. */
function chart(series, width = 120, height = 24) {
  return svgEl('svg', {
    class: `chart chart-${series}`, 'data-series': series, 'data-total': '0',
    width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': series,
  });
}

/** Draws `values` (nulls are gaps) as a line scaled to their maximum, and
 *  sets `data-total` to their sum. */
function drawChart(svg, values) {
  const width = Number(svg.getAttribute('width'));
  const height = Number(svg.getAttribute('height'));
  const max = Math.max(0, ...values.filter((v) => v != null));
  const total = sum(values);
  svg.setAttribute('data-total', String(Math.round(total * 1000) / 1000));
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const y = (v) => (height - 1.5 - (max > 0 ? (v / max) * (height - 3) : 0)).toFixed(1);
  let d = '';
  let pen = false;
  const dots = [];
  values.forEach((v, i) => {
    if (v == null) { pen = false; return; }
    const x = (i * step).toFixed(1);
    d += `${pen ? 'L' : 'M'}${x} ${y(v)}`;
    // A point with no neighbour would draw nothing: a dot.
    if (!pen && values[i + 1] == null) dots.push(svgEl('circle', { cx: x, cy: y(v), r: 1.75 }));
    pen = true;
  });
  const series = svg.dataset.series;
  const title = svgEl('title', null, `${series}: max ${Math.round(max * 100) / 100}`
    + (series === 'p99' ? ' ms' : `, total ${Math.round(total * 100) / 100}`));
  svg.replaceChildren(title, svgEl('line', { class: 'base', x1: 0, x2: width, y1: height - 0.5, y2: height - 0.5 }),
    svgEl('path', { d: d || 'M0 0' }), ...dots);
}

/** Fills a cell with a number and a chart of `series`; later fills update
 *  both in place. */
function fillMetric(td, series, { value, values }) {
  let [num, svg] = td.children;
  if (!svg) {
    num = el('span', { class: 'num' });
    svg = chart(series);
    td.replaceChildren(num, svg);
  }
  num.textContent = value;
  drawChart(svg, values);
}

/** What the overview shows of one function's stats. */
function metrics(s, step) {
  if (!s) {
    const none = { value: '–', values: [] };
    return { rps: none, errors: none, p99: none };
  }
  const recent = s.requests.slice(-5);
  const requests = sum(s.requests);
  const errors = sum(s.errors);
  const lastP99 = [...s.p99_ms].reverse().find((v) => v != null);
  return {
    rps: { value: fmtRate(sum(recent) / (recent.length * step || 1)), values: s.requests },
    errors: { value: requests ? `${((errors / requests) * 100).toFixed(errors ? 1 : 0)}%` : '–', values: s.errors },
    p99: { value: lastP99 == null ? '–' : `${lastP99.toFixed(lastP99 < 10 ? 1 : 0)} ms`, values: s.p99_ms },
  };
}

// ------------------------------------------------------------- functions

/** Every function the token may see: the list, or for a token that may
 *  not list (deploy:NAME, invoke:NAME), the functions its scopes name. */
async function listFunctions(signal) {
  if (can.readAll()) return get('/v1/functions', signal);
  const found = [];
  await eachLimited(scopedFunctions(), 4, async (name) => {
    if (!can.readFunction(name)) { found.push({ name, routes: [], active_version: null }); return; }
    try {
      found.push(await get(fnPath(name), signal));
    } catch (err) {
      if (err.status !== 404) throw err;
    }
  });
  return found.sort((a, b) => a.name.localeCompare(b.name));
}

/** Kinds by `name@version`: the list does not carry them, a function's
 *  details do; fetched once per active version, after the table shows. */
const kinds = new Map();

async function overviewPage(main, p) {
  const t = table('functions', ['Function', 'Kind', 'Version', 'Routes', 'req/s (5 min)', 'Errors (1 h)', 'p99'],
    'No functions deployed. Deploy one with `wisp deploy NAME FILE.wasm`.');
  t.table.classList.add('overview');
  main.append(el('h1', null, 'Functions'), t.node);
  let step = 60;
  const columns = [
    ['name', text((f) => el('a', { class: 'function-link', href: `#/functions/${encodeURIComponent(f.name)}` }, f.name))],
    ['kind', text((f) => f.kind ?? kinds.get(`${f.name}@${f.active_version}`) ?? '')],
    ['version', text((f) => f.active_version ?? '')],
    ['routes', text((f) => [...(f.routes ?? []), ...(f.hosts ?? []).map((h) => `@${h}`)].join(' '))],
    ['rps', (td, f) => fillMetric(td, 'requests', f.metrics.rps)],
    ['errors', (td, f) => fillMetric(td, 'errors', f.metrics.errors)],
    ['p99', (td, f) => fillMetric(td, 'p99', f.metrics.p99)],
  ];
  const refresh = async () => {
    const [functions, stats] = await Promise.all([
      listFunctions(p.signal),
      get('/v1/stats?step=60', p.signal).catch((err) => { setError(err); return null; }),
    ]);
    if (p.signal.aborted) return;
    step = stats?.step_seconds ?? step;
    const byName = new Map((stats?.functions ?? []).map((s) => [s.function, s]));
    for (const f of functions) f.metrics = metrics(byName.get(f.name), step);
    syncRows(t, functions, 'data-function', (f) => f.name, columns);
    fillKinds(t, functions, p.signal);
  };
  await refresh();
  p.every(10000, () => refresh().catch(setError));
}

/** Fetches the kinds the overview lacks, a few at a time, and fills them in. */
async function fillKinds(t, functions, signal) {
  const missing = functions.filter((f) => !f.kind && f.active_version != null
    && !kinds.has(`${f.name}@${f.active_version}`) && can.readFunction(f.name));
  await eachLimited(missing, 4, async (f) => {
    try {
      const info = await get(fnPath(f.name), signal);
      kinds.set(`${f.name}@${info.active_version}`, info.kind ?? '');
      const cell = t.tbody.querySelector(`tr[data-function="${CSS.escape(f.name)}"] td.kind`);
      if (cell && info.active_version === f.active_version) cell.textContent = info.kind ?? '';
    } catch {
      // a function deleted meanwhile: the next refresh drops its row
    }
  });
}

// ------------------------------------------------------------- function page

async function functionPage(main, p, name) {
  if (!name) { location.hash = '#/'; return; }
  const mayRead = can.readFunction(name);
  const head = el('div', { class: 'page-head' },
    el('h1', { id: 'function-name' }, name),
    el('a', { id: 'function-logs', href: `#/logs/${encodeURIComponent(name)}` }, 'Live logs →'));
  main.append(head);
  if (!mayRead) {
    // An invoke-only token: nothing to read, one thing to do.
    if (can.invoke(name)) main.append(invokeSection(name));
    return;
  }
  const info = el('dl', { class: 'info' });
  const versions = table('versions', ['Version', 'Created', 'Size', 'sha256', 'Routes', ''], 'No versions.');
  const charts = el('div', { class: 'charts' });
  const left = el('div', null, section('Function', info), section('Versions', versions.node));
  const right = el('div', null, section('Last hour', charts));
  main.append(el('div', { class: 'columns' }, left, right));
  const reload = async () => {
    const f = await get(fnPath(name), p.signal);
    if (p.signal.aborted) return;
    kinds.set(`${name}@${f.active_version}`, f.kind ?? '');
    fillInfo(info, f);
    fillVersions(versions, name, f, reload);
  };
  await reload();
  left.append(settingsSection(name, p), kvSection(name, p));
  if (can.invoke(name)) right.append(invokeSection(name));
  if (can.deploy(name)) right.append(deploySection(name, reload));
  const drawStats = async () => {
    const s = await get(`${fnPath(name)}/stats?step=10`, p.signal);
    if (!p.signal.aborted) fillCharts(charts, s);
  };
  drawStats().catch(setError);
  p.every(10000, () => drawStats().catch(setError));
}

function fillInfo(dl, f) {
  const limits = f.limits ?? {};
  const limitText = [
    `timeout ${limits.timeout_ms} ms`,
    `memory ${fmtBytes(limits.memory_bytes)}`,
    `body ${fmtBytes(limits.max_body_bytes)}`,
    `concurrency ${f.effective_concurrency || limits.concurrency || '–'}`,
    limits.queue ? `queue ${limits.queue}` : null,
  ].filter(Boolean).join(', ');
  const row = (label, id, value) => [el('dt', null, label), el('dd', { id }, value)];
  dl.replaceChildren(...nodes([
    row('Kind', 'function-kind', [f.kind ?? 'not loaded', f.engine ? ` (${f.engine})` : '']),
    row('Handles', 'function-handlers', (f.handlers ?? []).join(', ') || '–'),
    row('Active version', 'function-version', String(f.active_version)),
    row('Routes', 'function-routes', [...f.routes, ...(f.hosts ?? []).map((h) => `@${h}`)].join(' ') || 'none'),
    row('Limits', 'function-limits', limitText),
    row('Auth', 'function-auth', f.auth ?? 'public'),
    row('Updated', 'function-updated', fmtTime(Date.parse(f.updated_at))),
  ]));
}

function fillVersions(t, name, f, reload) {
  const rows = [...f.versions].reverse();
  syncRows(t, rows, 'data-version', (v) => v.version, [
    ['version', text((v) => (v.active ? `${v.version} (active)` : v.version))],
    ['created', text((v) => fmtTime(Date.parse(v.created_at)))],
    ['size', text((v) => fmtBytes(v.size_bytes))],
    ['sha', text((v) => el('code', { title: v.sha256 }, v.sha256.slice(0, 12)))],
    ['routes', text((v) => v.routes.join(' '))],
    ['actions', buttonCell('rollback', 'Roll back', (v) => !v.active && can.deploy(name),
      (v) => rollback(name, v.version, reload))],
  ], (tr, v) => tr.classList.toggle('active', v.active));
}

async function rollback(name, version, reload) {
  await act(() => api('POST', `${fnPath(name)}/rollback`, { json: { version } }),
    (f) => `${name}: version ${f.active_version} is active`);
  await reload().catch(setError);
}

function fillCharts(box, s) {
  const step = s.step_seconds;
  const charts = [
    ['requests', `requests per ${step} s`, s.requests],
    ['errors', `errors (5xx) per ${step} s`, s.errors],
    ['p99', 'p99 latency, ms', s.p99_ms],
  ];
  if (!box.children.length) {
    box.append(...charts.map(([series, label]) => el('figure', null,
      chart(series, 560, 48), el('figcaption', null, label, el('span', { class: 'max' })))));
  }
  charts.forEach(([series, , values], i) => {
    const fig = box.children[i];
    drawChart(fig.querySelector('svg'), values);
    const max = Math.max(0, ...values.filter((v) => v != null));
    // A total of latencies means nothing to a reader (data-total keeps it).
    const total = series === 'p99' ? '' : `, total ${Math.round(sum(values) * 10) / 10}`;
    fig.querySelector('.max').textContent = ` — max ${Math.round(max * 10) / 10}${total}`;
  });
}

// ---- settings

function settingsSection(name, p) {
  const t = table('settings', ['Key', 'Value', 'Kind', ''], 'No settings.');
  const box = section('Settings', t.node);
  const render = (list) => syncRows(t, list.entries, 'data-key', (e) => e.key, [
    ['key', text((e) => e.key)],
    ['value', text((e) => (e.secret ? MASK : e.value))],
    ['kind', text((e) => (e.secret ? 'secret' : 'setting'))],
    ['actions', buttonCell('unset', 'Unset', () => can.deploy(name), (e) => unset(e.key))],
  ]);
  const path = `${fnPath(name)}/config`;
  const unset = async (key) => {
    const list = await act(() => api('DELETE', `${path}/${encodeURIComponent(key)}`), `unset ${key}`);
    if (list) render(list);
  };
  if (can.deploy(name)) {
    const form = el('form', { id: 'setting-form', class: 'inline', autocomplete: 'off' },
      el('input', { id: 'setting-key', placeholder: 'KEY', required: true, 'aria-label': 'key' }),
      el('input', { id: 'setting-value', placeholder: 'value', 'aria-label': 'value' }),
      el('label', null, el('input', { id: 'setting-secret', type: 'checkbox' }), ' secret'),
      el('button', { id: 'setting-submit', type: 'submit' }, 'Set'));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const key = $('#setting-key', form).value.trim();
      const value = $('#setting-value', form).value;
      const secret = $('#setting-secret', form).checked;
      const list = await act(() => api('PUT', path, { json: { values: { [key]: value }, secret } }),
        `set ${secret ? 'secret' : 'setting'} ${key}`);
      if (list) {
        render(list);
        form.reset();
      }
    });
    box.append(form);
  }
  get(path, p.signal).then(render, setError);
  return box;
}

// ---- key-value

function kvSection(name, p) {
  const t = table('kv-entries', ['Key', 'Value'], 'No keys.');
  const prefix = el('input', { id: 'kv-prefix', type: 'search', placeholder: 'key prefix', 'aria-label': 'key prefix' });
  const more = el('button', { type: 'button', id: 'kv-more', hidden: true }, 'More');
  let keys = [];
  let cursor = null;
  let generation = 0;
  const load = async (append) => {
    const mine = ++generation;
    const q = new URLSearchParams({ prefix: prefix.value, limit: '50' });
    if (append && cursor) q.set('cursor', cursor);
    const page = await get(`${fnPath(name)}/kv?${q}`, p.signal);
    if (mine !== generation) return;
    keys = append ? [...keys, ...page.keys] : page.keys;
    cursor = page.cursor ?? null;
    more.hidden = !cursor;
    syncRows(t, keys, 'data-key', (k) => k, [
      ['key', text((k) => k)],
      ['value', () => {}],
    ]);
    await eachLimited(page.keys, 4, async (key) => {
      const value = await kvValue(name, key, p.signal).catch((e) => `(${e.message})`);
      const td = t.tbody.querySelector(`tr[data-key="${CSS.escape(key)}"] td.value`);
      if (td && mine === generation) td.textContent = value;
    });
  };
  let timer;
  prefix.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => load(false).catch(setError), 200);
  });
  more.addEventListener('click', () => load(true).catch(setError));
  const reload = el('button', { type: 'button', id: 'kv-refresh', onclick: () => load(false).catch(setError) }, 'Refresh');
  load(false).catch(setError);
  return section('Key-value', el('div', { class: 'inline' }, prefix, reload), t.node, more);
}

/** A value as text: UTF-8 shown (cut), anything else as its size. */
async function kvValue(name, key, signal) {
  const resp = await fetch(`${fnPath(name)}/kv/${encodeURIComponent(key)}`, { headers: authHeaders(), signal });
  if (!resp.ok) throw apiErrorOf(resp.status, await resp.text());
  const bytes = new Uint8Array(await resp.arrayBuffer());
  const s = utf8(bytes, false);
  if (s == null) return `(${fmtBytes(bytes.byteLength)} of binary)`;
  return s.length > 300 ? `${s.slice(0, 300)}…` : s;
}

// ---- invoke

function invokeSection(name) {
  const method = el('select', { id: 'invoke-method', 'aria-label': 'method' },
    ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'].map((m) => el('option', { value: m }, m)));
  const path = el('input', { id: 'invoke-path', value: '/', 'aria-label': 'path and query' });
  const body = el('textarea', { id: 'invoke-body', rows: 3, placeholder: 'request body (not sent with GET or HEAD)', 'aria-label': 'body' });
  const status = el('span', { id: 'invoke-status' });
  const invocation = el('span', { id: 'invoke-invocation' });
  const output = el('pre', { id: 'invoke-output' });
  const form = el('form', { id: 'invoke-form', autocomplete: 'off' },
    el('div', { class: 'inline' }, method, path, el('button', { id: 'invoke-submit', type: 'submit' }, 'Invoke')),
    body, el('div', { class: 'result' }, status, ' ', invocation), output);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    status.textContent = '…';
    invocation.replaceChildren();
    output.textContent = '';
    try {
      const r = await invoke(name, method.value, path.value || '/', body.value);
      status.textContent = String(r.status);
      output.textContent = r.body;
      if (r.id) {
        invocation.append('invocation ', el('a', {
          href: `#/logs/${encodeURIComponent(name)}?invocation=${encodeURIComponent(r.id)}`,
        }, r.id));
      }
      if (r.error) setError(r.error); else setStatus(`invoked ${name}: ${r.status}`);
    } catch (err) {
      status.textContent = '';
      setError(err);
    }
  });
  return section('Invoke', form);
}

/** Invokes through the admin API; answers the function's status and body
 *  as text, and the API's own error (when the API refused or the function
 *  failed) for #error. */
async function invoke(name, method, path, body) {
  const withBody = !['GET', 'HEAD'].includes(method) && body !== '';
  const headers = authHeaders();
  if (withBody) headers['Content-Type'] = /^\s*[[{]/.test(body) ? 'application/json' : 'text/plain; charset=utf-8';
  const resp = await fetch(`${fnPath(name)}/invoke?path=${encodeURIComponent(path)}`, {
    method, headers, body: withBody ? body : undefined,
  });
  const { bytes, cut } = await readCapped(resp, MAX_OUTPUT_BYTES);
  let text = utf8(bytes, cut) ?? `(${fmtBytes(bytes.byteLength)} of binary)`;
  if (cut) text += `\n(cut: only the first ${fmtBytes(MAX_OUTPUT_BYTES)} are shown)`;
  let error = null;
  if (resp.status >= 400 && (resp.headers.get('content-type') ?? '').startsWith('application/json')) {
    const e = apiErrorOf(resp.status, text);
    if (e.code !== 'http') error = e;
  }
  return { status: resp.status, body: text, id: resp.headers.get('wisp-invocation-id'), error };
}

/** `bytes` as UTF-8 text, or null if they are not; a cut body may end
 *  inside a character (up to 3 bytes of it). */
function utf8(bytes, cut) {
  for (let drop = 0; drop <= (cut ? 3 : 0); drop += 1) {
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(0, bytes.length - drop));
    } catch {
      // not text, or a character cut: try one byte less
    }
  }
  return null;
}

/** The first `cap` bytes of a body (the rest is not read: a function may
 *  answer gigabytes), and whether there was more. */
async function readCapped(resp, cap) {
  const chunks = [];
  let size = 0;
  const reader = resp.body?.getReader();
  while (reader && size <= cap) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.byteLength;
  }
  const cut = size > cap;
  if (cut) reader.cancel();
  const bytes = new Uint8Array(Math.min(size, cap));
  let at = 0;
  for (const chunk of chunks) {
    const part = chunk.subarray(0, bytes.length - at);
    bytes.set(part, at);
    at += part.length;
  }
  return { bytes, cut };
}

// ---- deploy

function deploySection(name, reload) {
  const file = el('input', { id: 'deploy-file', type: 'file', accept: '.wasm,.cwasm,application/wasm', required: true, 'aria-label': 'component file' });
  const progress = el('progress', { id: 'deploy-progress', max: 1, value: 0 });
  const result = el('span', { id: 'deploy-result' });
  const submit = el('button', { id: 'deploy-submit', type: 'submit' }, 'Deploy');
  const form = el('form', { id: 'deploy-form', class: 'inline' }, file, submit, progress, result);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const chosen = file.files[0];
    if (!chosen) return;
    submit.disabled = true;
    result.textContent = 'uploading…';
    progress.value = 0;
    try {
      const f = await upload(fnPath(name), chosen, (done, total) => {
        progress.value = total ? done / total : 0;
        if (done === total) result.textContent = 'compiling…';
      });
      progress.value = 1;
      result.textContent = `deployed version ${f.active_version}`;
      setStatus(`${name}: deployed version ${f.active_version}`);
      await reload();
    } catch (err) {
      result.textContent = 'failed';
      setError(err);
    } finally {
      submit.disabled = false;
    }
  });
  return section('Deploy a new version', form,
    el('p', { class: 'hint' }, 'Uploads the component as a new version; it keeps the active version’s routes, environment and limits.'));
}

/** POSTs `file` as the body (as `wisp deploy` does: `application/wasm`,
 *  options in the query, none here so they are inherited), reporting
 *  progress; fetch() cannot report an upload's progress, XHR can. */
function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.setRequestHeader('Authorization', `Bearer ${session.token}`);
    xhr.setRequestHeader('Content-Type', 'application/wasm');
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : 0);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(JSON.parse(xhr.responseText));
      else reject(apiErrorOf(xhr.status, xhr.responseText));
    };
    xhr.onerror = () => reject(new Error('the upload failed: the connection was lost'));
    xhr.send(file);
  });
}

// ------------------------------------------------------------- live logs

async function logsPage(main, p, name, params) {
  const picker = el('select', { id: 'logs-function', 'aria-label': 'function' });
  const filter = el('input', {
    id: 'logs-invocation', type: 'search', placeholder: 'invocation id', value: params.get('invocation') ?? '', 'aria-label': 'invocation filter',
  });
  const state = el('span', { id: 'logs-state', class: 'state' });
  const lines = el('div', { id: 'log-lines', class: 'log' });
  main.append(el('div', { class: 'page-head' }, el('h1', null, 'Live logs'), picker, filter, state), lines);
  const go = () => {
    const q = filter.value.trim() ? `?invocation=${encodeURIComponent(filter.value.trim())}` : '';
    location.hash = `#/logs/${encodeURIComponent(picker.value)}${q}`;
  };
  picker.addEventListener('change', go);
  filter.addEventListener('change', go);

  const functions = await listFunctions(p.signal).catch((err) => { setError(err); return []; });
  const names = functions.map((f) => f.name).filter((n) => can.readFunction(n));
  if (name && !names.includes(name)) names.unshift(name);
  picker.append(...names.map((n) => el('option', { value: n }, n)));
  if (!name) {
    if (names.length) {
      location.replace(`#/logs/${encodeURIComponent(names[0])}`);
    } else {
      lines.append(el('p', { class: 'empty' }, 'No function to follow.'));
    }
    return;
  }
  picker.value = name;
  followLogs(name, params.get('invocation') ?? '', lines, state, p.signal);
}

/** Shows the last hour's lines, then follows the stream: opened first, its
 *  lines held until the history is shown, so none is lost or shown twice
 *  (by `seq`). After a failure, reconnects after a delay and reads what
 *  it missed. */
async function followLogs(name, invocation, box, state, signal) {
  let lastSeq = 0;
  let delay = 1000;
  const add = (entry) => {
    if (entry.seq && entry.seq <= lastSeq) return;
    if (entry.seq) lastSeq = entry.seq;
    box.append(logLine(entry, name));
    while (box.childElementCount > MAX_LOG_LINES) box.firstElementChild.remove();
    if (box.dataset.follow !== 'no') box.scrollTop = box.scrollHeight;
  };
  const note = (text) => box.append(el('div', { class: 'log-note' }, text));
  box.addEventListener('scroll', () => {
    box.dataset.follow = box.scrollTop + box.clientHeight >= box.scrollHeight - 4 ? 'yes' : 'no';
  });
  const q = (more) => {
    const params = new URLSearchParams(more);
    if (invocation) params.set('invocation', invocation);
    return params.toString();
  };
  while (!signal.aborted) {
    const held = [];
    let live = false;
    const onEntry = (entry) => (live ? add(entry) : held.push(entry));
    // One connection's lifetime: ended on a failure, or with the page.
    const conn = new AbortController();
    const leave = () => conn.abort();
    signal.addEventListener('abort', leave, { once: true });
    try {
      state.textContent = 'connecting…';
      const stream = await openStream(`${fnPath(name)}/logs/stream?${q({})}`, conn.signal, onEntry,
        (missed) => note(`(${missed} batches of lines missed: the view fell behind)`));
      stream.ended.catch(() => {}); // awaited below; not unhandled meanwhile
      const from = lastSeq ? { after: lastSeq, limit: 1000 } : { since: '1h', limit: 200 };
      await readBacklog(name, q(from), add, note, conn.signal);
      held.forEach(add);
      live = true;
      state.textContent = 'live';
      delay = 1000;
      await stream.ended;
      throw new Error('the log stream ended');
    } catch (err) {
      if (signal.aborted) return;
      state.textContent = `reconnecting in ${delay / 1000} s`;
      if (err instanceof ApiError) setError(err);
      conn.abort();
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 15000);
    } finally {
      signal.removeEventListener('abort', leave);
    }
  }
}

/** Reads the log from `query` on to its end, page after page (the API
 *  reads oldest first), and shows the newest MAX_LOG_LINES lines. A log
 *  too long to read to its end in a few pages shows what was read and
 *  says lines were skipped (the stream's lines follow). */
async function readBacklog(name, query, add, note, signal) {
  let params = new URLSearchParams(query);
  let entries = [];
  for (let pages = 0; ; pages += 1) {
    const page = await get(`${fnPath(name)}/logs?${params}`, signal);
    entries = entries.concat(page.entries).slice(-MAX_LOG_LINES);
    const limit = Number(params.get('limit'));
    if (page.entries.length < limit || page.cursor == null) break;
    if (pages === 4) {
      entries.forEach(add);
      note('(more lines than can be shown: the view goes on with new lines)');
      return;
    }
    params = new URLSearchParams(params);
    params.delete('since');
    params.set('after', page.cursor);
    params.set('limit', '5000');
  }
  entries.forEach(add);
}

function logLine(entry, name) {
  const level = entry.level ?? '';
  return el('div', { class: `log-line stream-${entry.stream} ${level ? `level-${level}` : ''}`, 'data-invocation': entry.invocation_id },
    el('span', { class: 'time' }, fmtTime(entry.time_ms).slice(11)),
    el('span', { class: 'stream' }, level || entry.stream),
    el('a', { class: 'invocation', href: `#/logs/${encodeURIComponent(name)}?invocation=${encodeURIComponent(entry.invocation_id)}`, title: entry.invocation_id }, entry.invocation_id.slice(-8)),
    el('span', { class: 'message' }, entry.message));
}

/** Opens the SSE stream with fetch (a bearer header, which EventSource
 *  cannot send); resolves, once the answer's head is in, to `{ ended }`,
 *  a promise that settles when the stream ends. */
async function openStream(path, signal, onEntry, onLagged) {
  const resp = await fetch(path, { headers: { ...authHeaders(), Accept: 'text/event-stream' }, signal });
  if (!resp.ok) {
    const err = apiErrorOf(resp.status, await resp.text());
    if (resp.status === 401) signOut(err.message);
    throw err;
  }
  // Wrapped: an async function returning the promise itself would wait
  // for the stream's end.
  const ended = readEvents(resp.body.getReader(), (event, data) => {
    if (event === 'line') onEntry(JSON.parse(data));
    else if (event === 'lagged') onLagged(JSON.parse(data).missed);
  });
  return { ended };
}

/** Parses server-sent events (`event:`, `data:` lines, a blank line ends
 *  one; `:` lines are comments) and calls `onEvent(event, data)`. */
async function readEvents(reader, onEvent) {
  const decoder = new TextDecoder();
  let buffer = '';
  let event = 'message';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === '') {
        if (data.length) onEvent(event, data.join('\n'));
        event = 'message';
        data = [];
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') event = value;
        else if (field === 'data') data.push(value);
      }
    }
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const id = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(id); resolve(); }, { once: true });
  });
}

// ------------------------------------------------------------- events

async function eventsPage(main, p) {
  const topics = table('topics', ['Topic', 'Subscribers', 'Dead letters'], 'No topics: nothing subscribes yet.');
  const subs = table('subscriptions', ['Function', 'Topic', 'Path', 'Concurrency', 'Attempts', 'Created', 'Dead letters'], 'No subscriptions.');
  const picker = el('select', { id: 'dlq-function', 'aria-label': 'function' }, el('option', { value: '' }, 'every function'));
  const dead = table('dead-letters', ['Event', 'Function', 'Topic', 'Attempts', 'Last error', 'Due', ''], 'No dead letters.');
  const admin = can.admin();
  const redriveAll = el('button', { id: 'redrive-all', type: 'button', hidden: !admin }, 'Redrive all');
  const purge = el('button', { id: 'purge-dead-letters', type: 'button', class: 'danger', hidden: !admin }, 'Purge');
  main.append(el('h1', null, 'Events'),
    el('div', { class: 'columns wide-right' }, section('Topics', topics.node), section('Subscriptions', subs.node)),
    section('Dead letters', el('div', { class: 'inline' }, picker, redriveAll, purge), dead.node));

  let functions = [];
  let subscriptions = [];
  let letters = [];
  const inView = () => (picker.value ? [picker.value] : functions);
  const deadOf = (match) => letters.filter(match).length;
  const render = () => {
    const names = [...new Set(subscriptions.map((s) => s.topic))].sort();
    syncRows(topics, names, 'data-topic', (t) => t, [
      ['topic', text((t) => t)],
      ['subscribers', text((t) => subscriptions.filter((s) => s.topic === t).length)],
      ['dead', text((t) => deadOf((d) => d.topic === t))],
    ]);
    syncRows(subs, subscriptions, 'data-subscription', (s) => `${s.function}/${s.topic}`, [
      ['function', text((s) => el('a', { href: `#/functions/${encodeURIComponent(s.function)}` }, s.function))],
      ['topic', text((s) => s.topic)],
      ['path', text((s) => s.path)],
      ['concurrency', text((s) => s.concurrency)],
      ['attempts', text((s) => s.retry?.max_attempts ?? '')],
      ['created', text((s) => fmtTime(s.created_at_ms))],
      ['dead', text((s) => (inView().includes(s.function) ? deadOf((d) => d.function === s.function && d.topic === s.topic) : ''))],
    ]);
    // One event may be dead for two functions: rows are keyed by both.
    syncRows(dead, letters, 'data-row', (d) => `${d.function}/${d.event_id}`, [
      ['event', text((d) => d.event_id)],
      ['function', text((d) => d.function)],
      ['topic', text((d) => d.topic)],
      ['attempts', text((d) => d.attempts)],
      ['error', text((d) => d.last_error ?? '')],
      ['due', text((d) => fmtTime(d.due_ms))],
      ['actions', buttonCell('redrive', 'Redrive', () => admin,
        (d) => redrive(d.function, { topic: d.topic, ids: [d.event_id] }))],
    ], (tr, d) => {
      tr.setAttribute('data-dead-letter', d.event_id);
      tr.setAttribute('data-function', d.function);
    });
  };
  const loadDead = async () => {
    const found = [];
    await eachLimited(inView(), 6, async (f) => {
      try {
        found.push(...await get(`${fnPath(f)}/dlq?limit=1000`, p.signal));
      } catch (err) {
        if (err.status !== 404) throw err;
      }
    });
    if (p.signal.aborted) return;
    letters = found.sort((a, b) => a.due_ms - b.due_ms);
    render();
  };
  const redrive = async (f, body) => {
    await act(() => api('POST', `${fnPath(f)}/dlq/redrive`, { json: body }),
      (r) => `redriven ${r.redriven.length} dead ${r.redriven.length === 1 ? 'letter' : 'letters'}`);
    await loadDead().catch(setError);
  };
  const withDead = () => [...new Set(letters.map((d) => d.function))];
  redriveAll.addEventListener('click', async () => {
    let n = 0;
    await act(async () => {
      for (const f of withDead()) n += (await api('POST', `${fnPath(f)}/dlq/redrive`, { json: {} })).redriven.length;
    }, () => `redriven ${n} dead ${n === 1 ? 'letter' : 'letters'}`);
    await loadDead().catch(setError);
  });
  purge.addEventListener('click', async () => {
    let n = 0;
    await act(async () => {
      for (const f of withDead()) n += (await api('DELETE', `${fnPath(f)}/dlq`)).purged;
    }, () => `purged ${n} dead ${n === 1 ? 'letter' : 'letters'}`);
    await loadDead().catch(setError);
  });
  picker.addEventListener('change', () => loadDead().catch(setError));

  const refresh = async () => {
    const [list, all] = await Promise.all([get('/v1/subscriptions', p.signal), listFunctions(p.signal)]);
    if (p.signal.aborted) return;
    subscriptions = list;
    functions = all.map((f) => f.name);
    setOptions(picker, [['', 'every function'], ...functions.map((n) => [n, n])]);
    await loadDead();
  };
  await refresh();
  p.every(10000, () => refresh().catch(setError));
}

// ------------------------------------------------------------- schedules

async function schedulesPage(main, p) {
  const t = table('schedules', ['Id', 'Function', 'Cron', 'Time zone', 'Path', 'Next tick', 'Last tick', ''], 'No schedules.');
  main.append(el('h1', null, 'Schedules'), section(null, t.node));
  const functionPicker = el('select', { id: 'schedule-function', required: true, 'aria-label': 'function' });
  if (can.admin()) {
    const form = el('form', { id: 'schedule-form', class: 'inline', autocomplete: 'off' },
      functionPicker,
      el('input', { id: 'schedule-cron', placeholder: '*/5 * * * *', required: true, 'aria-label': 'cron expression' }),
      el('input', { id: 'schedule-tz', placeholder: 'UTC', 'aria-label': 'time zone' }),
      el('input', { id: 'schedule-path', placeholder: '/', 'aria-label': 'path' }),
      el('input', { id: 'schedule-payload', placeholder: 'payload', 'aria-label': 'payload' }),
      el('button', { id: 'schedule-submit', type: 'submit' }, 'Add'));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const value = (id) => $(`#${id}`, form).value.trim() || undefined;
      const body = {
        function: functionPicker.value,
        cron: value('schedule-cron'),
        tz: value('schedule-tz'),
        path: value('schedule-path'),
        payload: $('#schedule-payload', form).value || undefined,
      };
      const s = await act(() => api('POST', '/v1/schedules', { json: body }), (r) => `added schedule ${r.id}`);
      if (s) { form.reset(); await refresh(); }
    });
    main.append(section('Add a schedule', form));
  }
  const remove = async (id) => {
    await act(() => api('DELETE', `/v1/schedules/${encodeURIComponent(id)}`), `deleted schedule ${id}`);
    await refresh().catch(setError);
  };
  const refresh = async () => {
    const list = await get('/v1/schedules', p.signal);
    if (p.signal.aborted) return;
    syncRows(t, list, 'data-schedule', (s) => s.id, [
      ['id', text((s) => s.id)],
      ['function', text((s) => el('a', { href: `#/functions/${encodeURIComponent(s.function)}` }, s.function))],
      ['cron', text((s) => el('code', null, s.cron))],
      ['tz', text((s) => s.tz)],
      ['path', text((s) => s.path)],
      ['next', text((s) => (s.next_ms ? `${fmtTime(s.next_ms)} (${fmtRelative(s.next_ms)})` : '–'))],
      ['last', text((s) => (s.last_fired_ms ? `${fmtTime(s.last_fired_ms)} (${fmtRelative(s.last_fired_ms)})` : 'never'))],
      ['actions', buttonCell('delete', 'Delete', () => can.admin(), (s) => remove(s.id))],
    ]);
  };
  if (can.admin()) {
    const functions = await listFunctions(p.signal);
    functionPicker.append(...functions.map((f) => el('option', { value: f.name }, f.name)));
  }
  await refresh();
  p.every(5000, () => refresh().catch(setError));
}

// ------------------------------------------------------------- jobs

async function jobsPage(main, p) {
  const t = table('jobs', ['Id', 'Function', 'Array', 'Progress', 'State', 'Done / dead / running / pending', 'Created', ''], 'No jobs.');
  t.table.classList.add('clickable');
  const detail = el('section', { id: 'job-indexes', hidden: true });
  main.append(el('h1', null, 'Jobs'), section(null, t.node), detail);
  let selected = null;
  const cancel = async (id) => {
    await act(() => api('POST', `/v1/jobs/${encodeURIComponent(id)}/cancel`), `cancelled job ${id}`);
    await refresh().catch(setError);
  };
  const showJob = async (id) => {
    const job = await get(`/v1/jobs/${encodeURIComponent(id)}`, p.signal);
    if (p.signal.aborted || selected !== id) return;
    fillJobDetail(detail, job);
  };
  const refresh = async () => {
    const list = await get('/v1/jobs', p.signal);
    if (p.signal.aborted) return;
    list.reverse();
    syncRows(t, list, 'data-job', (j) => j.id, [
      ['id', text((j) => j.id)],
      ['function', text((j) => j.function)],
      ['array', text((j) => j.array)],
      ['progress', (td, j) => {
        const finished = j.counts.done + j.counts.dead + j.counts.cancelled;
        let bar = td.querySelector('progress');
        if (!bar) { bar = el('progress'); td.replaceChildren(bar, el('span', { class: 'num' })); }
        bar.max = Math.max(j.size, 1);
        bar.value = finished;
        td.lastChild.textContent = ` ${finished}/${j.size}`;
      }],
      ['state', text((j) => j.state)],
      ['counts', text((j) => `${j.counts.done} / ${j.counts.dead} / ${j.counts.running} / ${j.counts.pending}`)],
      ['created', text((j) => fmtTime(j.created_ms))],
      ['actions', buttonCell('cancel', 'Cancel', (j) => j.state === 'running' && can.admin(),
        (j) => cancel(j.id))],
    ], (tr, j) => {
      tr.className = `state-${j.state}${j.id === selected ? ' selected' : ''}`;
    });
    if (selected) await showJob(selected);
  };
  t.tbody.addEventListener('click', (event) => {
    const tr = event.target.closest('tr[data-job]');
    if (!tr || event.target.closest('button')) return;
    selected = tr.getAttribute('data-job');
    for (const row of t.tbody.rows) row.classList.toggle('selected', row === tr);
    showJob(selected).catch(setError);
  });
  await refresh();
  p.every(3000, () => refresh().catch(setError));
}

function fillJobDetail(box, job) {
  const rows = job.tasks.map((task) => el('tr', { 'data-index': task.index, class: `status-${task.status}` },
    el('td', null, task.index), el('td', { class: 'state' }, task.status), el('td', null, task.attempts),
    el('td', null, task.last_error ?? '')));
  const cells = job.tasks.map((task) => el('span', { class: `cell status-${task.status}`, title: `${task.index}: ${task.status}` }));
  box.hidden = false;
  box.replaceChildren(
    el('h2', null, `Job ${job.id}: ${job.function}, ${job.size} indexes, ${job.state}`),
    el('div', { class: 'grid' }, cells),
    el('table', null, el('thead', null, el('tr', null, ['Index', 'State', 'Attempts', 'Last error'].map((h) => el('th', null, h)))),
      el('tbody', null, rows)));
}

// ------------------------------------------------------------- start

async function start() {
  setUpSignIn();
  window.addEventListener('hashchange', route);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return;
  $('#signin').hidden = true;
  try {
    await signIn(token);
  } catch (err) {
    signOut(err.message);
  }
}

start();
