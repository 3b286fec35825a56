"""Two-stage gallery search (FAISS candidates + exact re-rank) vs exact part-distance search.

Per case and index kind: build the index once, then one row per query-time setting (`--nprobe` list for
IVF, `--ef-search` list for HNSW) with query latency (batched, one at a time), recall@k of the two-stage
top-k against the exact top-k of the method's own distance (PAB-ReID's part-visibility distance), and the
recall of the stage-1 candidates against the flat global top-`rerank` (the same filter applied), which
isolates what the approximate index loses from the disagreement between global and part distances.

Memory, per phase, from /proc/self/status sampled in a thread (VmHWM reset at each phase start where the
kernel allows it): peak RSS (includes memory-mapped feature pages) and peak anonymous memory (heap) of the
BUILD + TWO-STAGE SEARCH phase, and separately of the EXACT REFERENCE phase (which reads the whole gallery
in chunks, releasing the mapped pages after each).

Cases: synthetic Occluded-Duke size (2,210 queries, 17,661 gallery images, `--gallery` to change), real
feature folders (`--gallery-features G --query-features Q`), and with `--million` a synthetic gallery of
1,000,000 images whose embeddings are stored fp16 and memory-mapped.

    python benchmarks/search_speed.py
    python benchmarks/search_speed.py --gallery 50000 --kind ivf,flat --nprobe 7,14,28,56,112,all
    python benchmarks/search_speed.py --gallery-features g.feats --query-features q.feats
    python benchmarks/search_speed.py --million --kind ivf,flat --nprobe 32,63,125,250,500 --workdir /tmp/occreid_1m
"""

from __future__ import annotations

import argparse
import multiprocessing
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
from occreid.inference.index import GalleryIndex, IndexOptions, exact_search, recall_at_k

GB = 1024**2  # /proc/self/status reports kB


def read_status() -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon and RssFile of this process in GB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(line.split()[1]) / GB
    return out


class PhaseMemory:
    """Peak RSS and peak anonymous memory per named phase, sampled every 20 ms in a thread. `start(name)`
    ends the previous phase (as `end()` does) and resets the peaks and the kernel's VmHWM, so an RSS spike
    between samples still counts; mapped feature pages count in RSS, not in the anonymous figure."""

    def __enter__(self) -> PhaseMemory:
        self.peaks: dict[str, dict[str, float]] = {}
        self.phase: str | None = None
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def start(self, phase: str) -> None:
        with self.lock:
            self._close()
            try:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
                self.hwm_reset = True
            except OSError:
                self.hwm_reset = False
            self.phase = phase
            self.peaks[phase] = {"rss": 0.0, "anon": 0.0}
        self._sample()

    def end(self) -> None:
        """Close the current phase (its peaks stay in `peaks`)."""
        self._sample()
        with self.lock:
            self._close()
            self.phase = None

    def _close(self) -> None:
        if self.phase is not None and self.hwm_reset:
            peak = self.peaks[self.phase]
            peak["rss"] = max(peak["rss"], read_status().get("VmHWM", 0.0))

    def _sample(self) -> None:
        st = read_status()
        with self.lock:
            if self.phase is not None:
                peak = self.peaks[self.phase]
                peak["rss"] = max(peak["rss"], st.get("VmRSS", 0.0))
                peak["anon"] = max(peak["anon"], st.get("RssAnon", 0.0))

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            self._sample()

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.end()


def int_list(text: str) -> list[int | str]:
    """'16,64,all' -> [16, 64, 'all'] ('all' = every IVF list, i.e. an exact candidate search)."""
    return [t if t == "all" else int(t) for t in text.split(",") if t]


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
    """A synthetic fp16 gallery written in chunks and merged without holding it in memory. Run in a child
    process (`write_large_apart`) so that the search phases measure a process that only reads it."""
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


def write_large_apart(folder: Path, n: int, args, identity: dict) -> Path:
    """`write_large` in a spawned child process: the 1M gallery is written as `occreid extract` would
    write it, by another process, and none of the writer's memory counts in this process's peaks."""
    child = multiprocessing.get_context("spawn").Process(target=write_large, args=(folder, n, args, identity))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"writing the 1M gallery in {folder} failed (exit code {child.exitcode})")
    return folder / "gallery.feats"


def sweep(idx: GalleryIndex, args) -> list[dict]:
    """Query-time settings for this index: IVF nprobe values, HNSW ef_search values, [{}] for flat."""
    kind = idx.meta["kind"]
    if kind == "ivf":
        values = args.nprobe or [idx.search_params()["nprobe"]]
        return [{"nprobe": idx.nlist if v == "all" else v} for v in values]
    if kind == "hnsw":
        return [{"ef_search": v} for v in args.ef_search or [idx.search_params()["ef_search"]]]
    return [{}]


