"""Draw a protocol's results file as one picture: each method's mAP and rank-1 minus `bot`'s of the same
seed, one row per run and reading, with the paired bootstrap's 95 % interval (test-set sampling, not
seeds). A bar that clears 0 is a gain or a loss in that seed; a reading since replaced (a record with a
`note`) is drawn hollow and grey. A run paired with a `bot` reading that has since been replaced (its
`vs_bot_same_seed.bot_reading`) also gets a cross at its point difference to the current `bot` of its seed:
no interval, as that pair was never evaluated query by query.

    python benchmarks/protocol_figure.py benchmarks/results/pretrained_protocol.json \\
        --out docs/img/pretrained_protocol.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: row order: the five methods, then the baseline that trails them all
ORDER = ("pabreid", "ocnet", "pan", "amdnet", "sgsfa", "pcb")
PANELS = (("mAP", "mAP"), ("rank1", "rank-1"))


def rows(records: list[dict]) -> list[dict]:
    """The records that have a difference to `bot`, in ORDER, then seed, the current reading first."""
    known = [r for r in records if r.get("vs_bot_same_seed")]
    rank = {m: i for i, m in enumerate(ORDER)}
    return sorted(known, key=lambda r: (rank.get(r["method"], len(ORDER)), r["method"], "note" in r,
                                        r["reading"] != "default", r["reading"], r["seed"]))


def label(r: dict) -> str:
    """`method (reading), seed s: mAP m`, with the `bot` mAP it was paired with where that was a rerun."""
    reading = "" if r["reading"] == "default" else f" ({r['reading'].replace('_', ' ')})"
    paired = r["vs_bot_same_seed"].get("bot")
    rerun = f" (vs `bot` rerun {paired['mAP']:.1f})" if "bot_rerun" in r and paired else ""
    return f"{r['method']}{reading}, seed {r['seed']}: mAP {r['mAP']:.1f}{rerun}"


def versus_current_bot(records: list[dict], r: dict, key: str) -> float | None:
    """The run's `key` minus the current (`default` reading) `bot` of its seed, where its interval is
    against another `bot` reading; None where it is against the current one or that `bot` has no record."""
    if r["vs_bot_same_seed"].get("bot_reading", "default") == "default":
        return None
    current = [b for b in records if b["method"] == "bot" and b["reading"] == "default"
               and b["seed"] == r["seed"] and b["protocol"] == r["protocol"]]
    return r[key] - current[0][key] if current else None


def draw(records: list[dict], out: Path, title: str) -> Path:
    """Write the picture of `records` (the JSON's list) to `out`; an error names a file without rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = rows(records)
    if not shown:
        raise SystemExit("no record has `vs_bot_same_seed`: finish a method's run and its `bot` run of the "
                         "same seed, then merge them with `cpu_protocol.py --json`")
    colours = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(dict.fromkeys(r["method"] for r in shown))}
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.42 * len(shown) + 1.4), sharey=True)
    y = list(range(len(shown)))[::-1]
    for ax, (key, name) in zip(axes, PANELS):
        for yi, r in zip(y, shown):
            d = r["vs_bot_same_seed"][key]
            old = "note" in r
            c = "0.6" if old else colours[r["method"]]
            ax.plot([d["low"], d["high"]], [yi, yi], color=c, lw=2.5, solid_capstyle="butt")
            ax.plot(d["delta"], yi, "o", ms=7, color=c, mfc="white" if old else c)
            point = versus_current_bot(records, r, key)
            if point is not None:
                ax.plot(point, yi, "x", ms=8, mew=2, color=c)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel(f"{name} minus `bot`, same seed (points)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [label(r) + (" [replaced]" if "note" in r else "") for r in shown])
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def bot_maps(records: list[dict], reading: str) -> str:
    """`seed s m, ...`: the mAP of each `bot` record of one reading, for the title."""
    return ", ".join(f"seed {r['seed']} {r['mAP']:.1f}" for r in records
                     if r.get("method") == "bot" and r.get("reading") == reading)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", help="a results file written by `cpu_protocol.py --json`")
    ap.add_argument("--out", required=True, help="the picture to write (.png or .svg)")
    ap.add_argument("--title", help="default: the records' protocol")
    args = ap.parse_args()
    try:
        records = json.loads(Path(args.json).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{args.json}: cannot read a results file ({e}); "
                         "write one with cpu_protocol.py --json") from None
    if not isinstance(records, list):
        raise SystemExit(f"{args.json}: expected a list of records, as `cpu_protocol.py --json` writes")
    protocols = sorted({r.get("protocol", "?") for r in records})
    bot = bot_maps(records, "default")
    others = sorted({r["vs_bot_same_seed"].get("bot_reading", "default") for r in records
                     if r.get("vs_bot_same_seed")} - {"default"})
    crosses = "".join(f"; reading {o}: {bot_maps(records, o)}" for o in others)
    if others:
        crosses += (f"\ndots and bars: against `bot` reading {', '.join(others)} where a cross is drawn; "
                    "crosses: against the current `bot`, a point difference (no interval)")
    title = args.title or (f"{', '.join(protocols)}: each run against `bot` of its seed "
                           f"(95 % paired bootstrap interval)\n`bot` mAP: {bot or 'no run'}{crosses}")
    print(draw(records, Path(args.out), title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
