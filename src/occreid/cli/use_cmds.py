"""`occreid extract`, `occreid index build`, `occreid search`, `occreid export`: use a trained model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub) -> None:
    from occreid.cli.help_text import examples

    raw = argparse.RawDescriptionHelpFormatter
    e = sub.add_parser(
        "extract", help="features of every image in a folder (batched, resumable) into a feature folder",
        formatter_class=raw,
        epilog=examples(
            "occreid extract --checkpoint runs/bot/last.pt --images data/Occluded_Duke/bounding_box_test "
            "--out gallery.feats",
            "occreid extract --checkpoint runs/pabreid/last.pt --images crops/ --out crops.feats --resume",
            "occreid extract --checkpoint runs/bot/last.pt --images big/ --out big.feats --dtype float16 "
            "--workers 8",
        ),
    )
    e.add_argument("--checkpoint", required=True, help="checkpoint file or run folder")
    e.add_argument("--images", required=True, help="folder of images (searched recursively)")
    e.add_argument("--out", required=True, help="feature folder to write (format: docs/inference.md)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--workers", type=int, default=2, help="data-loading processes (0 = in this process)")
    e.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.parts/")
    e.add_argument("--shard-size", type=int, default=4096, help="images per resumable shard")
    e.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="embedding storage")
    e.add_argument("--device", default="cpu")
    e.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average with the mirror image (default: the checkpoint's eval.flip)")
    e.add_argument("--runtime", choices=["torch", "onnx"], default="torch",
                   help="PyTorch, or ONNX Runtime on the CPU (the `export` extra; checked against PyTorch on "
                   "the first batch)")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(handler=run_extract)

    ix = sub.add_parser("index", help="gallery index for `occreid search`")
    ix_sub = ix.add_subparsers(dest="index_command", metavar="SUBCOMMAND")
    b = ix_sub.add_parser(
        "build", help="build a FAISS index over a feature folder (flat, IVF or HNSW)", formatter_class=raw,
        epilog=examples(
            "occreid index build --features gallery.feats --out gallery.index",
            "occreid index build --features big.feats --out big.index --kind ivf --nprobe 64",
            "occreid index build --features big.feats --out big.index --kind auto --flat-max 200000",
        ),
    )
    b.add_argument("--features", required=True, help="gallery feature folder from `occreid extract`")
    b.add_argument("--out", required=True, help="index folder to write")
    b.add_argument("--kind", choices=["auto", "flat", "ivf", "hnsw"], default="auto",
                   help="auto: exact flat up to --flat-max images, IVF beyond")
    b.add_argument("--flat-max", type=int, default=100_000)
    b.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~sqrt(N))")
    b.add_argument("--nprobe", type=int, default=None,
                   help="IVF lists probed per query (default: --nprobe-fraction of the lists)")
    b.add_argument("--nprobe-fraction", type=float, default=0.25, help="default nprobe as a fraction of nlist")
    b.add_argument("--ef-search", type=int, default=128, help="HNSW search depth")
    b.add_argument("--embedding", default=None, help="embedding for candidates (default: the method's)")
    b.add_argument("--far", type=float, default=1e-3, help="FAR of the stored search threshold")
    b.add_argument("--no-threshold", action="store_true", help="do not derive a threshold from gallery names")
    b.set_defaults(handler=run_index_build)
    ix.set_defaults(handler=lambda args: ix.print_help() or 2)

    s = sub.add_parser(
        "search", help="two-stage search: FAISS candidates, exact re-rank with the method's distance",
        formatter_class=raw,
        epilog=examples(
            "occreid search --index gallery.index --query query.feats --json results.json",
            "occreid search --index gallery.index --images new_crops/ --topk 5 --picture ranks.png",
            "occreid search --index gallery.index --query q.feats --rerank 200 --same-camera-filter off",
            "occreid search --index gallery.index --query best.feats --allow-other-checkpoint",
        ),
    )
    s.add_argument("--index", required=True, help="index folder from `occreid index build`")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--query", help="query feature folder from `occreid extract`")
    src.add_argument("--images", help="folder of query images (extracted with the gallery's checkpoint)")
    s.add_argument("--checkpoint", help="checkpoint for --images (default: the one that made the gallery)")
    s.add_argument("--topk", type=int, default=10)
    s.add_argument("--rerank", type=int, default=100, help="FAISS candidates re-ranked exactly per query")
    s.add_argument("--nprobe", type=int, default=None, help="IVF lists probed, for this search only")
    s.add_argument("--ef-search", type=int, default=None, help="HNSW search depth, for this search only")
    s.add_argument("--same-camera-filter", choices=["on", "off"], default="on",
                   help="drop gallery images of the query's camera (or with its file name); default on")
    s.add_argument("--json", dest="json_out", help="write the results JSON here")
    s.add_argument("--picture", help="write a rank-list picture (PNG) here")
    s.add_argument("--picture-queries", type=int, default=8, help="queries drawn in --picture")
    s.add_argument("--workers", type=int, default=0)
    s.add_argument("--allow-other-checkpoint", action="store_true",
                   help="search with queries extracted by another checkpoint (or config) than the gallery's; "
                   "refused by default because two models' features are not comparable")
    s.set_defaults(handler=run_search)

    x = sub.add_parser(
        "export", help="export a checkpoint: ONNX (full or tracker, fp32 or INT8), OpenVINO IR, model package",
        formatter_class=raw,
        epilog=examples(
            "occreid export --checkpoint runs/bot/last.pt --out bot.onnx",
            "occreid export onnx --checkpoint runs/pabreid/last.pt --out pabreid.onnx --opset 17",
            "occreid export --checkpoint runs/pcb/last.pt --out pcb.onnx --no-dynamic-batch",
            "occreid export onnx --tracker --checkpoint runs/bot/last.pt --out bot_tracker.onnx",
            "occreid export onnx --int8 --calib DATA/Occluded_Duke/bounding_box_train --checkpoint runs/bot/last.pt "
            "--out bot_int8.onnx --check-dataset occluded_duke --root DATA",
            "occreid export openvino --checkpoint runs/bot/last.pt --out bot_openvino_model/",
            "occreid export package --checkpoint runs/bot/last.pt --out bot_occduke/",
        ),
    )
    x.add_argument("format", nargs="?", choices=["onnx", "openvino", "package"], default="onnx",
                   help="onnx (default), openvino (IR .xml + .bin) or package (safetensors folder)")
    x.add_argument("--checkpoint", required=True, help="checkpoint file, run folder or model package folder")
    x.add_argument("--out", required=True, help="ONNX file, OpenVINO .xml (or folder), or new package folder")
    x.add_argument("--opset", type=int, default=17)
    x.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=True,
                   help="dynamic batch axis (default on)")
    x.add_argument("--tracker", action="store_true",
                   help="tracker interface: input `images`, one output `output` (L2-normalised global embedding)")
    x.add_argument("--int8", action="store_true", help="ONNX only: INT8 static quantization (needs --calib)")
    x.add_argument("--calib", help="--int8: folder of training crops to calibrate on")
    x.add_argument("--calib-images", type=int, default=300, help="--int8: crops drawn from --calib")
    x.add_argument("--calib-method", choices=["minmax", "percentile", "entropy"], default="minmax")
    x.add_argument("--parity-images", type=int, default=8,
                   help="random images checked against PyTorch after export (0 = skip)")
    x.add_argument("--check-dataset", metavar="KEY",
                   help="also evaluate the export next to PyTorch on this test dataset (R1, mAP, top-1 changes)")
    x.add_argument("--root", help="--check-dataset: data root (default: the checkpoint's data.root)")
    x.set_defaults(handler=run_export)


def run_extract(args) -> int:
    from occreid.api import load
    from occreid.inference.extract_folder import extract_folder

    model = load(args.checkpoint, device="cpu" if args.runtime == "onnx" else args.device, flip=args.flip)
    if args.runtime == "onnx":
        from occreid.inference.onnx_features import OnnxEmbedder

        model = OnnxEmbedder(model)
    fs = extract_folder(model, args.images, args.out, batch_size=args.batch_size, workers=args.workers,
                        resume=args.resume, shard_size=args.shard_size, dtype=args.dtype,
                        progress=not args.no_progress)
    shapes = ", ".join(f"{k} {list(v.shape[1:])}" for k, v in fs.arrays.items())
    print(f"{len(fs)} images -> {args.out} ({shapes})")
    if fs.skipped:
        print(f"skipped {len(fs.skipped)} unreadable images:")
        for path, why in fs.skipped[:20]:
            print(f"  {path}: {why}")
    return 0


def run_index_build(args) -> int:
    from occreid.inference.index import GalleryIndex, IndexOptions

    opts = IndexOptions(kind=args.kind, flat_max=args.flat_max, nlist=args.nlist, nprobe=args.nprobe,
                        nprobe_fraction=args.nprobe_fraction, ef_search=args.ef_search, far=args.far)
    idx = GalleryIndex.build(args.features, args.out, opts, key=args.embedding,
                             labelled=not args.no_threshold)
    m = idx.meta
    print(f"{m['kind']} index of {m['count']} x {m['dim']} ({m['key']}) -> {args.out}")
    t = m["threshold"]
    if t:
        print(f"search threshold {t['value']:.4f} at FAR {t['chosen_far']:g} "
              f"(TAR {t['tar'][t['far'].index(t['chosen_far'])]:.3f}, {t['images_sampled']} labelled images)")
    return 0


def run_search(args) -> int:
    from occreid.inference.features_file import read_features
    from occreid.inference.index import GalleryIndex

    idx = GalleryIndex.open(args.index)
    if args.images:
        import tempfile

        from occreid.api import load
        from occreid.inference.extract_folder import extract_folder

        ckpt = args.checkpoint or gallery_checkpoint(idx, args.index)
        with tempfile.TemporaryDirectory() as tmp:
            queries = extract_folder(load(ckpt), args.images, Path(tmp) / "query.feats", workers=args.workers,
                                     progress=False)
            queries = queries.take(range(len(queries)))  # into memory before the folder goes
        source = f"--images {args.images}"
    else:
        queries = read_features(args.query)
        source = f"--query {args.query}"
    idx.check_queries(queries, args.allow_other_checkpoint, source)
    result = idx.search(queries, topk=args.topk, rerank=args.rerank,
                        same_camera_filter=args.same_camera_filter == "on", nprobe=args.nprobe,
                        ef_search=args.ef_search, allow_other_checkpoint=args.allow_other_checkpoint)
    payload = result.to_json()
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(payload, indent=1))
        print(f"results: {args.json_out}")
    if args.picture:
        from occreid.inference.rank_picture import search_picture

        require_images(result, idx.meta["features"], source, args.picture_queries)
        if search_picture(result, args.picture, args.picture_queries):
            print(f"picture: {args.picture}")
    if not args.json_out:
        for q in payload["queries"][:20]:
            top = ", ".join(f"{Path(h['path']).name} {h['distance']:.3f}" for h in q["results"][:5])
            print(f"{Path(q['query']).name}: {top}")
    return 0


def gallery_checkpoint(idx, index: str) -> str:
    """The checkpoint that made the gallery (recorded absolute since this occreid); DatasetError with the
    fix when the index records none or it is not there (an older, relative record read from elsewhere)."""
    from occreid.errors import DatasetError

    ckpt = idx.meta["identity"].get("checkpoint")
    if not ckpt:
        raise DatasetError(f"{index}: the index records no checkpoint; pass --checkpoint CKPT for --images")
    if not Path(ckpt).exists():
        raise DatasetError(f"{index}: the gallery's checkpoint {ckpt} is not there (moved, or a relative path "
                           "recorded by an older occreid from another folder); pass --checkpoint CKPT")
    return ckpt


def require_images(result, features: str, source: str, max_queries: int) -> None:
    """DatasetError naming the feature folder when images a rank-list picture draws are missing (e.g.
    relative paths recorded by an older occreid, read from another working directory)."""
    from occreid.errors import DatasetError

    drawn = [i for i in range(len(result.query_paths)) if (result.indices[i] >= 0).any()][:max_queries]
    wanted = [(f"query ({source})", result.query_paths[i]) for i in drawn]
    wanted += [(f"gallery ({features})", result.gallery_paths[j])
               for i in drawn for j in result.indices[i][result.indices[i] >= 0].tolist()]
    for what, path in wanted:
        if not Path(path).is_file():
            raise DatasetError(
                f"--picture: {what} image {path} not found from {Path.cwd()}; the feature folder records "
                "paths relative to where it was extracted: run the search there, or extract again with this "
                "occreid (it records absolute paths)"
            )


def run_export(args) -> int:
    from occreid.errors import ConfigError

    if args.format == "package":
        from occreid.inference.model_package import write_package

        out = write_package(args.checkpoint, args.out)
        print(f"model package -> {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
        return 0
    if args.int8 and (args.format != "onnx" or not args.calib):
        raise ConfigError("--int8 applies to `occreid export onnx` and needs --calib FOLDER (training crops)")
    if args.check_dataset and not args.dynamic_batch:
        raise ConfigError("--check-dataset runs batches: drop --no-dynamic-batch")
    from occreid.api import load

    model = load(args.checkpoint, flip=False)
    runner, label = export_file(model, args)
    print(f"exported {model.method} ({label}) -> {runner.path} (outputs: {', '.join(runner.names)})")
    status = 0
    if args.parity_images > 0:
        status = print_parity(model, runner, args, label)
    if args.check_dataset:
        from occreid.inference.runtime_accuracy import compare_runtimes

        report = compare_runtimes(load(args.checkpoint), {label: runner}, args.check_dataset, args.root)
        print(report.table())
        row = report.rows[-1]
        if args.int8:
            from occreid.inference.export_onnx import attach_metadata

            attach_metadata(runner.path, {"accuracy_check": {
                "dataset": report.dataset, "rank1": row.rank1, "mAP": row.mAP, "reference": row.reference,
                "reference_mAP": row.reference_mAP, "top1_changed": row.top1_changed, "recommended": row.ok}})
        if not row.ok:
            print(f"{label} loses {row.map_drop:.2f} mAP points against {row.reference} (more than 1): "
                  "not recommended; ship the fp32 export")
            status = 1
    return status


def export_file(model, args):
    """Write the export `args` ask for; returns (runner of the written file, runtime label)."""
    tracker = " tracker" if args.tracker else ""
    if args.format == "openvino":
        from occreid.inference.export_openvino import OpenVinoReidModel, export_openvino

        path = export_openvino(model, args.out, tracker=args.tracker, dynamic_batch=args.dynamic_batch,
                               opset=args.opset)
        return OpenVinoReidModel(path), f"OpenVINO fp32{tracker}"
    from occreid.inference.export_onnx import OnnxReidModel, export_onnx

    if args.int8:
        from occreid.inference.quantize_int8 import quantize_int8

        path = quantize_int8(model, args.out, args.calib, count=args.calib_images, tracker=args.tracker,
                             method=args.calib_method, opset=args.opset)
        return OnnxReidModel(path), f"ONNX INT8{tracker}"
    path = export_onnx(model, args.out, opset=args.opset, dynamic_batch=args.dynamic_batch, tracker=args.tracker)
    return OnnxReidModel(path), f"ONNX fp32{tracker}; onnx.checker passed"


def print_parity(model, runner, args, label: str) -> int:
    """Random images through PyTorch and the export; INT8 is reported, not judged (it is never exact)."""
    import torch

    from occreid.inference.export_onnx import parity

    h, w = model.input_size
    n = args.parity_images if args.dynamic_batch else 1
    report = parity(model, runner, torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(0)))
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in report.max_abs_diff.items())
    verdict = "INT8: judge it with --check-dataset" if args.int8 else ("OK" if report.ok else "FAILED")
    print(f"parity with PyTorch on {n} random images: max |diff| {diffs}; visibility flips "
          f"{report.visibility_flips}, near threshold {report.near_threshold}: {verdict}")
    return 0 if report.ok or args.int8 else 1
