"""Time of the reports `occreid eval` writes beyond the metrics (per-query breakdown, groups, report.md /
per_query.csv, report.html with embedded or linked images) and report.html's size.

Usage:
  python benchmarks/report_speed.py --checkpoint runs/x/last.pt [--dataset occluded_duke] [--root DATA]
      [--cache DIR] [key=value ...]
  python benchmarks/report_speed.py --synthetic [--queries 2210] [--gallery 17661] [--images 500]

--checkpoint evaluates the checkpoint once (extraction and distances are timed but are not the report) and
keeps the distance matrix and visibility in --cache so later runs skip the extraction. --synthetic uses a
random matrix of the given size over generated person-sized JPEGs (--images distinct files, reused), which
tells the cost per image but not the real thumbnail sizes. Writes into --out (default: a temp folder).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _records_from_checkpoint(args):
    """(query, gallery, distmat, query visibility, gallery visibility, cfg, summary) of a real evaluation."""
    import torch

    from occreid.config import apply_overrides, config_hash, from_dict_config
    from occreid.data.datasets import load_dataset
    from occreid.engine.checkpoint import load_checkpoint
    from occreid.engine.evaluate import evaluate_records, load_model
    from occreid.engine.run_setup import dataset_load_options

    ckpt = load_checkpoint(args.checkpoint)
    extra = list(args.overrides)
    if args.dataset:
        extra.append(f"data.dataset={args.dataset}")
    if args.root:
        extra.append(f"data.root={args.root}")
    cfg = from_dict_config(apply_overrides(ckpt["config"], extra))
    splits = load_dataset(cfg.data.dataset, cfg.data.root, **dataset_load_options(cfg))
    cache = Path(args.cache) / f"report_speed_{cfg.data.dataset}_{config_hash(cfg)}.npz" if args.cache else None
    if cache is not None and cache.is_file():
        z = np.load(cache)
        dist, qv, gv = z["dist"], z.get("qv"), z.get("gv")
        print(f"distances from {cache}")
    else:
        t0 = time.perf_counter()
        m = evaluate_records(load_model(ckpt, cfg), cfg, splits.query, splits.gallery,
                             device=torch.device(cfg.train.device if cfg.train.device != "auto" else "cpu"))
        print(f"extraction + distances + metrics: {time.perf_counter() - t0:.1f} s (not part of the report)")
        dist = m["distmat"]
        qv, gv = (m[k].get("visibility") for k in ("query_features", "gallery_features"))
        qv, gv = (None if v is None else v.numpy() for v in (qv, gv))
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, dist=dist, **({"qv": qv, "gv": gv} if qv is not None else {}))
    summary = {"dataset": cfg.data.dataset, "method": cfg.model.name, "checkpoint": args.checkpoint,
               "config_hash": config_hash(cfg), "rerank": False, "flip": cfg.eval.flip}
    return splits.query, splits.gallery, dist, qv, gv, cfg, summary


def _synthetic(args, folder: Path):
    """Generated person-sized JPEGs (smooth colours, mild noise) behind a random distance matrix."""
    from PIL import Image

    from occreid.data.records import Record

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(args.images):
        h, w = int(rng.integers(180, 300)), int(rng.integers(70, 130))
        rows = np.linspace(0, 1, h)[:, None, None]
        img = rng.integers(0, 255, 3) * (1 - rows) + rng.integers(0, 255, 3) * rows
        img = img + rng.normal(0, 8, (h, w, 3))
        path = folder / f"{k:05d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).resize((w, h)).save(path, quality=90)
        files.append(str(path))
    n_ids = max(2, args.gallery // 10)
    q_ids, g_ids = rng.integers(0, n_ids, args.queries), np.arange(args.gallery) % n_ids
    query = [Record(files[i % len(files)], int(q_ids[i]), 0) for i in range(args.queries)]
    gallery = [Record(files[(j + 7) % len(files)], int(g_ids[j]), 1 + j % 7) for j in range(args.gallery)]
    dist = (rng.random((args.queries, args.gallery)) + 0.3 * (q_ids[:, None] != g_ids[None, :])).astype(np.float32)
    vis = rng.random((args.queries + args.gallery, 6)).astype(np.float32)
    summary = {"dataset": "synthetic", "method": "-", "rerank": False, "flip": False}
    return query, gallery, dist, vis[: args.queries], vis[args.queries :], None, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint")
    p.add_argument("--dataset")
    p.add_argument("--root")
    p.add_argument("--cache", help="folder for the distance matrix of --checkpoint (reused when present)")
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--queries", type=int, default=2210)
    p.add_argument("--gallery", type=int, default=17661)
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--out", help="report folder (default: a temporary folder)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    from occreid.host_memory import keep_freed_memory

    keep_freed_memory()  # as the `occreid` CLI does (occreid.host_memory)
    if not args.checkpoint and not args.synthetic:
        p.error("give --checkpoint FILE or --synthetic")

    from occreid.evaluation import rank_metrics, write_report
    from occreid.evaluation.html_report import html_report
    from occreid.evaluation.query_breakdown import query_breakdown
    from occreid.evaluation.visible_fraction import method_part_names

    tmp = tempfile.TemporaryDirectory()
    out = Path(args.out or tmp.name)
    if args.checkpoint:
        query, gallery, dist, qv, gv, cfg, summary = _records_from_checkpoint(args)
    else:
        query, gallery, dist, qv, gv, cfg, summary = _synthetic(args, out / "images")
    qp, qc = np.array([r.pid for r in query]), np.array([r.camid for r in query])
    gp, gc = np.array([r.pid for r in gallery]), np.array([r.camid for r in gallery])
    t0 = time.perf_counter()
    m = rank_metrics(dist, qp, gp, qc, gc)
    t_metrics = time.perf_counter() - t0
    summary.update(rank1=float(m["cmc"][0]), mAP=m["mAP"], mINP=m["mINP"], num_query=len(query),
                   num_gallery=len(gallery))
    timings = {"rank_metrics (already in eval)": t_metrics}
    t0 = time.perf_counter()
    bd = query_breakdown(dist, query, gallery, {"visibility": qv} if qv is not None else {})
    timings[f"breakdown (top-k, first match, visible fraction from {bd.visible.source})"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    groups = bd.groups(m["ap"], m["first_hit"])
    write_report(out / "md", summary, {"path": [r.path for r in query], "ap": m["ap"], "first_hit": m["first_hit"],
                                       **bd.csv_columns(gallery)}, m["cmc"], groups=groups)
    timings["groups + metrics.json / per_query.csv / report.md"] = time.perf_counter() - t0
    names = []
    if qv is not None:
        from occreid.methods import get_method

        names = (method_part_names(get_method(cfg.model.name), cfg, qv.shape[1]) if cfg is not None
                 else [f"part {i + 1}" for i in range(qv.shape[1])])
    sizes = {}
    for mode in ("embed", "link"):
        t0 = time.perf_counter()
        page = html_report(out / mode / "report.html", summary, m["cmc"], m["ap"], m["first_hit"], query, gallery,
                           bd, groups, images=mode, query_visibility=qv, gallery_visibility=gv, part_names=names)
        timings[f"report.html ({mode})"] = time.perf_counter() - t0
        sizes[mode] = page.stat().st_size
    shown = len(set(bd.top.reshape(-1).tolist()))
    print(f"\n{len(query)} queries x {len(gallery)} gallery; {len(query) + shown} thumbnails "
          f"({shown} distinct gallery images in the top-{bd.top.shape[1]}s)\n")
    print("| step | seconds |\n|---|---|")
    for k, v in timings.items():
        print(f"| {k} | {v:.2f} |")
    print("\n| report.html | MB |\n|---|---|")
    for k, v in sizes.items():
        print(f"| {k} | {v / 2**20:.1f} |")
    if args.out:
        print(f"\nreports in {out}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
