// Speak: POST /v1/audio/speech with response_format "pcm", read as a stream and played as it arrives.

import {api, curl, parseServerTiming} from './api.js';
import {PcmPlayer} from './audio.js';
import {$, downloadBlob, fillSelect, fmtMs, fmtSeconds, showError, stats, timingBars} from './dom.js';

//: Names OpenAI clients send; voxbox models map them onto their own voices.
const OPENAI_VOICES = new Set(['alloy', 'ash', 'ballad', 'coral', 'echo', 'fable', 'onyx', 'nova', 'sage', 'shimmer',
  'verse', 'marin', 'cedar']);

const player = new PcmPlayer();
let abort = null;
let last = null; // {request, blob} of the last finished synthesis
let modelsById = {};
let ctxRef = null;

export async function init(ctx) {
  ctxRef = ctx;
  $('#speak-form').addEventListener('submit', (e) => { e.preventDefault(); run(); });
  $('#speak-text').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); }
  });
  $('#speak-stop').addEventListener('click', stop);
  $('#speak-model').addEventListener('change', () => loadVoices());
  const speed = $('#speak-speed');
  speed.addEventListener('input', () => { $('#speak-speed-out').textContent = `${Number(speed.value).toFixed(2)}×`; });
  $('#speak-download').addEventListener('click', download);
  $('#speak-format').addEventListener('change', () => {
    $('#speak-download').textContent = `Download .${$('#speak-format').value}`;
    showCurl();
  });
  $('#speak-download').textContent = `Download .${$('#speak-format').value}`;
}

export async function show(ctx) {
  const box = $('#speak-error');
  try {
    const models = (await ctx.models()).filter((m) => m.task === 'tts');
    modelsById = Object.fromEntries(models.map((m) => [m.id, m]));
    fillSelect($('#speak-model'), models.map((m) => [m.id, m.engine && m.engine !== m.id ? `${m.id} (${m.engine})` : m.id]));
    if (!models.length) throw new Error('No speech model is available on this server (see the Models page).');
    showError(box, null);
    await loadVoices();
  } catch (e) {
    showError(box, e);
  }
  showCurl();
}

export function hide() {}

async function loadVoices() {
  const model = $('#speak-model').value;
  if (!model) return;
  const sel = $('#speak-voice');
  sel.disabled = true;
  $('#speak-go').disabled = true;
  delete $('#speak-form').dataset.ready;
  $('#speak-state').textContent = 'loading voices…';
  try {
    const [list, engines] = await Promise.all([
      api(`/v1/voices?model=${encodeURIComponent(model)}`),
      ctxRef.engines(),
    ]);
    const m = modelsById[model] || {};
    const clones = engines[m.engine] ? engines[m.engine].clones_voices : true;
    const builtin = list.data.filter((v) => v.type === 'builtin');
    const uploaded = list.data.filter((v) => v.type === 'uploaded');
    fillSelect(sel, [
      {group: 'Voices of this model', items: builtin.filter((v) => !OPENAI_VOICES.has(v.name)).map((v) => [v.name])},
      {group: 'OpenAI voice names', items: builtin.filter((v) => OPENAI_VOICES.has(v.name)).map((v) => [v.name])},
      {group: clones ? 'Uploaded voices' : 'Uploaded voices (need a voice-cloning model)',
        items: uploaded.map((v) => [v.name, v.name, !clones])},
    ]);
    $('#speak-state').textContent = '';
    $('#speak-form').dataset.ready = 'true';
  } catch (e) {
    $('#speak-state').textContent = '';
    showError($('#speak-error'), e);
  } finally {
    sel.disabled = false;
    $('#speak-go').disabled = !!abort;
    showCurl();
  }
}

function request(format = 'pcm') {
  return {
    model: $('#speak-model').value,
    input: $('#speak-text').value,
    voice: $('#speak-voice').value,
    response_format: format,
    speed: Number($('#speak-speed').value),
  };
}

function showCurl() {
  const fmt = $('#speak-format').value;
  $('#speak-curl').textContent = curl('/v1/audio/speech', {json: request(fmt), output: `speech.${fmt}`});
}

