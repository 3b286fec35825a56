"""benchmarks/label_cells.py: a part that misses every cell centre is counted lost by nearest sampling
and keeps its area mass; the script reads a labels folder and writes its table and JSON."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from occreid.labels.format import write_label

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "label_cells.py"


def _module():
    spec = importlib.util.spec_from_file_location("label_cells", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_part_off_the_cell_centres_is_lost_by_nearest_but_keeps_its_area():
    lab = torch.zeros(2, 32, 16, dtype=torch.long)  # a 2 x 1 grid of 16 x 16 cells
    lab[0, 0:4, 0:4] = 1  # part 1 in a corner of cell (0, 0): its centre pixel (8, 8) is background
    lab[0, 16:32, 0:16] = 2  # part 2 fills cell (1, 0)
    lab[1, 6:10, 6:10] = 1  # image 1: part 1 on the centre of cell (0, 0)
    stats = _module().part_cells(lab, 2, (2, 1))
    assert stats["present"].tolist() == [[True, True], [True, False]]
    assert stats["kept_cells"].tolist() == [[0, 1], [1, 0]]
    assert np.allclose(stats["mass_cells"], [[16 / 256, 1.0], [16 / 256, 0.0]])
    rows = _module().summarise(stats, ["a", "b"])
    assert rows[0]["present_pct"] == 100.0 and rows[0]["lost_by_nearest_pct"] == 50.0
    assert rows[1]["present_pct"] == 50.0 and rows[1]["lost_by_nearest_pct"] == 0.0


def test_script_reads_a_labels_folder(tmp_path):
    folder = tmp_path / "labels" / "bounding_box_train"
    folder.mkdir(parents=True)
    for i in range(3):
        lab = np.zeros((64, 32), np.uint8)
        lab[4:12, 10:20] = 1  # atomic 1 = head
        lab[20:40, 8:24] = 2
        write_label(folder / f"000{i}_c1_f0.png", lab)
    out = tmp_path / "cells.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--labels", str(tmp_path / "labels"), "--height", "64",
                             "--width", "32", "--groupings", "amdnet5", "--json", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["images"] == 3 and data["grid"] == [4, 2]
    head = data["groupings"]["amdnet5"][0]
    assert head["part"] == "head" and head["present_pct"] == pytest.approx(100.0)
    assert "| head |" in result.stdout


def test_script_without_labels_says_so(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--labels", str(tmp_path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2 and "occreid labels make" in result.stderr and "Traceback" not in result.stderr
