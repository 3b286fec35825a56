"""GPU training throughput (issue #35) in one call on a GPU machine: about 5 minutes on an H200, at most 8.

    python benchmarks/gpu_throughput.py --parts DIR     # Market-1501 carried as part-NN.tar (pack-dataset)
    python benchmarks/gpu_throughput.py --market ROOT   # a root that holds Market-1501/bounding_box_train
    python benchmarks/gpu_throughput.py --dry-run       # CPU, tiny sizes, a synthetic set: checks the script
    python benchmarks/gpu_throughput.py --only steps --methods bot,pabreid --variants fp32,bf16 [--set k=v]
                                                        # the step table alone (benchmarks/gpu_check.sh)

What it measures (keys of OUT/gpu_throughput.json; OUT/gpu_throughput.md holds the same as tables):
  step_img_s        every method's optimisation step at its paper setting (configs/<m>/market1501.yaml),
                    bf16 autocast + channels-last, batch 64 of random images, data excluded: the step of
                    benchmarks/train_speed.py (`measure`), with the trainer's optimiser and cuDNN setting
  peak_mem_gb       the GPU memory peak of building and stepping each of them
  fp32_img_s        bot's step in float32 (NCHW, the trainer's default); bf16_nchw_img_s: bf16, NCHW
  backbone_img_s    the bot recipe on hrnet_w32 at 384x128 and on resnet50 at 256x128: how much of
                    amdnet's cost is its backbone
  profile_amdnet    the kernels with the most device time in two amdnet steps (torch.profiler)
  end_to_end_img_s  `occreid train --no-eval` with the config's defaults: bot on the Market-1501 training
                    JPEGs, pabreid on a synthetic 256x128 set (`occreid data synth`); the rate is read from
                    metrics.jsonl's train_s between a warm-up iteration and the last one.
                    end_to_end_bf16_img_s: bot with train.amp=bf16 train.channels_last=true
  market1501_120_epochs_h  the 120 epochs of Market-1501 that bot's end-to-end rate implies
  targets           the issue's targets (H200) and whether they are met
Every part runs inside a time budget; a part that fails leaves its error under "errors", the rest runs on.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
try:
    import occreid  # noqa: F401 - installed, or else read from the checkout
except ImportError:
    sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402
import yaml  # noqa: E402
from train_speed import measure, prepare_step, time_steps  # noqa: E402

from occreid.config import load_config  # noqa: E402

METHODS = ("bot", "pcb", "pan", "ocnet", "pabreid", "sgsfa", "amdnet")
VARIANTS = {  # name: (train.amp, channels-last, torch.compile: off, default mode, or a mode)
    "fp32": ("none", False, False),
    "bf16": ("bf16", False, False),
    "bf16+channels-last": ("bf16", True, False),
    "bf16+channels-last+compile": ("bf16", True, True),
    # forward and backward replayed as CUDA graphs (the optimiser step stays outside): what graphs would gain
    "bf16+channels-last+cudagraphs": ("bf16", True, "reduce-overhead"),
}
GPU_VARIANT = "bf16+channels-last"
TARGETS = {"bot_step_img_s": 3000.0, "amdnet_step_img_s": 800.0, "bf16_vs_fp32": 1.0, "end_to_end_vs_step": 0.9}
MARKET_EPOCHS = 120


class Run:
    """The results so far, written to OUT after every part, so a run cut short still leaves its figures."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out, self.budget_s, self.start = out, budget_s, time.perf_counter()
        self.results: dict = {"errors": {}, "skipped": []}
        out.mkdir(parents=True, exist_ok=True)
        self.log = (out / "log.txt").open("w")

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def part(self, name: str, fn: Callable[[], None]) -> None:
        """Run one part unless the budget is spent; an exception is recorded under errors[name]."""
        if self.elapsed() > self.budget_s:
            self.results["skipped"].append(name)
            self.say(f"skipped {name}: the time budget of {self.budget_s:.0f} s is spent")
            return
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one failed part must not lose the others' figures
            self.results["errors"][name] = f"{type(e).__name__}: {e}"[-600:]
            self.say(f"{name} failed: {type(e).__name__}: {e}")
        self.say(f"{name}: {time.perf_counter() - t0:.1f} s")
        self.save()

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def save(self) -> None:
        self.results["seconds"] = round(self.elapsed(), 1)
        path = self.out / "gpu_throughput.json"
        path.with_suffix(".json.tmp").write_text(json.dumps(self.results, indent=1) + "\n")
        path.with_suffix(".json.tmp").replace(path)


