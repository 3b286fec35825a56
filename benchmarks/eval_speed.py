"""Speed of occreid's evaluation vs reference implementations (ranking metrics and re-ranking).

Usage: python benchmarks/eval_speed.py [--full] [--torchreid-src DIR] [--dtype float32|float64] [--repeats 3]

Metrics: Occluded-Duke size (2,210 x 17,661), with the real pids / camids parsed from the file names of
$OCCREID_DATA/Occluded_Duke/{query,bounding_box_test} when present (else synthetic ones of that size),
on a distance matrix of random unit features, float32 by default (what `occreid eval` ranks); the table
says whether it has ties (torchreid's unstable argsort orders ties arbitrarily: use --dtype float64 if
so). Ours is timed --repeats times (best shown). Re-ranking: 1,000 x 6,000 (with --full also the whole
Occluded-Duke size, ours only). References: a per-query loop written here, and torchreid's own
`eval_market1501` / `re_ranking`, loaded as single files from DIR (e.g. an unpacked
`pip download --no-deps torchreid==0.2.5` sdist) when --torchreid-src is given.

"peak MB" is the peak resident set size during the call, sampled every 10 ms from /proc/self/statm by a
thread, minus the resident size when the call started: it counts what the call allocated, numpy and
torch alike (tracemalloc would miss torch's allocations).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occreid.evaluation import global_distance, k_reciprocal_rerank, rank_metrics
from occreid.evaluation.ranking import same_pid_pairs, sorted_row_bounds

NUM_QUERY, NUM_GALLERY = 2210, 17661


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(fn: Callable[[], Any], interval: float = 0.01) -> tuple[float, float, Any]:
    """(seconds, peak MB above the starting RSS, result) of fn(); RSS is sampled by a thread."""
    start = current_rss_mb()
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval):
            peak[0] = max(peak[0], current_rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    peak[0] = max(peak[0], current_rss_mb())
    return seconds, peak[0] - start, out


def load_single_file(root: Path, relative: str, name: str):
    """Import one torchreid source file by path (its package __init__ needs torchvision)."""
    matches = sorted(root.rglob(relative))
    if not matches:
        raise SystemExit(f"--torchreid-src {root}: no {relative} found below it")
    spec = importlib.util.spec_from_file_location(name, matches[0])
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank.py warns that its Cython module is unavailable
        spec.loader.exec_module(module)
    return module


def parse_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    names = sorted(p.name for p in folder.glob("*.jpg"))
    return (np.array([int(n.split("_")[0]) for n in names]),
            np.array([int(n.split("_")[1][1:]) for n in names]))


def duke_ids(data: str | None) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    root = Path(data or "") / "Occluded_Duke"
    if data and (root / "query").is_dir() and (root / "bounding_box_test").is_dir():
        qp, qc = parse_folder(root / "query")
        gp, gc = parse_folder(root / "bounding_box_test")
        return "real Occluded-Duke ids", qp, gp, qc, gc
    rng = np.random.default_rng(0)
    qp = rng.integers(0, 519, NUM_QUERY)
    return "synthetic ids", qp, rng.integers(0, 1110, NUM_GALLERY), rng.integers(1, 9, NUM_QUERY), \
        rng.integers(1, 9, NUM_GALLERY)


def loop_market(d, qp, gp, qc, gc, max_rank=50):
    """Per-query reference: stable sort, junk removal, AP and CMC one query at a time."""
    cmcs, aps = [], []
    for i in range(d.shape[0]):
        order = np.argsort(d[i], kind="stable")
        keep = ~((gp[order] == qp[i]) & (gc[order] == qc[i]))
        hits = (gp[order] == qp[i])[keep]
        if not hits.any():
            continue
        cum = np.cumsum(hits)
        cmcs.append(np.minimum(cum, 1)[:max_rank])
        aps.append(float(np.sum(cum[hits] / (np.flatnonzero(hits) + 1.0)) / hits.sum()))
    return np.mean(np.asarray(cmcs, dtype=np.float32), axis=0), float(np.mean(aps))


def tied_matches(d: np.ndarray, qp: np.ndarray, gp: np.ndarray) -> int:
    """Same-pid entries whose distance equals another entry of their row (where sort orders may differ)."""
    rows, gidx = same_pid_pairs(qp, gp)
    vals = d[rows, gidx]
    ordered = np.sort(d, axis=1)
    below = sorted_row_bounds(ordered, rows, vals)
    at_most = sorted_row_bounds(ordered, rows, np.nextafter(vals, np.inf))
    return int(np.count_nonzero(at_most - below > 1))


def features(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def row(name: str, size: str, seconds: float, base: float | None, peak: float, note: str = "") -> str:
    speed = f"{base / seconds:7.1f}x" if base else "      -"
    return f"| {name:<34} | {size:<15} | {seconds:8.2f} | {speed} | {peak:8.0f} | {note}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="also re-rank the full Occluded-Duke size (ours)")
    ap.add_argument("--torchreid-src", type=Path, help="folder with torchreid's metrics/rank.py, utils/rerank.py")
    ap.add_argument("--data", default=os.environ.get("OCCREID_DATA"), help="dataset root (OCCREID_DATA)")
    ap.add_argument("--skip-loop", action="store_true", help="skip the slow per-query loop reference")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="distance matrix dtype")
    ap.add_argument("--repeats", type=int, default=3, help="timings of ours (the best is shown)")
    ap.add_argument("--rerank-size", default="1000x6000", help="query x gallery size of the re-ranking rows")
    args = ap.parse_args(argv)

    rank_ref = rerank_ref = None
    if args.torchreid_src:
        rank_ref = load_single_file(args.torchreid_src, "metrics/rank.py", "torchreid_rank")
        rerank_ref = load_single_file(args.torchreid_src, "utils/rerank.py", "torchreid_rerank")

    source, qp, gp, qc, gc = duke_ids(args.data)
    dtype = getattr(torch, args.dtype)
    d = torch.cdist(features(NUM_QUERY, 256, 0).to(dtype), features(NUM_GALLERY, 256, 1).to(dtype)).numpy()
    tied = tied_matches(d, qp, gp)
    sys.stdout.reconfigure(line_buffering=True)
    print(f"threads: {torch.get_num_threads()}; metrics on {source}, {args.dtype} distances; {tied} true "
          "matches tie with another gallery entry (0: torchreid's order is ours); peak MB = sampled RSS above "
          "the RSS at call start\n")
    print("| what | size | seconds | speed-up | peak MB | check")
    print("|---|---|---|---|---|---|")
    size = f"{NUM_QUERY} x {NUM_GALLERY}"
    runs = [measure(lambda: rank_metrics(d, qp, gp, qc, gc)) for _ in range(max(1, args.repeats))]
    t_ours, m_ours, ours = min(runs, key=lambda r: r[0])
    refs = []
    if rank_ref is not None:
        refs.append(("torchreid eval_market1501", lambda: rank_ref.eval_market1501(d, qp, gp, qc, gc, 50)))
    if not args.skip_loop:
        refs.append(("per-query loop (this file)", lambda: loop_market(d, qp, gp, qc, gc)))
    base = None
    for name, fn in refs:
        t, m, (cmc, mAP) = measure(fn)
        base = base or t
        same = np.array_equal(cmc, ours["cmc"])
        print(row(name, size, t, None, m, f"CMC identical: {same}, |dmAP| = {abs(mAP - ours['mAP']):.1e}"))
    print(row("occreid rank_metrics", size, t_ours, base, m_ours,
              f"mAP {ours['mAP']:.4f}, skipped {ours['num_skipped_queries']}"))

    nq, ng = (int(v) for v in args.rerank_size.split("x"))
    x = features(nq + ng, 256, 2)
    dist = torch.cdist(x, x).numpy()
    qg, qq, gg = dist[:nq, nq:], dist[:nq, :nq], dist[nq:, nq:]
    t_ours, m_ours, r_ours = measure(lambda: k_reciprocal_rerank(qg, qq, gg))
    base = None
    if rerank_ref is not None:
        base, m, r_ref = measure(lambda: rerank_ref.re_ranking(qg, qq, gg))
        print(row("torchreid re_ranking", f"{nq} x {ng}", base, None, m,
                  f"max |diff| = {np.abs(r_ref - r_ours).max():.1e}"))
    print(row("occreid k_reciprocal_rerank", f"{nq} x {ng}", t_ours, base, m_ours))
    if args.full:
        del dist, qg, qq, gg
        x = features(NUM_QUERY + NUM_GALLERY, 256, 3)
        full = global_distance(x, x).numpy()
        qg, qq, gg = full[:NUM_QUERY, NUM_QUERY:], full[:NUM_QUERY, :NUM_QUERY], full[NUM_QUERY:, NUM_QUERY:]
        t, m, _ = measure(lambda: k_reciprocal_rerank(qg, qq, gg))
        print(row("occreid k_reciprocal_rerank", size, t, None, m))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
