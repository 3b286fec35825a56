"""`occreid labels make | show`."""

from __future__ import annotations


def register(sub) -> None:
    lab = sub.add_parser("labels", help="make and show part labels (human parsing supervision)")
    lab.set_defaults(handler=lambda a: lab.print_help() or 2)
