"""Every SGSFA ablation config (configs/sgsfa/ablations/: Table 5, Fig. 6, Sec. 4.3.1) trains two steps on a
tiny labelled batch (ResNet-18 at 128x32, 32-d vectors) and changes the computation it names (a branch
without gradient, a mask that trains or not, a feature that is absent, a distance that ignores a part); the
card's table maps each paper row to exactly one config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from occreid.config import load_config
from occreid.methods import sgsfa

from .method_checks import PIDS8, single_thread
from .wiring_checks_a import ablation_stems, card_ablation_rows, train_steps

one_thread = pytest.fixture(autouse=True)(single_thread)
ROOT = Path(__file__).resolve().parents[1] / "configs" / "sgsfa"
SMALL = ["model.backbone=resnet18", "data.height=128", "data.width=32", "method.feature_dim=32",
         "method.dcls_regions=all", "method.region_tau=0.0"]  # every band visible: L_dcls always trains
IMAGES = torch.randn(8, 3, 128, 32, generator=torch.Generator().manual_seed(1))


def run(path: Path, *extra: str):
    """(model, first-step terms, parameters reached by a gradient, cfg) of two steps on 8 labelled images."""
    torch.manual_seed(0)
    cfg = load_config(path, SMALL + list(extra))
    model = sgsfa.build_model(cfg, 4)
    label = torch.randint(0, 5, (8, 128, 32), generator=torch.Generator().manual_seed(2))
    batch = {"pid": PIDS8, "label": label, "has_label": torch.ones(8, dtype=torch.bool)}
    terms, reached = train_steps(model, sgsfa.build_loss(cfg, 4, model), IMAGES, batch)
    return model, terms, reached, cfg


def trained(reached: set[str], prefix: str) -> bool:
    return any(n.startswith(prefix) for n in reached)


def distance_reads(cfg, k: int) -> bool:
    """Whether the test distance moves when part k (of head .. shoes, top, middle, bottom) moves."""
    g = torch.Generator().manual_seed(3)
    q = {"parts": torch.randn(2, 7, 3, generator=g), "visibility": torch.full((2, 7), 0.9)}
    gal = {"parts": torch.randn(3, 7, 3, generator=g), "visibility": torch.full((3, 7), 0.9)}
    moved = q["parts"].clone()
    moved[:, k] += 1.0
    return not torch.allclose(sgsfa.distance(q, gal, cfg), sgsfa.distance({**q, "parts": moved}, gal, cfg))


def check_lambda(name: str) -> None:
    lam = float(name.removeprefix("fig6_lambda_"))
    model, terms, reached, cfg = run(ROOT / "ablations" / f"{name}.yaml")
    assert model.opts.lambda_weight == lam
    sfa_trained = trained(reached, "sfa_embed.") and trained(reached, "sfa_classifiers.")
    sga_trained = trained(reached, "sga_classifiers.") and trained(reached, "parts.embed")
    assert sfa_trained == (lam < 1) and sga_trained == (lam > 0)
    assert trained(reached, "parts.masks") and trained(reached, "whole.")  # L_se trains the masks at every lambda
    reads = [distance_reads(cfg, k) for k in range(7)]
    if lam == 1.0:  # "only the semantic feature is considered"
        assert reads == [True] * 4 + [False] * 3
    elif lam == 0.0:  # "only spatial features take effect"
        assert reads == [False] * 4 + [True] * 3
        # Eq. 11 as written: nothing trains the masks that place the bands
        _, _, literal, _ = run(ROOT / "ablations" / f"{name}.yaml", "method.se_weight=null")
        assert not trained(literal, "parts.masks") and not trained(literal, "parts.")
    else:
        assert all(reads)


def check_no_whole_attention(name: str) -> None:
    model, terms, reached, _ = run(ROOT / "ablations" / f"{name}.yaml")
    assert model.whole is None and not trained(reached, "whole.") and "se" in terms
    with torch.no_grad():
        assert "whole_body_logits" not in model.eval()(IMAGES[:2]).maps


def check_all_parts(name: str) -> None:
    _, _, _, cfg = run(ROOT / "ablations" / f"{name}.yaml")
    g = torch.Generator().manual_seed(3)
    q = {"parts": torch.randn(2, 7, 3, generator=g), "visibility": torch.full((2, 7), 0.9)}
    gal = {"parts": torch.randn(3, 7, 3, generator=g), "visibility": torch.full((3, 7), 0.9)}
    hidden = {**q, "visibility": torch.zeros(2, 7)}
    assert torch.allclose(sgsfa.distance(q, gal, cfg), sgsfa.distance(hidden, gal, cfg))  # visibility ignored
    shared = load_config(ROOT / "occluded_duke.yaml", [])
    assert not torch.allclose(sgsfa.distance(q, gal, shared), sgsfa.distance(hidden, gal, shared))


def check_global(name: str) -> None:
    model, _, _, cfg = run(ROOT / "ablations" / f"{name}.yaml")
    with torch.no_grad():
        feats = model.eval()(IMAGES[:3]).features()
    assert feats["global"].shape == (3, model.backbone.out_channels)
    moved = {**feats, "parts": feats["parts"] + 1.0}
    d = sgsfa.distance(feats, feats, cfg)
    assert torch.allclose(d, sgsfa.distance(moved, feats, cfg))  # the parts play no role
    assert not torch.allclose(d, sgsfa.distance({**feats, "global": feats["global"].flip(0)}, feats, cfg))


def check_stripes(name: str) -> None:
    model, _, reached, _ = run(ROOT / "ablations" / f"{name}.yaml")
    with torch.no_grad():
        bounds = model.eval()(IMAGES).extras["band_bounds"]
    assert bounds.tolist() == [[0, 3, 5, 8]] * 8  # equal thirds of the 8-row map, whatever the head mask
    assert trained(reached, "sfa_embed.")


CHECKS = {
    **{f"fig6_lambda_{v}": check_lambda for v in ("0.0", "0.2", "0.4", "0.6", "0.8", "1.0")},
    "table5_no_whole_attention": check_no_whole_attention,
    "sec431_all_parts_matching": check_all_parts,
    "sec431_global_matching": check_global,
    "sec431_horizontal_stripes": check_stripes,
}


def test_every_ablation_config_has_a_check():
    assert sorted(CHECKS) == ablation_stems("sgsfa")


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_ablation_config_trains_and_changes_its_computation(name):
    CHECKS[name](name)


def test_card_table_maps_each_paper_row_to_exactly_one_config():
    rows = card_ablation_rows("sgsfa")
    assert all(len(configs) == 1 for _, configs in rows), rows
    assert sorted(c[0] for _, c in rows) == ablation_stems("sgsfa")
