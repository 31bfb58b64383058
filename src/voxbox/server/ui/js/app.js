// The page's entry point: navigation between pages, the API key, the server's readiness, and the
// shared look-ups (models, doctor report) the pages use.

import {api, getKey, onAuthNeeded, setKey} from './api.js';
import {$, $$} from './dom.js';
import * as speak from './speak.js';
import * as transcribe from './transcribe.js';
import * as voices from './voices.js';
import * as models from './models.js';
import * as machine from './machine.js';

const PAGES = {speak, transcribe, voices, models, machine};
const DEFAULT_PAGE = 'speak';

/** Shared, cached look-ups; `invalidate()` after the key changes or models are (un)loaded. */
class Context {
  constructor() { this.cache = new Map(); }

  once(name, fn) {
    if (!this.cache.has(name)) {
      const p = fn();
      p.catch(() => this.cache.delete(name)); // a failed look-up is retried next time
      this.cache.set(name, p);
    }
    return this.cache.get(name);
  }

  models() { return this.once('models', () => api('/v1/models').then((r) => r.data)); }

  /** What the server offers (GET /v1/server): capabilities, limits, engines. Cheap. */
  server() { return this.once('server', () => api('/v1/server')); }

  /** The hardware report (GET /v1/doctor): the first call makes the server detect the machine. */
  doctor() { return this.once('doctor', () => api('/v1/doctor')); }

  /** Engine name -> entry of the server's engine catalogue ({} when it is unavailable). */
  async engines() {
    try {
      const s = await this.server();
      return Object.fromEntries((s.engines || []).map((e) => [e.name, e]));
    } catch {
      return {};
    }
  }

  invalidate(...names) {
    if (!names.length) this.cache.clear();
    for (const n of names) this.cache.delete(n);
  }
}

const ctx = new Context();
const started = new Set();
let current = null;

function pageFromHash() {
  const name = (location.hash || '').replace(/^#\/?/, '');
  return PAGES[name] ? name : DEFAULT_PAGE;
}

async function show(name, {focus = false} = {}) {
  if (current && current !== name && PAGES[current].hide) PAGES[current].hide();
  current = name;
  for (const sec of $$('.page')) sec.hidden = sec.dataset.page !== name;
  for (const a of $$('[data-nav]')) {
    if (a.dataset.nav === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${$(`[data-nav="${name}"]`).textContent} · voxbox`;
  if (focus) $(`#page-${name} h1`).focus();
  const page = PAGES[name];
  if (!started.has(name)) {
    started.add(name);
    await page.init(ctx);
  }
  await page.show(ctx);
}

// -- API key -----------------------------------------------------------------------------------
function openKeyPanel(message) {
  const panel = $('#key-panel');
  if (message) $('#key-msg').textContent = `${message}. Enter the key the server was started with; it is kept in this browser tab only.`;
  panel.hidden = false;
  $('#key-open').setAttribute('aria-expanded', 'true');
  $('#key-input').focus();
}

function closeKeyPanel() {
  $('#key-panel').hidden = true;
  $('#key-open').setAttribute('aria-expanded', 'false');
}

function wireKey() {
  onAuthNeeded((message) => openKeyPanel(getKey() ? `The key was refused: ${message}` : 'This server needs an API key'));
  $('#key-open').addEventListener('click', () => ($('#key-panel').hidden ? openKeyPanel() : closeKeyPanel()));
  $('#key-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    setKey($('#key-input').value.trim());
    $('#key-input').value = '';
    closeKeyPanel();
    ctx.invalidate();
    await show(current || pageFromHash());
  });
  $('#key-forget').addEventListener('click', () => {
    setKey('');
    $('#key-input').value = '';
    ctx.invalidate();
  });
}

// -- readiness ---------------------------------------------------------------------------------
/** The header pill: loading / ready / unreachable, from GET /health/ready (no key needed). */
async function watchReady() {
  const pill = $('#server-status');
  for (;;) {
    let delay = 2000;
    try {
      const res = await fetch('/health/ready', {cache: 'no-store'});
      const body = await res.json().catch(() => ({}));
      if (res.ok) {
        pill.textContent = 'ready';
        pill.className = 'pill ok';
        pill.title = '';
        delay = 15000; // keep an eye on it: a stopped server shows up here
      } else {
        const msg = body.error ? body.error.message : '';
        pill.textContent = /shutting down/.test(msg) ? 'shutting down' : 'loading models…';
        pill.className = 'pill warn';
        pill.title = msg;
      }
    } catch {
      pill.textContent = 'server unreachable';
      pill.className = 'pill bad';
      delay = 5000;
    }
    await new Promise((r) => setTimeout(r, delay));
  }
}

function main() {
  wireKey();
  window.addEventListener('hashchange', () => show(pageFromHash(), {focus: true}));
  watchReady();
  show(pageFromHash());
  ctx.server().then((s) => { $('#version').textContent = s.version || ''; }).catch(() => {});
}

main();
