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
    "write_charts",
    "write_outputs",
]

SCHEMA_VERSION = "1.0"
SCHEMA_FILE = Path(__file__).with_name("schema.json")


def _median(xs: list[float]) -> float | None:
    s = summarize(xs)
    return None if s is None else s["median"]


def summarize_row(row: dict[str, Any]) -> dict[str, Any]:
    runs = row.get("runs", [])
    stage_names: list[str] = []
    for r in runs:
        for k in r.get("stages", {}):
            if k not in stage_names:
                stage_names.append(k)
    return {
        "audio_s": _median([r["audio_s"] for r in runs]),
        "total_s": summarize(r["total_s"] for r in runs),
        "rtf": summarize(r.get("rtf") for r in runs),
        "xrt": summarize(r.get("xrt") for r in runs),
        "ttfa_s": summarize(r.get("ttfa_s") for r in runs),
        "stages": {k: _median([r["stages"].get(k, 0.0) for r in runs]) for k in stage_names},
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
    return (row["scenario"], row.get("steps"), row.get("concurrency"))


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


def render_markdown(report: dict[str, Any]) -> str:
    task = report["task"]
    m = report["machine"]
    lines = [
        f"## voxbox bench {task} — {report['created']}",
        "",
        f"Command: `{report.get('command') or 'voxbox bench ' + task}`  ",
        f"Machine: {m.get('cpu')} ({m.get('cpu_affinity')} of {m.get('cpu_count')} CPUs usable), "
        f"{(m.get('memory_bytes') or 0) / 2**30:.0f} GiB RAM, {m.get('os')}, Python {m.get('python')}"
        + (f", GPUs: {', '.join(g['name'] for g in m['gpus'])}" if m.get("gpus") else ", no GPU")
        + f"; load average {m.get('load_average_start')} at start, {m.get('load_average')} at end  ",
        f"Mode: {report['mode']}; runs per scenario: {report['settings'].get('runs')}, warm-up calls: "
        f"{report['settings'].get('warmup')}" + (" (quick smoke run)" if report.get("quick") else ""),
        "",
    ]
    if task == "asr" and report["settings"].get("decoding"):
        d = report["settings"]["decoding"]
        lines += ["Decoding (voxbox and every peer): " + ", ".join(f"{k}={v}" for k, v in d.items()), ""]
    inter = [t["id"] for t in report["targets"] if (t.get("extra") or {}).get("interleaved")]
    if inter:
        lines += ["Interleaved (each in its own process, measured runs alternating run by run so load changes hit "
                  "both alike): " + ", ".join(f"`{i}`" for i in inter) + ".", ""]
    present = {t["name"] for t in report["targets"] if t["status"] == "ok"}
    for name, lim in (report["settings"].get("peer_limits") or {}).items():
        if name not in present:
            continue
        what = []
        if lim.get("items"):
            what.append("only " + ", ".join(lim["items"]))
        if lim.get("runs"):
            what.append(f"at most {lim['runs']} run(s) each")
        lines += [f"Peer `{name}` (slow on this machine): {'; '.join(what)}.", ""]
    for name, why in (report["settings"].get("clips_skipped") or {}).items():
        lines += [f"Clip `{name}` skipped: {why}", ""]
    lines += ["### Targets", "",
              "| target | status | device | dtype | threads | cold load s | first call s | peak RSS |",
              "|---|---|---|---|---|---|---|---|"]
    for t in report["targets"]:
        status = t["status"] if t["status"] == "ok" else f"**{t['status'].replace('_', ' ')}**: {_reason(t)}"
        lines.append(f"| {t['id']} | {status} | {t.get('device') or '–'} | {t.get('dtype') or '–'} | "
                     f"{t.get('threads') or '–'} | {_f(t.get('load_s'), '{:.2f}')} | {_f(t.get('first_call_s'), '{:.3f}')} | "
                     f"{_bytes(t.get('peak_rss_bytes'))} |")
    lines += ["", "### Results (median of runs; min–max in brackets)", ""]
    http = report["mode"] == "http"
    head = "| scenario | steps | target | audio s | total s | RTF | x realtime | TTFA s |"
    sep = "|---|---|---|---|---|---|---|---|"
    if http:
        head += " conc. | p50 s | p95 s | p99 s | throughput x rt |"
        sep += "---|---|---|---|---|"
    head += " WER | stages (median s) | time vs voxbox |"
    sep += "---|---|---|"
    lines += [head, sep]
    order = {t["id"]: i for i, t in enumerate(report["targets"])}
    rows = sorted(report["rows"], key=lambda r: (r["scenario"], r.get("steps") or 0, r.get("concurrency") or 0,
                                                 order.get(r["target"], 99)))
    for r in rows:
        s = r["summary"]
        if r["status"] != "ok" or not s["total_s"]:
            lines.append(f"| {r['scenario']} | {r.get('steps') or '–'} | {r['target']} | error: {r.get('error')} |"
                         + " |" * (head.count("|") - 5))
            continue
        tot = s["total_s"]
        q = r.get("quality") or {}
        stages = ", ".join(f"{k} {v:.3f}" for k, v in s["stages"].items()) or "–"
        ratio = r.get("time_ratio_to_voxbox")
        cells = [r["scenario"], str(r.get("steps") or "–"), r["target"], _f(s["audio_s"], "{:.2f}"),
                 f"{tot['median']:.3f} ({tot['min']:.3f}–{tot['max']:.3f})", _f((s["rtf"] or {}).get("median"), "{:.4f}"),
                 _f((s["xrt"] or {}).get("median"), "{:.1f}"), _f((s["ttfa_s"] or {}).get("median"))]
        if http:
            lat = r.get("latency") or {}
            cells += [str(r.get("concurrency")), _f(lat.get("p50")), _f(lat.get("p95")), _f(lat.get("p99")),
                      _f(r.get("throughput_xrt"), "{:.1f}")]
        cells += [_f(q.get("wer"), "{:.3f}"), stages, "–" if ratio is None else f"{ratio:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    missing = [t for t in report["targets"] if t["status"] != "ok"]
    for t in missing:
        lines.append(f"| (all) | – | {t['id']} | {t['status'].replace('_', ' ')}: {_reason(t)} |"
                     + " |" * (head.count("|") - 5))
    if report.get("totals"):
        lines += ["", "### Totals over the scenarios each target ran", "",
                  "| target | scenarios | audio s | compute s | x realtime | time vs voxbox |", "|---|---|---|---|---|---|"]
        for t in report["totals"]:
            ratio = t.get("time_ratio_to_voxbox")
            lines.append(f"| {t['target']} | {t['scenarios']} | {t['audio_s']:.1f} | {t['compute_s']:.2f} | "
                         f"{_f(t.get('xrt'), '{:.1f}')} | {'–' if ratio is None else f'{ratio:.2f}x'} |")
    lines += ["", "RTF = compute time / audio seconds (lower is faster); x realtime = 1 / RTF. "
              "\"time vs voxbox\" = this row's median time / the voxbox row's median time in the same run "
              "(above 1: voxbox is faster). WER is on normalised text"
              + (" (TTS: round trip through the default ASR engine)."
                 if any((r.get("quality") or {}).get("method", "").startswith("round-trip") for r in report["rows"])
                 else "."), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# charts


def write_charts(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """``rtf.png`` (RTF by target x scenario) and ``stages.png`` (time split by stage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    rows = [r for r in report["rows"] if r["status"] == "ok" and r["summary"]["total_s"]]
    label = lambda r: r["scenario"] + (f" {r['steps']}st" if r.get("steps") else "") + (  # noqa: E731
        f" c{r['concurrency']}" if r.get("concurrency") else "")
    scenarios: list[str] = []
    targets: list[str] = []
    for r in rows:
        if label(r) not in scenarios:
            scenarios.append(label(r))
        if r["target"] not in targets:
            targets.append(r["target"])
    paths = []

    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(scenarios) * max(1, len(targets)) * 0.35 + 3), 4.5))
    width = 0.8 / max(1, len(targets))
    for i, t in enumerate(targets):
        xs, ys = [], []
        for j, sc in enumerate(scenarios):
            r = next((r for r in rows if r["target"] == t and label(r) == sc), None)
            if r and r["summary"]["rtf"]:
                xs.append(j + (i - (len(targets) - 1) / 2) * width)
                ys.append(r["summary"]["rtf"]["median"])
        ax.bar(xs, ys, width=width, label=t)
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels(scenarios, rotation=20, ha="right")
    ax.set_ylabel("RTF (compute s / audio s, lower is faster)")
    ax.set_title(f"voxbox bench {report['task']}: RTF by target and scenario")
    if any(r["summary"]["rtf"] for r in rows):
        vals = [r["summary"]["rtf"]["median"] for r in rows if r["summary"]["rtf"]]
        if vals and min(vals) > 0 and max(vals) / min(vals) > 50:
            ax.set_yscale("log")
    if targets:
        ax.legend(fontsize=7)
    fig.tight_layout()
    p = out_dir / "rtf.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    bars = [(f"{r['target']} · {label(r)}", r) for r in rows]
    stage_names: list[str] = []
    for _, r in bars:
        for k in r["summary"]["stages"]:
            if k not in stage_names:
                stage_names.append(k)
    fig, ax = plt.subplots(figsize=(9, max(3.5, 0.35 * len(bars) + 2.5)))
    left = [0.0] * len(bars)
    totals = [r["summary"]["total_s"]["median"] for _, r in bars]
    for k in stage_names + ["other (untimed by the engine)", "whole call (no stage timings)"]:
        vals = []
        for (_, r), tot in zip(bars, totals):
            s = r["summary"]
            rest = max(0.0, tot - sum(v or 0.0 for v in s["stages"].values()))
            if k.startswith("other"):
                v = rest if s["stages"] else 0.0
            elif k.startswith("whole"):
                v = 0.0 if s["stages"] else rest
            else:
                v = s["stages"].get(k) or 0.0
            vals.append(100.0 * v / tot if tot > 0 else 0.0)
        ax.barh(range(len(bars)), vals, left=left, label=k)
        left = [a + b for a, b in zip(left, vals)]
    for i, tot in enumerate(totals):
        ax.text(101, i, f"{tot:.2f} s", va="center", fontsize=7)
    ax.set_xlim(0, 115)
    ax.set_yticks(range(len(bars)))
    ax.set_yticklabels([b[0] for b in bars], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("% of the call's time (median run); total seconds at the right")
    ax.set_title(f"voxbox bench {report['task']}: time split by stage")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.45, -0.12 - 0.6 / max(3, len(bars))), ncol=3)
    fig.tight_layout()
    p = out_dir / "stages.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


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
            "target": r["target"], "scenario": r["scenario"], "steps": r.get("steps"),
            "concurrency": r.get("concurrency"), "a_total_s": ta, "b_total_s": tb,
            "change_pct": (tb - ta) / ta * 100.0 if ta > 0 else None,
            "a_rtf": (ra["summary"]["rtf"] or {}).get("median"), "b_rtf": (r["summary"]["rtf"] or {}).get("median"),
            "a_wer": wa, "b_wer": wb,
        })
    return out
