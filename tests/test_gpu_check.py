"""benchmarks/gpu_check.sh: its CPU dry run (tiny sizes, a synthetic set carried in parts) fills every row."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_dry_run_writes_a_full_table(tmp_path):
    out = tmp_path / "check"
    result = run("--dry-run", "--out", str(out))
    assert result.returncode == 0, result.stderr
    table = (out / "gpu_check.md").read_text()
    assert "| unpack | 2 parts | ok, 40 images |" in table
    for setting in ("bot, fp32", "pabreid, fp32", "bot, bf16+channels-last", "pabreid, bf16+channels-last"):
        assert f"| train throughput | {setting} |" in table and " img/s |" in table
    assert "| short training | bot, pretrained protocol, 2 iterations | ok," in table
    assert "| extraction throughput | eval, cpu |" in table
    assert "failed" not in table, table
    assert "| forward |" in (out / "eval_phases.md").read_text()


def test_gpu_mode_without_data_and_unknown_arguments_stop_early(tmp_path):
    env_free = run("--root", str(tmp_path / "none"), "--out", str(tmp_path / "o"))
    assert env_free.returncode == 2 and "no Occluded_Duke" in env_free.stderr
    bad = run("--frobnicate")
    assert bad.returncode == 2 and "unknown argument" in bad.stderr