def run_case(name: str, gallery_path: Path, queries: FeatureSet, args, exact_queries: int, work: Path) -> list[dict]:
    """Build + sweep per kind (phase "search"), then the exact references once (phase "exact")."""
    sub = queries.take(np.arange(min(exact_queries, len(queries))))
    count = max(args.rerank, args.topk)
    rows, results = [], []
    with PhaseMemory() as mem:
        for kind in args.kind:
            idx, first = None, len(rows)  # the previous kind's index is freed before this one is built
            mem.start(f"search {kind}")
            t0 = time.perf_counter()
            opts = IndexOptions(kind=kind, flat_max=args.flat_max, nlist=args.nlist, nprobe=None,
                                nprobe_fraction=args.nprobe_fraction, train_sample=args.train_sample)
            idx = GalleryIndex.build(gallery_path, work / f"{gallery_path.stem}.{kind}.index", opts)
            build_s = time.perf_counter() - t0
            for params in sweep(idx, args):
                t0 = time.perf_counter()
                idx.search(queries, topk=args.topk, rerank=args.rerank, **params)
                batched_ms = 1000 * (time.perf_counter() - t0) / len(queries)
                single = []
                for i in range(min(20, len(queries))):  # one query at a time: a tracker's call pattern
                    t0 = time.perf_counter()
                    idx.search(queries.take([i]), topk=args.topk, rerank=args.rerank, **params)
                    single.append(1000 * (time.perf_counter() - t0))
                res = idx.search(sub, topk=args.topk, rerank=args.rerank, **params)
                results.append((res.indices, idx.candidates(sub, count, **params)))
                rows.append({"case": name, "gallery": len(idx.gallery), "kind": idx.meta["kind"],
                             "nlist": idx.nlist or "-", "nprobe": params.get("nprobe", "-"),
                             "ef_search": params.get("ef_search", "-"), "build_s": build_s,
                             "ms_batched": batched_ms, "ms_single": float(np.median(single))})
            mem.end()
            for r in rows[first:]:
                r["search_rss_gb"] = mem.peaks[f"search {kind}"]["rss"]
                r["search_anon_gb"] = mem.peaks[f"search {kind}"]["anon"]
        mem.start("exact")
        t0 = time.perf_counter()
        exact_i, _ = exact_search(idx.cfg, sub, idx.gallery, topk=args.topk)
        exact_ms = 1000 * (time.perf_counter() - t0) / len(sub)
        flat_cand = idx.candidates(sub, count, exact=True)
    for row, (found, cand) in zip(rows, results):
        row.update({"exact_ms": exact_ms, f"recall@{args.topk}": recall_at_k(found, exact_i),
                    f"cand_recall@{count}": recall_at_k(cand, flat_cand),
                    "exact_rss_gb": mem.peaks["exact"]["rss"], "exact_anon_gb": mem.peaks["exact"]["anon"]})
    return rows


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
    ap.add_argument("--kind", type=lambda t: t.split(","), default=["auto"],
                    help="index kinds, comma-separated (auto, flat, ivf, hnsw); each is built once per case")
    ap.add_argument("--flat-max", type=int, default=IndexOptions.flat_max, help="auto: flat up to this size")
    ap.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~sqrt(N))")
    ap.add_argument("--nprobe", type=int_list, default=None,
                    help="IVF lists probed, comma-separated, 'all' = nlist (default: the index's default)")
    ap.add_argument("--nprobe-fraction", type=float, default=IndexOptions.nprobe_fraction,
                    help="default nprobe as a share of nlist")
    ap.add_argument("--ef-search", type=int_list, default=None, help="HNSW ef_search values, comma-separated")
    ap.add_argument("--train-sample", type=int, default=50_000)
    ap.add_argument("--exact-queries", type=int, default=200, help="queries also searched exactly (recall)")
    ap.add_argument("--million-exact-queries", type=int, default=20)
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
                                       identity=identity), work / "synthetic.feats")
    rows += run_case(f"synthetic {args.gallery:,}", gallery, queries, args, args.exact_queries, work)
    if args.gallery_features and args.query_features:
        real_q = read_features(args.query_features, mmap=False)
        rows += run_case("real features", args.gallery_features, real_q, args, args.exact_queries, work)
    if args.million:
        big = work / "million" / "gallery.feats"
        if not (big / "manifest.json").is_file():  # kept between runs with --workdir
            big = write_large_apart(work / "million", 1_000_000, args, identity)
        args.ids = args.million_ids
        queries = synthetic(200, args.ids, args, seed=1, prefix="q/", cams=8, identity=identity)
        rows += run_case("synthetic 1M, fp16 memory-mapped", big, queries, args, args.million_exact_queries, work)
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |")
    if args.workdir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
