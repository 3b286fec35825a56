"""benchmarks/cpu_protocol.py: which command each run needs, the table, and the machine-readable records
(on fake run folders; no training)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("cpu_protocol", ROOT / "benchmarks" / "cpu_protocol.py")
queue = importlib.util.module_from_spec(spec)
spec.loader.exec_module(queue)


def finished_run(run: Path, rank1: float, mAP: float, train_s: float = 1800.0, reading: str | None = None,
                 ap: list[float] | None = None) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text(
        json.dumps({"iter": 10, "loss": 1.0, "train_s": 900.0}) + "\n"
        + json.dumps({"iter": 20, "loss": 0.5, "train_s": train_s}) + "\n")
    if reading is None:
        folder = run / "eval" / "occluded_duke"
    else:  # named as `occreid eval` names an evaluation under changed settings
        from occreid.evaluation.report import report_folder_name

        folder = run / f"eval_{reading}" / report_folder_name("occluded_duke", list(queue.READINGS["sgsfa"][1]))
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"dataset": "occluded_duke", "num_query": len(ap or []),
                                                     "rank1": rank1, "rank5": 0.5, "mAP": mAP, "mINP": 0.05}))
    if ap is not None:  # per_query.csv as `occreid eval` writes it: query k is identity k // 2
        rows = ["query_index,path,ap,first_hit,query_pid"] + [
            f"{k},q{k}.jpg,{a},{0 if a == 1 else 3},{k // 2}" for k, a in enumerate(ap)]
        (folder / "per_query.csv").write_text("\n".join(rows) + "\n")


def test_commands_follow_the_protocol_folder(tmp_path):
    args = argparse.Namespace(data="/d", labels="/l", set=["x=1"], protocol="pretrained_occduke")
    cmd = queue.command(tmp_path / "new", "pabreid", 1, args)
    assert str(ROOT / "configs/protocols/pretrained_occduke/pabreid.yaml") in cmd
    assert "data.labels_root=/l" in cmd and "train.seed=1" in cmd and cmd[-1] == "x=1"
    (tmp_path / "stopped").mkdir()
    (tmp_path / "stopped" / "last.pt").write_bytes(b"")
    assert queue.command(tmp_path / "stopped", "bot", 0, args)[-2:] == ["--resume", str(tmp_path / "stopped")]
    finished_run(tmp_path / "done", 0.3, 0.2)
    assert queue.command(tmp_path / "done", "bot", 0, args) is None


def test_table_means_and_json_records_merge(tmp_path):
    out = tmp_path / "runs"
    finished_run(out / "bot_seed0", 0.30, 0.20, train_s=1800)
    finished_run(out / "bot_seed1", 0.34, 0.22, train_s=1860)
    text = queue.table(out, "{method}_seed{seed}", ["bot", "pcb"], [0, 1])
    assert "| `bot` | 0 | 30 | 30.0 | 50.0 | 20.0 | 5.0 |" in text  # train_s 1800 -> 30 minutes
    assert "| `bot` | mean of 2 (± half range) | | 32.00 ± 2.00 | 50.00 ± 0.00 | 21.00 ± 1.00 |" in text
    assert "| `pcb` | 0 | - | not finished (0 iterations) |" in text
    rows = queue.json_records(out, "{method}_seed{seed}", "pretrained_occduke", ["bot"], [0, 1])
    assert [(r["method"], r["seed"], r["rank1"], r["mAP"], r["train_minutes"]) for r in rows] == [
        ("bot", 0, 30.0, 20.0, 30.0), ("bot", 1, 34.0, 22.0, 31.0)]
    assert rows[0]["config"] == "configs/protocols/pretrained_occduke/bot.yaml" and rows[0]["git_commit"]
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"protocol": "pretrained_occduke", "method": "bot", "seed": 0,
                                 "reading": "default", "rank1": 1.0},
                                {"protocol": "pretrained_occduke", "method": "pcb", "seed": 0,
                                 "reading": "default", "rank1": 2.0}]))
    queue.merge_json(path, rows)
    merged = json.loads(path.read_text())
    assert [(r["method"], r["seed"], r["rank1"]) for r in merged] == [("bot", 0, 30.0), ("bot", 1, 34.0),
                                                                      ("pcb", 0, 2.0)]


def test_a_second_reading_is_evaluated_once_and_recorded(tmp_path):
    """sgsfa's normalised reading: asked for once the default evaluation exists, found in the folder
    `occreid eval` names after the changed setting, and recorded next to the default."""
    out = tmp_path / "runs"
    finished_run(out / "sgsfa_seed0", 0.26, 0.18)
    cmd = queue.reading_command(out / "sgsfa_seed0", "sgsfa")
    assert cmd is not None and "method.normalise_distance=true" in cmd and cmd[cmd.index("--out") + 1].endswith(
        "eval_normalised")
    finished_run(out / "sgsfa_seed0", 0.27, 0.19, reading="normalised")
    assert queue.reading_command(out / "sgsfa_seed0", "sgsfa") is None
    rows = queue.json_records(out, "{method}_seed{seed}", "pretrained_occduke", ["sgsfa"], [0])
    assert [(r["reading"], r["rank1"], r["mAP"]) for r in rows] == [("default", 26.0, 18.0),
                                                                    ("normalised", 27.0, 19.0)]
    text = queue.table(out, "{method}_seed{seed}", ["sgsfa"], [0])
    assert "| `sgsfa` (normalised) | 0 |" in text and "not finished" not in text
    finished_run(out / "amdnet_seed0", 0.28, 0.19)  # AMD-Net's: continuous part matching
    cmd = queue.reading_command(out / "amdnet_seed0", "amdnet")
    assert "method.matching=continuous" in cmd and cmd[cmd.index("--out") + 1].endswith("eval_continuous")
    assert queue.reading_command(out / "pan_seed0", "pan") is None  # no second reading


def test_records_keep_the_commit_they_were_trained_with(tmp_path):
    out = tmp_path / "runs"
    finished_run(out / "bot_seed0", 0.30, 0.20)
    path = tmp_path / "results.json"
    queue.merge_json(path, queue.json_records(out, "{method}_seed{seed}", "p", ["bot"], [0], commit="aaa"))
    # recorded again from another checkout: same figures, the first commit stays
    queue.merge_json(path, queue.json_records(out, "{method}_seed{seed}", "p", ["bot"], [0], commit="bbb"))
    assert [r["git_commit"] for r in json.loads(path.read_text())] == ["aaa"]
    # a new run of the same key (other figures) takes its own commit
    finished_run(out / "bot_seed0b", 0.31, 0.21)
    (out / "bot_seed0").rename(out / "old")
    (out / "bot_seed0b").rename(out / "bot_seed0")
    queue.merge_json(path, queue.json_records(out, "{method}_seed{seed}", "p", ["bot"], [0], commit="ccc"))
    assert [(r["git_commit"], r["rank1"]) for r in json.loads(path.read_text())] == [("ccc", 31.0)]


def test_each_run_is_set_against_bot_of_its_seed(tmp_path):
    """The table's last column and the JSON's vs_bot_same_seed: the run's mAP and rank-1 minus those of
    `bot` with the same seed on the same queries, with the paired bootstrap by query identity."""
    out = tmp_path / "runs"
    finished_run(out / "bot_seed0", 0.25, 0.5, ap=[1.0, 0.5, 0.25, 0.25])
    finished_run(out / "ocnet_seed0", 0.5, 0.625, ap=[1.0, 1.0, 0.25, 0.25])
    finished_run(out / "ocnet_seed1", 0.5, 0.625, ap=[1.0, 1.0, 0.25, 0.25])  # no bot seed 1: no difference
    text = queue.table(out, "{method}_seed{seed}", ["bot", "ocnet"], [0, 1])
    assert "| `ocnet` | 0 | 30 | 50.0 | 50.0 | 62.5 | 5.0 | +12.5 [" in text
    assert text.count("| - |") == 3  # bot 0, bot 1 (unfinished row has no cell) and ocnet 1
    rows = queue.json_records(out, "{method}_seed{seed}", "p", ["bot", "ocnet"], [0, 1])
    vs = {(r["method"], r["seed"]): r["vs_bot_same_seed"] for r in rows}
    assert vs[("bot", 0)] is None and vs[("ocnet", 1)] is None
    assert vs[("ocnet", 0)]["mAP"]["delta"] == 12.5 and vs[("ocnet", 0)]["rank1"]["delta"] == 25.0
    assert vs[("ocnet", 0)]["resampled"] == "query identities"
    assert vs[("ocnet", 0)]["bot"] == {"rank1": 25.0, "mAP": 50.0}  # the bot run it was paired with


def test_a_variant_off_the_defaults_is_recorded_beside_them(tmp_path):
    """Runs trained with --set (e.g. `bot` with pad 8) take their variant as reading, second readings
    prefixed, and name the `bot` variant they were paired with: the defaults' records stay."""
    out = tmp_path / "runs"
    finished_run(out / "bot_pad8_seed0", 0.25, 0.5, ap=[1.0, 0.5, 0.25, 0.25])
    finished_run(out / "amdnet_pad8_seed0", 0.5, 0.625, ap=[1.0, 1.0, 0.25, 0.25])
    finished_run(out / "amdnet_pad8_seed0", 0.5, 0.75, ap=[1.0, 1.0, 0.5, 0.5], reading="continuous")
    rows = queue.json_records(out, "{method}_pad8_seed{seed}", "p", ["bot", "amdnet"], [0], variant="pad8")
    assert sorted((r["method"], r["reading"]) for r in rows) == [
        ("amdnet", "pad8"), ("amdnet", "pad8_continuous"), ("bot", "pad8")]
    for r in rows:
        if r["method"] == "amdnet":
            assert r["vs_bot_same_seed"]["bot_reading"] == "pad8"
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"protocol": "p", "method": "bot", "seed": 0, "reading": "default", "rank1": 1.0}]))
    queue.merge_json(path, rows)
    assert ("bot", "default", 1.0) in [(r["method"], r["reading"], r["rank1"]) for r in json.loads(path.read_text())]
    plain = queue.json_records(out, "{method}_pad8_seed{seed}", "p", ["amdnet"], [0])
    assert "bot_reading" not in plain[0]["vs_bot_same_seed"]


def test_json_of_runs_off_the_defaults_needs_a_variant(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["cpu_protocol.py", "--protocol", "pretrained_occduke", "--table-only",
                                      "--methods", "bot", "--out", str(tmp_path / "runs"), "--set", "data.pad=8",
                                      "--json", str(tmp_path / "r.json")])
    with pytest.raises(SystemExit, match="--variant"):
        queue.main()
    assert not (tmp_path / "r.json").exists()
