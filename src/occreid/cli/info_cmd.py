"""`occreid info`: parameters (total and per module) and GMACs of a configured model."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    from occreid.cli.help_text import examples

    p = sub.add_parser(
        "info", help="parameters and GMACs of a configured model at its input size",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "occreid info --config configs/pan/occluded_duke.yaml",
            "occreid info --config configs/bot/occluded_duke.yaml model.backbone=resnet18 --json",
        ),
    )
    p.add_argument("--config", help="YAML config")
    p.add_argument("--num-classes", type=int, default=702, help="identities of the classifier (default 702)")
    p.add_argument("--json", action="store_true")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(handler=run_info)


def model_info(cfg, num_classes: int) -> dict:
    from occreid.methods import get_method
    from occreid.models.complexity import count_macs, count_parameters

    model = get_method(cfg.model.name).build_model(cfg, num_classes).eval()
    params = count_parameters(model)
    macs = count_macs(model, (1, 3, cfg.data.height, cfg.data.width))
    return {
        "method": cfg.model.name, "backbone": cfg.model.backbone,
        "input": [cfg.data.height, cfg.data.width], "num_classes": num_classes,
        "parameters": params, "gmacs": macs["gmacs"] if isinstance(macs, dict) else macs,
        "note": "GMACs = multiply-adds (torch flop_counter FLOPs / 2), batch 1, eval mode",
    }


def run_info(args) -> int:
    from occreid.config import load_config

    cfg = load_config(args.config, args.overrides)
    info = model_info(cfg, args.num_classes)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    p = info["parameters"]
    print(f"{info['method']} ({info['backbone']}) at {info['input'][0]}x{info['input'][1]}")
    print(f"parameters: {p['total'] / 1e6:.2f} M total, {p['trainable'] / 1e6:.2f} M trainable")
    for name, n in p.get("by_module", {}).items():
        print(f"  {name:<24}{n / 1e6:>10.3f} M")
    print(f"GMACs: {info['gmacs']:.3f}  ({info['note']})")
    return 0