def device_facts(device: torch.device) -> dict:
    facts = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "device_type": device.type}
    if device.type == "cuda":
        facts.update(device=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                     cudnn=torch.backends.cudnn.version())
    else:
        facts["device"] = f"CPU ({os.cpu_count()} logical cores, {torch.get_num_threads()} threads)"
    return facts


def method_config(method: str, sets: list[str], amp: str):
    return load_config(REPO / "configs" / method / "market1501.yaml", [*sets, f"train.amp={amp}"])


def step_row(cfg, variant: str, args) -> dict:
    """benchmarks/train_speed.py's measure of one config in one variant, as a JSON row."""
    amp, channels_last, compile_ = VARIANTS[variant]
    bench = SimpleNamespace(device=args.device, amp=amp, channels_last=channels_last, compile=compile_,
                            warmup=args.warmup, iters=args.iters)
    t0 = time.perf_counter()
    r = measure(cfg, bench, ids=args.ids, instances=args.instances)
    row = {"method": r["method"], "variant": variant, "backbone": r["backbone"], "input": r["input"],
           "batch": r["batch"], "img_s": round(r["img_per_s"], 1), "params_M": round(r["params_M"], 2),
           "seconds": round(time.perf_counter() - t0, 1)}
    if "peak_mem_gb" in r:
        row["peak_mem_gb"] = round(r["peak_mem_gb"], 2)
    return row


def measure_steps(run: Run, args, methods: list[str], variants: list[str], key: str = "steps") -> None:
    """One part per (method, variant): its row appended to results[key]."""
    rows = run.results.setdefault(key, [])
    for variant in variants:
        for m in methods:
            def one(m=m, variant=variant) -> None:
                cfg = method_config(m, args.set, VARIANTS[variant][0])
                row = step_row(cfg, variant, args)
                rows.append(row)
                run.say(f"step {m} {variant}: {row['img_s']} img/s"
                        + (f", peak {row['peak_mem_gb']} GB" if "peak_mem_gb" in row else ""))

            run.part(f"step {m} {variant}", one)


def measure_backbones(run: Run, args) -> None:
    """The bot recipe on amdnet's backbone and input, and on bot's: the backbone's share of amdnet's cost."""
    rows = run.results.setdefault("backbone_steps", [])
    sizes = [("hrnet_w32", 384, 128), ("resnet50", 256, 128)] if not args.dry_run else [
        ("hrnet_w32", 64, 32), ("resnet18", 64, 32)]
    for backbone, h, w in sizes:
        def one(backbone=backbone, h=h, w=w) -> None:
            cfg = load_config(REPO / "configs" / "bot" / "market1501.yaml", [
                f"model.backbone={backbone}", f"data.height={h}", f"data.width={w}", f"train.amp={args.amp}"])
            row = step_row(cfg, GPU_VARIANT if not args.dry_run else "fp32", args)
            rows.append(row)
            run.say(f"bot recipe on {backbone} {h}x{w}: {row['img_s']} img/s")

        run.part(f"backbone {backbone}", one)


