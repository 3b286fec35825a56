"""`occreid train` and `occreid eval`."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub) -> None:
    from occreid.cli.help_text import examples

    p = sub.add_parser(
        "train", help="train a method from a YAML config with key=value overrides",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "occreid train --config configs/bot/occluded_duke.yaml data.root=/data",
            "occreid train --config configs/bot/synthetic.yaml model.backbone=resnet18 train.max_iters=50",
            "occreid train --resume runs/bot_occduke          # continue a stopped run exactly",
            "torchrun --nproc_per_node 2 -m occreid train --config configs/bot/market1501.yaml",
        ),
    )
    p.add_argument("--config", help="YAML config file (configs/<method>/<dataset>.yaml)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation on the test set after training")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.lr=3e-4")
    p.set_defaults(handler=run_train)

    e = sub.add_parser(
        "eval", help="evaluate a checkpoint (rank-1/5/10, mAP, mINP, reports and pictures)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "occreid eval --checkpoint runs/bot/last.pt",
            "occreid eval --checkpoint runs/bot/last.pt --dataset occluded_duke --root /data --rerank",
            "occreid eval --checkpoint runs/pabreid/last.pt --flip --json results.json",
        ),
    )
    e.add_argument("--checkpoint", required=True, help="checkpoint file, run folder or model package folder")
    e.add_argument("--dataset", help="test dataset key (default: the training config's test datasets)")
    e.add_argument("--root", help="data root (default: the training config's data.root)")
    e.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3)")
    e.add_argument("--flip", action="store_true", default=None, help="average features with the mirror image")
    e.add_argument("--json", dest="json_out", help="write the metrics JSON here")
    e.add_argument("--out", help="report folder (default: <checkpoint folder>/eval)")
    e.add_argument("--runtime", choices=["torch", "onnx"], default="torch",
                   help="feature extraction: PyTorch, or ONNX Runtime on the CPU (the `export` extra; checked "
                   "against PyTorch on the first batch)")
    e.add_argument("--report-images", choices=["embed", "link"], default="embed",
                   help="report.html: thumbnails embedded (one self-contained file; about 18 MB and 3.4 s for "
                   "Occluded-Duke) or images linked by relative path (about 2 MB and 0.1 s; the page then needs "
                   "the dataset folder where it was)")
    e.add_argument(
        "overrides", nargs="*",
        help="dotted key=value overrides: eval.*, data.* and a method's test-time options "
        "(e.g. method.normalise_distance=true for sgsfa)",
    )
    e.set_defaults(handler=run_eval)


def run_train(args) -> int:
    """Train; a SIGINT/SIGTERM stop returns 128 + the signal's number after saying what was saved."""
    from occreid.engine.stop_signals import StopNow
    from occreid.engine.trainer import TrainingInterrupted, train

    if not args.config and not args.resume:
        from occreid.errors import ConfigError

        raise ConfigError("give --config FILE (see configs/) or --resume RUN_DIR")
    try:
        result = train(args.config, args.overrides, resume_dir=args.resume)
    except TrainingInterrupted as e:
        print(f"occreid: {e}", file=sys.stderr)
        return e.exit_code
    except StopNow as e:  # a signal during the stop itself
        print(f"occreid: stopped at once by {e}", file=sys.stderr)
        return 128 + e.signum
    print(f"trained {result.iterations} iterations; checkpoint: {result.run_dir / 'last.pt'}")
    if not args.no_eval:
        from occreid.engine.checkpoint import load_checkpoint
        from occreid.engine.evaluate import evaluate_checkpoint

        cfg = load_checkpoint(result.run_dir / "last.pt")["config"]
        skipped = None if cfg["data"]["test_datasets"] else why_no_test_split(cfg)
        if skipped:
            print(
                f"occreid: warning: no evaluation after training: {skipped}. The checkpoint is fine; evaluate "
                f"it on another set with `occreid eval --checkpoint {result.run_dir / 'last.pt'} --dataset KEY "
                "--root DIR`, or pass --no-eval to skip this step",
                file=sys.stderr,
            )
            return 0
        for r in evaluate_checkpoint(str(result.run_dir / "last.pt")):
            print(summary_line(r))
    return 0


def why_no_test_split(cfg: dict) -> str | None:
    """Why the training set has nothing to evaluate on (None when it has query and gallery images)."""
    from occreid.data.datasets import load_dataset

    key, root = cfg["data"]["dataset"], cfg["data"]["root"]
    try:
        s = load_dataset(key, root)
    except Exception as e:  # noqa: BLE001 - training is done; say why there is no test, do not crash
        return f"data.dataset={key} under {root} cannot be loaded for testing ({type(e).__name__}: {e})"
    empty = [name for name, split in (("query", s.query), ("gallery", s.gallery)) if not split]
    if empty:
        return f"data.dataset={key} under {root} has an empty or absent {' and '.join(empty)} split"
    return None


def summary_line(r: dict) -> str:
    return (
        f"{r['dataset']}: rank-1 {100 * r['rank1']:.1f}  rank-5 {100 * r['rank5']:.1f}  "
        f"mAP {100 * r['mAP']:.1f}  mINP {100 * r['mINP']:.1f}  "
        f"({r['num_valid_queries']}/{r['num_query']} queries, rerank={r['rerank']}, flip={r['flip']})"
    )


def run_eval(args) -> int:
    from occreid.engine.evaluate import evaluate_checkpoint

    results = evaluate_checkpoint(
        args.checkpoint, dataset=args.dataset, root=args.root, overrides=args.overrides,
        rerank=args.rerank, flip=args.flip, json_out=args.json_out, out_dir=args.out,
        runtime=args.runtime, report_images=args.report_images,
    )
    for r in results:
        print(summary_line(r))
    if not results:  # a non-zero rank under torchrun: rank 0 reports
        return 0
    if args.json_out:
        print(f"metrics: {args.json_out}")
    else:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    return 0
