"""Help text shared by the command modules (kept out of `cli.main`, which imports them all)."""

from __future__ import annotations


def examples(*lines: str) -> str:
    """An argparse epilog listing example invocations."""
    return "examples:\n" + "\n".join(f"  {ln}" for ln in lines)
