// This machine: the `voxbox doctor` report (GET /v1/doctor) and the latest `voxbox bench` results
// (GET /v1/bench/latest, charts from GET /v1/bench/chart fetched with the key).

import {api} from './api.js';
import {$, fmtBytes, fmtSeconds, h, labelCells, showError} from './dom.js';

const chartUrls = [];

export async function init() {}

export async function show(ctx) {
  const errBox = $('#ma-error');
  showError(errBox, null);
  ctx.invalidate('doctor', 'server');
  const [doctor, server, bench] = await Promise.allSettled([ctx.doctor(), ctx.server(), api('/v1/bench/latest')]);
  if (doctor.status === 'fulfilled') renderDoctor(doctor.value);
  else {
    $('#ma-doctor').textContent = '';
    showError(errBox, doctor.reason);
  }
  if (server.status === 'fulfilled') renderServer($('#ma-doctor'), server.value);
  if (bench.status === 'fulfilled') await renderBench(bench.value.data);
  else {
    $('#ma-bench').textContent = '';
    $('#ma-bench').append(h('p', {class: 'error', role: 'alert'}, bench.reason.message));
  }
}

export function hide() {}

function kv(pairs) {
  return h('dl', {class: 'kv'}, pairs.filter(([, v]) => v !== null && v !== undefined && v !== '')
    .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function table(caption, head, rows, attrs = {}) {
  return h('div', {class: 'scroll'}, labelCells(h('table', attrs, h('caption', {class: 'sr-only'}, caption),
    h('thead', {}, h('tr', {}, head.map((c) => h('th', {scope: 'col'}, c)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c, i) => (i === 0 ? h('th', {scope: 'row'}, c) : h('td', {}, c)))))))));
}

function renderDoctor(d) {
  const box = $('#ma-doctor');
  box.textContent = '';
  const m = d.machine;
  const cpu = m.cpu || {};
  const hw = kv([
    ['CPU', `${cpu.model} (${cpu.arch}), ${cpu.usable_cores} usable of ${cpu.logical_cores} logical cores`],
    ['CPU features', (cpu.features || []).join(', ') || 'none read'],
    ['Memory', `${fmtBytes(m.ram_total)} total, ${fmtBytes(m.ram_available)} available`],
    ['System', `${m.os}, Python ${m.python}`],
    ['Drivers', Object.entries(m.drivers || {}).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(', ')],
  ]);
  hw.id = 'ma-hardware';
  box.append(h('h2', {}, 'Hardware'), hw);
  if ((m.gpus || []).length) {
    box.append(h('h3', {}, 'GPUs'), table('GPUs', ['#', 'Name', 'Vendor', 'Arch', 'Memory free / total', 'Torch sees it'],
      m.gpus.map((g) => [String(g.index), g.name, g.vendor, g.arch || '?', `${fmtBytes(g.free_memory)} / ${fmtBytes(g.total_memory)}`,
        g.torch_visible ? 'yes' : `no (${g.source})`])));
  } else {
    box.append(h('p', {}, h('strong', {}, 'No GPU found'), ': every engine runs on the CPU.'));
  }
  box.append(h('h3', {}, 'Backends (what each really sees)'), table('Backends', ['Backend', 'Version', 'Build', 'Sees'],
    Object.entries(m.backends || {}).map(([name, b]) => [name, b.installed ? b.version || '?' : '–', b.installed ? b.build || '?' : '–',
      b.installed ? backendSees(name, b) : h('span', {class: 'muted'}, 'not installed')])));
  renderPlan(box, d);
}

function backendSees(name, b) {
  const x = b.details || {};
  let s;
  if (name === 'torch') s = `${x.device_count || 0} GPU(s)${x.cuda_version ? `, CUDA ${x.cuda_version}` : ''}${x.hip_version ? `, HIP ${x.hip_version}` : ''}`;
  else if (name === 'ctranslate2') s = `${x.cuda_device_count || 0} CUDA device(s); CPU: ${(x.cpu_compute_types || []).join(', ')}`;
  else s = (x.providers || []).join(', ');
  return b.error ? `${s} (${b.error})` : s;
}

