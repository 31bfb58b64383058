"""Bench reports: the JSON document (schema.json), a Markdown table, PNG charts, and compare."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from voxbox.bench.metrics import percentiles, summarize

__all__ = [
    "SCHEMA_FILE",
    "SCHEMA_VERSION",
    "build_report",
    "compare_reports",
    "load_schema",
    "render_markdown",
    "validate_report",
    "write_outputs",
]

SCHEMA_VERSION = "1.1"
SCHEMA_FILE = Path(__file__).with_name("schema.json")


def _median(xs: list[float]) -> float | None:
    s = summarize(xs)
    return None if s is None else s["median"]


def _names(runs: list[dict[str, Any]], field: str) -> list[str]:
    out: list[str] = []
    for r in runs:
        for k in r.get(field) or {}:
            if k not in out:
                out.append(k)
    return out


#: Work units a call reports in its details, for "ms per unit" (forced token / frame / patch counts).
UNITS = ("tokens", "frames", "patches")


def summarize_row(row: dict[str, Any]) -> dict[str, Any]:
    runs = row.get("runs", [])
    details = {k: _median([r["details"][k] for r in runs if k in (r.get("details") or {})])
               for k in _names(runs, "details")}
    total = summarize(r["total_s"] for r in runs)
    per_unit = None
    for unit in UNITS:
        if total and details.get(unit):
            ms = 1000.0 * total["median"] / details[unit]
            per_unit = {"unit": unit.rstrip("s"), "count": details[unit], "ms": ms}
            break
    return {
        "audio_s": _median([r["audio_s"] for r in runs]),
        "total_s": total,
        "rtf": summarize(r.get("rtf") for r in runs),
        "xrt": summarize(r.get("xrt") for r in runs),
        "ttfa_s": summarize(r.get("ttfa_s") for r in runs),
        "cpu_s": summarize(r.get("cpu_s") for r in runs),
        "stages": {k: _median([r["stages"].get(k, 0.0) for r in runs]) for k in _names(runs, "stages")},
        "details": details,
        "per_unit": per_unit,
    }


def build_report(*, task: str, mode: str, results: list[dict[str, Any]], settings: dict[str, Any],
                 machine: dict[str, Any], libraries: dict[str, str | None], quick: bool,
                 command: str | None) -> dict[str, Any]:
    """Assemble the JSON document from per-target job results; adds summaries and ratios."""
    targets = [r["target"] for r in results]
    rows: list[dict[str, Any]] = []
    for res in results:
        for row in res["rows"]:
            row = dict(row)
            row.setdefault("quality", None)
            row.setdefault("hypothesis", None)
            if row.get("latencies_s") is not None:
                row.setdefault("latency", percentiles(row["latencies_s"]))
            row["summary"] = summarize_row(row)
            rows.append(row)
    _add_ratios(targets, rows)
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "voxbox bench",
        "voxbox_version": libraries.get("voxbox"),
        "task": task,
        "mode": mode,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": bool(quick),
        "command": command,
        "machine": machine,
        "libraries": libraries,
        "settings": settings,
        "targets": targets,
        "rows": rows,
        "totals": _totals(targets, rows),
    }


def _row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["scenario"], row.get("steps"), row.get("variant"), row.get("concurrency"))


def _add_ratios(targets: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """time_ratio_to_voxbox = peer median time / voxbox median time for the same scenario (>1: voxbox faster)."""
    by_target = {t["id"]: t for t in targets}
    vox_rows = {(r["target"],) + _row_key(r): r for r in rows if by_target.get(r["target"], {}).get("kind") == "voxbox"}
    for r in rows:
        t = by_target.get(r["target"], {})
        r["time_ratio_to_voxbox"] = None
        if t.get("kind") == "voxbox":
            r["time_ratio_to_voxbox"] = 1.0 if r["summary"]["total_s"] else None
            continue
        v = vox_rows.get((t.get("peer_of"),) + _row_key(r))
        pt, vt = r["summary"]["total_s"], (v or {}).get("summary", {}).get("total_s")
        if pt and vt and vt["median"] > 0:
            r["time_ratio_to_voxbox"] = pt["median"] / vt["median"]


def _totals(targets: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target: audio seconds and median compute summed over the scenarios both it and its voxbox ran."""
    by_id = {t["id"]: t for t in targets}
    ok_rows: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
    for r in rows:
        if r["status"] == "ok" and r["summary"]["total_s"]:
            ok_rows.setdefault(r["target"], {})[_row_key(r)] = r
    out = []
    for t in targets:
        mine = ok_rows.get(t["id"], {})
        if not mine:
            continue
        audio = sum(r["summary"]["audio_s"] or 0.0 for r in mine.values())
        compute = sum(r["summary"]["total_s"]["median"] for r in mine.values())
        entry: dict[str, Any] = {"target": t["id"], "scenarios": len(mine), "audio_s": audio, "compute_s": compute,
                                 "xrt": audio / compute if compute > 0 else None, "time_ratio_to_voxbox": None}
        ref_id = t["id"] if t["kind"] == "voxbox" else t.get("peer_of")
        ref = ok_rows.get(ref_id or "", {})
        common = [k for k in mine if k in ref]
        if common and ref_id in by_id:
            mine_c = sum(mine[k]["summary"]["total_s"]["median"] for k in common)
            ref_c = sum(ref[k]["summary"]["total_s"]["median"] for k in common)
            entry["time_ratio_to_voxbox"] = mine_c / ref_c if ref_c > 0 else None
        out.append(entry)
    return out


