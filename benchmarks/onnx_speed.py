"""ONNX Runtime vs PyTorch CPU inference throughput (images / s) per available method.

    python benchmarks/onnx_speed.py --backbone resnet18 --height 256 --width 128 --batch 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
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
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"method | torch img/s | onnxruntime img/s | speed-up | max |diff| ({args.backbone}, "
          f"{args.height}x{args.width}, batch {args.batch}, {args.threads} threads)")
    x = torch.randn(args.batch, 3, args.height, args.width)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods:
            try:
                get_method(name)
                cfg = load_config(None, [f"model.name={name}", f"model.backbone={args.backbone}",
                                         f"data.height={args.height}", f"data.width={args.width}"])
                net = get_method(name).build_model(cfg, 100).eval()
                model = ReidModel(net, cfg, identity=model_identity(cfg, None, ""), flip=False)
                runner = OnnxReidModel(export_onnx(model, Path(tmp) / f"{name}.onnx"))
            except ConfigError as e:
                print(f"{name} | - | - | - | not exported: {str(e)[:120]}")
                continue
            with torch.no_grad():
                pt = throughput(lambda b, net=net: net(b).features(), x, args.iters)
            ort = throughput(runner.run, x.numpy(), args.iters)
            diff = max(parity(model, runner, x[:4]).max_abs_diff.values())
            print(f"{name} | {pt:.1f} | {ort:.1f} | {ort / pt:.2f}x | {diff:.1e}")


if __name__ == "__main__":
    main()