function renderPlan(box, d) {
  const probes = d.probes || [];
  box.append(h('h2', {}, 'Probes and plan'));
  if (probes.length) {
    box.append(table(`Probes (${d.probe_mode})`, ['Backend', 'Probe', 'Device', 'Dtype', 'Verdict', 'Detail'],
      probes.map((p) => [p.engine || '', p.component || '', p.device, p.dtype || '', h('span', {class: p.status === 'ok' ? 'yes' : 'warn'}, p.status),
        (p.message || '').slice(0, 160)])));
  } else {
    box.append(h('p', {class: 'muted'}, 'No probe verdicts cached for this machine yet. Run ', h('code', {}, 'voxbox doctor --probe'),
      ' once to test each device and precision (the server never runs probes itself).'));
  }
  for (const q of d.quirks || []) box.append(h('p', {class: 'warn'}, `Quirk ${q.id} (${q.severity}): ${q.title}. ${q.remedy}`));
  if (d.asr_engine) box.append(h('p', {}, h('strong', {}, 'Transcription engine: '), `${d.asr_engine.engine} — ${d.asr_engine.reason}`));
  const rows = [];
  for (const [name, plan] of Object.entries(d.plans || {})) {
    for (const p of plan.placements || []) {
      rows.push([name, p.component, p.device || h('span', {class: 'no'}, 'not planned'), p.dtype || '', p.reason]);
    }
  }
  box.append(table('Plan per engine component', ['Engine', 'Component', 'Device', 'Dtype', 'Why'], rows, {id: 'ma-plan'}));
  const notes = [...new Set(Object.values(d.plans || {}).flatMap((p) => p.notes || []))];
  for (const n of notes) box.append(h('p', {class: 'muted'}, `Note: ${n}`));
  box.append(h('h3', {}, 'Environment to export'));
  if ((d.env || []).length) {
    box.append(h('pre', {}, d.env.map((e) => `export ${e.name}=${e.value}${e.optional ? '   # optional' : ''}\n#   ${e.why}`).join('\n')));
  } else box.append(h('p', {class: 'muted'}, 'Nothing needed on this machine.'));
  box.append(h('h3', {}, 'Warnings'));
  if ((d.warnings || []).length) box.append(h('ul', {class: 'warnings'}, d.warnings.map((w) => h('li', {}, w))));
  else box.append(h('p', {class: 'muted'}, 'None.'));
}

function renderServer(box, s) {
  box.append(h('h2', {}, 'This server'), kv([
    ['Version', s.version],
    ['API key', s.api_key_required ? 'required' : 'not required (anyone who can reach this port can use it)'],
    ['Default models', s.defaults ? `speech ${s.defaults.tts}, transcription ${s.defaults.asr}, device ${s.defaults.device}` : null],
    ['Upload limit', s.limits ? fmtBytes(s.limits.max_upload_bytes) : null],
    ['Process memory', s.process && s.process.rss_bytes ? fmtBytes(s.process.rss_bytes) : null],
    ['Live captions', s.capabilities && s.capabilities.realtime ? 'available' : 'not in this server yet'],
  ]));
  if ((s.voxbox_env || []).length) {
    box.append(h('h3', {}, 'VOXBOX_* settings in effect'), h('pre', {}, s.voxbox_env.map((e) => `${e.name}=${e.value}`).join('\n')));
  }
}

async function renderBench(runs) {
  const box = $('#ma-bench');
  box.textContent = '';
  chartUrls.splice(0).forEach((u) => URL.revokeObjectURL(u));
  if (!runs.length) {
    box.append(h('p', {class: 'muted'}, 'No benchmark results found. Run ', h('code', {}, 'voxbox bench tts'), ' or ',
      h('code', {}, 'voxbox bench asr'), ' (results go to ./bench-results; the server reads VOXBOX_BENCH_DIR).'));
    return;
  }
  for (const r of runs) {
    const sec = h('section', {class: 'panel', dataset: {bench: r.task}, 'aria-label': `${r.task} benchmark`});
    sec.append(h('h3', {}, `${r.task.toUpperCase()} — ${r.created || ''}`), kv([
      ['Command', h('code', {}, r.command || '')],
      ['Machine', `${r.machine.cpu || '?'} (${r.machine.cpu_count || '?'} CPUs), ${(r.machine.gpus || []).length ? r.machine.gpus.map((g) => g.name || g).join(', ') : 'no GPU'}`],
      ['Runs per scenario', r.runs_per_scenario],
    ]));
    sec.append(table('Totals', ['Target', 'Audio', 'Compute', '× realtime', 'Time vs voxbox'],
      (r.totals || []).map((t) => [t.target, fmtSeconds(t.audio_s, 1), fmtSeconds(t.compute_s), t.xrt ? t.xrt.toFixed(1) : '–',
        t.time_ratio_to_voxbox ? `${t.time_ratio_to_voxbox.toFixed(2)}×` : '–'])));
    const charts = h('div', {class: 'charts'});
    sec.append(charts);
    box.append(sec);
    await Promise.all((r.charts || []).map(async (name) => {
      const fig = h('figure', {}, h('figcaption', {}, name));
      charts.append(fig);
      try {
        const res = await api(`/v1/bench/chart?run=${encodeURIComponent(r.id)}&name=${encodeURIComponent(name)}`, {raw: true});
        const url = URL.createObjectURL(await res.blob());
        chartUrls.push(url);
        fig.prepend(h('a', {href: url, target: '_blank', rel: 'noopener'},
          h('img', {src: url, alt: `${r.task} benchmark chart: ${name.replace('.png', '')} (opens full size)`})));
      } catch (e) {
        fig.append(h('span', {class: 'error'}, e.message));
      }
    }));
    const failed = (r.targets || []).filter((t) => t.status !== 'ok');
    if (failed.length) {
      sec.append(h('details', {}, h('summary', {}, `${failed.length} target(s) not measured`),
        h('ul', {}, failed.map((t) => h('li', {}, `${t.id}: ${t.status}${t.reason ? ` — ${t.reason}` : ''}`)))));
    }
  }
}
