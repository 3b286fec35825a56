"""`occreid data stats | check | synth | cache`."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    from occreid.cli.help_text import examples

    d = sub.add_parser("data", help="inspect, check and generate datasets")
    dsub = d.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    d.set_defaults(handler=lambda a: d.print_help() or 2)

    s = dsub.add_parser(
        "stats", help="images, identities and cameras per split",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "occreid data stats --dataset occluded_duke --root /data",
            "occreid data stats --dataset market1501 --root /data --json",
        ),
    )
    _dataset_args(s)
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(handler=run_stats)

    c = dsub.add_parser(
        "check", help="find layout problems, unreadable images or part labels, camera-id and duplicate issues",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "occreid data check --dataset occluded_duke --root /data",
            "occreid data check --dataset partial_reid --root /data --no-images",
        ),
    )
    _dataset_args(c)
    c.add_argument("--no-images", action="store_true",
                   help="do not open every image and part label (names only)")
    c.add_argument("--workers", type=int, default=2, help="processes that verify images")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(handler=run_check)

    g = dsub.add_parser(
        "synth", help="generate the synthetic occluded set (Market layout + exact part labels)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "occreid data synth --out data/synthetic",
            "occreid data synth --out /tmp/syn --ids 40 --cams 3 --seed 1",
        ),
    )
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--ids", type=int, default=200, help="identities (half train, half test)")
    g.add_argument("--cams", type=int, default=4, help="cameras")
    g.add_argument("--images-per-id-cam", type=int, default=2, help="images per identity and camera")
    g.add_argument("--height", type=int, default=128)
    g.add_argument("--width", type=int, default=64)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--queries-per-id", type=int, default=2, help="occluded queries per test identity")
    g.add_argument("--workers", type=int, default=2)
    g.add_argument("--overwrite", action="store_true", help="replace an existing synthetic set in --out")
    g.set_defaults(handler=run_synth)

    k = dsub.add_parser(
        "cache", help="build a training config's decode cache ahead (decoded, resized images and part labels)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "occreid data cache --config configs/bot/occluded_duke.yaml data.root=/data",
            "occreid data cache --config configs/pabreid/market1501.yaml data.cache_dir=/scratch/occreid",
        ),
    )
    k.add_argument("--config", required=True, help="the training config (YAML) whose data the cache holds")
    k.add_argument("overrides", nargs="*", help="dotted key=value overrides, as for `occreid train`")
    k.set_defaults(handler=run_cache)


def _dataset_args(p) -> None:
    from occreid.data.datasets import DATASETS

    p.add_argument("--dataset", required=True, choices=sorted(DATASETS), metavar="NAME",
                   help=f"one of: {', '.join(sorted(DATASETS))}")
    p.add_argument("--root", required=True, help="data root holding the dataset folder")
    p.add_argument("--query", choices=["partial", "occluded"], default=None,
                   help="partial_reid query folder (default partial)")
    p.add_argument("--variant", choices=["labeled", "detected"], default=None, help="cuhk03 boxes (default labeled)")
    p.add_argument("--labels-root", default=None, help="where part labels live (default <dataset>/occreid_labels)")


def _options(args) -> dict:
    opts: dict = {"labels_root": args.labels_root}
    if args.query and args.dataset == "partial_reid":
        opts["query"] = args.query
    if args.variant and args.dataset == "cuhk03":
        opts["variant"] = args.variant
    return opts


def run_stats(args) -> int:
    from occreid.data.datasets import dataset_stats, load_dataset

    splits = load_dataset(args.dataset, args.root, **_options(args))
    stats = dataset_stats(splits)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"{stats['dataset']}  ({splits.root})")
    print(f"{'split':<10}{'images':>10}{'ids':>8}{'cams':>6}")
    for name, s in stats["splits"].items():
        print(f"{name:<10}{s['images']:>10,}{s['ids']:>8,}{s['cams']:>6}")
    for note in splits.notes:
        print(f"note: {note}")
    return 0


def run_check(args) -> int:
    from occreid.data.check import check_dataset

    report = check_dataset(args.dataset, args.root, verify_images=not args.no_images, workers=args.workers,
                           **_options(args))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0 if report.ok else 1


def run_synth(args) -> int:
    from occreid.data.synth import generate

    summary = generate(
        args.out, ids=args.ids, cams=args.cams, images_per_id_cam=args.images_per_id_cam,
        height=args.height, width=args.width, seed=args.seed, workers=args.workers,
        queries_per_id=args.queries_per_id, overwrite=args.overwrite,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


def run_cache(args) -> int:
    """Build (or find up to date) the decode cache `occreid train` would use for this config."""
    from occreid.config import load_config
    from occreid.engine.train_data import label_settings, prepare_decode_cache
    from occreid.engine.trainer import carve_validation, load_training_data
    from occreid.methods import get_method

    cfg = load_config(args.config, args.overrides)
    splits = load_training_data(cfg)
    train, _ = carve_validation(splits.train, cfg.data.val_ids, cfg.train.seed)
    labels, _ = label_settings(cfg, get_method(cfg.model.name))
    images, label_folder = prepare_decode_cache(cfg, train, splits.root, labels, progress=cfg.run.progress)
    print(f"images: {images}  ({len(train)} at {cfg.data.height}x{cfg.data.width})")
    if label_folder is not None:
        print(f"part labels: {label_folder}")
    else:
        print(f"part labels: none ({cfg.model.name} trains without them)")
    return 0
