"""Every PAN ablation config (configs/pan/ablations/) trains two steps on a tiny batch (ResNet-18 / OSNet
x0.25 at 64x32) and changes the computation its paper row names; the card's ablation table names each
config exactly once, one config per paper row."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from occreid.config import load_config
from occreid.methods import pan

from .method_checks import PIDS8, single_thread
from .wiring_checks_a import ablation_stems, card_ablation_rows, train_steps

one_thread = pytest.fixture(autouse=True)(single_thread)
ABLATIONS = Path(__file__).resolve().parents[1] / "configs" / "pan" / "ablations"


def run(name: str, backbone: str = "resnet18"):
    """Build the config at 64x32 on a small backbone, train two steps; (model, first-step terms, the
    parameters that received a gradient, a training-mode output)."""
    torch.manual_seed(0)
    cfg = load_config(ABLATIONS / f"{name}.yaml", [f"model.backbone={backbone}", "data.height=64", "data.width=32"])
    model = pan.build_model(cfg, 4)
    images = torch.randn(8, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    terms, reached = train_steps(model, pan.build_loss(cfg, 4, model), images, {"pid": PIDS8})
    assert set(terms) == {"ce_global", "ce_local", "triplet"} and all(torch.isfinite(v) for v in terms.values())
    with torch.no_grad():
        out = model(images)
    return model, reached, out


def check_gamma(name: str) -> None:
    gamma = float(name.removeprefix("fig2_gamma_"))
    model, _, out = run(name)
    n_l = round(gamma * 512 / 14)
    assert model.gamma == pytest.approx(gamma) and out.parts.shape == (8, 14, n_l)
    assert out.embeddings["concat"].shape == (8, 512 + 14 * n_l)


def check_parts(name: str) -> None:
    p = int(name.removeprefix("fig3_parts_"))
    model, _, out = run(name)
    assert model.mask_generator.out_channels == p and out.maps["masks"].shape[1] == p
    assert out.parts.shape == (8, p, 256)


def check_separate_fc(name: str, backbone: str = "resnet18") -> None:
    """One FC weight per part, each trained; the BN stays one BN of n_l channels (only the FC changes)."""
    model, reached, out = run(name, backbone)
    c = model.backbone.out_channels
    assert isinstance(model.local_fc, pan.PartwiseLinear) and model.local_fc.weight.shape == (14, 256, c)
    assert model.local_fc.bn.num_features == 256
    assert "local_fc.weight" in reached
    same = out.extras["pooled_locals"][:, :1].expand(8, 14, c)
    model.eval()
    with torch.no_grad():
        y = model.local_fc(same)
    assert not torch.allclose(y[:, 0], y[:, 1])  # the same input, different FCs


def check_table3(name: str) -> None:
    """The buffer layers exist and are trained iff the row names them; masks read F_g^1's channels."""
    mask_source, local_source = name.split("_")[2:4]
    model, reached, out = run(name)
    for buffer, used in (("buffer_conv41", mask_source == "conv41"), ("buffer_conv51", local_source == "conv51")):
        assert (getattr(model, buffer) is not None) == used, buffer
        assert any(n.startswith(buffer) for n in reached) == used, buffer
    c4, c5 = model.backbone.stage_channels[-2:]
    assert model.mask_generator.in_channels == (c5 if mask_source == "conv50" else c4)
    assert "mask_generator.weight" in reached


def check_softmax(name: str) -> None:
    model, _, out = run(name)
    masks = out.maps["masks"]
    assert torch.allclose(masks.sum(dim=1), torch.ones_like(masks[:, 0]), atol=1e-5) and masks.min() >= 0
    assert model.opts.pool_norm == "mass"


CHECKS = {
    **{f"fig2_gamma_{g}": check_gamma for g in ("0.875", "1.75", "3.5", "14", "28")},
    **{f"fig3_parts_{p}": check_parts for p in (2, 4, 6, 8, 10, 12, 16, 18, 20)},
    "table2_separate_fc": check_separate_fc,
    "table2_separate_fc_osnet": lambda name: check_separate_fc(name, "osnet_x0_25"),
    "table3_row1_conv40_conv50": check_table3, "table3_row2_conv40_conv51": check_table3,
    "table3_row3_conv41_conv50": check_table3, "table3_row4_conv41_conv51": check_table3,
    "table3_row5_conv50_conv50": check_table3, "table3_row6_conv50_conv51": check_table3,
    "table4_softmax": check_softmax,
}


def test_every_ablation_config_has_a_check():
    assert sorted(CHECKS) == ablation_stems("pan")


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_ablation_config_trains_and_changes_its_computation(name):
    CHECKS[name](name)


def test_card_table_maps_each_paper_row_to_exactly_one_config():
    rows = card_ablation_rows("pan")
    assert all(len(configs) == 1 for _, configs in rows), rows
    named = [configs[0] for _, configs in rows]
    assert sorted(named) == ablation_stems("pan")  # every config once, and no config the folder lacks
