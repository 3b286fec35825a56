"""benchmarks/cpu_protocol.py: which command each run needs, the table, and the machine-readable records
(on fake run folders; no training)."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("cpu_protocol", ROOT / "benchmarks" / "cpu_protocol.py")
queue = importlib.util.module_from_spec(spec)
spec.loader.exec_module(queue)


def finished_run(run: Path, rank1: float, mAP: float, train_s: float = 1800.0, reading: str | None = None) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text(
        json.dumps({"iter": 10, "loss": 1.0, "train_s": 900.0}) + "\n"
        + json.dumps({"iter": 20, "loss": 0.5, "train_s": train_s}) + "\n")
    folder = run / ("eval" if reading is None else f"eval_{reading}") / "occluded_duke"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"rank1": rank1, "rank5": 0.5, "mAP": mAP, "mINP": 0.05}))


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
