// Building the page: elements (text only, never markup), formatting,
// tables that keep their rows across refreshes, small SVG charts.

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Creates `tag` with `attrs` (`onclick` and the like are listeners, the
 *  others attributes; null and false are left out) and `children` (strings
 *  become text nodes). */
export function el(tag, attrs, ...children) {
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
export function nodes(children) {
  return children.flat(Infinity)
    .filter((c) => c != null && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
}

export const $ = (selector, root = document) => root.querySelector(selector);

const pad = (n) => String(n).padStart(2, '0');

export function fmtTime(ms) {
  if (!ms) return 'never';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtRelative(ms) {
  if (!ms) return '';
  const s = Math.round((ms - Date.now()) / 1000);
  const abs = Math.abs(s);
  const span = abs < 90 ? `${abs} s` : abs < 5400 ? `${Math.round(abs / 60)} min`
    : abs < 172800 ? `${Math.round(abs / 3600)} h` : `${Math.round(abs / 86400)} d`;
  return s >= 0 ? `in ${span}` : `${span} ago`;
}

export function fmtBytes(n) {
  if (n == null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

export function fmtRate(x) {
  if (x >= 100) return x.toFixed(0);
  if (x >= 1) return x.toFixed(1);
  return x.toFixed(2);
}

export const sum = (values) => values.reduce((a, v) => a + (v ?? 0), 0);

export function show(node, text) {
  node.textContent = text;
  node.hidden = !text;
}

/** A table with a head row and an empty body, and a line shown when it
 *  has no rows. */
export function table(id, headings, emptyText) {
  const tbody = el('tbody');
  const t = el('table', { id }, el('thead', null, el('tr', null, headings.map((h) => el('th', null, h)))), tbody);
  const empty = el('p', { class: 'empty', hidden: true }, emptyText);
  return { node: el('div', { class: 'table-wrap' }, t, empty), table: t, tbody, empty };
}

/** Makes `t`'s rows those of `items`, in order, keeping the row (and cell)
 *  elements of keys seen before: a periodic refresh does not replace what
 *  a user (or a test) is looking at. `columns` are `[class, fill(td, item)]`;
 *  `decorate(tr, item)` sets row attributes. */
export function syncRows(t, items, keyAttr, keyOf, columns, decorate) {
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
export const text = (render) => (td, item) => {
  const fresh = nodes([render(item)]);
  const same = fresh.length === td.childNodes.length
    && fresh.every((n, i) => n.isEqualNode(td.childNodes[i]));
  if (!same) td.replaceChildren(...fresh);
};

/** The item each button cell's row shows now. */
const cellItems = new WeakMap();

/** A column filler with one button, shown when `visible(item)`; the button
 *  is kept across refreshes and acts on the row's current item. */
export const buttonCell = (cls, label, visible, onClick) => (td, item) => {
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
export function setOptions(select, options) {
  const now = [...select.options].map((o) => o.value).join('\n');
  if (now === options.map(([v]) => v).join('\n')) return;
  const chosen = select.value;
  select.replaceChildren(...options.map(([value, label]) => el('option', { value }, label)));
  if (options.some(([v]) => v === chosen)) select.value = chosen;
}

export function section(title, ...children) {
  return el('section', null, title ? el('h2', null, title) : null, children);
}

/** An empty chart for `series`; `drawChart` fills it. */
export function chart(series, width = 120, height = 24) {
  return svgEl('svg', {
    class: `chart chart-${series}`, 'data-series': series, 'data-total': '0',
    width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': series,
  });
}

/** Draws `values` (nulls are gaps) as a line scaled to their maximum, and
 *  sets `data-total` to their sum. */
export function drawChart(svg, values) {
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
export function fillMetric(td, series, { value, values }) {
  let [num, svg] = td.children;
  if (!svg) {
    num = el('span', { class: 'num' });
    svg = chart(series);
    td.replaceChildren(num, svg);
  }
  num.textContent = value;
  drawChart(svg, values);
}
