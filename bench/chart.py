"""The chart of a bench.run: throughput and p99 against concurrency, per configuration; drawn
once the figures are written, and skipped, loudly, without matplotlib."""

from __future__ import annotations

from pathlib import Path


def chart_path(chart_dir: Path, cls: str) -> Path:
    return Path(chart_dir) / f"benchmarks-{cls}.png"


def chart(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rps, ax_p99) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in doc["results"]:
        if r["error"] or not r["levels"]:
            continue
        xs = [lv["concurrency"] for lv in r["levels"]]
        style = dict(color="black", linestyle="--", marker="s") if r["kind"] == "peer" else dict(marker="o")
        label = "peer (HF toolkit + MMS)" if r["kind"] == "peer" else f"ours: {r['name']}"
        ax_rps.plot(xs, [lv["rps"] for lv in r["levels"]], label=label, **style)
        ax_p99.plot(xs, [lv["p99_ms"] for lv in r["levels"]], label=label, **style)
    for ax, title, ylabel in ((ax_rps, "Throughput", "requests/s"), (ax_p99, "p99 latency", "ms")):
        ax.set_xscale("log", base=2)
        ticks = doc["settings"]["concurrency"]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("concurrency (closed loop)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    if ax_rps.lines:
        ax_rps.legend(fontsize=8)
    m = doc["machine"]
    shape = doc["settings"].get("model_shape") or {}
    model = f"dim {shape.get('dim')}, {shape.get('n_layers')} layers"
    fig.suptitle(
        f"DistilBERT QA ({model}), {doc['isa_class']}: {m['cpu']}, {m['usable_cpus']} CPUs,"
        f" {doc['date']}, code {(doc.get('revision') or {}).get('version') or 'unknown'}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_chart(doc: dict, path: Path) -> bool:
    """The chart, or one loud line saying why not; never raises (the figures are already written)."""
    try:
        chart(doc, path)
    except ImportError as exc:
        reason = f"{exc.name or 'matplotlib'} is not installed ({exc}): pip install -r requirements-dev.txt"
    except Exception as exc:  # a chart must never lose a run
        reason = f"{type(exc).__name__}: {exc}"
    else:
        return True
    print(f"bench: CHART SKIPPED ({path.name}): {reason}; the JSON and the markdown are written", flush=True)
    return False
