"""benchmarks/gpu_throughput.py: its CPU dry run (tiny sizes, a synthetic set for Market-1501) fills every
figure of the GPU run, and it stops early on a wrong call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_throughput.py"
SEVEN = {"bot", "pcb", "pan", "ocnet", "pabreid", "sgsfa", "amdnet"}


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_dry_run_fills_every_figure(tmp_path):
    out = tmp_path / "gt"
    result = run("--dry-run", "--out", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((out / "gpu_throughput.json").read_text())
    assert data["errors"] == {} and data["skipped"] == []
    assert {"device", "date", "torch"} <= set(data)
    assert set(data["step_img_s"]) == SEVEN and all(v > 0 for v in data["step_img_s"].values())
    assert data["fp32_img_s"]["bot"] > 0
    assert len(data["backbone_img_s"]) == 2
    assert data["end_to_end_img_s"]["bot"] > 0 and data["end_to_end_img_s"]["pabreid"] > 0
    assert data["market1501_120_epochs_h"] > 0
    assert data["end_to_end_vs_step"]["bot_fp32"] > 0
    assert set(data["targets"]) == {"bot_step_img_s", "amdnet_step_img_s", "bf16_vs_fp32", "end_to_end_vs_step"}
    assert data["profile_amdnet"]["top"]
    table = (out / "gpu_throughput.md").read_text()
    assert "| amdnet | fp32 |" in table and "| end to end |" in table and "failed" not in table


def test_it_stops_early_without_data_or_with_an_unknown_variant(tmp_path):
    no_data = run("--out", str(tmp_path / "a"), "--device", "cpu")
    assert no_data.returncode == 2 and "give --parts DIR or --market ROOT" in no_data.stderr
    bad = run("--only", "steps", "--variants", "fp64", "--out", str(tmp_path / "b"), "--device", "cpu")
    assert bad.returncode == 2 and "unknown --variants ['fp64']" in bad.stderr
