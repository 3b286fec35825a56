"""benchmarks/recipe_val.py end to end on the tiny Market set: two candidates trained with held-out
identities, their held-out scores agree with the trainer's own validation, and the paired bootstrap
compares the second against the first on the same queries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "recipe_val.py"


@pytest.fixture(scope="module")
def study(tiny_market, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("recipe_val")
    cfg = {"model": {"name": "bot", "backbone": "resnet18"},
           "data": {"dataset": "market1501", "root": str(tiny_market), "height": 32, "width": 16,
                    "ids_per_batch": 3, "instances_per_id": 2, "workers": 0},
           "train": {"warmup_epochs": 1, "log_every": 1, "checkpoint_every": 4}}
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp / "study"
    subprocess.run([sys.executable, str(SCRIPT), "--config", str(tmp / "cfg.yaml"), "--iters", "4", "--evals", "1",
                    "--val-ids", "3", "--out", str(out), "--candidate", "baseline=",
                    "--candidate", "no_center=method.center_weight=0", "--distance", "bnneck=",
                    "--distance", "before_bn=method.test_feature=global"], check=True, capture_output=True)
    return out


def test_held_out_scores_are_the_final_models_validation(study):
    rows = json.loads((study / "summary.json").read_text())
    assert [r["candidate"] for r in rows] == ["baseline", "no_center"]
    with np.load(study / "baseline" / "held_out_scores.npz") as z:
        ap, hit, pid = z["bnneck/ap"], z["bnneck/hit"], z["bnneck/pid"]
    assert len(set(pid.tolist())) == 3  # the three held-out identities, every image a query
    assert np.nanmean(ap) == pytest.approx(rows[0]["val_mAP"], abs=1e-6)
    assert hit[~np.isnan(ap)].mean() == pytest.approx(rows[0]["val_rank1"], abs=1e-6)


def test_second_candidate_is_bootstrapped_against_the_first(study):
    rows = json.loads((study / "summary.json").read_text())
    assert "vs_first" not in rows[0]
    vs = rows[1]["vs_first"]
    assert vs["resampled"] == "query identities" and vs["num_units"] == 3
    assert vs["mAP"]["delta"] == pytest.approx(rows[1]["val_mAP"] - rows[0]["val_mAP"], abs=1e-6)
    assert vs["mAP"]["low"] <= vs["mAP"]["delta"] <= vs["mAP"]["high"]
    table = (study / "summary.md").read_text()
    assert "| no_center | " in table and "3 held-out identities" in table
    assert (study / "curves.png").is_file()


def test_every_reading_is_bootstrapped_against_the_first_candidate_and_the_first_reading(study):
    rows = json.loads((study / "summary.json").read_text())
    base, other = ({d["distance"]: d for d in r["distances"]} for r in rows)
    assert "vs_first_candidate" not in base["bnneck"] and "vs_first_distance" not in base["bnneck"]
    within = base["before_bn"]["vs_first_distance"]["mAP"]["delta"]
    assert within == pytest.approx(base["before_bn"]["val_mAP"] - base["bnneck"]["val_mAP"], abs=1e-6)
    across = other["before_bn"]["vs_first_candidate"]["mAP"]["delta"]
    assert across == pytest.approx(other["before_bn"]["val_mAP"] - base["before_bn"]["val_mAP"], abs=1e-6)
    assert "| no_center | before_bn |" in (study / "summary.md").read_text()
