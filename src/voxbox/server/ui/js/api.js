// voxbox's public HTTP API, as the page uses it: every call sends the API key from session storage.

const KEY = 'voxbox.apiKey';

export function getKey() {
  try { return sessionStorage.getItem(KEY) || ''; } catch { return ''; }
}

export function setKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY, key);
    else sessionStorage.removeItem(KEY);
  } catch { /* storage disabled: the key lives until the page reloads */ memoryKey = key; }
}
let memoryKey = '';

function currentKey() { return getKey() || memoryKey; }

/** An error answer of the server (OpenAI-shaped `{"error": {...}}`) or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, message, code = null, param = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.param = param;
    this.retryAfter = null;
  }
}

const authListeners = new Set();
/** Called with the server's message whenever a request is refused for a missing/wrong key. */
export function onAuthNeeded(fn) { authListeners.add(fn); }

export function authHeaders(extra = {}) {
  const headers = new Headers(extra);
  const key = currentKey();
  if (key) headers.set('Authorization', `Bearer ${key}`);
  return headers;
}

async function errorFrom(res) {
  let message = `${res.status} ${res.statusText || 'error'}`;
  let code = null;
  let param = null;
  try {
    const body = await res.json();
    if (body && body.error) {
      message = body.error.message || message;
      code = body.error.code || null;
      param = body.error.param || null;
    }
  } catch { /* not JSON */ }
  const err = new ApiError(res.status, message, code, param);
  if (res.status === 429) err.retryAfter = res.headers.get('retry-after');
  if (res.status === 401) authListeners.forEach((fn) => fn(message));
  return err;
}

/**
 * Call the API. `json` sends a JSON body, `form` a FormData; `raw: true` returns the Response
 * (for streaming); otherwise the parsed JSON or text.
 */
export async function api(path, {method = 'GET', json, form, signal, raw = false, headers = {}} = {}) {
  const hdrs = authHeaders(headers);
  let body;
  if (json !== undefined) {
    hdrs.set('Content-Type', 'application/json');
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  let res;
  try {
    res = await fetch(path, {method, headers: hdrs, body, signal, cache: 'no-store'});
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, `Cannot reach the voxbox server (${e && e.message ? e.message : e}). Is "voxbox serve" still running?`);
  }
  if (!res.ok) throw await errorFrom(res);
  if (raw) return res;
  const type = res.headers.get('content-type') || '';
  return type.includes('json') ? res.json() : res.text();
}

/** `Server-Timing: load;dur=0.1, ttfa;dur=35.2` -> [{name, dur}] (dur in ms, null when absent). */
export function parseServerTiming(header) {
  if (!header) return [];
  return header.split(',').map((part) => {
    const [name, ...params] = part.trim().split(';');
    let dur = null;
    for (const p of params) {
      const [k, v] = p.trim().split('=');
      if (k === 'dur') dur = Number.parseFloat(v);
    }
    return {name: name.trim(), dur: Number.isFinite(dur) ? dur : null};
  }).filter((s) => s.name);
}

/** Prometheus text format -> [{name, labels, value}] (only the sample lines). */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const lm of (m[3] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[lm[1]] = lm[2];
    out.push({name: m[1], labels, value: Number.parseFloat(m[4])});
  }
  return out;
}

/** The equivalent curl command line of a call (the key as $VOXBOX_API_KEY, never its value). */
export function curl(path, {method = 'POST', json, form, output} = {}) {
  const q = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;
  const lines = [`curl ${method === 'GET' ? '' : `-X ${method} `}${q(location.origin + path)}`];
  if (currentKey()) lines.push('-H "Authorization: Bearer $VOXBOX_API_KEY"');
  if (json !== undefined) {
    lines.push(`-H 'Content-Type: application/json'`);
    lines.push(`-d ${q(JSON.stringify(json))}`);
  }
  for (const [k, v] of form || []) lines.push(`-F ${q(`${k}=${v}`)}`);
  if (output) lines.push(`-o ${q(output)}`);
  return lines.join(' \\\n  ');
}
