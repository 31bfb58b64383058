"""PNG charts of a bench report: ``rtf.png`` (RTF by target x scenario) and ``stages.png`` (time by stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["row_label", "write_charts"]


def row_label(r: dict[str, Any]) -> str:
    """A row's scenario with what sets it apart: variant, steps, concurrency."""
    return (
        r["scenario"]
        + (f" [{r['variant']}]" if r.get("variant") else "")
        + (f" {r['steps']}st" if r.get("steps") else "")
        + (f" c{r['concurrency']}" if r.get("concurrency") else "")
    )


def write_charts(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """``rtf.png`` (RTF by target x scenario) and ``stages.png`` (time split by stage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    rows = [r for r in report["rows"] if r["status"] == "ok" and r["summary"]["total_s"]]
    label = row_label
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
        for (_, r), tot in zip(bars, totals, strict=False):
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
        left = [a + b for a, b in zip(left, vals, strict=False)]
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
