"""Pictures of training read back from run folders' metrics.jsonl: the total loss, each logged loss
term (smoothed), the learning rate and the validation scores against iteration, several runs overlaid,
so that a term that climbs, a run that diverges or a recipe that learns faster shows at a glance."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from occreid.errors import ConfigError

#: Logged keys that are bookkeeping, not curves.
NOT_CURVES = ("iter", "time", "epoch", "train_s")
#: Panels drawn as raw points (validation) rather than smoothed lines, in this order, last.
VALIDATION = ("val_mAP", "val_rank1")


def read_log(run: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """key -> (iterations, values) of one run's metrics.jsonl (a run folder or the file itself). A line
    cut short by a kill is skipped; a missing or empty log is an error naming the file."""
    f = Path(run)
    f = f / "metrics.jsonl" if f.is_dir() else f
    try:
        lines = f.read_text().splitlines()
    except OSError:
        raise ConfigError(f"{f}: no training log; give a run folder that `occreid train` wrote") from None
    series: dict[str, list[tuple[int, float]]] = {}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        it = record.get("iter")
        if not isinstance(it, int):
            continue
        for k, v in record.items():
            if k not in NOT_CURVES and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                series.setdefault(k, []).append((it, float(v)))
    if not series:
        raise ConfigError(f"{f}: no logged iterations yet; train longer or check the folder")
    return {k: (np.array([i for i, _ in pts]), np.array([v for _, v in pts])) for k, pts in series.items()}


def centred_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean over a window of `window` points centred on each (cut at the ends): no lag on a falling
    loss, unlike a trailing mean."""
    v = np.asarray(values, dtype=np.float64)
    if window <= 1 or v.size == 0:
        return v
    c = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(v.size)
    lo = np.maximum(0, i - (window - 1) // 2)
    hi = np.minimum(v.size, i + window // 2 + 1)
    return (c[hi] - c[lo]) / (hi - lo)


def curve_panels(logs: Sequence[dict[str, tuple[np.ndarray, np.ndarray]]]) -> list[str]:
    """The panels to draw: `loss` first, then the other terms as first logged, then `lr`, then validation."""
    seen = list(dict.fromkeys(k for log in logs for k in log))
    terms = [k for k in seen if k not in ("loss", "lr", *VALIDATION)]
    return [k for k in ("loss", *terms, "lr", *VALIDATION) if k in seen]


def plot_training_curves(runs: Sequence[str | Path], path: str | Path, labels: Sequence[str] | None = None,
                         smooth: int = 9) -> Path:
    """Save one panel per logged quantity with every run overlaid (loss terms smoothed over `smooth`
    logged points, the raw values faint behind them); returns the picture's path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if labels is not None and len(labels) != len(runs):
        raise ConfigError(f"{len(labels)} labels for {len(runs)} runs; give one label per run")
    logs = [read_log(r) for r in runs]
    names = list(labels) if labels is not None else [Path(r).name for r in runs]
    panels = curve_panels(logs)
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows))
    FigureCanvasAgg(fig)
    for p, key in enumerate(panels):
        ax = fig.add_subplot(rows, cols, p + 1)
        for k, (log, name) in enumerate(zip(logs, names)):
            if key not in log:
                continue
            it, v = log[key]
            colour = f"C{k % 10}"
            if key in VALIDATION:
                ax.plot(it, 100 * v, marker="o", color=colour, label=name)
            elif key == "lr":
                ax.plot(it, v, color=colour, label=name)
            else:
                ax.plot(it, v, color=colour, alpha=0.15, linewidth=0.8)
                ax.plot(it, centred_mean(v, smooth), color=colour, label=name)
        ax.set_title(key + (" (%)" if key in VALIDATION else ""), fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.3)
        if p == 0:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path), dpi=90)
    return Path(path)
