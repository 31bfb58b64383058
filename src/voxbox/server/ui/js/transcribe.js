// Transcribe: a dropped/chosen file or a microphone recording -> POST /v1/audio/transcriptions.

import {api, curl, parseServerTiming} from './api.js';
import {Recorder, extensionFor} from './audio.js';
import {$, downloadBlob, fillSelect, fmtMs, fmtSeconds, h, labelCells, showError, stats, timingBars} from './dom.js';
import * as live from './live.js';

let file = null;     // {blob, name}
let last = null;     // {kind, text, ext}
let recorder = null;
let recTimer = null;

export async function init(ctx) {
  const input = $('#tr-file');
  input.addEventListener('change', () => {
    if (input.files && input.files[0]) choose(input.files[0], input.files[0].name);
  });
  const drop = $('#tr-drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    if (f) choose(f, f.name);
  });
  $('#tr-form').addEventListener('submit', (e) => { e.preventDefault(); run(); });
  $('#tr-record').addEventListener('click', toggleRecord);
  $('#tr-download').addEventListener('click', () => {
    if (last) downloadBlob(new Blob([last.text], {type: 'text/plain'}), `transcript.${last.ext}`);
  });
  for (const r of document.querySelectorAll('input[name="tr-out"]')) r.addEventListener('change', showCurl);
  if (!Recorder.supported()) {
    const btn = $('#tr-record');
    btn.disabled = true;
    btn.title = 'The microphone needs a secure page (https, or http://localhost / 127.0.0.1) and browser support.';
    $('#tr-rec-state').textContent = 'Recording needs https or localhost.';
  }
  await live.init(ctx);
}

export async function show(ctx) {
  try {
    const models = (await ctx.models()).filter((m) => m.task === 'asr');
    fillSelect($('#tr-model'), models.map((m) => [m.id, m.engine && m.engine !== m.id ? `${m.id} (${m.engine})` : m.id]));
    if (!models.length) throw new Error('No transcription model is available on this server (see the Models page).');
    showError($('#tr-error'), null);
  } catch (e) {
    showError($('#tr-error'), e);
  }
  await live.show(ctx);
  showCurl();
}

export function hide() { live.hide(); }

function choose(blob, name) {
  file = {blob, name};
  $('#tr-state').textContent = `${name} (${(blob.size / 1024).toFixed(0)} KiB)`;
  run();
}

function output() { return document.querySelector('input[name="tr-out"]:checked').value; }

function form() {
  const out = output();
  const fields = [['model', $('#tr-model').value]];
  fields.push(['response_format', {text: 'json', segments: 'verbose_json', srt: 'srt'}[out]]);
  if (out === 'segments') fields.push(['timestamp_granularities[]', 'segment']);
  const lang = $('#tr-language').value.trim();
  if (lang && lang !== 'auto') fields.push(['language', lang]);
  return fields;
}

function showCurl() {
  $('#tr-curl').textContent = curl('/v1/audio/transcriptions',
    {form: [['file', `@${file ? file.name : 'audio.wav'}`], ...form()]});
}

async function toggleRecord() {
  const btn = $('#tr-record');
  const st = $('#tr-rec-state');
  if (!recorder) {
    try {
      recorder = new Recorder();
      await recorder.start();
    } catch (e) {
      recorder = null;
      showError($('#tr-error'), `Cannot use the microphone: ${e.message || e}`);
      return;
    }
    btn.setAttribute('aria-pressed', 'true');
    btn.textContent = 'Stop recording';
    recTimer = setInterval(() => { st.textContent = `recording… ${((performance.now() - recorder.startedAt) / 1000).toFixed(0)} s`; }, 500);
    return;
  }
  clearInterval(recTimer);
  const blob = await recorder.stop();
  recorder = null;
  btn.setAttribute('aria-pressed', 'false');
  btn.textContent = 'Record from microphone';
  st.textContent = '';
  choose(blob, `recording.${extensionFor(blob.type)}`);
}

async function run() {
  const errBox = $('#tr-error');
  if (!file) { showError(errBox, 'Choose or drop an audio file, or record from the microphone.'); return; }
  showError(errBox, null);
  showCurl();
  const result = $('#tr-result');
  result.dataset.state = 'running';
  $('#tr-go').disabled = true;
  const state = $('#tr-state');
  state.textContent = `transcribing ${file.name}…`;
  const body = new FormData();
  body.append('file', file.blob, file.name);
  for (const [k, v] of form()) body.append(k, v);
  const out = output();
  const t0 = performance.now();
  try {
    const res = await api('/v1/audio/transcriptions', {method: 'POST', form: body, raw: true});
    const stages = parseServerTiming(res.headers.get('server-timing'));
    const payload = out === 'srt' ? await res.text() : await res.json();
    const ms = performance.now() - t0;
    render(out, payload);
    const duration = out === 'segments' ? payload.duration : null;
    stats($('#tr-stats'), [
      ['Audio', duration ? fmtSeconds(duration) : null, 'seconds'],
      ['Transcribed in', fmtMs(ms), 'total'],
      ['Speed', duration ? `${(duration / (ms / 1000)).toFixed(1)}× realtime` : null, 'xrt'],
      ['Language', payload.language || null, 'language'],
    ]);
    timingBars($('#tr-timing'), stages);
    result.hidden = false;
    result.dataset.state = 'done';
    state.textContent = `done: ${file.name}`;
  } catch (e) {
    result.dataset.state = 'error';
    state.textContent = '';
    showError(errBox, e);
  } finally {
    $('#tr-go').disabled = false;
  }
}

function render(out, payload) {
  const box = $('#tr-output');
  box.textContent = '';
  if (out === 'text') {
    box.append(h('p', {class: 'transcript', id: 'tr-text'}, payload.text));
    last = {text: payload.text, ext: 'txt'};
  } else if (out === 'srt') {
    box.append(h('pre', {id: 'tr-srt'}, payload));
    last = {text: payload, ext: 'srt'};
  } else {
    const rows = (payload.segments || []).map((s) => h('tr', {},
      h('td', {class: 'num'}, clock(s.start)), h('td', {class: 'num'}, clock(s.end)), h('td', {}, s.text.trim())));
    box.append(h('div', {class: 'scroll'}, h('table', {id: 'tr-segments', class: 'segments'},
      h('caption', {class: 'sr-only'}, 'Segments with timestamps'),
      h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Start'), h('th', {scope: 'col'}, 'End'), h('th', {scope: 'col'}, 'Text'))),
      h('tbody', {}, rows))));
    last = {text: JSON.stringify(payload, null, 2), ext: 'json'};
  }
}

function clock(s) {
  const m = Math.floor(s / 60);
  return `${m}:${(s - m * 60).toFixed(2).padStart(5, '0')}`;
}
