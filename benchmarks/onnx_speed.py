"""ONNX Runtime vs PyTorch CPU inference throughput (images / s) per available method, with the parity
check of the export (max |diff| of L2-normalised embeddings, visibility flips / near-threshold scores).
Defaults: the CPU protocol (resnet18, 128 x 64), both runtimes on the same number of threads.

    python benchmarks/onnx_speed.py --backbone resnet18 --height 128 --width 64 --batch 16 --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

from occreid.api import ReidModel
from occreid.config import load_config
from occreid.errors import ConfigError
from occreid.inference.export_onnx import OnnxReidModel, export_onnx, parity
from occreid.inference.identity import model_identity
from occreid.methods import METHODS, get_method


def throughput(fn, x: torch.Tensor, iters: int) -> float:
    fn(x)  # warm-up
    t0 = time.perf_counter()
    for _ in range(iters):
        fn(x)
    return iters * x.shape[0] / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="*", default=sorted(METHODS))
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # fixed input size: expected
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript-based exporter
    torch.set_num_threads(args.threads)
    print(f"{args.backbone}, {args.height}x{args.width}, batch {args.batch}, {args.threads} threads\n")
    print("| method | torch img/s | onnxruntime img/s | speed-up | max abs diff (unit emb.) | vis. flips / near | "
          "parity |\n|---|---|---|---|---|---|---|")
    x = torch.randn(args.batch, 3, args.height, args.width)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods:
            try:
                get_method(name)
                cfg = load_config(None, [f"model.name={name}", f"model.backbone={args.backbone}",
                                         f"data.height={args.height}", f"data.width={args.width}"])
                net = get_method(name).build_model(cfg, 100).eval()
                model = ReidModel(net, cfg, identity=model_identity(cfg, None, ""), flip=False)
                runner = OnnxReidModel(export_onnx(model, Path(tmp) / f"{name}.onnx"), threads=args.threads)
            except ConfigError as e:
                print(f"| {name} | - | - | - | not exported: {str(e)[:120]} | | |")
                continue
            with torch.no_grad():
                pt = throughput(lambda b, net=net: net(b).features(), x, args.iters)
            ort = throughput(runner.run, x.numpy(), args.iters)
            report = parity(model, runner, x)
            diff = max(v for k, v in report.max_abs_diff.items() if k != "visibility")
            print(f"| {name} | {pt:.1f} | {ort:.1f} | {ort / pt:.2f}x | {diff:.1e} | "
                  f"{report.visibility_flips} / {report.near_threshold} | {'OK' if report.ok else 'FAIL'} |")


if __name__ == "__main__":
    main()
