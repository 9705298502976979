// The function page `#/functions/NAME`: info, versions and rollback,
// charts, settings and secrets, key-value data, invoke, deploy.

import { act, api, apiErrorOf, authHeaders, can, eachLimited, fnPath, get, readCapped, setError, setStatus, upload, utf8 } from './api.js';
import { $, buttonCell, chart, drawChart, el, fmtBytes, fmtTime, nodes, section, sum, syncRows, table, text } from './dom.js';

const MASK = '••••••';

/** Most of a function's answer the invoke form shows. */
const MAX_OUTPUT_BYTES = 256 * 1024;

/** Renders `#/functions/NAME` into `main`; `p` is the page's lifetime
 *  (its abort signal and timers). */
export async function functionPage(main, p, name) {
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
  let shown = utf8(bytes, cut) ?? `(${fmtBytes(bytes.byteLength)} of binary)`;
  if (cut) shown += `\n(cut: only the first ${fmtBytes(MAX_OUTPUT_BYTES)} are shown)`;
  let error = null;
  if (resp.status >= 400 && (resp.headers.get('content-type') ?? '').startsWith('application/json')) {
    const e = apiErrorOf(resp.status, shown);
    if (e.code !== 'http') error = e;
  }
  return { status: resp.status, body: shown, id: resp.headers.get('wisp-invocation-id'), error };
}

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
