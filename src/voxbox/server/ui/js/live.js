// Live captions over the Realtime websocket (OpenAI Realtime transcription events).
//
// The button stays hidden unless the server says it has the route (GET /v1/server ->
// capabilities.realtime); servers without it show nothing rather than a broken button.
// Protocol: connect to /v1/realtime?intent=transcription (the key as an
// `openai-insecure-api-key.<key>` subprotocol, as browsers cannot set headers on websockets), send
// `transcription_session.update`, then `input_audio_buffer.append` with base64 pcm16 at 24 kHz;
// show `...input_audio_transcription.delta` as partial captions and `.completed` as final lines.

import {getKey} from './api.js';
import {$, h, showError} from './dom.js';

const RATE = 24000;
let session = null;

export async function init() {
  $('#tr-live').addEventListener('click', () => (session ? stop() : start()));
}

export async function show(ctx) {
  let enabled = false;
  try {
    const s = await ctx.server();
    enabled = !!(s.capabilities && s.capabilities.realtime);
  } catch { /* no report: no live mode */ }
  const supported = !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.WebSocket);
  $('#tr-live').hidden = !(enabled && supported);
}

export function hide() { if (session) stop(); }

function b64(int16) {
  const bytes = new Uint8Array(int16.buffer, int16.byteOffset, int16.byteLength);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function start() {
  const box = $('#tr-live-box');
  const btn = $('#tr-live');
  box.textContent = '';
  box.hidden = false;
  const lines = h('div');
  const partial = h('p', {class: 'partial'});
  box.append(lines, partial);
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const key = getKey();
  const protocols = key ? ['realtime', `openai-insecure-api-key.${key}`] : ['realtime'];
  const ws = new WebSocket(`${proto}//${location.host}/v1/realtime?intent=transcription`, protocols);
  const media = await navigator.mediaDevices.getUserMedia({audio: {channelCount: 1, echoCancellation: true}});
  const ac = new AudioContext({sampleRate: RATE});
  const src = ac.createMediaStreamSource(media);
  // ScriptProcessorNode is deprecated but universally available and needs no extra module file.
  const proc = ac.createScriptProcessor(4096, 1, 1);
  session = {ws, media, ac, proc};
  btn.setAttribute('aria-pressed', 'true');
  btn.textContent = 'Stop live captions';
  proc.addEventListener('audioprocess', (e) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    const f = e.inputBuffer.getChannelData(0);
    const pcm = new Int16Array(f.length);
    for (let i = 0; i < f.length; i += 1) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(f[i] * 32767)));
    ws.send(JSON.stringify({type: 'input_audio_buffer.append', audio: b64(pcm)}));
  });
  src.connect(proc);
  proc.connect(ac.destination);
  ws.addEventListener('open', () => {
    ws.send(JSON.stringify({type: 'transcription_session.update', session: {
      input_audio_format: 'pcm16',
      input_audio_transcription: {model: $('#tr-model').value || 'whisper-1'},
      turn_detection: {type: 'server_vad'},
    }}));
  });
  ws.addEventListener('message', (e) => {
    let ev;
    try { ev = JSON.parse(e.data); } catch { return; }
    if (ev.type === 'conversation.item.input_audio_transcription.delta') partial.textContent += ev.delta || '';
    else if (ev.type === 'conversation.item.input_audio_transcription.completed') {
      lines.append(h('p', {}, ev.transcript || ''));
      partial.textContent = '';
    } else if (ev.type === 'error') showError($('#tr-error'), (ev.error && ev.error.message) || 'realtime error');
  });
  ws.addEventListener('close', () => { if (session && session.ws === ws) stop(); });
  ws.addEventListener('error', () => showError($('#tr-error'), 'The live captions connection failed.'));
}

function stop() {
  const s = session;
  session = null;
  const btn = $('#tr-live');
  btn.setAttribute('aria-pressed', 'false');
  btn.textContent = 'Live captions';
  if (!s) return;
  try { s.proc.disconnect(); } catch { /* already */ }
  s.media.getTracks().forEach((t) => t.stop());
  s.ac.close().catch(() => {});
  if (s.ws.readyState <= WebSocket.OPEN) s.ws.close();
}
