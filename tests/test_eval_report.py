"""Report files and pictures: content of metrics.json / per_query.csv / report.md, border colours."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from occreid.evaluation import plot_cmc, rank_list_picture, rank_lists, write_report
from occreid.evaluation.pictures import BORDER, GAP, MARK_COLOURS, THUMB


def test_write_report(tmp_path):
    summary = {"dataset": "occluded_duke", "protocol": "market", "checkpoint": "ckpt.pt",
               "config_hash": "abc123", "rerank": False, "flip": True, "mAP": 0.25, "mINP": 0.1}
    per_query = {"ap": np.array([0.5, np.nan]), "first_hit": np.array([1, -1]), "path": ["a.jpg", "b.jpg"]}
    files = write_report(tmp_path / "rep", summary, per_query, np.array([0.0, 1.0, 1.0], dtype=np.float32))
    metrics = json.loads(files["metrics"].read_text())
    assert metrics["mAP"] == 0.25 and metrics["cmc"] == [0.0, 1.0, 1.0] and metrics["flip"] is True
    rows = list(csv.DictReader(files["per_query"].open()))
    assert rows[0] == {"query_index": "0", "path": "a.jpg", "ap": "0.500000", "first_hit": "1"}
    assert rows[1]["ap"] == "" and rows[1]["first_hit"] == "-1"
    md = files["report"].read_text()
    for text in ("occluded_duke", "market", "ckpt.pt", "abc123", "| rerank | False |", "| flip | True |",
                 "| mAP | 0.2500 |", "| rank-1 | 0.0000 |", "1 skipped"):
        assert text in md


def test_write_report_rejects_ragged_columns(tmp_path):
    with pytest.raises(ValueError):
        write_report(tmp_path, {}, {"ap": [0.1, 0.2], "first_hit": [0]}, [1.0])


def _images(tmp_path, n):
    paths = []
    for k in range(n):
        p = tmp_path / f"img{k}.png"
        Image.new("RGB", (30, 60), (20 * k % 255, 100, 200)).save(p)
        paths.append(str(p))
    return paths


def test_plot_cmc(tmp_path):
    out = plot_cmc(np.linspace(0.2, 1.0, 20), tmp_path / "cmc.png")
    with Image.open(out) as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_rank_list_picture_borders(tmp_path):
    paths = _images(tmp_path, 4)
    marks = ["correct", "wrong", "junk"]
    out = rank_list_picture(paths[0], paths[1:], marks, tmp_path / "row.png")
    with Image.open(out) as im:
        cell = THUMB[0] + 2 * BORDER + GAP
        for k, m in enumerate(marks):
            x, y = GAP + (k + 1) * cell + 1, GAP + 1  # inside the k-th gallery frame
            assert im.getpixel((x, y)) == MARK_COLOURS[m]
    with pytest.raises(ValueError):
        rank_list_picture(paths[0], paths[1:], ["correct", "bad", "junk"], tmp_path / "x.png")


def test_rank_lists_marks_follow_ranking(tmp_path):
    g_paths = _images(tmp_path, 5)
    q_paths = g_paths[:2]
    d = np.array([[0.3, 0.1, 0.2, 0.9, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]])
    q_pids, g_pids = np.array([1, 2]), np.array([1, 1, 2, 3, 1])
    q_cam, g_cam = np.array([0, 0]), np.array([1, 0, 1, 1, 1])
    out = rank_lists(d, q_paths, g_paths, q_pids, g_pids, q_cam, g_cam, [0, 1], tmp_path / "out", topk=3)
    with Image.open(out) as im:
        row_h = THUMB[1] + 2 * BORDER + 2 * GAP
        assert im.size[1] == 2 * row_h
        cell = THUMB[0] + 2 * BORDER + GAP
        # query 0 ranks g1 (pid 1, same camera: junk), g2 (wrong), g0 (correct)
        expected = ["junk", "wrong", "correct"]
        for k, m in enumerate(expected):
            assert im.getpixel((GAP + (k + 1) * cell + 1, GAP + 1)) == MARK_COLOURS[m]
