"""`occreid compare RUN_A RUN_B`: two evaluations of the same test set side by side."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from occreid.cli.help_text import examples

    p = sub.add_parser(
        "compare", help="compare two evaluations of one test set: per occlusion group, camera pair and query",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "occreid compare runs/bot/eval/occluded_duke runs/pabreid/eval/occluded_duke",
            "occreid compare runs/bot runs/pabreid --dataset occluded_duke --out runs/compare_bot_pabreid",
        ),
    )
    p.add_argument("run_a", metavar="RUN_A", help="report folder of `occreid eval` (or a run folder holding one)")
    p.add_argument("run_b", metavar="RUN_B", help="the other report folder, same dataset")
    p.add_argument("--dataset", help="pick this dataset's report when a run folder holds several")
    p.add_argument("--out", help="write compare.md, compare.json and compare.html here (default: print Markdown)")
    p.set_defaults(handler=run_compare)


def run_compare(args) -> int:
    from occreid.evaluation.comparison import compare_runs, comparison_markdown, write_comparison

    c = compare_runs(args.run_a, args.run_b, dataset=args.dataset)
    if args.out:
        files = write_comparison(c, args.out)
        print(f"RUN_B fixes {len(c['fixed_by_b'])} queries and breaks {len(c['broken_by_b'])} at rank 1")
        print("\n".join(f"{k}: {v}" for k, v in files.items()))
    else:
        print(comparison_markdown(c), end="")
    return 0
