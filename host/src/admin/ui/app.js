// The Wisp dashboard: plain JavaScript, no framework, no build step.
//
// Everything it shows comes from the admin API, called with the token the
// user signed in with (kept in this tab's sessionStorage, sent as a bearer
// header). Text that a guest or a client controls (names, log lines, error
// messages, outputs) is only ever set as text: every element is made by
// `el()`, which adds strings as text nodes; no markup is ever parsed.
//
// This module: sign-in, routing (hash routes) and the overview. The others:
// dom.js (elements, tables, charts), api.js (calls, session, messages, the
// log stream), function.js, logs.js and events.js (the other pages).

import { api, can, clearMessages, get, listFunctions, session, setError } from './api.js';
import { $, el, fillMetric, fmtRate, show, sum, syncRows, table, text } from './dom.js';
import { eventsPage, jobsPage, schedulesPage } from './events.js';
import { functionPage } from './function.js';
import { logsPage } from './logs.js';

const TOKEN_KEY = 'wisp-admin-token';

/** Asks the API who `token` is; only then keeps it and shows the app (a
 *  refused token throws the API's error, shown by the form). */
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

/** Forgets the token, stops the page (timers, the log stream) and shows
 *  the sign-in form, with `message` (why, when the API refused the token). */
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

/** Signed in: the header bar (the pages the token may use), then the page. */
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

/** `#/`: every function with its charts: the list and `/v1/stats` (one
 *  request for all), refreshed every 10 s. */
async function overviewPage(main, p) {
  const t = table('functions', ['Function', 'Kind', 'Version', 'Routes', 'req/s (5 min)', 'Errors (1 h)', 'p99'],
    'No functions deployed. Deploy one with `wisp deploy NAME FILE.wasm`.');
  t.table.classList.add('overview');
  main.append(el('h1', null, 'Functions'), t.node);
  let step = 60;
  const columns = [
    ['name', text((f) => el('a', { class: 'function-link', href: `#/functions/${encodeURIComponent(f.name)}` }, f.name))],
    ['kind', text((f) => f.kind ?? '')],
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
  };
  await refresh();
  p.every(10000, () => refresh().catch(setError));
}

async function start() {
  session.refused = signOut;
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
