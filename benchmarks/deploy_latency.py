"""CPU latency per method and runtime (PyTorch, ONNX Runtime fp32, ONNX Runtime INT8, OpenVINO fp32): batch 1
(mean of the last 100 of 120 single-image calls) and batch 8 (mean of the last 20 of 25 calls), as ms per
call and images / s, with 1 and 2 threads. Full export graphs (all test features), flip off.

Models: untrained ones built at the given backbone / size (latency does not depend on the weights), or
`--checkpoint` files (one per method). INT8 is calibrated on `--calib` (a folder of crops; default: random
images, enough for timing but not for accuracy: use `occreid export onnx --int8 --check-dataset` for that).
Run alone on the machine: other jobs on the cores make the numbers meaningless.

    python benchmarks/deploy_latency.py --backbone resnet18 --height 128 --width 64 --threads 1,2
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from occreid.api import ReidModel, load
from occreid.config import load_config
from occreid.errors import ConfigError
from occreid.host_memory import keep_freed_memory
from occreid.inference.export_onnx import OnnxReidModel, export_onnx
from occreid.inference.identity import model_identity
from occreid.methods import METHODS, get_method

RUNTIMES = ("pytorch", "ort-fp32", "ort-int8", "openvino")


def mean_latency(fn, x, calls: int, keep: int) -> float:
    """Seconds per call: the mean of the last `keep` of `calls` timed calls (the first ones warm up)."""
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return float(np.mean(times[-keep:]))


def build_model(method: str, args) -> ReidModel:
    if args.checkpoint:
        match = [c for c in args.checkpoint if load(c).method == method]
        if match:
            return load(match[0], flip=False)
    cfg = load_config(None, [f"model.name={method}", f"model.backbone={args.backbone}",
                             f"data.height={args.height}", f"data.width={args.width}"])
    torch.manual_seed(0)
    net = get_method(method).build_model(cfg, 100).eval()
    return ReidModel(net, cfg, identity=model_identity(cfg, None, ""), flip=False)


def random_crops(folder: Path, count: int = 64) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return folder


def exports(model: ReidModel, tmp: Path, runtimes: list[str], calib: Path) -> dict[str, Path | str]:
    """runtime -> exported file, or the reason it could not be exported."""
    files: dict[str, Path | str] = {}
    for rt in runtimes:
        try:
            if rt == "ort-fp32":
                files[rt] = export_onnx(model, tmp / "fp32.onnx")
            elif rt == "ort-int8":
                from occreid.inference.quantize_int8 import quantize_int8

                files[rt] = quantize_int8(model, tmp / "int8.onnx", calib, count=64)
            elif rt == "openvino":
                from occreid.inference.export_openvino import export_openvino

                files[rt] = export_openvino(model, tmp / "model.xml")
        except ConfigError as e:
            files[rt] = str(e)[:100]
    return files


def runner_fn(model: ReidModel, rt: str, files: dict, threads: int):
    """A callable taking a float32 batch [B, 3, H, W], for runtime `rt` at `threads` threads."""
    if rt == "pytorch":
        torch.set_num_threads(threads)

        def run(x, net=model.model):
            with torch.no_grad():
                return net(x).features()

        return run, torch.from_numpy
    if rt == "openvino":
        from occreid.inference.export_openvino import OpenVinoReidModel

        return OpenVinoReidModel(files[rt], threads=threads).run, np.asarray
    return OnnxReidModel(files[rt], threads=threads).run, np.asarray


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="*", default=sorted(METHODS))
    ap.add_argument("--runtimes", default=",".join(RUNTIMES), help=f"comma list of {', '.join(RUNTIMES)}")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--checkpoint", nargs="*", help="trained checkpoints to time instead (one per method)")
    ap.add_argument("--threads", default="1,2", help="comma list of thread counts")
    ap.add_argument("--calls", type=int, default=120, help="batch-1 calls; the mean is over the last --keep")
    ap.add_argument("--keep", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8, help="the second batch size")
    ap.add_argument("--batch-calls", type=int, default=25)
    ap.add_argument("--batch-keep", type=int, default=20)
    ap.add_argument("--calib", help="folder of crops for INT8 calibration (default: random images)")
    args = ap.parse_args()
    keep_freed_memory()  # as the `occreid` CLI does (occreid.host_memory)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    runtimes = [r for r in args.runtimes.split(",") if r]
    unknown = sorted(set(runtimes) - set(RUNTIMES))
    if unknown:
        ap.error(f"unknown runtimes {unknown}; choose from {', '.join(RUNTIMES)}")
    threads = [int(t) for t in args.threads.split(",")]
    print(f"{args.backbone}, {args.height}x{args.width}; batch 1: mean of the last {args.keep} of {args.calls} calls; "
          f"batch {args.batch}: last {args.batch_keep} of {args.batch_calls}\n")
    print(f"| method | runtime | threads | batch 1 ms | batch 1 img/s | batch {args.batch} ms | "
          f"batch {args.batch} img/s |\n|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        calib = Path(args.calib) if args.calib else random_crops(Path(tmp) / "calib")
        for method in args.methods:
            try:
                model = build_model(method, args)
            except ConfigError as e:
                print(f"| {method} | - | - | not built: {str(e)[:100]} | | | |")
                continue
            folder = Path(tmp) / method
            folder.mkdir()
            files = exports(model, folder, runtimes, calib)
            h, w = model.input_size
            gen = torch.Generator().manual_seed(0)
            one, many = torch.randn(1, 3, h, w, generator=gen), torch.randn(args.batch, 3, h, w, generator=gen)
            for rt in runtimes:
                if isinstance(files.get(rt), str):
                    print(f"| {method} | {rt} | - | not exported: {files[rt]} | | | |")
                    continue
                for n in threads:
                    fn, convert = runner_fn(model, rt, files, n)
                    t1 = mean_latency(fn, convert(one.numpy()), args.calls, args.keep)
                    tb = mean_latency(fn, convert(many.numpy()), args.batch_calls, args.batch_keep)
                    print(f"| {method} | {rt} | {n} | {1000 * t1:.2f} | {1 / t1:.1f} | {1000 * tb:.2f} | "
                          f"{args.batch / tb:.1f} |", flush=True)


if __name__ == "__main__":
    main()
