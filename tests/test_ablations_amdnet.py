"""Every AMD-Net ablation config (configs/amdnet/ablations/, Table 2) trains two steps on a tiny labelled batch
(ResNet-18 at 96x32, TFF at 16 channels) and removes what its row names (no module, no gradient, no loss
term); the card's table maps each Table 2 row to exactly one config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from occreid.config import load_config
from occreid.methods import amdnet

from .method_checks import PIDS8, single_thread
from .wiring_checks_a import ablation_stems, card_ablation_rows, train_steps

one_thread = pytest.fixture(autouse=True)(single_thread)
ROOT = Path(__file__).resolve().parents[1] / "configs" / "amdnet"
SMALL = ["model.backbone=resnet18", "data.height=96", "data.width=32", "method.tff_channels=16",
         "method.sim_channels=4"]


def run(path: Path):
    """(model, first-step terms, parameters reached by a gradient) of two steps on 8 labelled images."""
    torch.manual_seed(0)
    cfg = load_config(path, SMALL)
    model = amdnet.build_model(cfg, 4)
    g = torch.Generator().manual_seed(1)
    batch = {"pid": PIDS8, "label": torch.randint(0, 6, (8, 96, 32), generator=g),
             "has_label": torch.ones(8, dtype=torch.bool)}
    terms, reached = train_steps(model, amdnet.build_loss(cfg, 4, model), torch.randn(8, 3, 96, 32, generator=g), batch)
    return model, terms, reached, cfg


def trained(reached: set[str], prefix: str) -> bool:
    return any(n.startswith(prefix) for n in reached)


def test_the_full_model_trains_every_module_the_ablations_remove():
    model, terms, reached, _ = run(ROOT / "occluded_duke.yaml")
    assert sorted(terms) == ["id", "part_attention", "part_triplet"]
    assert all(trained(reached, m) for m in ("sim.", "attention.", "reduce.", "tff."))
    assert model.part_classifiers is None


def check_no_part_attention(model, terms, reached, cfg):
    """Stripes: no attention, no SIM, no parsing loss, no labels read; the parts still train."""
    assert model.attention is None and model.sim is None and amdnet.label_grouping(cfg) is None
    assert sorted(terms) == ["id", "part_triplet"]
    assert trained(reached, "tff.") and trained(reached, "reduce.")


def check_no_sim(model, terms, reached, cfg):
    assert model.sim is None and not trained(reached, "sim.")
    assert trained(reached, "attention.") and "part_attention" in terms and trained(reached, "tff.")


def check_no_tff(model, terms, reached, cfg):
    """No TFF blocks, but F keeps the reduction and its width (tff_channels): only TFF changes."""
    assert model.tff is None and trained(reached, "reduce.") and model.reduce.fc.out_features == 16
    assert model.global_neck.bn.num_features == 16 and model.sim is not None and trained(reached, "sim.")


def check_no_sim_no_tff(model, terms, reached, cfg):
    assert model.sim is None and model.tff is None and model.reduce.fc.out_features == 16
    assert trained(reached, "attention.") and trained(reached, "reduce.")


def check_part_id_loss(model, terms, reached, cfg):
    assert sorted(terms) == ["id", "part_attention", "part_id"] and trained(reached, "part_classifiers.")


def check_part_hard_triplet(model, terms, reached, cfg):
    assert sorted(terms) == ["id", "part_attention", "part_hard_triplet"] and model.part_classifiers is None


CHECKS = {
    "table2_no_part_attention": check_no_part_attention,
    "table2_no_sim": check_no_sim,
    "table2_no_tff": check_no_tff,
    "table2_no_sim_no_tff": check_no_sim_no_tff,
    "table2_part_id_loss": check_part_id_loss,
    "table2_part_hard_triplet": check_part_hard_triplet,
}


def test_every_ablation_config_has_a_check():
    assert sorted(CHECKS) == ablation_stems("amdnet")


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_ablation_config_trains_and_changes_its_computation(name):
    CHECKS[name](*run(ROOT / "ablations" / f"{name}.yaml"))


def test_card_table_maps_each_paper_row_to_exactly_one_config():
    rows = card_ablation_rows("amdnet")
    assert all(len(configs) == 1 for _, configs in rows), rows
    assert sorted(c[0] for _, c in rows) == ablation_stems("amdnet")