# --------------------------------------------------------------------------------------------
# schema


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def validate_report(report: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError if ``report`` does not match schema.json (needs jsonschema)."""
    import jsonschema

    jsonschema.validate(report, load_schema())


# --------------------------------------------------------------------------------------------
# Markdown


def _f(x: float | None, fmt: str = "{:.3f}") -> str:
    return "–" if x is None else fmt.format(x)


def _reason(t: dict[str, Any]) -> str:
    r = t.get("reason") or ""
    for prefix in ("not installed: ", "skipped: "):
        if r.startswith(prefix):
            r = r[len(prefix):]
    return r.replace("|", "/")


def _bytes(n: int | None) -> str:
    return "–" if not n else f"{n / 2**20:.0f} MiB"


def _header(report: dict[str, Any]) -> list[str]:
    task, m, st = report["task"], report["machine"], report["settings"]
    lines = [
        f"## voxbox bench {task} — {report['created']}",
        "",
        f"Command: `{report.get('command') or 'voxbox bench ' + task}`  ",
        f"Machine: {m.get('cpu')} ({m.get('cpu_affinity')} of {m.get('cpu_count')} CPUs usable), "
        f"{(m.get('memory_bytes') or 0) / 2**30:.0f} GiB RAM, {m.get('os')}, Python {m.get('python')}"
        + (f", GPUs: {', '.join(g['name'] for g in m['gpus'])}" if m.get("gpus") else ", no GPU")
        + f"; load average {m.get('load_average_start')} at start, {m.get('load_average')} at end  ",
        f"Mode: {report['mode']}; runs per scenario: {st.get('runs')}, warm-up calls: {st.get('warmup')}"
        + (" on every item" if st.get("warmup_each") else "") + (" (quick smoke run)" if report.get("quick") else ""),
        "",
    ]
    if task == "asr" and st.get("decoding"):
        lines += ["Decoding (voxbox and every peer, unless a target says otherwise): "
                  + ", ".join(f"{k}={v}" for k, v in st["decoding"].items()), ""]
    inter = [t["id"] for t in report["targets"] if (t.get("extra") or {}).get("interleaved")]
    if inter:
        lines += ["Interleaved (each in its own process, measured runs alternating run by run so load changes hit "
                  "both alike): " + ", ".join(f"`{i}`" for i in inter) + ".", ""]
    present = {t["name"] for t in report["targets"] if t["status"] == "ok"}
    for name, lim in (st.get("peer_limits") or {}).items():
        if name not in present:
            continue
        what = (["only " + ", ".join(lim["items"])] if lim.get("items") else []) + (
            [f"at most {lim['runs']} run(s) each"] if lim.get("runs") else [])
        lines += [f"Peer `{name}` (slow on this machine): {'; '.join(what)}.", ""]
    for name, why in (st.get("clips_skipped") or {}).items():
        lines += [f"Clip `{name}` skipped: {why}", ""]
    return lines


def _us(x: Any) -> str:
    return "–" if not isinstance(x, (int, float)) else f"{x * 1e6:.0f}"


def _targets_table(report: dict[str, Any]) -> list[str]:
    gpu = any(t.get("peak_gpu_bytes") for t in report["targets"])
    lines = ["### Targets", "",
             "| target | status | device | dtype | threads | cold load s | first call s | peak RSS |"
             + (" peak GPU |" if gpu else "") + " runtime call / chunk µs |",
             "|---|---|---|---|---|---|---|---|" + ("---|" if gpu else "") + "---|"]
    for t in report["targets"]:
        status = t["status"] if t["status"] == "ok" else f"**{t['status'].replace('_', ' ')}**: {_reason(t)}"
        x = t.get("extra") or {}
        hop = f"{_us(x.get('runtime_call_s'))} / {_us(x.get('runtime_chunk_s'))}" if "runtime_call_s" in x else "–"
        lines.append(f"| {t['id']} | {status} | {t.get('device') or '–'} | {t.get('dtype') or '–'} | "
                     f"{t.get('threads') or '–'} | {_f(t.get('load_s'), '{:.2f}')} | "
                     f"{_f(t.get('first_call_s'), '{:.3f}')} | "
                     f"{_bytes(t.get('peak_rss_bytes'))} |" + (f" {_bytes(t.get('peak_gpu_bytes'))} |" if gpu else "")
                     + f" {hop} |")
    return lines


def _result_cells(r: dict[str, Any], http: bool) -> list[str]:
    from voxbox.bench.charts import row_label

    s = r["summary"]
    tot, q, pu = s["total_s"], r.get("quality") or {}, s.get("per_unit")
    ratio = r.get("time_ratio_to_voxbox")
    cells = [row_label({**r, "steps": None, "concurrency": None}), str(r.get("steps") or "–"), r["target"],
             _f(s["audio_s"], "{:.2f}"), f"{tot['median']:.3f} ({tot['min']:.3f}–{tot['max']:.3f})",
             _f((s["rtf"] or {}).get("median"), "{:.4f}"), _f((s["xrt"] or {}).get("median"), "{:.1f}"),
             _f((s["ttfa_s"] or {}).get("median"))]
    if http:
        lat = r.get("latency") or {}
        cells += [str(r.get("concurrency")), _f(lat.get("p50")), _f(lat.get("p95")), _f(lat.get("p99")),
                  _f(r.get("throughput_xrt"), "{:.1f}")]
    cells += ["–" if not pu else f"{pu['ms']:.3f} /{pu['unit']} ({pu['count']:.0f})", _f(q.get("wer"), "{:.3f}"),
              ", ".join(f"{k} {v:.3f}" for k, v in s["stages"].items()) or "–",
              "–" if ratio is None else f"{ratio:.2f}x"]
    return cells


def _results_table(report: dict[str, Any]) -> list[str]:
    http = report["mode"] == "http"
    head = "| scenario | steps | target | audio s | total s | RTF | x realtime | TTFA s |"
    sep = "|---|---|---|---|---|---|---|---|"
    if http:
        head += " conc. | p50 s | p95 s | p99 s | throughput x rt |"
        sep += "---|---|---|---|---|"
    head += " ms per unit (units) | WER | stages (median s) | time vs voxbox |"
    sep += "---|---|---|---|"
    lines = ["### Results (median of runs; min–max in brackets)", "", head, sep]
    order = {t["id"]: i for i, t in enumerate(report["targets"])}
    rows = sorted(report["rows"], key=lambda r: (r["scenario"], r.get("variant") or "", r.get("steps") or 0,
                                                 r.get("concurrency") or 0, order.get(r["target"], 99)))
    blank = " |" * (head.count("|") - 5)
    for r in rows:
        if r["status"] != "ok" or not r["summary"]["total_s"]:
            cells = f"| {r['scenario']} | {r.get('steps') or '–'} | {r['target']} | error: {r.get('error')} |"
            lines.append(cells + blank)
        else:
            lines.append("| " + " | ".join(_result_cells(r, http)) + " |")
    for t in report["targets"]:
        if t["status"] != "ok":
            lines.append(f"| (all) | – | {t['id']} | {t['status'].replace('_', ' ')}: {_reason(t)} |" + blank)
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    lines = _header(report) + _targets_table(report) + [""] + _results_table(report)
    if report.get("totals"):
        lines += ["", "### Totals over the scenarios each target ran", "",
                  "| target | scenarios | audio s | compute s | x realtime | time vs voxbox |",
                  "|---|---|---|---|---|---|"]
        for t in report["totals"]:
            ratio = t.get("time_ratio_to_voxbox")
            lines.append(f"| {t['target']} | {t['scenarios']} | {t['audio_s']:.1f} | {t['compute_s']:.2f} | "
                         f"{_f(t.get('xrt'), '{:.1f}')} | {'–' if ratio is None else f'{ratio:.2f}x'} |")
    lines += ["", "RTF = compute time / audio seconds (lower is faster); x realtime = 1 / RTF. "
              "\"time vs voxbox\" = this row's median time / the voxbox row's median time in the same run "
              "(above 1: voxbox is faster). WER is on normalised text"
              + (" (TTS: round trip through the default ASR engine)."
                 if any((r.get("quality") or {}).get("method", "").startswith("round-trip") for r in report["rows"])
                 else "."),
              "", "voxbox targets run through the runtime (catalog entry, model manager, admission, worker thread); "
              "each call is timed in the worker around the engine. \"runtime call / chunk\" = its hand-off costs "
              "measured at load: one call round trip (once per measured call, outside the clock) and one streamed "
              "item's hop (what a streaming front pays per chunk). \"ms per unit\" = median total time / the work "
              "units the call reported (tokens, frames, patches).", ""]
    return "\n".join(lines)


def write_outputs(report: dict[str, Any], out_dir: Path, charts: bool = True) -> dict[str, Path]:
    """results.json, results.md and the charts into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    p = out_dir / "results.json"
    p.write_text(json.dumps(report, indent=2), encoding="utf-8")
    paths["json"] = p
    p = out_dir / "results.md"
    p.write_text(render_markdown(report), encoding="utf-8")
    paths["markdown"] = p
    if charts:
        try:
            from voxbox.bench.charts import write_charts

            rtf, stages = write_charts(report, out_dir)
            paths["rtf_png"], paths["stages_png"] = rtf, stages
        except ImportError:
            pass  # matplotlib missing: JSON and Markdown still written (voxbox[bench] installs it)
    return paths


# --------------------------------------------------------------------------------------------
# compare


def compare_reports(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows present in both reports with their median time / RTF / WER change (B relative to A)."""
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["target"],) + _row_key(r)

    rows_a = {key(r): r for r in a.get("rows", []) if r["status"] == "ok" and r["summary"]["total_s"]}
    out = []
    for r in b.get("rows", []):
        k = key(r)
        if k not in rows_a or r["status"] != "ok" or not r["summary"]["total_s"]:
            continue
        ra = rows_a[k]
        ta, tb = ra["summary"]["total_s"]["median"], r["summary"]["total_s"]["median"]
        wa = (ra.get("quality") or {}).get("wer")
        wb = (r.get("quality") or {}).get("wer")
        out.append({
            "target": r["target"], "scenario": r["scenario"], "steps": r.get("steps"), "variant": r.get("variant"),
            "concurrency": r.get("concurrency"), "a_total_s": ta, "b_total_s": tb,
            "change_pct": (tb - ta) / ta * 100.0 if ta > 0 else None,
            "a_rtf": (ra["summary"]["rtf"] or {}).get("median"), "b_rtf": (r["summary"]["rtf"] or {}).get("median"),
            "a_wer": wa, "b_wer": wb,
        })
    return out
