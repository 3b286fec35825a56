"""method.part_targets for the parsing-supervised methods (AMD-Net Eq. 2, PAB-ReID Eq. 3-4): "area" feeds
the soft, cell-averaged targets to the part-attention loss, "nearest" (default) the centre pixel; the
method's loss term is exactly `parsing_cross_entropy` of its own part logits with that reading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from occreid.config import load_config
from occreid.errors import ConfigError
from occreid.losses.maps import parsing_cross_entropy
from occreid.methods import amdnet, pabreid

from .method_checks import PIDS8, single_thread

one_thread = pytest.fixture(autouse=True)(single_thread)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CASES = {  # method -> (module, config, overrides, loss term)
    "amdnet": (amdnet, "amdnet/occluded_duke.yaml", ["method.tff_channels=16", "method.sim_channels=4"],
               "part_attention"),
    "pabreid": (pabreid, "pabreid/occluded_duke.yaml", ["method.predictor_channels=16"], "part"),
}


def thin_part_labels() -> torch.Tensor:
    """Labels whose parts are 3 pixels wide: a 16x16 cell's centre pixel misses most of them."""
    label = torch.zeros(8, 96, 32, dtype=torch.uint8)
    for k in range(1, 6):
        label[:, 16 * k : 16 * k + 8, 3 * k : 3 * k + 3] = k
    return label


@pytest.mark.parametrize("name", sorted(CASES))
def test_part_targets_reach_the_part_loss(name):
    module, config, extra, term = CASES[name]
    batch = {"pid": PIDS8, "label": thin_part_labels(), "has_label": torch.ones(8, dtype=torch.bool)}
    x = torch.randn(8, 3, 96, 32, generator=torch.Generator().manual_seed(1))
    for reading, other in (("nearest", "area"), ("area", "nearest")):
        cfg = load_config(CONFIGS / config, ["model.backbone=resnet18", "data.height=96", "data.width=32",
                                             *extra, f"method.part_targets={reading}"])
        torch.manual_seed(0)
        model = module.build_model(cfg, 4).train()
        out = model(x)
        _, terms = module.build_loss(cfg, 4, model)(out, batch)
        eps = module.Options(**cfg.method).part_loss_epsilon
        logits = out.maps["part_logits"]
        assert terms[term].item() == pytest.approx(parsing_cross_entropy(logits, batch, eps, targets=reading).item(),
                                                   rel=1e-6, abs=0)
        # the other reading gives another value on the same logits, so the check above tells them apart
        assert abs(terms[term].item() - parsing_cross_entropy(logits, batch, eps, targets=other).item()) > 1e-4


def test_area_targets_need_amdnets_background_channel():
    with pytest.raises(ConfigError, match="part_targets=area needs method.background=true"):
        amdnet.build_model(load_config(CONFIGS / "amdnet/occluded_duke.yaml",
                                       ["method.part_targets=area", "method.background=false"]), 4)
