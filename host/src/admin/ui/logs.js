// The live log view `#/logs/NAME?invocation=ID`: the last hour's lines,
// then the stream's.

import { ApiError, can, fnPath, get, listFunctions, openStream, setError, sleep } from './api.js';
import { el, fmtTime } from './dom.js';

const MAX_LOG_LINES = 1000;

/** Renders `#/logs/NAME` (`params`: the hash's query) into `main`. */
export async function logsPage(main, p, name, params) {
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
