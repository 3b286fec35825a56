"""Run a CPU protocol's table as a resumable queue and print it: B1 (`--protocol cpu_occduke`, ResNet-18
from scratch) or C1 (`--protocol pretrained_occduke`, MobileNetV2 from ImageNet).

Each (method, seed) is one `occreid train` of `configs/protocols/<protocol>/<method>.yaml` in
`--out/<name>`, evaluated on the full Occluded-Duke query / gallery at the end. The queue is safe to kill
and re-run: a finished run (its `eval/occluded_duke/metrics.json` exists) is skipped, a stopped one is
resumed from its last checkpoint (a run whose training finished but whose evaluation did not resumes to
the end at once and is evaluated). `--table-only` trains nothing and prints what is finished, with the
mean and half the range over seeds for every method that has two or more. A method with a second test
reading chosen on a validation split (`READINGS`) is also evaluated, from the same checkpoint, under it.

    python benchmarks/cpu_protocol.py --data /work/shared/data --labels runs/labels/occduke_mediapipe \\
        --methods bot pabreid --seeds 0 1
    python benchmarks/cpu_protocol.py --protocol pretrained_occduke --data /work/shared/data \\
        --methods bot pcb --seeds 0 1 --json benchmarks/results/pretrained_protocol.json

`--json` merges one record per finished run (method, seed, reading, metrics, config file, git commit of
the checkpoint's code, date) into a machine-readable file. Runs trained off the defaults (`--set`) need
`--variant NAME`: their records take NAME as reading, beside the defaults' records, never over them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = ROOT / "configs" / "protocols"
PART_LABELLED = {"amdnet", "pabreid", "sgsfa"}  # methods trained with part labels (data.labels_root)
METRICS = ("rank1", "rank5", "mAP", "mINP")
OCCREID = [sys.executable, "-m", "occreid"]
# Test-time readings chosen on a validation split, not on the test set (benchmarks/RESULTS.md): eval overrides.
READINGS = {"amdnet": ("continuous", ["method.matching=continuous"]),
            "sgsfa": ("normalised", ["method.normalise_distance=true"])}


def run_dir(out: Path, name: str, method: str, seed: int) -> Path:
    return out / name.format(method=method, seed=seed)


def metrics_file(run: Path, reading: str | None = None) -> Path | None:
    """The run's test metrics file: `eval/occluded_duke`, or for a reading the newest report `occreid eval`
    wrote in `eval_<reading>` (a folder named after the changed settings, e.g. `occluded_duke-method.x=True`)."""
    if reading is None:
        found = [run / "eval" / "occluded_duke" / "metrics.json"]
    else:
        found = sorted((run / f"eval_{reading}").glob("occluded_duke*/metrics.json"), key=lambda f: f.stat().st_mtime)
    return found[-1] if found and found[-1].is_file() else None


def test_metrics(run: Path, reading: str | None = None) -> dict | None:
    f = metrics_file(run, reading)
    return json.loads(f.read_text()) if f is not None else None


def reading_command(run: Path, method: str) -> list[str] | None:
    """Evaluate a trained run under its method's second reading, when it has one and it is missing."""
    if method not in READINGS or test_metrics(run) is None:
        return None
    name, overrides = READINGS[method]
    if test_metrics(run, name) is not None:
        return None
    return [*OCCREID, "eval", "--checkpoint", str(run / "last.pt"), "--out", str(run / f"eval_{name}"), *overrides]


def records(run: Path) -> list[dict]:
    f = run / "metrics.jsonl"
    return [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()] if f.is_file() else []


def trained_iters(run: Path) -> int:
    return max((r.get("iter", 0) for r in records(run)), default=0)


