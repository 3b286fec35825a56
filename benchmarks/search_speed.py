"""Two-stage gallery search (FAISS candidates + exact re-rank) vs exact part-distance search.

Reports index build time, query latency (batched, per query) and recall@k of the two-stage top-k against
the exact top-k of the method's own distance (PAB-ReID's part-visibility distance by default), on
synthetic Occluded-Duke-sized features (2,210 queries, 17,661 gallery images), on real feature folders
(`--gallery-features G --query-features Q`), and with `--million` on a synthetic gallery of 1,000,000
images whose embeddings are stored fp16 and memory-mapped (peak RSS reported).

    python benchmarks/search_speed.py
    python benchmarks/search_speed.py --gallery-features g.feats --query-features q.feats
    python benchmarks/search_speed.py --million --workdir /tmp/occreid_1m
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from occreid.config import load_config
from occreid.inference.features_file import FeatureSet, merge_feature_folders, read_features, write_features
from occreid.inference.identity import model_identity
from occreid.inference.index import GalleryIndex, IndexOptions, exact_search


def peak_rss_gb() -> float:
    """Peak resident set so far, including file-backed pages of memory-mapped features (reclaimable)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


class AnonPeak:
    """Peak anonymous (heap) memory during a block, sampled from /proc/self/status every 20 ms: the
    memory the search really owns, as memory-mapped feature pages are page cache the kernel can drop."""

    def __enter__(self) -> AnonPeak:
        self.peak, self.stop = 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.is_set():
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak = max(self.peak, int(line.split()[1]) / 1024**2)
            self.stop.wait(0.02)

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def synthetic(n: int, ids: int, args, seed: int, prefix: str, cams: int, identity: dict) -> FeatureSet:
    """Identity centres + noise for the foreground / global embedding and each part; ~25% of parts
    occluded (low visibility, the part vector replaced by noise). Market-style names."""
    rng = np.random.default_rng(seed)
    centre_rng = np.random.default_rng(12345)
    g_centres = centre_rng.standard_normal((ids, args.dim), dtype=np.float32)
    p_centres = centre_rng.standard_normal((ids, args.parts, args.dim), dtype=np.float32)
    pid = rng.integers(0, ids, n)
    vis = rng.uniform(0.5, 1.0, (n, args.parts)).astype(np.float32)
    occluded = rng.uniform(size=(n, args.parts)) < 0.25
    vis[occluded] = rng.uniform(0.0, 0.45, occluded.sum())
    parts = p_centres[pid] + args.noise * rng.standard_normal((n, args.parts, args.dim), dtype=np.float32)
    parts[occluded] = rng.standard_normal((int(occluded.sum()), args.dim), dtype=np.float32)
    fg = g_centres[pid] + args.noise * rng.standard_normal((n, args.dim), dtype=np.float32)
    names = [f"{prefix}{p + 1:05d}_c{c + 1}s1_{i:07d}_00.jpg" for i, (p, c) in
             enumerate(zip(pid.tolist(), rng.integers(0, cams, n).tolist()))]
    return FeatureSet({"global": fg, "foreground": fg, "parts": parts, "visibility": vis}, names, identity)


def write_large(folder: Path, n: int, args, identity: dict, chunk: int = 25_000) -> Path:
    """A synthetic fp16 gallery written in chunks and merged without holding it in memory."""
    parts = []
    for k, s in enumerate(range(0, n, chunk)):
        fs = synthetic(min(chunk, n - s), args.million_ids, args, seed=1000 + k, prefix=f"g{k}/", cams=8,
                       identity=identity)
        parts.append(write_features(fs, folder / f"chunk{k:03d}", dtype="float16"))
        print(f"  wrote {s + len(fs):,} / {n:,}", file=sys.stderr)
    merge_feature_folders(parts, folder / "gallery.feats")
    for p in parts:
        shutil.rmtree(p)
    return folder / "gallery.feats"


def run_case(name: str, gallery_path: Path, queries: FeatureSet, args, exact_queries: int) -> dict:
    with AnonPeak() as mem:
        row = _run_case(name, gallery_path, queries, args, exact_queries)
    return {**row, "peak_anon_gb": mem.peak}


def _run_case(name: str, gallery_path: Path, queries: FeatureSet, args, exact_queries: int) -> dict:
    t0 = time.perf_counter()
    opts = IndexOptions(kind=args.kind, nprobe=args.nprobe, train_sample=args.train_sample)
    idx = GalleryIndex.build(gallery_path, gallery_path.with_suffix(".index"), opts)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = idx.search(queries, topk=args.topk, rerank=args.rerank)
    batched_ms = 1000 * (time.perf_counter() - t0) / len(queries)
    single = []
    for i in range(min(20, len(queries))):  # one query at a time: a tracker's call pattern
        t0 = time.perf_counter()
        idx.search(queries.take([i]), topk=args.topk, rerank=args.rerank)
        single.append(1000 * (time.perf_counter() - t0))
    sub = np.arange(min(exact_queries, len(queries)))
    t0 = time.perf_counter()
    ei, _ = exact_search(idx.cfg, queries.take(sub), idx.gallery, topk=args.topk)
    exact_ms = 1000 * (time.perf_counter() - t0) / sub.size
    hits = [len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (b >= 0).sum())
            for a, b in zip(res.indices[sub], ei)]
    return {"case": name, "gallery": len(idx.gallery), "queries": len(queries), "kind": idx.meta["kind"],
            "build_s": build_s, "two_stage_ms_batched": batched_ms,
            "two_stage_ms_single": float(np.median(single)),
            "exact_ms": exact_ms, f"recall@{args.topk}": float(np.mean(hits)), "peak_rss_gb": peak_rss_gb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=2210)
    ap.add_argument("--gallery", type=int, default=17661)
    ap.add_argument("--ids", type=int, default=1110)
    ap.add_argument("--million-ids", type=int, default=100_000, help="identities of the 1M gallery")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--parts", type=int, default=6)
    ap.add_argument("--noise", type=float, default=1.2)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--rerank", type=int, default=100)
    ap.add_argument("--kind", default="auto")
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--train-sample", type=int, default=50_000)
    ap.add_argument("--exact-queries", type=int, default=200, help="queries also searched exactly (recall)")
    ap.add_argument("--gallery-features", type=Path)
    ap.add_argument("--query-features", type=Path)
    ap.add_argument("--million", action="store_true", help="also the 1,000,000-image fp16 memory-mapped case")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    identity = model_identity(load_config(None, ["model.name=pabreid"]), None, "")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="occreid_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    queries = synthetic(args.queries, args.ids, args, seed=1, prefix="q/", cams=8, identity=identity)
    gallery = write_features(synthetic(args.gallery, args.ids, args, seed=2, prefix="g/", cams=8,
                                       identity=identity), work / "duke_sized.feats")
    rows.append(run_case("synthetic Occluded-Duke size", gallery, queries, args, args.exact_queries))
    if args.gallery_features and args.query_features:
        real_q = read_features(args.query_features, mmap=False)
        rows.append(run_case("real features", args.gallery_features, real_q, args, args.exact_queries))
    if args.million:
        big = work / "million" / "gallery.feats"
        if not (big / "manifest.json").is_file():  # kept between runs with --workdir
            big = write_large(work / "million", 1_000_000, args, identity)
        args.ids = args.million_ids
        queries = synthetic(200, args.ids, args, seed=1, prefix="q/", cams=8, identity=identity)
        rows.append(run_case("synthetic 1M, fp16 memory-mapped", big, queries, args, 20))
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys))
    if args.workdir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
