"""`occreid curves RUN [RUN ...]`: the training curves of one or more runs in one picture."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from occreid.cli.help_text import examples

    p = sub.add_parser(
        "curves", help="plot runs' loss terms, learning rate and validation scores against iteration",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "occreid curves runs/bot",
            "occreid curves runs/val/baseline runs/val/per_part_bn --labels pooled per-part --out pan_bn.png",
        ),
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or metrics.jsonl files) of `occreid train`")
    p.add_argument("--labels", nargs="+", help="one legend label per run (default: the folder names)")
    p.add_argument("--smooth", type=int, default=9, help="mean over this many logged points centred on each (1: raw)")
    p.add_argument("--out", default="curves.png", help="the picture to write (default: curves.png)")
    p.set_defaults(handler=run_curves)


def run_curves(args) -> int:
    from occreid.engine.training_curves import plot_training_curves
    from occreid.errors import ConfigError

    if args.smooth < 1:
        raise ConfigError(f"--smooth {args.smooth}: expected a whole number >= 1 (1 draws the raw values)")
    print(plot_training_curves(args.runs, args.out, labels=args.labels, smooth=args.smooth))
    return 0
