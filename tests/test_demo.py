"""The demo pipeline end to end, reduced to a few iterations: data, two methods, report, pictures."""

from __future__ import annotations

import json

from occreid.cli.main import main


def test_demo_pipeline_reduced(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--iters", "3"]) == 0
    printed = capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "| bot |" in report and "| pabreid |" in report
    assert str(out / "report.md") in printed
    data = json.loads((out / "report.json").read_text())
    assert set(data["results"]) == {"bot", "pabreid"}
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
