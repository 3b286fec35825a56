"""`occreid` entry point: dispatches to the command groups; user errors print one clear line."""

from __future__ import annotations

import argparse
import sys

from occreid.cli import (
    compare_cmd,
    curves_cmd,
    data_cmds,
    demo_cmd,
    info_cmd,
    labels_cmds,
    train_cmds,
    use_cmds,
)
from occreid.errors import OccreidError

# command name -> module with `register(subparsers)`; each registers its parser and handler
COMMANDS = {
    "train": train_cmds,
    "eval": train_cmds,
    "compare": compare_cmd,
    "curves": curves_cmd,
    "data": data_cmds,
    "labels": labels_cmds,
    "info": info_cmd,
    "demo": demo_cmd,
    "extract": use_cmds,
    "index": use_cmds,
    "search": use_cmds,
    "export": use_cmds,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="occreid",
        description="Occluded person re-identification: data, part labels, training, exact evaluation.",
        epilog="Run `occreid COMMAND --help` for examples.",
    )
    from occreid import __version__

    parser.add_argument("--version", action="version", version=f"occreid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in dict.fromkeys(COMMANDS.values()):
        module.register(sub)
    return parser


def parse_with_overrides(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse argv; `key=value` overrides may sit anywhere among the flags of a command that takes them
    (argparse alone takes one positional run, so `--rerank eval.k1=10` after other overrides failed)."""
    args, rest = parser.parse_known_args(argv)
    if rest and isinstance(getattr(args, "overrides", None), list):
        late = [a for a in rest if "=" in a and not a.startswith("-")]
        args.overrides = [*args.overrides, *late]
        rest = [a for a in rest if a not in late]
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_with_overrides(parser, argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    from occreid.host_memory import keep_freed_memory

    keep_freed_memory()  # with OCCREID_HOST_MALLOC=keep: freed pages reused (faster, unbounded; see the module)
    try:
        return int(args.handler(args) or 0)
    except OccreidError as e:
        print(f"occreid: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("occreid: interrupted", file=sys.stderr)
        return 130
