// Models: the catalogue (GET /v1/models), load/unload, queue depth and running requests (/metrics),
// every engine with its install hint and the process memory (GET /v1/server), and the planned
// memory per engine from the doctor's plan (GET /v1/doctor, fetched once, after the table).

import {api, parseMetrics} from './api.js';
import {$, fmtBytes, h, labelCells, showError} from './dom.js';

const POLL_MS = 3000;
let ctxRef = null;
let timer = null;
let busy = false;
let doctor = null; // the report, once it has come
let last = {models: [], metrics: null};

export async function init(ctx) {
  ctxRef = ctx;
  $('#mo-refresh').addEventListener('click', () => refresh(true));
}

export async function show() {
  await refresh(true);
  clearInterval(timer);
  timer = setInterval(() => { if (!document.hidden) refresh(false); }, POLL_MS);
}

export function hide() { clearInterval(timer); timer = null; }

async function refresh(full) {
  if (busy) return;
  busy = true;
  const errBox = $('#mo-error');
  try {
    const [models, metrics, server] = await Promise.all([
      api('/v1/models').then((r) => r.data),
      api('/metrics').then(parseMetrics).catch(() => null),
      api('/v1/server').catch(() => null),
    ]);
    last = {models, metrics};
    renderModels(models, metrics);
    if (full) renderEngines(server);
    if (!doctor) {
      ctxRef.doctor().then((d) => { doctor = d; renderModels(last.models, last.metrics); }).catch(() => {});
    }
    const rss = server && server.process ? server.process.rss_bytes : null;
    $('#mo-process').textContent = rss ? `Server process memory (RSS): ${fmtBytes(rss)}.` : '';
    $('#mo-state').textContent = `updated ${new Date().toLocaleTimeString()}`;
    showError(errBox, null);
  } catch (e) {
    showError(errBox, e);
  } finally {
    busy = false;
  }
}

function gauge(metrics, name, label) {
  if (!metrics) return null;
  const m = metrics.find((s) => s.name === name && s.labels.model === label);
  return m ? m.value : 0;
}

function plannedBytes(engine) {
  const plan = doctor && doctor.plans ? doctor.plans[engine] : null;
  if (!plan) return null;
  const total = (plan.placements || []).reduce((n, p) => n + (p.bytes || 0), 0);
  const where = [...new Set((plan.placements || []).map((p) => p.device).filter(Boolean))].join(', ');
  return total ? `${fmtBytes(total)}${where ? ` on ${where}` : ''}` : null;
}

function renderModels(models, metrics) {
  const tbody = $('#mo-table tbody');
  tbody.textContent = '';
  for (const m of models) {
    // Metrics are labelled engine (bundled default) or engine:model.
    const label = m.id.includes(':') ? m.id : m.engine;
    const running = gauge(metrics, 'voxbox_running_requests', label);
    const queued = gauge(metrics, 'voxbox_queue_depth', label);
    const action = m.loaded
      ? h('button', {type: 'button', class: 'small', 'aria-label': `Unload ${m.id}`, onclick: () => act(m, 'DELETE')}, 'Unload')
      : h('button', {type: 'button', class: 'small', 'aria-label': `Load ${m.id}`, onclick: () => act(m, 'POST')}, 'Load');
    tbody.append(h('tr', {dataset: {model: m.id}},
      h('th', {scope: 'row'}, m.id),
      h('td', {}, m.task || ''),
      h('td', {}, m.engine || ''),
      h('td', {class: m.loaded ? 'yes' : 'muted'}, m.loaded ? 'loaded' : 'not loaded'),
      h('td', {}, plannedBytes(m.engine) || '–'),
      h('td', {class: 'num'}, running === null ? '–' : String(running)),
      h('td', {class: 'num'}, queued === null ? '–' : String(queued)),
      h('td', {}, action)));
  }
  labelCells($('#mo-table'));
}

function renderEngines(server) {
  const tbody = $('#mo-engines tbody');
  tbody.textContent = '';
  if (!server || !server.engines) {
    tbody.append(h('tr', {}, h('td', {colspan: 4, class: 'muted'}, 'The engine list needs GET /v1/server.')));
    return;
  }
  for (const e of server.engines) {
    const status = e.available
      ? h('span', {class: 'yes'}, e.bundled_model ? 'ready (bundled model)' : 'installed; needs local weights')
      : h('span', {}, h('span', {class: 'no'}, 'not installed'), h('br'), 'install: ', h('code', {}, e.install_hint));
    tbody.append(h('tr', {dataset: {engine: e.name}},
      h('th', {scope: 'row'}, e.name),
      h('td', {}, e.task),
      h('td', {}, status),
      h('td', {}, e.description, e.aliases.length ? h('div', {class: 'muted'}, `model ids: ${e.aliases.join(', ')}`) : null)));
  }
  labelCells($('#mo-engines'));
}

async function act(m, method) {
  const state = $('#mo-state');
  const verb = method === 'POST' ? 'loading' : 'unloading';
  state.textContent = `${verb} ${m.id}…`;
  try {
    const path = `/v1/models/${encodeURIComponent(m.id)}${method === 'POST' ? '/load' : ''}`;
    await api(path, {method});
    ctxRef.invalidate('models');
    await refresh(true);
  } catch (e) {
    state.textContent = '';
    showError($('#mo-error'), e);
  }
}
