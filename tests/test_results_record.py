"""benchmarks/results/pretrained_protocol.json, the machine-readable copy of issue #28's table: every record
names its method, seed, config (which exists), commit and date; metrics are percentages in order; one
record per (protocol, method, seed, reading); each interval holds its difference; the README's table of
the pretrained protocol quotes the records."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from statistics import mean

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORDS = json.loads((ROOT / "benchmarks" / "results" / "pretrained_protocol.json").read_text())


@pytest.mark.parametrize("rec", RECORDS, ids=lambda r: f"{r['method']}-{r['seed']}-{r['reading']}")
def test_each_record_is_complete_and_sane(rec):
    assert (ROOT / rec["config"]).is_file(), rec["config"]
    assert rec["config"] == f"configs/protocols/{rec['protocol']}/{rec['method']}.yaml"
    assert re.fullmatch(r"[0-9a-f]{40}", rec["git_commit"]), rec["git_commit"]
    datetime.date.fromisoformat(rec["date"])
    assert isinstance(rec["seed"], int) and rec["reading"]
    assert 0 < rec["mINP"] <= rec["mAP"] <= 100 and 0 < rec["rank1"] <= rec["rank5"] <= 100
    vs = rec.get("vs_bot_same_seed")
    if vs is not None:
        assert vs["resampled"] in ("query identities", "queries") and rec["method"] != "bot"
        for metric in ("mAP", "rank1"):
            assert vs[metric]["low"] <= vs[metric]["delta"] <= vs[metric]["high"]


def test_one_record_per_run_and_reading():
    keys = [(r["protocol"], r["method"], r["seed"], r["reading"]) for r in RECORDS]
    assert len(keys) == len(set(keys))


def test_same_seed_difference_is_against_the_bot_record():
    """Each difference is the run's figure minus `bot`'s of its seed: the `bot` record of the reading it
    names (`bot_reading`, default: `default`), or where the record names the `bot` run it was paired with
    (a rerun of that seed), that run's, which must then be a rerun of the same seed and reading (within 1
    point of the record) and say so in a note."""
    bot = {(r["seed"], r["reading"]): r for r in RECORDS if r["method"] == "bot"}
    checked = 0
    for r in RECORDS:
        vs = r.get("vs_bot_same_seed")
        if not vs:
            continue
        ref = bot[(r["seed"], vs.get("bot_reading", "default"))]
        paired = vs.get("bot", ref)
        for key in ("mAP", "rank1"):
            assert vs[key]["delta"] == pytest.approx(r[key] - paired[key], abs=0.02), (r["method"], key)
            assert paired[key] == pytest.approx(ref[key], abs=1.0)
        if any(abs(paired[k] - ref[k]) > 0.02 for k in ("mAP", "rank1")):
            assert "bot_rerun" in r, (r["method"], r["seed"], "paired with a bot rerun: say so")
        checked += 1
    assert checked


def test_bot_readings_other_than_the_default_say_how_they_trained():
    """A `bot` record of another reading (a setting its validation study has since replaced) carries a note,
    and the default reading exists for every seed that has another."""
    for r in RECORDS:
        if r["method"] == "bot" and r["reading"] != "default":
            assert r.get("note"), (r["seed"], r["reading"])
            assert any(b["method"] == "bot" and b["seed"] == r["seed"] and b["reading"] == "default"
                       and b["protocol"] == r["protocol"] for b in RECORDS), (r["seed"], "no default bot")


def test_readme_quotes_the_records():
    """Each row of the README's pretrained-protocol table: its seeds, and its rank-1 / mAP as the mean of
    those seeds' records of the default reading, or of the one the row names as reading `X` (rounded as
    written)."""
    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)`([^|]*) \| ([\d, ]+) \| ([\d.]+) \| ([\d.]+) \|", text, re.M)
    assert len(rows) >= 7
    for method, label, seeds, r1, mAP in rows:
        seeds = [int(s) for s in seeds.split(",")]
        named = re.search(r"reading `(\w+)`", label)  # a row quoting another reading names it
        reading = named.group(1) if named else "default"
        recs = [r for r in RECORDS if r["method"] == method and r["reading"] == reading and r["seed"] in seeds]
        assert len(recs) == len(seeds), method
        for quoted, key in ((r1, "rank1"), (mAP, "mAP")):
            places = len(quoted.split(".")[1]) if "." in quoted else 0
            assert abs(float(quoted) - mean(r[key] for r in recs)) <= 0.5 * 10 ** -places + 0.006, (method, key)


def _figure_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("protocol_figure", ROOT / "benchmarks" / "protocol_figure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_figure_has_one_row_per_compared_run_current_readings_first(tmp_path):
    """docs/img/pretrained_protocol.png: every record with a difference to `bot` is a row, `bot` is none,
    and within a method a replaced reading (a record with a note) comes after the current ones."""
    fig = _figure_module()
    shown = fig.rows(RECORDS)
    assert len(shown) == sum(1 for r in RECORDS if r.get("vs_bot_same_seed"))
    assert all(r["method"] != "bot" for r in shown)
    for method in {r["method"] for r in shown}:
        replaced = [("note" in r) for r in shown if r["method"] == method]
        assert replaced == sorted(replaced), method
    for r in shown:  # a difference against a retrained `bot` run names that run's mAP on its row
        assert ("vs `bot` rerun" in fig.label(r)) == ("bot_rerun" in r), fig.label(r)
    out = fig.draw(RECORDS, tmp_path / "c1.png", "test")
    assert out.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="vs_bot_same_seed"):
        fig.draw([r for r in RECORDS if r["method"] == "bot"], tmp_path / "none.png", "test")


def test_figure_crosses_a_run_paired_with_a_replaced_bot_at_its_gap_to_the_current_bot():
    """A run whose interval is against a replaced `bot` reading gets its point difference to the current
    `bot` of its own seed (not the other seed's, not the replaced reading's); a run paired with the current
    `bot` gets none."""
    fig = _figure_module()
    base = {"protocol": "p", "reading": "default"}
    bots = [base | {"method": "bot", "seed": 0, "mAP": 20.0, "rank1": 30.0},
            base | {"method": "bot", "seed": 1, "mAP": 22.0, "rank1": 33.0},
            base | {"method": "bot", "seed": 0, "reading": "pad8", "mAP": 18.0, "rank1": 27.0, "note": "x"}]
    old = base | {"method": "pan", "seed": 0, "mAP": 21.5, "rank1": 29.0,
                  "vs_bot_same_seed": {"bot_reading": "pad8"}}
    new = base | {"method": "pan", "seed": 1, "mAP": 23.0, "rank1": 34.0, "vs_bot_same_seed": {}}
    records = [*bots, old, new]
    assert fig.versus_current_bot(records, old, "mAP") == pytest.approx(1.5)
    assert fig.versus_current_bot(records, old, "rank1") == pytest.approx(-1.0)
    assert fig.versus_current_bot(records, new, "mAP") is None
    assert fig.versus_current_bot(bots[2:] + [old], old, "mAP") is None  # no current bot: nothing to draw
