"""`occreid eval` outputs: evaluations with other settings get their own report folder, per_query.csv
names each query, report.md lists rank-1 once, architecture overrides and late overrides are handled."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from occreid.cli.main import main
from occreid.errors import ConfigError
from occreid.evaluation.report import report_folder_name, write_report


def _eval(*args: str) -> int:
    return main(["eval", *args])


def test_second_evaluation_with_rerank_gets_its_own_report(bot_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(bot_run, run)
    assert _eval("--checkpoint", str(run / "last.pt")) == 0
    first = (run / "eval" / "market1501" / "metrics.json").read_text()
    assert _eval("--checkpoint", str(run / "last.pt"), "--rerank") == 0
    assert (run / "eval" / "market1501" / "metrics.json").read_text() == first  # untouched
    second = json.loads((run / "eval" / "market1501-rerank" / "metrics.json").read_text())
    assert second["rerank"] is True and json.loads(first)["rerank"] is False
    assert second["report_dir"] == str(run / "eval" / "market1501-rerank")
    assert (run / "eval" / "market1501-rerank" / "report.md").is_file()
    # the same evaluation again replaces its own report (same checkpoint file, same settings)
    assert _eval("--checkpoint", str(run / "last.pt")) == 0
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["market1501", "market1501-rerank"]


def test_per_query_paths_and_single_rank1_row(bot_run, tmp_path):
    assert _eval("--checkpoint", str(bot_run / "last.pt"), "--out", str(tmp_path / "ev")) == 0
    folder = tmp_path / "ev" / "market1501"
    rows = list(csv.DictReader((folder / "per_query.csv").open()))
    assert len(rows) == 4 and all(r["path"].endswith(".jpg") and Path(r["path"]).is_file() for r in rows)
    md = (folder / "report.md").read_text()
    assert md.count("| rank-1 |") == 1 and "| rank1 |" not in md


def test_report_images_link_references_the_dataset_files(bot_run, tmp_path):
    """--report-images link: report.html names each image by a relative path that resolves from the
    report folder, and embeds none; the default embeds them."""
    import os
    import re

    assert _eval("--checkpoint", str(bot_run / "last.pt"), "--out", str(tmp_path / "emb")) == 0
    assert _eval("--checkpoint", str(bot_run / "last.pt"), "--out", str(tmp_path / "lnk"),
                 "--report-images", "link") == 0
    embedded = (tmp_path / "emb" / "market1501" / "report.html").read_text()
    linked = (tmp_path / "lnk" / "market1501" / "report.html").read_text()
    assert "data:image/" in embedded and "data:image/" not in linked
    folder = tmp_path / "lnk" / "market1501"
    links = {r for r in re.findall(r'"([^"]+\.jpg)"', linked) if not os.path.isabs(r)}  # absolute = names shown
    assert len(links) >= 8 and all((folder / r).resolve().is_file() for r in links)


def test_another_checkpoint_into_the_same_folder_is_refused(bot_run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(bot_run, other)
    out = tmp_path / "ev"
    assert _eval("--checkpoint", str(bot_run / "last.pt"), "--out", str(out)) == 0
    before = (out / "market1501" / "metrics.json").read_text()
    assert _eval("--checkpoint", str(other / "last.pt"), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "--out" in err and str(bot_run / "last.pt") in err
    assert (out / "market1501" / "metrics.json").read_text() == before


def test_model_name_override_names_the_checkpoint_method(bot_run, capsys):
    assert _eval("--checkpoint", str(bot_run / "last.pt"), "model.name=pabreid") == 2
    err = capsys.readouterr().err
    assert "'bot'" in err and "Drop model.name=pabreid" in err and "center_lr" not in err


def test_overrides_after_a_flag_are_accepted_and_name_the_report(bot_run, tmp_path, capsys):
    out = tmp_path / "ev"
    assert _eval("--checkpoint", str(bot_run / "last.pt"), "eval.k1=5", "--rerank", "eval.k2=2",
                 "--out", str(out), "eval.max_rank=10") == 0
    (folder,) = list(out.iterdir())
    assert folder.name == "market1501-rerank-eval.k1=5-eval.k2=2-eval.max_rank=10"
    assert len(json.loads((folder / "metrics.json").read_text())["cmc"]) == 10


def test_flags_before_and_after_overrides_in_train_parse(monkeypatch):
    from occreid.cli.main import build_parser, parse_with_overrides

    args = parse_with_overrides(build_parser(), ["train", "a.b=1", "--config", "c.yaml", "c.d=2", "--no-eval"])
    assert args.overrides == ["a.b=1", "c.d=2"] and args.no_eval and args.config == "c.yaml"
    with pytest.raises(SystemExit):
        parse_with_overrides(build_parser(), ["train", "--config", "c.yaml", "--bogus"])


def test_long_setting_lists_are_hashed_into_the_name():
    assert report_folder_name("duke", ["best", "rerank"]) == "duke-best-rerank"
    name = report_folder_name("duke", ["rerank", *[f"method.option_{i}=value" for i in range(8)]])
    assert name.startswith("duke-rerank-cfg") and len(name) < 40
    assert report_folder_name("d", ["data.std=[0.2, 0.3]"]) == "d-data.std=_0.2,_0.3_"


def test_write_report_refuses_an_unknown_column(tmp_path):
    with pytest.raises(ValueError, match="query"):
        write_report(tmp_path, {}, {"query": ["a.jpg"], "ap": [0.5], "first_hit": [1]}, np.ones(3))


def test_model_change_check_is_a_config_error(tmp_path):
    from occreid.engine.evaluate import refuse_model_change

    with pytest.raises(ConfigError, match="resnet18"):
        refuse_model_change(tmp_path / "x.pt", {"model": {"name": "bot", "backbone": "resnet18"}},
                            ["model.backbone=resnet50"])
    refuse_model_change(tmp_path / "x.pt", {"model": {"name": "bot"}}, ["model.name=bot", "eval.k1=3"])
