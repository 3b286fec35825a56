"""`occreid demo`: synthetic occluded data -> train `bot` and `pabreid` -> evaluate on the occluded
queries -> `report.md` with the table, rank lists and part-attention overlays."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

DEMO_METHODS = ("bot", "pabreid")
# Frozen generator settings: the comparison in docs/ was measured on exactly this set.
SYNTH = {"ids": 100, "cams": 4, "images_per_id_cam": 2, "queries_per_id": 2, "height": 128, "width": 64}


def register(sub) -> None:
    from occreid.cli.main import examples

    p = sub.add_parser(
        "demo", help="synthetic occluded set -> train bot and pabreid -> evaluate -> report (CPU, minutes)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples("occreid demo", "occreid demo --out runs/demo --iters 150 --seeds 3"),
    )
    p.add_argument("--out", default="runs/demo", help="folder for data, runs and the report")
    p.add_argument("--iters", type=int, default=250, help="training iterations per method and seed")
    p.add_argument("--seeds", type=int, default=1, help="training seeds per method (the data stays fixed)")
    p.add_argument("--methods", default=",".join(DEMO_METHODS), help="comma-separated method keys")
    p.set_defaults(handler=run_demo)


def configs_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "configs"


def run_demo(args) -> int:
    from occreid.cli.train_cmds import summary_line
    from occreid.data.synth import generate
    from occreid.engine.evaluate import evaluate_checkpoint
    from occreid.engine.trainer import train

    out = Path(args.out)
    data = out / "data" / "synthetic"
    if not (data / "synth.json").is_file():
        print(f"[1/3] generating the synthetic occluded set in {data}")
        generate(data, seed=0, **SYNTH)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    results: dict[str, list[dict]] = {m: [] for m in methods}
    for i, method in enumerate(methods, start=1):
        for seed in range(args.seeds):
            run = out / method / f"seed{seed}"
            print(f"[2/3] training {method} ({i}/{len(methods)}), seed {seed}, {args.iters} iterations")
            if (run / "last.pt").is_file():  # a demo run again (or after a kill): continue, never overwrite
                print(f"      continuing the run in {run}")
                res = train(None, [f"train.max_iters={args.iters}"], resume_dir=str(run))
            else:
                res = train(str(configs_dir() / method / "synthetic.yaml"), [
                    f"data.root={data}", f"train.max_iters={args.iters}", f"train.seed={seed}", f"run.out={run}",
                    "train.checkpoint_every=150",
                ])
            (r,) = evaluate_checkpoint(str(res.run_dir / "last.pt"), out_dir=str(run / "eval"), progress=False)
            print("      " + summary_line(r))
            results[method].append(r)
    print("[3/3] writing the report")
    report = write_demo_report(out, data, results)
    print(report["table"])
    print(f"report: {out / 'report.md'}")
    return 0


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def write_demo_report(out: Path, data: Path, results: dict[str, list[dict]]) -> dict:
    """report.md + report.json; pictures: each method's rank list and pabreid's part-attention maps."""
    from occreid.config import from_dict_config
    from occreid.data.datasets import load_dataset
    from occreid.engine.checkpoint import load_checkpoint
    from occreid.engine.evaluate import load_model
    from occreid.evaluation.attention import attention_overlays
    from occreid.labels.format import part_names

    seeds = len(next(iter(results.values())))
    rows = ["| method | rank-1 | rank-5 | mAP | mINP |", "|---|---|---|---|---|"]
    for m, rs in results.items():
        rows.append(f"| {m} | {_mean_sd([r['rank1'] for r in rs])} | {_mean_sd([r['rank5'] for r in rs])} | "
                    f"{_mean_sd([r['mAP'] for r in rs])} | {_mean_sd([r['mINP'] for r in rs])} |")
    table = "\n".join(rows)
    lines = [
        "# occreid demo", "",
        f"Synthetic occluded pedestrians (`{data}`, generator settings {json.dumps(SYNTH)}, seed 0): every "
        "query is occluded (objects or another person), the gallery is mostly unoccluded. Trained from "
        f"scratch on the CPU, ResNet-18 at 128x64; {seeds} training seed(s), mean ± standard deviation.", "",
        table, "",
        "## Rank lists", "",
        "Query on the left, then the top 10 (green = same identity, red = other identity, grey = junk).", "",
    ]
    for m, rs in results.items():
        rel = Path(rs[0]["checkpoint"]).parent.relative_to(out) / "eval" / "synthetic" / "rank_lists.png"
        lines += [f"### {m}", "", f"![{m} rank list]({rel.as_posix()})", ""]
    if "pabreid" in results:
        ckpt_path = results["pabreid"][0]["checkpoint"]
        ckpt = load_checkpoint(ckpt_path)
        cfg = from_dict_config(ckpt["config"])
        model = load_model(ckpt, cfg)
        queries = (load_dataset("synthetic", str(data)).query or [])[:8]
        pic = attention_overlays(model, cfg, [r.path for r in queries], out / "pabreid_attention.png",
                                 part_names=part_names(cfg.method["grouping"]))
        if pic is not None:
            lines += ["## Part attention (pabreid)", "",
                      "Occluded queries (top) and the arg-max of the pixel-level part predictor (bottom; "
                      "opacity = probability, background transparent).", "",
                      "![pabreid part attention](pabreid_attention.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "report.json").write_text(json.dumps({"synthetic": SYNTH, "results": results}, indent=2))
    return {"table": table}
