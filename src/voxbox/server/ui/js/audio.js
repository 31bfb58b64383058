// Streamed speech playback: the server's `pcm` format (24 kHz, 16-bit little-endian, mono) read from
// a streamed fetch and scheduled on Web Audio as it arrives. The same samples become a WAV file
// for the <audio> element and the download button once the stream ends.

export const PCM_RATE = 24000;

export class PcmPlayer {
  constructor(rate = PCM_RATE) {
    this.rate = rate;
    this.ctx = null;
    this.reset();
  }

  reset() {
    this.chunks = [];      // Int16Array pieces, in order
    this.samples = 0;
    this.carry = null;     // an odd trailing byte waiting for its partner
    this.nextTime = 0;
    this.sources = [];
    this.firstPlayAt = null; // performance.now() when the first audio was handed to the output
  }

  /** Prepare the output; call it from the click that starts speech (autoplay rules). */
  async open() {
    this.stop();
    this.reset();
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return false;
    try {
      if (!this.ctx || this.ctx.state === 'closed') this.ctx = new Ctx();
      if (this.ctx.state === 'suspended') await this.ctx.resume();
    } catch {
      this.ctx = null;
      return false;
    }
    this.nextTime = 0;
    return true;
  }

  /** Feed raw bytes from the network; plays them as soon as whole samples are there. */
  push(bytes) {
    let buf = bytes;
    if (this.carry !== null) {
      buf = new Uint8Array(bytes.length + 1);
      buf[0] = this.carry;
      buf.set(bytes, 1);
      this.carry = null;
    }
    const n = buf.length >> 1;
    if (buf.length & 1) this.carry = buf[buf.length - 1];
    if (n === 0) return;
    const pcm = new Int16Array(n);
    const view = new DataView(buf.buffer, buf.byteOffset, n * 2);
    const f32 = new Float32Array(n);
    for (let i = 0; i < n; i += 1) {
      const v = view.getInt16(i * 2, true);
      pcm[i] = v;
      f32[i] = v / 32768;
    }
    this.chunks.push(pcm);
    this.samples += n;
    this.play(f32);
  }

  play(f32) {
    const ctx = this.ctx;
    if (!ctx || ctx.state === 'closed') return;
    const buffer = ctx.createBuffer(1, f32.length, this.rate);
    buffer.copyToChannel(f32, 0);
    const src = ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(ctx.destination);
    // A short lead keeps chunks gapless when the next one arrives a little late.
    const at = Math.max(this.nextTime, ctx.currentTime + 0.03);
    src.start(at);
    this.nextTime = at + buffer.duration;
    this.sources.push(src);
    src.addEventListener('ended', () => { this.sources = this.sources.filter((s) => s !== src); });
    if (this.firstPlayAt === null) this.firstPlayAt = performance.now();
  }

  /** Seconds of audio received so far. */
  get duration() { return this.samples / this.rate; }

  /** Seconds until the scheduled audio has finished playing. */
  get remaining() { return this.ctx ? Math.max(0, this.nextTime - this.ctx.currentTime) : 0; }

  stop() {
    for (const s of this.sources) {
      try { s.stop(); } catch { /* already stopped */ }
    }
    this.sources = [];
  }

  pcmBlob() { return new Blob(this.chunks, {type: 'audio/pcm'}); }

  wavBlob() { return wavBlob(this.chunks, this.samples, this.rate); }
}

/** A 16-bit mono WAV file from Int16Array pieces. */
export function wavBlob(chunks, samples, rate) {
  const header = new ArrayBuffer(44);
  const v = new DataView(header);
  const str = (off, s) => { for (let i = 0; i < s.length; i += 1) v.setUint8(off + i, s.charCodeAt(i)); };
  const dataBytes = samples * 2;
  str(0, 'RIFF'); v.setUint32(4, 36 + dataBytes, true); str(8, 'WAVE');
  str(12, 'fmt '); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
  v.setUint32(24, rate, true); v.setUint32(28, rate * 2, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true);
  str(36, 'data'); v.setUint32(40, dataBytes, true);
  return new Blob([header, ...chunks], {type: 'audio/wav'});
}

/** Record from the microphone with MediaRecorder; resolves to a Blob when stop() is called. */
export class Recorder {
  static supported() {
    return !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder);
  }

  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({audio: true});
    const types = ['audio/webm;codecs=opus', 'audio/ogg;codecs=opus', 'audio/webm', 'audio/mp4'];
    const mimeType = types.find((t) => MediaRecorder.isTypeSupported(t));
    this.rec = new MediaRecorder(this.stream, mimeType ? {mimeType} : undefined);
    this.parts = [];
    this.rec.addEventListener('dataavailable', (e) => { if (e.data && e.data.size) this.parts.push(e.data); });
    this.done = new Promise((resolve) => this.rec.addEventListener('stop', () => {
      this.stream.getTracks().forEach((t) => t.stop());
      resolve(new Blob(this.parts, {type: this.rec.mimeType || 'audio/webm'}));
    }));
    this.rec.start(250);
    this.startedAt = performance.now();
  }

  stop() {
    if (this.rec && this.rec.state !== 'inactive') this.rec.stop();
    return this.done;
  }
}

/** File name extension for a recorded Blob's type. */
export function extensionFor(type) {
  if (type.includes('ogg')) return 'ogg';
  if (type.includes('mp4')) return 'm4a';
  return 'webm';
}