function setBusy(busy) {
  $('#speak-go').disabled = busy;
  $('#speak-stop').disabled = !busy;
}

function stop() {
  if (abort) abort.abort();
  player.stop();
}

async function run() {
  if (abort) return;
  const errBox = $('#speak-error');
  const result = $('#speak-result');
  const audio = $('#speak-audio');
  const req = request('pcm');
  if (!req.input.trim()) { showError(errBox, 'Type some text to speak.'); return; }
  showError(errBox, null);
  showCurl();
  setBusy(true);
  const state = $('#speak-state');
  state.textContent = 'generating…';
  result.dataset.state = 'running';
  audio.pause();
  const live = await player.open();
  abort = new AbortController();
  const t0 = performance.now();
  let firstMs = null;
  let chunks = 0;
  let stages = [];
  try {
    const res = await api('/v1/audio/speech', {method: 'POST', json: req, raw: true, signal: abort.signal});
    stages = parseServerTiming(res.headers.get('server-timing'));
    const reader = res.body.getReader();
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      if (!value || !value.length) continue;
      if (firstMs === null) {
        firstMs = performance.now() - t0;
        result.hidden = false;
        state.textContent = live ? 'playing while generating…' : 'receiving…';
      }
      chunks += 1;
      player.push(value);
      render({firstMs, chunks, stages, totalMs: null, live});
    }
    const totalMs = performance.now() - t0;
    const blob = player.wavBlob();
    if (audio.src) URL.revokeObjectURL(audio.src);
    audio.src = URL.createObjectURL(blob);
    Object.assign(audio.dataset, {seconds: player.duration.toFixed(3), chunks: String(chunks),
      ttfaMs: firstMs === null ? '' : firstMs.toFixed(1), totalMs: totalMs.toFixed(1),
      firstPlayMs: player.firstPlayAt === null ? '' : (player.firstPlayAt - t0).toFixed(1)});
    last = {request: req, wav: blob, pcm: player.pcmBlob()};
    render({firstMs, chunks, stages, totalMs, live});
    result.hidden = false;
    result.dataset.state = 'done';
    state.textContent = player.duration ? `done: ${player.duration.toFixed(2)} s of audio` : 'done (no audio)';
    if (!live) audio.play().catch(() => {});
  } catch (e) {
    result.dataset.state = 'error';
    state.textContent = '';
    if (e.name === 'AbortError') state.textContent = 'stopped';
    else showError(errBox, e);
  } finally {
    abort = null;
    setBusy(false);
  }
}

function render({firstMs, chunks, stages, totalMs, live}) {
  const seconds = player.duration;
  const serverTtfa = (stages.find((s) => s.name === 'ttfa') || {}).dur;
  stats($('#speak-stats'), [
    ['Time to first audio', fmtMs(firstMs), 'ttfa'],
    ['Server TTFA', serverTtfa === undefined ? null : fmtMs(serverTtfa), 'server-ttfa'],
    ['Audio', fmtSeconds(seconds), 'seconds'],
    ['Generated in', totalMs === null ? '…' : fmtMs(totalMs), 'total'],
    ['Speed', totalMs && seconds ? `${(seconds / (totalMs / 1000)).toFixed(1)}× realtime` : null, 'xrt'],
    ['Chunks', String(chunks), 'chunks'],
    ['Playback', live ? 'streamed (Web Audio)' : 'after download', 'playback'],
  ]);
  timingBars($('#speak-timing'), stages);
}

async function download() {
  const fmt = $('#speak-format').value;
  const errBox = $('#speak-error');
  const req = last ? last.request : request();
  try {
    if (last && fmt === 'wav') { downloadBlob(last.wav, 'speech.wav'); return; }
    if (last && fmt === 'pcm') { downloadBlob(last.pcm, 'speech.pcm'); return; }
    $('#speak-state').textContent = `encoding ${fmt}…`;
    const res = await api('/v1/audio/speech', {method: 'POST', json: {...req, response_format: fmt}, raw: true});
    downloadBlob(await res.blob(), `speech.${fmt}`);
    $('#speak-state').textContent = '';
  } catch (e) {
    $('#speak-state').textContent = '';
    showError(errBox, e);
  }
}
