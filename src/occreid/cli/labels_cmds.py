"""`occreid labels make | show`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub) -> None:
    from occreid.cli.help_text import examples

    lab = sub.add_parser("labels", help="make and show part labels (human parsing supervision)")
    lsub = lab.add_subparsers(dest="labels_command", metavar="SUBCOMMAND")
    lab.set_defaults(handler=lambda a: lab.print_help() or 2)

    m = lsub.add_parser(
        "make", help="write canonical part labels for a dataset from keypoints, PifPaf, LIP or MediaPipe",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "occreid labels make --dataset market1501 --root /data --source keypoints \\\n"
            "      --keypoints /data/Market-1501/keypoints_openpose18_train.csv --out labels/market",
            "occreid labels make --dataset occluded_duke --root /data --source mediapipe --out labels/occduke",
            "occreid labels make --dataset occluded_duke --root /data --source pifpaf "
            "--masks-dir /data/Occluded_Duke/masks/pifpaf",
        ),
    )
    _dataset_args(m)
    m.add_argument("--source", required=True, choices=["keypoints", "mediapipe", "pifpaf", "lip"])
    m.add_argument("--keypoints", dest="keypoints_file", help="keypoint file (OpenPose CSV/JSON, AlphaPose, COCO)")
    m.add_argument("--masks-dir", help="folder <dataset>/masks/<name> with PifPaf .npy or LIP .png files")
    m.add_argument("--out", help="labels root (default <dataset folder>/occreid_labels; use it when the dataset "
                                 "folder is read-only and pass the same folder as data.labels_root)")
    m.add_argument("--splits", default="train,query,gallery", help="comma-separated splits to label")
    m.add_argument("--workers", type=int, default=2)
    m.add_argument("--min-conf", type=float, default=0.1, help="keypoint confidence below which a joint is absent")
    m.add_argument("--overwrite", action="store_true", help="redo images that already have a label")
    m.add_argument("--mediapipe-mode", default="crop", choices=["crop", "detector"],
                   help="crop: the crop is the person's region (default); detector: BlazePose's own person "
                        "detector (see docs/labels.md)")
    m.add_argument("--sample", type=int, default=None,
                   help="label only a seeded random N images (estimate coverage and time first)")
    m.set_defaults(handler=run_make)

    s = lsub.add_parser(
        "show", help="write overlay pictures of part labels on their images",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples("occreid labels show --dataset synthetic --root data/synthetic --out labels.png"),
    )
    _dataset_args(s)
    s.add_argument("--labels-root", help="labels root (default <dataset folder>/occreid_labels)")
    s.add_argument("--split", default="train", choices=["train", "query", "gallery"])
    s.add_argument("--count", type=int, default=32, help="how many labelled images to show")
    s.add_argument("--out", required=True, help="PNG file to write")
    s.set_defaults(handler=run_show)


def _dataset_args(p) -> None:
    p.add_argument("--dataset", required=True, help="dataset key (see `occreid data stats --help`)")
    p.add_argument("--root", required=True, help="data root holding the dataset folder")


def split_folder_of(image: str, dataset_folder: str) -> str:
    """The folder name labels are filed under: the image folder relative to the dataset folder, without
    a per-identity sub-folder (Occluded-REID / P-DukeMTMC / MSMT17 keep images in `<pid>/`)."""
    rel = Path(image).parent.relative_to(dataset_folder)
    if len(rel.parts) > 1 and rel.parts[-1].isdigit():
        rel = rel.parent
    return rel.as_posix()


def run_make(args) -> int:
    from occreid.data.datasets import load_dataset
    from occreid.labels.make import make_labels

    splits = load_dataset(args.dataset, args.root)
    out = Path(args.out) if args.out else Path(splits.root) / "occreid_labels"
    by_folder: dict[str, list[str]] = {}
    for name in args.splits.split(","):
        for r in splits.split(name.strip()) or []:
            by_folder.setdefault(split_folder_of(r.path, splits.root), []).append(r.path)
    report = make_labels(
        by_folder, args.source, out, keypoints_file=args.keypoints_file, masks_dir=args.masks_dir,
        workers=args.workers, min_conf=args.min_conf, overwrite=args.overwrite, sample=args.sample,
        mediapipe_options={"mode": args.mediapipe_mode} if args.source == "mediapipe" else None,
    )
    print(report.to_text())
    print(f"labels: {out}" + ("" if not args.out else f"  (train with data.labels_root={out})"))
    return 0


def run_show(args) -> int:
    from occreid.data.datasets import load_dataset
    from occreid.labels.show import show_labels

    splits = load_dataset(args.dataset, args.root, labels_root=args.labels_root)
    records = [r for r in splits.split(args.split) or [] if r.label_path][: args.count]
    if not records:
        from occreid.errors import LabelError

        raise LabelError(f"no {args.split} image of {args.dataset} has a part label; make them with "
                         "`occreid labels make` (and pass --labels-root if you used --out)")
    show_labels([r.path for r in records], [r.label_path for r in records], args.out)
    print(json.dumps({"images": len(records), "out": args.out}))
    return 0
