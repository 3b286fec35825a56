"""Compare training-recipe candidates on a validation split carved from the training identities.

Each candidate is one `occreid train` run of the same config plus its overrides, with `data.val_ids`
identities held out and scored every `--eval-every` iterations (leave-one-out, Market rule); the test
set is never touched (`--no-eval`). Finished runs are kept, so re-running the script only trains what
is missing. Prints a Markdown table and writes it, with the raw numbers and every candidate's training
curves overlaid (`curves.png`, as `occreid curves`), under `--out`.

A candidate may set its own `train.max_iters` (equal wall-clock budgets for different input sizes);
`--evals K` then spaces K validations evenly over each candidate's own run.

`--distance NAME=key=value,...` adds test-time candidates (a method's distance recipe: shared-part
matching, normalisation, a weight): the held-out features of each trained run are extracted once from
its final `last.pt` and scored under every distance candidate, so a recipe is chosen without the test set.

    python benchmarks/recipe_val.py --config configs/protocols/cpu_occduke/bot.yaml \\
        --set data.root=/work/shared/data --iters 645 \\
        --candidate baseline= --candidate no_wd=train.weight_decay=0 \\
        --candidate no_center=method.center_weight=0 --candidate pad5=data.pad=5

    python benchmarks/recipe_val.py --config configs/protocols/cpu_occduke/sgsfa.yaml \\
        --set data.root=/work/shared/data --iters 645 --candidate baseline= \\
        --distance eq7_sum= --distance normalised=method.normalise_distance=true
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from occreid.evaluation.paired_bootstrap import interval_text, paired_bootstrap


def parse_candidate(text: str) -> tuple[str, list[str]]:
    """`name=key=value,key=value` (or `name=` for the unchanged config) -> (name, overrides)."""
    name, _, rest = text.partition("=")
    if not name:
        raise SystemExit(f"--candidate {text!r}: expected NAME=key=value[,key=value...] or NAME=")
    return name, [o for o in rest.split(",") if o]


def records(run: Path) -> list[dict]:
    f = run / "metrics.jsonl"
    return [json.loads(ln) for ln in f.read_text().splitlines()] if f.is_file() else []


def train_seconds(run: Path) -> float | None:
    """Seconds spent in training steps (the trainer's `train_s`), validation excluded; None if not logged."""
    recs = [r for r in records(run) if "train_s" in r]
    return float(recs[-1]["train_s"]) if recs else None


def val_records(run: Path) -> list[dict]:
    return [r for r in records(run) if "val_mAP" in r]


def finished(run: Path, iters: int) -> bool:
    """Trained to `iters` (the last validation may fall a few iterations before the end)."""
    return any(r.get("iter") == iters and "loss" in r for r in records(run)) and bool(val_records(run))


def held_out_scores(run: Path, candidates: list[tuple[str, list[str]]]) -> dict[str, dict[str, np.ndarray]]:
    """Per-query AP, rank-1 hit and identity of the run's final model on its held-out identities under
    each test-time override set (features extracted once). Cached in `held_out_scores.npz` beside
    `last.pt`, keyed by the checkpoint's modification time and the candidates."""
    cache = run / "held_out_scores.npz"
    key = json.dumps([(run / "last.pt").stat().st_mtime_ns, candidates])
    if cache.is_file():
        with np.load(cache) as z:
            if str(z["key"]) == key:
                return {name: {f: z[f"{name}/{f}"] for f in ("ap", "hit", "pid")} for name, _ in candidates}
    import torch

    from occreid.config import apply_overrides, from_dict_config
    from occreid.engine.checkpoint import load_checkpoint
    from occreid.engine.evaluate import compute_distances, load_model
    from occreid.engine.extract import extract_features
    from occreid.engine.trainer import carve_validation, load_training_data, split_validation
    from occreid.evaluation import rank_metrics

    ckpt = load_checkpoint(run / "last.pt")
    cfg = from_dict_config(ckpt["config"])
    _, val = carve_validation(load_training_data(cfg).train, cfg.data.val_ids, cfg.train.seed)
    query, _ = split_validation(val)
    feats = extract_features(load_model(ckpt, cfg), query, cfg, device=torch.device("cpu"), progress=False)
    pids = np.array([r.pid for r in query])
    cams = np.array([r.camid for r in query])
    scores = {}
    for name, overrides in candidates:
        dist = compute_distances(from_dict_config(apply_overrides(ckpt["config"], overrides)), feats, feats,
                                 rerank=False)
        m = rank_metrics(dist, pids, pids, cams, cams)
        scores[name] = {"ap": m["ap"], "hit": m["first_hit"] == 0, "pid": pids}
    np.savez(cache, key=key, **{f"{n}/{f}": v for n, sc in scores.items() for f, v in sc.items()})
    return scores


def headline(score: dict[str, np.ndarray]) -> tuple[float, float]:
    """(rank-1, mAP) over the queries with a true match."""
    valid = ~np.isnan(score["ap"])
    return float(score["hit"][valid].mean()), float(score["ap"][valid].mean())


def against(score: dict[str, np.ndarray], base: dict[str, np.ndarray]) -> dict:
    """Candidate - baseline on the same held-out queries, with a paired bootstrap by identity."""
    return paired_bootstrap(base["ap"], score["ap"], base["hit"], score["hit"], clusters=score["pid"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--candidate", action="append", required=True, help="NAME=key=value[,key=value...]")
    ap.add_argument("--set", action="append", default=[], help="override shared by every candidate")
    ap.add_argument("--iters", type=int, required=True, help="train.max_iters of every candidate")
    ap.add_argument("--distance", action="append", default=[],
                    help="test-time candidate NAME=key=value[,...] scored on every run's held-out ids")
    ap.add_argument("--val-ids", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=0, help="default: --evals evenly spaced validations")
    ap.add_argument("--evals", type=int, default=2, help="validations per run when --eval-every is not given")
    ap.add_argument("--out", default="runs/recipe_val")
    ap.add_argument("--no-paired", dest="paired", action="store_false",
                    help="skip the paired bootstrap of each candidate against the first (one feature "
                         "extraction of the held-out identities per candidate)")
    args = ap.parse_args()

    out = Path(args.out)
    rows = []
    scores: dict[str, dict] = {}  # candidate -> distance -> per-query scores
    distances = [parse_candidate(d) for d in args.distance] or [("default", [])]
    for name, overrides in map(parse_candidate, args.candidate):
        own = [o.split("=", 1)[1] for o in overrides if o.startswith("train.max_iters=")]
        iters = int(own[-1]) if own else args.iters
        every = args.eval_every or max(1, -(-iters // args.evals))  # ceil: the last one is the final iteration
        run = out / name
        if not finished(run, iters):
            resume = (run / "last.pt").is_file()
            cmd = [sys.executable, "-m", "occreid", "train", "--no-eval"]
            cmd += ["--resume", str(run)] if resume else ["--config", args.config]
            if not resume:
                cmd += [*args.set, f"train.max_iters={iters}", *overrides, f"data.val_ids={args.val_ids}",
                        f"train.eval_every={every}", f"run.out={run}", "run.progress=false"]
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        recs = val_records(run)
        last = recs[-1]
        rows.append({"candidate": name, "overrides": overrides, "iters": last["iter"], "train_s": train_seconds(run),
                     "val_rank1": last["val_rank1"], "val_mAP": last["val_mAP"],
                     "curve": [(r["iter"], r["val_rank1"], r["val_mAP"]) for r in recs]})
        if (args.paired and len(args.candidate) > 1) or args.distance:  # a lone candidate has nothing to pair
            scores[name] = held_out_scores(run, distances)
        if args.distance:
            rows[-1]["distances"] = [
                {"distance": d, "overrides": o, **dict(zip(("val_rank1", "val_mAP"), headline(scores[name][d])))}
                for d, o in distances]
    if args.paired and rows:
        base = rows[0]["candidate"]
        for r in rows[1:]:
            r["vs_first"] = against(scores[r["candidate"]][distances[0][0]], scores[base][distances[0][0]])
    if args.distance and rows:  # each reading against the first candidate's same reading and the run's first
        base, first = rows[0]["candidate"], distances[0][0]
        for r in rows:
            own = scores[r["candidate"]]
            for d in r["distances"]:
                if r["candidate"] != base:  # the first reading's is `vs_first`, already drawn
                    d["vs_first_candidate"] = r["vs_first"] if d["distance"] == first and "vs_first" in r else \
                        against(own[d["distance"]], scores[base][d["distance"]])
                if d["distance"] != first:
                    d["vs_first_distance"] = against(own[d["distance"]], own[first])

    lines = [f"Validation: {args.val_ids} held-out training identities, leave-one-out, Market rule; "
             f"{args.iters} iterations; config {args.config}", "",
             "| candidate | overrides | train min | val rank-1 | val mAP | curve (iter: R1 / mAP) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        curve = "; ".join(f"{i}: {100 * a:.1f} / {100 * m:.1f}" for i, a, m in r["curve"])
        minutes = f"{r['train_s'] / 60:.1f}" if r["train_s"] is not None else "-"
        lines.append(f"| {r['candidate']} | {' '.join(r['overrides']) or '-'} | {minutes} | "
                     f"{100 * r['val_rank1']:.1f} | {100 * r['val_mAP']:.1f} | {curve} |")
    if args.paired and len(rows) > 1:
        level = rows[1]["vs_first"]["level"]
        lines += ["", f"Against `{rows[0]['candidate']}` on the same held-out queries (first distance: "
                  f"`{distances[0][0]}`), {100 * level:.0f} % paired bootstrap intervals resampling the "
                  f"{rows[1]['vs_first']['num_units']} held-out identities: test-set sampling only, not seeds.",
                  "", "| candidate | val mAP - first | val rank-1 - first | interval excludes 0 |", "|---|---|---|---|"]
        for r in rows[1:]:
            v = r["vs_first"]
            sure = ", ".join(m for m in ("mAP", "rank1") if v[m] and v[m]["sure"]) or "neither"
            lines.append(f"| {r['candidate']} | {interval_text(v['mAP'])} | {interval_text(v['rank1'])} | {sure} |")
    if args.distance:
        def versus(v: dict | None) -> str:
            return "" if v is None else f"{interval_text(v['mAP'])}; {interval_text(v['rank1'])}"

        lines += ["", f"Each reading against `{rows[0]['candidate']}` under the same reading, and against the "
                  f"same run's first reading (`{distances[0][0]}`): mAP; rank-1, same paired bootstrap.", "",
                  "| candidate | distance | overrides | val rank-1 | val mAP | vs first candidate "
                  "| vs first distance |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            for d in r["distances"]:
                lines.append(f"| {r['candidate']} | {d['distance']} | {' '.join(d['overrides']) or '-'} | "
                             f"{100 * d['val_rank1']:.1f} | {100 * d['val_mAP']:.1f} | "
                             f"{versus(d.get('vs_first_candidate'))} | {versus(d.get('vs_first_distance'))} |")
    table = "\n".join(lines)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    if rows:
        from occreid.engine.training_curves import plot_training_curves

        names = [r["candidate"] for r in rows]
        print(plot_training_curves([out / n for n in names], out / "curves.png", labels=names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
