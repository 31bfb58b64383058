// Small DOM helpers. Server data only ever reaches the page as text (textContent), never as HTML.

/** Build an element: h('td', {class: 'num'}, 'text', childNode, ...). `on*` attributes take functions. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** Show an error (an ApiError, Error or string) in an alert box; `null` hides the box. */
export function showError(box, err) {
  if (!err) {
    box.hidden = true;
    box.textContent = '';
    return;
  }
  box.textContent = '';
  const msg = typeof err === 'string' ? err : (err.message || String(err));
  box.append(h('strong', {}, err.status ? `Error ${err.status}: ` : 'Error: '), msg);
  if (err.code) box.append(' ', h('code', {}, `(${err.code})`));
  if (err.status === 429 && err.retryAfter) box.append(` Try again in ${err.retryAfter} s.`);
  box.hidden = false;
}

/** A <dl> of label/value pairs (values are text). */
export function stats(dl, pairs) {
  dl.textContent = '';
  for (const [label, value, testid] of pairs) {
    if (value === null || value === undefined) continue;
    dl.append(h('div', {}, h('dt', {}, label), h('dd', {dataset: testid ? {stat: testid} : undefined}, value)));
  }
}

/** Render Server-Timing stages as labelled bars. */
export function timingBars(box, stages) {
  box.textContent = '';
  const shown = stages.filter((s) => s.dur !== null && s.name !== 'total');
  const max = Math.max(1, ...shown.map((s) => s.dur));
  for (const s of shown) {
    box.append(
      h('span', {class: 'stage'}, s.name),
      h('span', {class: 'bar', dataset: {w: String(s.dur / max)}}),
      h('span', {class: 'ms'}, `${fmtMs(s.dur)}`),
    );
  }
  // Widths are set through the CSSOM (allowed under a strict style-src, unlike style="" attributes).
  for (const bar of box.querySelectorAll('.bar')) bar.style.width = `${Math.max(0.5, 100 * Number(bar.dataset.w))}%`;
  const total = stages.find((s) => s.name === 'total');
  // The header leaves with the first byte, so its total is the server's time to the first byte.
  if (total) {
    box.append(h('span', {class: 'stage', title: 'server time until the response started'}, h('strong', {}, 'total')),
      h('span', {class: 'muted'}, 'until the response started'), h('span', {class: 'ms'}, fmtMs(total.dur)));
  }
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '–';
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
}

export function fmtSeconds(s, digits = 2) {
  if (s === null || s === undefined || Number.isNaN(s)) return '–';
  return `${Number(s).toFixed(digits)} s`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** Trigger a download of a Blob under a file name. */
export function downloadBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h('a', {href: url, download: filename, hidden: true});
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** Set an <option> list: items are [value, label, disabled?] or {group, items}. */
export function fillSelect(select, items, keep = true) {
  const before = select.value;
  select.textContent = '';
  const add = (parent, [value, label, disabled]) => parent.append(h('option', {value, disabled: !!disabled}, label ?? value));
  for (const it of items) {
    if (it && it.group) {
      const g = h('optgroup', {label: it.group});
      it.items.forEach((x) => add(g, x));
      if (it.items.length) select.append(g);
    } else add(select, it);
  }
  if (keep && [...select.options].some((o) => o.value === before && !o.disabled)) select.value = before;
}

/** Give each body cell its column's name (data-label), so phones can show rows as cards. */
export function labelCells(table) {
  const names = [...table.querySelectorAll('thead th')].map((th) => th.textContent.trim());
  for (const tr of table.querySelectorAll('tbody tr')) {
    [...tr.children].forEach((cell, i) => {
      if (names[i] && !cell.hasAttribute('colspan')) cell.dataset.label = names[i];
    });
  }
  table.classList.add('cards');
  return table;
}
