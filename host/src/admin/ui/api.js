// Talking to the admin API: the session (token, scopes), calls whose
// failures carry the API's own message, the #status and #error lines,
// uploads with progress, and the log stream (server-sent events read with
// fetch, which can send the bearer header; EventSource cannot).

import { $, show } from './dom.js';

/** An answer of the admin API that is not a success: `message` is the
 *  API's own words. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Who is signed in: the token (also in sessionStorage), its name and
 *  scopes (from `GET /v1/whoami`). */
export const session = {
  token: null,
  name: '',
  scopes: [],
  /** Called with the API's message when the token is refused (401):
   *  the app signs out (set by app.js). */
  refused: () => {},
};

export function authHeaders() {
  return { Authorization: `Bearer ${session.token}` };
}

export const fnPath = (name) => `/v1/functions/${encodeURIComponent(name)}`;

/** Calls the API; answers the parsed JSON (null when empty), or throws
 *  an ApiError with the API's message. A 401 ends the session. */
export async function api(method, path, { json, signal, token } = {}) {
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
    if (resp.status === 401 && !token) session.refused(err.message);
    throw err;
  }
  return text ? JSON.parse(text) : null;
}

export function apiErrorOf(status, text) {
  try {
    const e = JSON.parse(text).error;
    if (typeof e?.message === 'string') return new ApiError(status, e.code, e.message);
  } catch {
    // not the API's JSON error: fall through
  }
  return new ApiError(status, 'http', `HTTP ${status}${text ? `: ${text.slice(0, 200)}` : ''}`);
}

export const get = (path, signal) => api('GET', path, { signal });

/** Shows the last action's success in #status (and clears #error). */
export function setStatus(text) {
  show($('#status'), text);
  show($('#error'), '');
}

/** Shows an error's message, as the API words it, in #error. */
export function setError(err) {
  // A page's request aborted by leaving it; or a 401 that signed out (its
  // message is in #signin-error).
  if (err?.name === 'AbortError' || !session.token) return;
  show($('#error'), err?.message ?? String(err));
  show($('#status'), '');
}

export function clearMessages() {
  show($('#status'), '');
  show($('#error'), '');
}

/** Runs an action of the user's: its success in #status, its failure (the
 *  API's message) in #error. */
export async function act(fn, success) {
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
export async function eachLimited(items, limit, task) {
  const queue = [...items];
  const workers = Array.from({ length: Math.min(limit, queue.length) }, async () => {
    while (queue.length) await task(queue.shift());
  });
  await Promise.all(workers);
}

const has = (scope) => session.scopes.includes(scope);

/** What the token may do (as host/src/auth/scope.rs decides): the pages
 *  leave out the controls it may not use. */
export const can = {
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

/** Every function the token may see: the list, or for a token that may
 *  not list (deploy:NAME, invoke:NAME), the functions its scopes name. */
export async function listFunctions(signal) {
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

/** `bytes` as UTF-8 text, or null if they are not; a cut body may end
 *  inside a character (up to 3 bytes of it). */
export function utf8(bytes, cut) {
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
export async function readCapped(resp, cap) {
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

/** POSTs `file` as the body (as `wisp deploy` does: `application/wasm`,
 *  options in the query, none here so they are inherited), reporting
 *  progress; fetch() cannot report an upload's progress, XHR can. */
export function upload(path, file, onProgress) {
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

/** Opens the SSE stream with fetch (a bearer header, which EventSource
 *  cannot send); resolves, once the answer's head is in, to `{ ended }`,
 *  a promise that settles when the stream ends. */
export async function openStream(path, signal, onEntry, onLagged) {
  const resp = await fetch(path, { headers: { ...authHeaders(), Accept: 'text/event-stream' }, signal });
  if (!resp.ok) {
    const err = apiErrorOf(resp.status, await resp.text());
    if (resp.status === 401) session.refused(err.message);
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

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const id = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(id); resolve(); }, { once: true });
  });
}
