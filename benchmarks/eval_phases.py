"""Time a full `occreid eval` of a trained checkpoint phase by phase and print each phase's share.

    python benchmarks/eval_phases.py --checkpoint runs/pretrained_occduke/bot_seed0/last.pt \
        [--dataset occluded_duke --root /work/shared/data] [--rerank] [--runtime torch|onnx] [--out DIR] \
        [key=value ...]

Runs `evaluate_checkpoint` (what `occreid eval` runs) with its reports written to --out (default: a
temporary folder, so the run's own reports are untouched) and prints, per test dataset, the phase times
it records in metrics.json (`timing`): setup (checkpoint, model, ONNX export), dataset (listing), data
(waiting for decoded, preprocessed batches: with data.workers > 0 decoding overlaps the forward and only
the wait shows), forward, distance, rerank, metrics, breakdown, report, pictures.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from occreid.engine.evaluate import evaluate_checkpoint
from occreid.engine.phase_timer import shares_table
from occreid.host_memory import keep_freed_memory


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset")
    ap.add_argument("--root")
    ap.add_argument("--rerank", action="store_true")
    ap.add_argument("--runtime", choices=["torch", "onnx"], default="torch")
    ap.add_argument("--out", help="report folder (default: a temporary folder, removed afterwards)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.workers=2")
    args = ap.parse_args(argv)
    keep_freed_memory()  # as the `occreid` CLI does (occreid.host_memory)
    with tempfile.TemporaryDirectory(prefix="eval-phases-") as tmp:
        t0 = time.perf_counter()
        results = evaluate_checkpoint(args.checkpoint, dataset=args.dataset, root=args.root,
                                      overrides=args.overrides, rerank=args.rerank, out_dir=args.out or tmp,
                                      progress=False, runtime=args.runtime)
        wall = time.perf_counter() - t0
    print(f"threads: {torch.get_num_threads()}; wall time of evaluate_checkpoint: {wall:.2f} s\n")
    for r in results:
        timing = {k: v for k, v in r["timing"].items() if k != "runtime"}
        print(f"## {r['dataset']}: {r['method']}, {r['num_query']} x {r['num_gallery']}, rerank={r['rerank']}, "
              f"flip={r['flip']}, runtime={r['timing']['runtime']}; mAP {100 * r['mAP']:.2f}, "
              f"rank-1 {100 * r['rank1']:.2f}\n")
        print(shares_table(timing) + "\n")
        images = r["num_query"] + r["num_gallery"]
        seconds = timing.get("data", 0.0) + timing.get("forward", 0.0)
        print(f"extraction: {images} images in {seconds:.2f} s (data + forward) = "
              f"{images / max(seconds, 1e-9):.1f} img/s\n")


if __name__ == "__main__":
    main()
