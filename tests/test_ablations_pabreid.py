"""PAB-ReID's ablation configs (configs/pabreid/ablations): each trains for two steps on a tiny labelled
batch, and its switch is shown in the computation (a module or term is absent, a feature gets no
gradient, a loss term has the weight the figure names), not only in the YAML; the card's ablation
table names every config and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from occreid.config import load_config
from occreid.methods import pabreid

from .method_checks import PIDS8, conv1x1, feature_triplet_loop, matched_weights, single_thread
from .test_method_pabreid import band_labels
from .wiring_checks_b import card_ablation_table, reached

one_thread = pytest.fixture(autouse=True)(single_thread)

REPO = Path(__file__).resolve().parents[1]
ABLATIONS = REPO / "configs" / "pabreid" / "ablations"
CONFIGS = sorted(p.stem for p in ABLATIONS.glob("*.yaml"))
TINY = ["model.backbone=resnet18", "data.height=64", "data.width=32", "method.predictor_channels=16",
        "method.stripes=4"]


def train_two_steps(name: str):
    """(cfg, model, out, total, terms, B) of the second of two Adam steps on 8 labelled images (64x32, a
    4x2 map), before its update: the gradients of that step are still on the parameters."""
    cfg = load_config(ABLATIONS / f"{name}.yaml", TINY)
    torch.manual_seed(0)
    model = pabreid.build_model(cfg, 4).train()
    loss = pabreid.build_loss(cfg, 4, model)
    opt = torch.optim.Adam(model.parameters(), lr=3.5e-4)
    x = torch.randn(8, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    batch = {"pid": PIDS8, "label": band_labels(8, 64, 32), "has_label": torch.ones(8, dtype=torch.bool)}
    fmaps = []
    model.backbone.register_forward_hook(lambda m, args, res: fmaps.append(res))
    for step in range(2):
        opt.zero_grad()
        out = model(x)
        total, terms = loss(out, batch)
        total.backward(retain_graph=True)
        if step == 0:
            opt.step()
    assert torch.isfinite(total)
    return cfg, model, out, total, terms, fmaps[-1]


def no_grad(module) -> bool:
    return all(p.grad is None or not p.grad.any() for p in module.parameters())


def test_table3_row1_stripes_replace_the_part_attention_block():
    cfg, model, out, _, terms, _ = train_two_steps("table3_row1_no_part_attention_block")
    assert model.predictor is None and pabreid.label_grouping(cfg) is None
    assert set(terms) == {"id", "part_triplet"}  # no parsing loss
    rows = out.maps["parts"][0].amax(dim=2)  # [X, h]: stripe x covers map row x
    assert torch.equal(rows, torch.eye(4)) and torch.all(out.visibility == 1)


def test_table3_row2_without_focuser_the_maps_pool_b():
    _, model, out, _, terms, fmap = train_two_steps("table3_row2_no_focuser")
    assert model.k1 is None and model.gate is None and "gate" not in out.maps
    m = out.maps["parts"]
    expected = (fmap.unsqueeze(1) * m.unsqueeze(2)).sum(dim=(3, 4)) / m.sum(dim=(2, 3)).unsqueeze(2)
    assert torch.allclose(out.parts, expected, atol=1e-5)
    assert set(terms) == {"id", "part_triplet", "part"}


def test_table3_row3_without_pixel_predictor_a_1x1_conv_gives_the_maps():
    _, model, out, _, _, fmap = train_two_steps("table3_row3_no_pixel_predictor")
    assert len(model.predictor.body) == 0
    assert torch.allclose(out.maps["part_logits"], conv1x1(fmap, model.predictor.classifier), atol=1e-5)
    assert not no_grad(model.predictor.classifier)


def test_table3_row4_normal_triplet_trains_each_part_feature_alone():
    _, model, out, total, terms, _ = train_two_steps("table3_row4_normal_triplet")
    assert set(terms) == {"id", "triplet", "part"}
    parts = out.parts.detach()
    expected = sum(feature_triplet_loop(parts[:, x], PIDS8, 0.3) for x in range(6)) / 6
    assert terms["triplet"].item() == pytest.approx(expected, rel=1e-4)
    assert total.item() == pytest.approx(float(terms["id"] + terms["triplet"] + 0.35 * terms["part"]), rel=1e-6)
    assert reached(total, out.parts) == set(range(6))  # the test-time part features are trained


def test_fig5_id_only_leaves_the_part_features_without_gradient():
    _, model, out, total, terms, _ = train_two_steps("fig5_col1_id_only")
    assert set(terms) == {"id", "part"}
    assert reached(total, out.parts) == set()
    assert not no_grad(model.foreground_neck) and not no_grad(model.global_neck)


def test_fig5_triplet_only_trains_no_classifier():
    _, model, out, total, terms, _ = train_two_steps("fig5_col2_triplet_only")
    assert set(terms) == {"triplet", "part"}
    assert no_grad(model.global_neck) and no_grad(model.foreground_neck)
    assert reached(total, out.parts) == set(range(6)) and not no_grad(model.gate)


FIG6 = [c for c in CONFIGS if c.startswith("fig6_")]


@pytest.mark.parametrize("name", FIG6)
def test_fig6_grid_weights_the_part_loss_by_gamma_and_matches_parts_above_mu(name):
    mu, gamma = (float(v) for v in name.removeprefix("fig6_mu").split("_gamma"))
    cfg, _, _, total, terms, _ = train_two_steps(name)
    assert total.item() == pytest.approx(float(terms["id"] + terms["part_triplet"] + gamma * terms["part"]), rel=1e-6)
    scores = [0.4, 0.6, 0.8]
    assert matched_weights(scores, pabreid.Options(**cfg.method)) == [1.0] + [float(s > mu) for s in scores]


def test_the_card_maps_every_figure_and_table_row_to_one_config_and_names_every_config():
    rows = card_ablation_table(REPO / "docs" / "methods" / "pabreid.md")
    labels = [r for r, _ in rows]
    assert len(labels) == len(set(labels)) == 5 + 4 + 9  # Table III, Fig. 5, Fig. 6
    assert all(len(cfgs) == 1 for _, cfgs in rows), [r for r in rows if len(r[1]) != 1]
    named = {c for _, (c,) in rows}
    assert named - {f"{c}.yaml" for c in CONFIGS} == {"../occluded_duke.yaml"}  # the full model
    assert {f"{c}.yaml" for c in CONFIGS} <= named
