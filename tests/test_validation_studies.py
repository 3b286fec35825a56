"""benchmarks/validation_studies.py: every candidate of issue #28's studies is a valid config of its
method (a typo or an out-of-range value would only show after an hour of training otherwise), each study
has its baseline, `bot` gets as many candidates as the most-tuned method, and the command is recipe_val's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from occreid.config import load_config

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("validation_studies", ROOT / "benchmarks" / "validation_studies.py")
studies = importlib.util.module_from_spec(spec)
spec.loader.exec_module(studies)


@pytest.mark.parametrize("method", sorted(studies.CANDIDATES))
def test_every_candidate_is_a_valid_config_that_changes_something(method):
    config = ROOT / "configs" / "protocols" / "pretrained_occduke" / f"{method}.yaml"
    base = load_config(config, studies.STUDY_DEFAULTS.get(method, []))
    names = [n for n, _ in studies.CANDIDATES[method]]
    assert names[0] == "baseline" and studies.CANDIDATES[method][0][1] == [] and len(set(names)) == len(names)
    for name, overrides in studies.CANDIDATES[method][1:] + studies.DISTANCES.get(method, []):
        cfg = load_config(config, [*studies.STUDY_DEFAULTS.get(method, []), *overrides])
        if overrides:
            assert cfg != base, name


def test_bot_gets_the_largest_budget():
    most = max(len(c) for m, c in studies.CANDIDATES.items() if m != "bot")
    assert len(studies.CANDIDATES["bot"]) == most


def test_command_is_recipe_val_with_labels_where_needed():
    cmd = studies.command("sgsfa", "/d", "/l", Path("out"))
    assert cmd[1].endswith("recipe_val.py") and "data.labels_root=/l" in cmd and "--iters" in cmd
    assert "region_tau_eq2=method.region_tau=0" in cmd and "normalised=method.normalise_distance=true" in cmd
    assert "baseline=" in cmd and "data.labels_root=/l" not in studies.command("pan", "/d", "/l", Path("o"))
    pan = studies.command("pan", "/d", None, Path("o"))  # pinned to the defaults it ran under
    assert pan[pan.index("method.triplet_feature=concat") - 1] == "--set"
    assert pan.index("method.triplet_feature=concat") < pan.index("--candidate")
    with pytest.raises(SystemExit, match="labels"):
        studies.command("amdnet", "/d", None, Path("o"))