def train_minutes(run: Path) -> float | None:
    """Minutes of training: the trainer's `train_s` when logged, else the median step time between logged
    iterations scaled to the whole run (resumes excluded)."""
    timed = [r for r in records(run) if "train_s" in r]
    if timed:
        return timed[-1]["train_s"] / 60
    recs = [r for r in records(run) if "time" in r and "loss" in r]
    steps = [(b["time"] - a["time"]) / (b["iter"] - a["iter"]) for a, b in zip(recs, recs[1:])
             if b["iter"] > a["iter"] and b["time"] > a["time"]]
    if not steps:
        return None
    steps.sort()
    return steps[len(steps) // 2] * recs[-1]["iter"] / 60  # median step time ignores the gaps of a resume


def command(run: Path, method: str, seed: int, args) -> list[str] | None:
    """What is left to do for one run: nothing (None), or train (new or resumed) and evaluate. A resumed
    run that already trained to the end only saves and evaluates."""
    if test_metrics(run) is not None:
        return None
    if (run / "last.pt").is_file():
        return [*OCCREID, "train", "--resume", str(run)]
    overrides = [f"data.root={args.data}", f"train.seed={seed}", f"run.out={run}", "run.progress=false"]
    if method in PART_LABELLED:
        if not args.labels:
            raise SystemExit(f"{method} trains with part labels: give --labels DIR "
                             "(made by `occreid labels make --source mediapipe --splits train`)")
        overrides.append(f"data.labels_root={args.labels}")
    return [*OCCREID, "train", "--config", str(PROTOCOLS / args.protocol / f"{method}.yaml"), *overrides, *args.set]


def execute(cmd: list[str] | None) -> None:
    """Echo and run one queue step; a failed step stops the queue (its run resumes on the next call)."""
    if cmd:
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)


def versus_bot(out: Path, name: str, method: str, seed: int, reading: str | None = None) -> dict | None:
    """The run's mAP and rank-1 minus `bot`'s of the same seed, with `occreid compare`'s paired bootstrap
    interval (test-set sampling only), and under "bot" that run's rank-1 and mAP; None for `bot` itself or
    while either run is unfinished."""
    from occreid.evaluation.comparison import paired_difference

    mine, bot = metrics_file(run_dir(out, name, method, seed), reading), metrics_file(run_dir(out, name, "bot", seed))
    if method == "bot" or mine is None or bot is None:
        return None
    figures = json.loads(bot.read_text())
    return paired_difference(bot.parent, mine.parent) | {"bot": {k: figures[k] for k in ("rank1", "mAP")}}


def table(out: Path, name: str, methods: list[str], seeds: list[int]) -> str:
    """Markdown: one row per finished run (and per second reading) with its difference to `bot` of the
    same seed, then mean +- half the range per method and reading with 2+ seeds."""
    from occreid.evaluation.paired_bootstrap import interval_text

    lines = ["| method | seed | train min | rank-1 | rank-5 | mAP | mINP | mAP - `bot` same seed [95 %] |",
             "|---|---|---|---|---|---|---|---|"]
    for method in methods:
        readings = [None, READINGS[method][0]] if method in READINGS else [None]
        for reading in readings:
            label = f"`{method}`" if reading is None else f"`{method}` ({reading})"
            done = []
            for seed in seeds:
                run = run_dir(out, name, method, seed)
                m = test_metrics(run, reading)
                if m is None:
                    lines.append(f"| {label} | {seed} | - | not finished ({trained_iters(run)} iterations) | | | | |")
                    continue
                done.append(m)
                minutes = train_minutes(run)
                vals = " | ".join(f"{100 * m[k]:.1f}" for k in METRICS)
                vs = versus_bot(out, name, method, seed, reading)
                lines.append(f"| {label} | {seed} | {'-' if minutes is None else f'{minutes:.0f}'} | {vals} | "
                             f"{interval_text(vs and vs['mAP'])} |")
            if len(done) >= 2:
                cells = []
                for k in METRICS:
                    v = [100 * m[k] for m in done]
                    cells.append(f"{sum(v) / len(v):.2f} ± {(max(v) - min(v)) / 2:.2f}")
                lines.append(f"| {label} | mean of {len(done)} (± half range) | | {' | '.join(cells)} | |")
    return "\n".join(lines)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def json_records(out: Path, name: str, protocol: str, methods: list[str], seeds: list[int],
                 commit: str | None = None, variant: str = "default") -> list[dict]:
    """One record per finished run and reading, dated by its metrics file; `commit` (default: this
    checkout's) is the code the runs were trained with: give it when the queue ran from another checkout.
    `vs_bot_same_seed` names the `bot` run it was paired with (its rank-1 and mAP): a `bot` seed retrained
    after its record was written pairs with the rerun, and the record says so. `variant` names runs
    trained off the defaults (`--set`): their records take it as their reading (`<variant>_<reading>` for
    a second reading) and their pairings as `bot_reading`, so they never replace the defaults' records."""
    commit = commit or git_commit()
    rows = []
    for method in methods:
        readings = [None, READINGS[method][0]] if method in READINGS else [None]
        for reading in readings:
            label = (reading or "default") if variant == "default" else "_".join(filter(None, [variant, reading]))
            for seed in seeds:
                run = run_dir(out, name, method, seed)
                f = metrics_file(run, reading)
                if f is None:
                    continue
                m = json.loads(f.read_text())
                minutes = train_minutes(run)
                vs = versus_bot(out, name, method, seed, reading)
                rows.append({
                    "protocol": protocol, "method": method, "seed": seed, "reading": label,
                    **{k: round(100 * m[k], 2) for k in METRICS},
                    "train_minutes": None if minutes is None else round(minutes, 1),
                    "vs_bot_same_seed": None if vs is None else {
                        k: {f: round(100 * v, 2) for f, v in vs[k].items() if f != "sure"} for k in ("mAP", "rank1")}
                    | {"resampled": vs["resampled"], "bot": {k: round(100 * v, 2) for k, v in vs["bot"].items()}}
                    | ({} if variant == "default" else {"bot_reading": variant}),
                    "config": f"configs/protocols/{protocol}/{method}.yaml", "git_commit": commit,
                    "date": datetime.date.fromtimestamp(f.stat().st_mtime).isoformat(),
                })
    return rows


