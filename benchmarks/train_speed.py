"""Training throughput (images / s) of backbones or of methods, on this machine.

    python benchmarks/train_speed.py [--backbones resnet18,resnet50] [--iters 10] [--device cpu|cuda]
        [--amp none|bf16|fp16] [--channels-last] [--compile]
    python benchmarks/train_speed.py --configs configs/protocols/cpu_occduke/bot.yaml,\
        configs/protocols/cpu_occduke/amdnet.yaml [--set model.backbone=resnet50] [--iters 10]

Times full optimisation steps (forward, the method's loss recipe, backward, Adam) on random images of the
configured size with a random two-class part label on every image (so part-supervised losses run), after
warm-up steps. Data loading is excluded. Prints a table with the ratio to the first row measured in the
same run: the first backbone, or the first config (give `bot` first to read each method against it).
`prepare_step`, `time_steps` and `measure` are also what benchmarks/gpu_throughput.py times.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from occreid.config import load_config
from occreid.engine.step_speed import use_cudnn_autotuner
from occreid.engine.trainer import build_optimizer
from occreid.methods import get_method


def backbone_config(backbone: str, args):
    """The BoT recipe (or `--method`) on one backbone at the `--height` x `--width` input."""
    return load_config(None, [f"model.name={args.method}", f"model.backbone={backbone}",
                              f"data.height={args.height}", f"data.width={args.width}", f"train.amp={args.amp}"])


def prepare_step(cfg, args, *, ids: int = 16, instances: int = 4) -> tuple[Callable[[], None], dict]:
    """One full optimisation step of `cfg`'s method on fixed random images of its size (forward, the loss
    recipe, backward, the trainer's optimiser with its kernel choice, the trainer's cuDNN setting), and the
    row's facts. `args` gives device, amp, channels_last and compile; the batch is ids x instances."""
    h, w = cfg.data.height, cfg.data.width
    method = get_method(cfg.model.name)
    device = torch.device(args.device)
    use_cudnn_autotuner(cfg.train.cudnn_benchmark, device)
    model = method.build_model(cfg, 702).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = method.build_loss(cfg, 702, model).to(device)
    opt = build_optimizer(cfg, model, loss_fn)
    # args.compile: True (torch.compile's default mode) or a mode name such as "reduce-overhead" (CUDA graphs)
    fwd = torch.compile(model, mode=args.compile if isinstance(args.compile, str) else None) if args.compile else model
    p, k = ids, instances
    images = torch.randn(p * k, 3, h, w, device=device)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    batch = {"pid": torch.arange(p, device=device).repeat_interleave(k),
             "label": torch.randint(0, 2, (p * k, h, w), generator=gen).to(device),
             "has_label": torch.ones(p * k, dtype=torch.bool, device=device), "image": images}
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss, _ = loss_fn(fwd(images), batch)
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        opt.step()

    facts = {"method": cfg.model.name, "backbone": cfg.model.backbone, "input": f"{h}x{w}", "batch": p * k,
             "params_M": sum(q.numel() for q in model.parameters()) / 1e6}
    return step, facts


def time_steps(step: Callable[[], None], device: torch.device, warmup: int, iters: int) -> float:
    """Seconds for `iters` calls of `step` after `warmup` untimed ones, the device drained at both ends."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def measure(cfg, args, *, ids: int = 16, instances: int = 4) -> dict:
    """The row of one config: images per second over `args.iters` steps after `args.warmup`, and on CUDA
    the peak GPU memory of building and stepping it (`peak_mem_gb`)."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step, facts = prepare_step(cfg, args, ids=ids, instances=instances)
    sec = time_steps(step, device, args.warmup, args.iters)
    facts["img_per_s"] = args.iters * facts["batch"] / sec
    if device.type == "cuda":
        facts["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return facts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", default="resnet18,resnet50,resnet50_ibn_a,osnet_x1_0,osnet_x0_25,hrnet_w32")
    ap.add_argument("--method", default="bot", help="the recipe of the --backbones rows")
    ap.add_argument("--configs", help="comma-separated config files: one row per method, instead of backbones")
    ap.add_argument("--set", action="append", default=[], help="key=value override for every --configs row")
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    if args.configs:
        paths = [c.strip() for c in args.configs.split(",") if c.strip()]
        configs = (load_config(path, [*args.set, f"train.amp={args.amp}"]) for path in paths)
    else:
        configs = (backbone_config(name, args) for name in args.backbones.split(","))
    print(f"device={args.device} amp={args.amp} channels_last={args.channels_last} compile={args.compile} "
          f"threads={torch.get_num_threads()} batch=64")
    print("| method | backbone | input | params (M) | img/s | vs first row |")
    print("|---|---|---|---|---|---|", flush=True)
    ref = None
    for cfg in configs:  # one row at a time, so a long run shows its progress
        r = measure(cfg, args)
        ref = ref or r["img_per_s"]
        print(f"| {r['method']} | {r['backbone']} | {r['input']} | {r['params_M']:.1f} | {r['img_per_s']:.1f} | "
              f"{r['img_per_s'] / ref:.2f} |", flush=True)


if __name__ == "__main__":
    main()
