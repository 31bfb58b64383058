// Voices: GET/POST /v1/voices, DELETE /v1/voices/{name}, GET /v1/voices/{name}/content.

import {api} from './api.js';
import {$, fmtSeconds, h, labelCells, showError} from './dom.js';

const OPENAI_VOICES = new Set(['alloy', 'ash', 'ballad', 'coral', 'echo', 'fable', 'onyx', 'nova', 'sage', 'shimmer',
  'verse', 'marin', 'cedar']);
let ctxRef = null;

export async function init(ctx) {
  ctxRef = ctx;
  $('#vo-form').addEventListener('submit', (e) => { e.preventDefault(); upload(); });
}

export async function show() { await refresh(); }

export function hide() { $('#vo-audio').pause(); }

async function refresh() {
  const errBox = $('#vo-error');
  try {
    const [list, engines] = await Promise.all([api('/v1/voices'), ctxRef.engines()]);
    const cloners = Object.values(engines).filter((e) => e.task === 'tts' && e.clones_voices);
    renderCloners(cloners);
    renderTable(list.data, cloners);
    showError(errBox, null);
  } catch (e) {
    showError(errBox, e);
  }
}

function renderCloners(cloners) {
  const p = $('#vo-cloners');
  p.textContent = '';
  if (!cloners.length) {
    p.textContent = 'Uploaded voices are used by models that clone voices; this server knows none.';
    return;
  }
  p.append('Uploaded voices are spoken by models that clone voices: ');
  cloners.forEach((e, i) => {
    if (i) p.append(', ');
    p.append(h('strong', {}, e.name), ` (${e.available ? 'installed; needs its weights directory' : 'not installed: '}`);
    if (!e.available) p.append(h('code', {}, e.install_hint));
    p.append(')');
  });
  p.append('. Built-in voices belong to the loaded speech models.');
}

function renderTable(voices, cloners) {
  const tbody = $('#vo-table tbody');
  tbody.textContent = '';
  if (!voices.length) {
    tbody.append(h('tr', {}, h('td', {colspan: 5, class: 'muted'}, 'No voices yet: load a speech model or upload a clip.')));
  }
  const usable = cloners.filter((e) => e.available).map((e) => e.name).join(', ') || 'no installed cloning engine';
  // OpenAI's voice names are aliases the models map onto their own voices: one row for all of them.
  const aliases = voices.filter((v) => v.type === 'builtin' && OPENAI_VOICES.has(v.name));
  const shown = [...voices.filter((v) => v.type === 'uploaded'), ...voices.filter((v) => v.type === 'builtin' && !OPENAI_VOICES.has(v.name))];
  for (const v of shown) {
    const actions = h('div', {class: 'row'},
      h('button', {type: 'button', class: 'small', 'aria-label': `Play ${v.name}`, onclick: () => play(v)}, 'Play'));
    if (v.type === 'uploaded') actions.append(deleteButton(v));
    tbody.append(h('tr', {dataset: {voice: v.name}},
      h('th', {scope: 'row'}, v.name, v.transcript ? h('div', {class: 'muted'}, `“${v.transcript}”`) : null),
      h('td', {}, v.type),
      h('td', {class: 'num'}, v.duration ? fmtSeconds(v.duration, 1) : '–'),
      h('td', {}, v.type === 'builtin' ? (v.models || []).join(', ') : usable),
      h('td', {}, actions)));
  }
  if (aliases.length) {
    const models = [...new Set(aliases.flatMap((v) => v.models || []))].join(', ');
    tbody.append(h('tr', {}, h('th', {scope: 'row'}, 'OpenAI names'), h('td', {}, 'alias'), h('td', {class: 'num'}, '–'),
      h('td', {}, `${aliases.map((v) => v.name).join(', ')} — mapped by ${models} onto its own voices`), h('td')));
  }
  labelCells($('#vo-table'));
}

function deleteButton(v) {
  let armed = null;
  const btn = h('button', {type: 'button', class: 'small danger', 'aria-label': `Delete ${v.name}`}, 'Delete');
  btn.addEventListener('click', async () => {
    if (!armed) { // two steps instead of a confirm() dialog: keyboard- and screen-reader-friendly
      btn.textContent = 'Really delete?';
      armed = setTimeout(() => { armed = null; btn.textContent = 'Delete'; }, 5000);
      return;
    }
    clearTimeout(armed);
    try {
      await api(`/v1/voices/${encodeURIComponent(v.name)}`, {method: 'DELETE'});
      $('#vo-state').textContent = `Deleted ${v.name}.`;
      await refresh();
    } catch (e) {
      showError($('#vo-error'), e);
    }
  });
  return btn;
}

async function play(v) {
  const audio = $('#vo-audio');
  try {
    let res;
    if (v.type === 'uploaded') {
      res = await api(`/v1/voices/${encodeURIComponent(v.name)}/content`, {raw: true});
    } else {
      const model = (v.models || [])[0];
      res = await api('/v1/audio/speech', {method: 'POST', raw: true,
        json: {model, voice: v.name, input: `Hello, this is the voice ${v.name}.`, response_format: 'wav'}});
    }
    const blob = await res.blob();
    if (audio.src) URL.revokeObjectURL(audio.src);
    audio.src = URL.createObjectURL(blob);
    audio.hidden = false;
    await audio.play().catch(() => {});
  } catch (e) {
    showError($('#vo-error'), e);
  }
}

async function upload() {
  const errBox = $('#vo-error');
  const state = $('#vo-state');
  const name = $('#vo-name').value.trim();
  const file = $('#vo-file').files[0];
  if (!file) { showError(errBox, 'Choose an audio clip.'); return; }
  const form = new FormData();
  form.append('name', name);
  form.append('file', file, file.name);
  const transcript = $('#vo-transcript').value.trim();
  if (transcript) form.append('transcript', transcript);
  $('#vo-go').disabled = true;
  state.textContent = 'uploading…';
  try {
    const v = await api('/v1/voices', {method: 'POST', form});
    showError(errBox, null);
    state.textContent = `Uploaded ${v.name} (${fmtSeconds(v.duration, 1)}).`;
    $('#vo-form').reset();
    await refresh();
  } catch (e) {
    state.textContent = '';
    showError(errBox, e);
  } finally {
    $('#vo-go').disabled = false;
  }
}
