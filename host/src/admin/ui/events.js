// The event plane's pages: `#/events` (topics, subscriptions, dead
// letters), `#/schedules`, `#/jobs`.

import { act, api, can, eachLimited, fnPath, get, listFunctions, setError } from './api.js';
import { $, buttonCell, el, fmtRelative, fmtTime, section, setOptions, syncRows, table, text } from './dom.js';

/** `#/events`: topics and subscriptions; the dead letters of every
 *  function (or one), redrive one or all, purge. */
export async function eventsPage(main, p) {
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

/** `#/schedules`: next and last tick; add, delete. */
export async function schedulesPage(main, p) {
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

/** `#/jobs`: a progress bar per job, cancel; a click shows each index. */
export async function jobsPage(main, p) {
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