def profile_amdnet(run: Run, args) -> None:
    """Top kernels (or CPU ops on the CPU) by self time over two amdnet steps after warm-up."""
    from torch.profiler import ProfilerActivity, profile

    amp, channels_last, _ = VARIANTS[GPU_VARIANT if not args.dry_run else "fp32"]
    cfg = method_config("amdnet", args.set, amp)
    bench = SimpleNamespace(device=args.device, amp=amp, channels_last=channels_last, compile=False)
    step, facts = prepare_step(cfg, bench, ids=args.ids, instances=args.instances)
    device = torch.device(args.device)
    time_steps(step, device, warmup=max(1, args.warmup // 2), iters=0)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        time_steps(step, device, warmup=0, iters=2)
    events = list(prof.key_averages())

    def self_us(e) -> float:
        if cuda:
            return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)))
        return float(e.self_cpu_time_total)

    total = sum(self_us(e) for e in events) or 1.0
    top = sorted(events, key=self_us, reverse=True)[:10]
    run.results["profile_amdnet"] = {
        "clock": "device" if cuda else "cpu", "steps": 2, "setting": f"{facts['input']}, batch {facts['batch']}",
        "top": [{"name": e.key[:90], "ms_per_step": round(self_us(e) / 2e3, 3), "share": round(self_us(e) / total, 3),
                 "calls_per_step": e.count // 2} for e in top],
    }


def train_env() -> dict:
    """The environment of an `occreid` child process: the checkout's src on its path if not installed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p)
    return env


def occreid(run: Run, args: list[str], timeout: float) -> None:
    """Run `python -m occreid ARGS` with its output in log.txt; a non-zero exit raises with its last line."""
    run.say("$ occreid " + " ".join(args))
    proc = subprocess.run([sys.executable, "-m", "occreid", *args], env=train_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    run.log.write(proc.stdout[-20000:] + proc.stderr[-20000:])
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(f"occreid {args[0]} exited with {proc.returncode}: {last}")


def end_to_end_rate(run_dir: Path, warm: int) -> dict:
    """Images per second of a finished run from metrics.jsonl: (last - warm) iterations x batch over the
    train_s between them (training time only: checkpoint writes are not counted)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = {r["iter"]: r for r in records if "train_s" in r}
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    batch = cfg["data"]["ids_per_batch"] * cfg["data"]["instances_per_id"]
    first = min((i for i in steps if i >= warm), default=None)
    last = max(steps, default=None)
    if first is None or last is None or last <= first:
        raise RuntimeError(f"{run_dir}/metrics.jsonl has no logged iterations after {warm} to time")
    seconds = steps[last]["train_s"] - steps[first]["train_s"]
    if seconds <= 0:
        raise RuntimeError(f"iterations {first}-{last} took under the 0.1 s resolution of train_s; run longer")
    epoch = steps[last].get("epoch") or 0
    return {"img_s": round((last - first) * batch / seconds, 1), "batch": batch, "iters_timed": last - first,
            "seconds_timed": round(seconds, 1), "batches_per_epoch": round(last / epoch) if epoch else None,
            "workers": cfg["data"]["workers"], "amp": cfg["train"]["amp"],
            "channels_last": cfg["train"]["channels_last"]}


def train_end_to_end(run: Run, args, name: str, config: str, data: list[str], extra: list[str], iters: int,
                     warm: int, timeout: float) -> dict:
    out = Path(args.out) / "runs" / name
    overrides = [*data, f"run.out={out}", f"train.max_iters={iters}", "run.progress=false", *args.set, *extra]
    if args.dry_run:
        overrides += ["train.device=cpu", "data.workers=0", "train.log_every=1", "model.pretrained_path=null",
                      f"data.ids_per_batch={args.ids}", f"data.instances_per_id={args.instances}"]
    occreid(run, ["train", "--no-eval", "--config", str(REPO / config), *overrides], timeout)
    return end_to_end_rate(out, warm)


def unpack_parts(run: Run, parts: Path, dest: Path) -> None:
    """Extract part-NN.tar in order (../shared/tools/pack-dataset writes them) into dest."""
    import tarfile

    tars = sorted(parts.glob("part-*.tar"))
    if not tars:
        raise FileNotFoundError(f"no part-*.tar in {parts}")
    dest.mkdir(parents=True, exist_ok=True)
    for t in tars:
        with tarfile.open(t) as tf:
            tf.extractall(dest, filter="data")
    run.say(f"unpacked {len(tars)} parts into {dest}")


def end_to_end(run: Run, args) -> None:
    """bot on Market-1501 (defaults, then bf16 + channels-last) and pabreid on a synthetic 256x128 set."""
    res = run.results
    e2e, e2e_bf16, details = res.setdefault("end_to_end_img_s", {}), res.setdefault("end_to_end_bf16_img_s", {}), \
        res.setdefault("end_to_end", {})
    data_dir = Path(args.out) / "data"
    synth = data_dir / "synthetic"
    if args.dry_run:
        size = ["--height", "128", "--width", "64", "--ids", "8", "--cams", "2", "--workers", "1"]
    else:
        size = ["--height", "256", "--width", "128", "--ids", "64", "--cams", "4", "--workers", "8"]

    def make_synth() -> None:
        occreid(run, ["data", "synth", "--out", str(synth), *size, "--overwrite"], timeout=120)

    run.part("synthetic set", make_synth)
    if args.dry_run:
        market = ["data.dataset=synthetic", f"data.root={synth}"]
    else:
        root = Path(args.market) if args.market else data_dir
        if args.parts:
            run.part("unpack Market-1501", lambda: unpack_parts(run, Path(args.parts), data_dir))
        market = ["data.dataset=market1501", f"data.root={root}"]
    iters, warm = (6, 2) if args.dry_run else (args.e2e_iters, args.e2e_warm)

    def bot(extra: list[str], into: dict, key: str) -> Callable[[], None]:
        def go() -> None:
            r = train_end_to_end(run, args, key, "configs/bot/market1501.yaml", market, extra, iters, warm, 240)
            into["bot"], details[key] = r["img_s"], r
            run.say(f"end to end {key}: {r['img_s']} img/s")

        return go

    run.part("end to end bot", bot([], e2e, "bot"))
    if not args.dry_run:  # the same code as the row above; bf16 on a CPU would only cost the dry run time
        run.part("end to end bot bf16", bot(["train.amp=bf16", "train.channels_last=true"], e2e_bf16, "bot_bf16"))

    def pabreid() -> None:
        r = train_end_to_end(run, args, "pabreid", "configs/pabreid/market1501.yaml",
                             ["data.dataset=synthetic", f"data.root={synth}"], [], iters, warm, 180)
        e2e["pabreid"], details["pabreid"] = r["img_s"], r
        run.say(f"end to end pabreid: {r['img_s']} img/s")

    run.part("end to end pabreid", pabreid)


def summarise(results: dict) -> None:
    """The issue's keys from the rows: step_img_s, peak_mem_gb, fp32_img_s, ..., targets."""
    steps = results.get("steps", [])
    pick = {(r["method"], r["variant"]): r for r in steps}
    gpu = [r for r in steps if r["variant"] == results.get("gpu_variant", GPU_VARIANT)]
    results["step_img_s"] = {r["method"]: r["img_s"] for r in gpu}
    results["peak_mem_gb"] = {r["method"]: r["peak_mem_gb"] for r in gpu if "peak_mem_gb" in r}
    for key, variant in (("fp32_img_s", "fp32"), ("bf16_nchw_img_s", "bf16")):
        results[key] = {m: r["img_s"] for (m, v), r in pick.items() if v == variant}
    results["backbone_img_s"] = {f"{r['backbone']} {r['input']}": r["img_s"] for r in results.get("backbone_steps", [])}
    e2e = results.get("end_to_end", {}).get("bot")
    if e2e and e2e.get("batches_per_epoch"):
        seconds = MARKET_EPOCHS * e2e["batches_per_epoch"] * e2e["batch"] / e2e["img_s"]
        results["market1501_120_epochs_h"] = round(seconds / 3600, 2)
    step, fp32 = results["step_img_s"], results["fp32_img_s"]
    ratio = {"bot_fp32": (results.get("end_to_end_img_s", {}).get("bot"), fp32.get("bot")),
             "bot_bf16": (results.get("end_to_end_bf16_img_s", {}).get("bot"), step.get("bot"))}
    results["end_to_end_vs_step"] = {k: round(a / b, 3) for k, (a, b) in ratio.items() if a and b}

    def met(value, target):
        return None if value is None else value >= target

    bf16_vs_fp32 = round(step["bot"] / fp32["bot"], 3) if step.get("bot") and fp32.get("bot") else None
    e2e_worst = min(results["end_to_end_vs_step"].values(), default=None)
    results["targets"] = {
        "bot_step_img_s": {"target": TARGETS["bot_step_img_s"], "value": step.get("bot"),
                           "met": met(step.get("bot"), TARGETS["bot_step_img_s"])},
        "amdnet_step_img_s": {"target": TARGETS["amdnet_step_img_s"], "value": step.get("amdnet"),
                              "met": met(step.get("amdnet"), TARGETS["amdnet_step_img_s"])},
        "bf16_vs_fp32": {"target": TARGETS["bf16_vs_fp32"], "value": bf16_vs_fp32,
                         "met": met(bf16_vs_fp32, TARGETS["bf16_vs_fp32"])},
        "end_to_end_vs_step": {"target": TARGETS["end_to_end_vs_step"], "value": e2e_worst,
                               "met": met(e2e_worst, TARGETS["end_to_end_vs_step"])},
    }


def markdown(results: dict) -> str:
    """The tables for benchmarks/RESULTS.md."""
    lines = [f"GPU throughput: {results.get('device')}, torch {results.get('torch')}, {results.get('date')}, "
             f"{results.get('seconds')} s in all.", ""]
    steps = results.get("steps", [])
    if steps:
        lines += ["| method | variant | backbone | input | batch | img/s | peak GB |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['variant']} | {r['backbone']} | {r['input']} | {r['batch']} | {r['img_s']} | "
                  f"{r.get('peak_mem_gb', '-')} |" for r in steps]
        lines.append("")
    if results.get("backbone_steps"):
        lines += ["| bot recipe on | input | img/s |", "|---|---|---|"]
        lines += [f"| {r['backbone']} | {r['input']} | {r['img_s']} |" for r in results["backbone_steps"]]
        lines.append("")
    if results.get("end_to_end"):
        lines += ["| end to end | img/s | amp | channels-last | workers | batch | iterations timed |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {k} | {r['img_s']} | {r['amp']} | {r['channels_last']} | {r['workers']} | {r['batch']} | "
                  f"{r['iters_timed']} |" for k, r in results["end_to_end"].items()]
        lines.append("")
    if "market1501_120_epochs_h" in results:
        lines += [f"120 epochs of Market-1501 at bot's end-to-end rate: {results['market1501_120_epochs_h']} h.", ""]
    if results.get("targets"):
        lines += ["| target | wanted | measured | met |", "|---|---|---|---|"]
        lines += [f"| {k} | >= {t['target']} | {t['value']} | {t['met']} |" for k, t in results["targets"].items()]
        lines.append("")
    if results.get("profile_amdnet"):
        p = results["profile_amdnet"]
        lines += [f"amdnet, top kernels by {p['clock']} time ({p['setting']}):", "",
                  "| kernel / op | ms per step | share | calls per step |", "|---|---|---|---|"]
        lines += [f"| `{e['name']}` | {e['ms_per_step']} | {e['share']:.1%} | {e['calls_per_step']} |"
                  for e in p["top"]]
        lines.append("")
    for name, err in results.get("errors", {}).items():
        lines.append(f"- failed: {name}: {err}")
    for name in results.get("skipped", []):
        lines.append(f"- skipped (time budget): {name}")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, synthetic data (CI)")
    ap.add_argument("--only", choices=["all", "steps"], default="all", help="steps: the step table alone")
    ap.add_argument("--parts", help="folder of part-NN.tar holding Market-1501/ (unpacked into OUT/data)")
    ap.add_argument("--market", help="data root that holds Market-1501/")
    ap.add_argument("--out", default=str(REPO / "runs" / "gpu_throughput"), help="work and result folder")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--variants", help=f"steps variants, of {list(VARIANTS)} (default: {GPU_VARIANT})")
    ap.add_argument("--set", action="append", default=[], help="key=value override for every config")
    ap.add_argument("--device", help="default: cuda when present (cpu in a dry run)")
    ap.add_argument("--iters", type=int, help="timed steps (default 30; 1 in a dry run)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (default 10; 1 in a dry run)")
    ap.add_argument("--ids", type=int, help="identities per batch (default 16; 4 in a dry run)")
    ap.add_argument("--instances", type=int, help="images per identity (default 4; 2 in a dry run)")
    ap.add_argument("--e2e-iters", type=int, default=500, help="iterations of each end-to-end run")
    ap.add_argument("--e2e-warm", type=int, default=100, help="end-to-end iterations not timed")
    ap.add_argument("--budget-s", type=float, default=420.0, help="no new part starts after this (not in a dry run)")
    args = ap.parse_args(argv)
    dry = args.dry_run
    args.device = args.device or ("cpu" if dry or not torch.cuda.is_available() else "cuda")
    args.iters = args.iters if args.iters is not None else (1 if dry else 30)
    args.warmup = args.warmup if args.warmup is not None else (1 if dry else 10)
    args.ids = args.ids or (4 if dry else 16)
    args.instances = args.instances or (2 if dry else 4)
    args.amp = "none" if dry else "bf16"
    if dry:
        args.set = ["model.backbone=resnet18", "data.height=128", "data.width=64", *args.set]
        args.budget_s = float("inf")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    run = Run(out, args.budget_s)
    device = torch.device(args.device)
    run.results.update(device_facts(device))
    run.results["settings"] = {"dry_run": args.dry_run, "batch": args.ids * args.instances, "iters": args.iters,
                               "warmup": args.warmup, "set": args.set, "configs": "configs/<method>/market1501.yaml"}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.only == "steps":
        variants = [v.strip() for v in (args.variants or GPU_VARIANT).split(",") if v.strip()]
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            print(f"unknown --variants {unknown}; choose from {list(VARIANTS)}", file=sys.stderr)
            return 2
        measure_steps(run, args, methods, variants)
    else:
        if not args.dry_run and not (args.parts or args.market):
            print("give --parts DIR or --market ROOT (Market-1501 for the end-to-end run), or --dry-run",
                  file=sys.stderr)
            return 2
        gpu_variant = "fp32" if args.dry_run else GPU_VARIANT  # the dry run checks the code, not bf16 on a CPU
        run.results["gpu_variant"] = gpu_variant
        measure_steps(run, args, methods, [gpu_variant])
        if not args.dry_run:
            measure_steps(run, args, ["bot"], ["fp32", "bf16"])
        measure_backbones(run, args)
        run.part("profile amdnet", lambda: profile_amdnet(run, args))
        end_to_end(run, args)
    summarise(run.results)
    run.save()
    (out / "gpu_throughput.md").write_text(markdown(run.results))
    run.say(markdown(run.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