def merge_json(path: Path, rows: list[dict]) -> None:
    """Replace the records of the same (protocol, method, seed, reading), keep the others. A record that
    comes back with the same figures is the same run recorded again: it keeps its commit."""
    key = ("protocol", "method", "seed", "reading")
    old = json.loads(path.read_text()) if path.is_file() else []
    before = {tuple(r[k] for k in key): r for r in old}
    for r in rows:
        prior = before.get(tuple(r[k] for k in key))
        if prior is not None and all(prior.get(k) == r[k] for k in METRICS):
            r["git_commit"] = prior.get("git_commit", r["git_commit"])
    fresh = {tuple(r[k] for k in key) for r in rows}
    merged = [r for r in old if tuple(r[k] for k in key) not in fresh] + rows
    merged.sort(key=lambda r: tuple(str(r[k]) for k in key))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=1) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", default="cpu_occduke", help="folder under configs/protocols/")
    ap.add_argument("--methods", nargs="+", default=["bot", "pabreid", "sgsfa", "amdnet", "pan", "ocnet", "pcb"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--data", help="data root holding Occluded_Duke (OCCREID_DATA)")
    ap.add_argument("--labels", help="MediaPipe part labels of Occluded-Duke train, for amdnet / pabreid / sgsfa")
    ap.add_argument("--out", help="default: runs/<protocol>")
    ap.add_argument("--json", help="merge one record per finished run into this JSON file")
    ap.add_argument("--name", default="{method}_seed{seed}", help="run folder name under --out")
    ap.add_argument("--set", action="append", default=[], help="extra override for new runs")
    ap.add_argument("--table-only", action="store_true", help="train nothing; print the table of finished runs")
    ap.add_argument("--variant", default="default",
                    help="with --set: the reading the JSON records of these runs take (e.g. pad8), so a run off "
                    "the defaults never replaces a default's record")
    ap.add_argument("--git-commit", help="the commit the runs were trained with, for the JSON records "
                    "(default: this checkout's HEAD)")
    args = ap.parse_args()

    configs = PROTOCOLS / args.protocol
    if not configs.is_dir():
        raise SystemExit(f"--protocol {args.protocol!r}: no folder {configs}; known: "
                         f"{sorted(p.name for p in PROTOCOLS.iterdir() if p.is_dir())}")
    known = sorted(p.stem for p in configs.glob("*.yaml") if p.stem != "base")
    unknown = [m for m in args.methods if m not in known]
    if unknown:
        raise SystemExit(f"no protocol config for {unknown}; known: {known}")
    out = Path(args.out or f"runs/{args.protocol}")
    if not args.table_only:
        if not args.data:
            raise SystemExit("give --data ROOT (the folder holding Occluded_Duke), or --table-only")
        for method in args.methods:
            for seed in args.seeds:
                run = run_dir(out, args.name, method, seed)
                execute(command(run, method, seed, args))
                execute(reading_command(run, method))  # needs the trained, evaluated run
    text = table(out, args.name, args.methods, args.seeds)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text + "\n")
    if args.json:
        if args.set and args.variant == "default":
            raise SystemExit(f"--set {' '.join(args.set)} trains off the protocol's defaults: give --variant NAME "
                             "so the JSON records do not replace the defaults' records")
        merge_json(Path(args.json), json_records(out, args.name, args.protocol, args.methods, args.seeds,
                                                 args.git_commit, args.variant))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
