"""OCNet's ablation configs (configs/ocnet/ablations): each trains for two steps on a tiny batch, and its
switch is shown in the computation (which F_final is formed, which terms exist, which features feed the
Converter Module), not only in the YAML; Table 2's ticks are tied to the configs; index 1 is `bot`; the
card's ablation table names every config and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from occreid.config import load_config
from occreid.methods import bot, ocnet

from .method_checks import PIDS8, single_thread
from .wiring_checks_b import card_ablation_table

one_thread = pytest.fixture(autouse=True)(single_thread)

REPO = Path(__file__).resolve().parents[1]
ABLATIONS = REPO / "configs" / "ocnet" / "ablations"
CONFIGS = sorted(p.stem for p in ABLATIONS.glob("*.yaml"))
TINY = ["model.backbone=resnet18", "method.cm_dim=16", "method.ram_hidden=8"]

# Table 2 of the paper, index -> ticks (RN, Concat, CFM, SL, RAM). The text extraction shifts the CFM, SL
# and RAM rows one column left; the ticks below follow Sec. 3.2 (index 2 = CFM alone, index 8 = OCNet
# without CFM, index 7 vs 9 = SL, index 5-6 = RN).
TABLE2 = {
    1: dict(rn=False, concat=False, cfm=False, sl=False, ram=False),
    2: dict(rn=False, concat=False, cfm=True, sl=False, ram=False),
    3: dict(rn=False, concat=True, cfm=False, sl=False, ram=False),
    4: dict(rn=False, concat=True, cfm=False, sl=True, ram=False),
    5: dict(rn=True, concat=True, cfm=True, sl=False, ram=False),
    6: dict(rn=True, concat=True, cfm=True, sl=True, ram=False),
    7: dict(rn=False, concat=True, cfm=True, sl=False, ram=True),
    8: dict(rn=False, concat=True, cfm=False, sl=True, ram=True),
    9: dict(rn=False, concat=True, cfm=True, sl=True, ram=True),
}


def train_two_steps(name: str, extra: tuple[str, ...] = ()):
    """(cfg, model, out, terms, total, CM input) of the second of two training steps of the config on 8
    random images at 64x32 (a 4x2 map; 128x128, an 8x8 map, for the centre sizes), before its update."""
    h, w = (128, 128) if name.startswith("t3_center") else (64, 32)
    cfg = load_config(ABLATIONS / f"{name}.yaml", [*TINY, f"data.height={h}", f"data.width={w}", *extra])
    torch.manual_seed(0)
    model = ocnet.build_model(cfg, 4).train()
    loss = ocnet.build_loss(cfg, 4, model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(8, 3, h, w, generator=torch.Generator().manual_seed(1))
    seen = []
    if model.converter is not None:
        model.converter.register_forward_hook(lambda m, args, res: seen.append(args[0].detach()))
    for step in range(2):
        opt.zero_grad()
        out = model(x)
        total, terms = loss(out, {"pid": PIDS8})
        total.backward()
        if step == 0:
            opt.step()
    return cfg, model, out, terms, total, (seen[-1] if seen else None)


def computed_ticks(model, out, terms) -> dict[str, bool]:
    """Table 2's ticks as the computation shows them: F_final = F_concat (none), F_concat * sigmoid(r) (RAM)
    or r (RN); f_g / f_t / f_b present (Concat); f_c present (CFM); an SL term (SL)."""
    fusion = "none"
    if "final" in out.extras and model.fusion is not None:
        feats = out.extras["features"].detach()
        with torch.no_grad():
            r = model.fusion.relations(feats)
        final = out.extras["final"].detach()
        if torch.allclose(final, (feats * torch.sigmoid(r)).flatten(1), atol=1e-6):
            fusion = "ram"
        elif torch.allclose(final, r.flatten(1), atol=1e-6):
            fusion = "rn"
    elif "final" in out.extras:
        assert torch.equal(out.extras["final"], out.extras["features"].flatten(1))
    return dict(rn=fusion == "rn", concat="global" in out.logits and "part_features" in out.extras,
                cfm="center" in out.logits and "center_attention" in out.maps, sl="sl" in terms, ram=fusion == "ram")


@pytest.mark.parametrize("index", sorted(TABLE2))
def test_table2_configs_compute_the_ticked_modules(index):
    (name,) = [c for c in CONFIGS if c.startswith(f"t2_idx{index}_")]
    _, model, out, terms, total, _ = train_two_steps(name)
    assert torch.isfinite(total)
    assert computed_ticks(model, out, terms) == TABLE2[index], name
    if TABLE2[index]["sl"]:
        assert terms["sl"] > 0
    # a module the row leaves out has no parameters; one it keeps was trained
    for module, on in (("fusion", TABLE2[index]["rn"] or TABLE2[index]["ram"]), ("center_neck", TABLE2[index]["cfm"]),
                       ("global_neck", TABLE2[index]["concat"])):
        m = getattr(model, module)
        assert (m is not None) == on, (name, module)
        if on:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters() if p.requires_grad)


def test_table2_index1_trains_and_tests_exactly_like_bot():
    """Index 1 is BoT: the same parameters, loss terms, gradients and test distance as `bot` at one seed."""
    overrides = ["model.backbone=resnet18", "data.height=64", "data.width=32"]
    results = []
    for method, path in ((ocnet, ABLATIONS / "t2_idx1_baseline.yaml"),
                         (bot, REPO / "configs" / "bot" / "occluded_duke.yaml")):
        cfg = load_config(path, overrides)
        torch.manual_seed(0)
        model = method.build_model(cfg, 4).train()
        loss = method.build_loss(cfg, 4, model)
        out = model(torch.randn(8, 3, 64, 32, generator=torch.Generator().manual_seed(1)))
        total, terms = loss(out, {"pid": PIDS8})
        total.backward()
        loss.before_step()
        model.eval()
        with torch.no_grad():
            feats = model(torch.randn(6, 3, 64, 32, generator=torch.Generator().manual_seed(2))).features()
        dist = method.distance({k: v[:2] for k, v in feats.items()}, {k: v[2:] for k, v in feats.items()}, cfg)
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        results.append((total, terms, grads, loss.center.centers.grad, dist))
    (t1, terms1, g1, c1, d1), (t2, terms2, g2, c2, d2) = results
    assert torch.equal(t1, t2)
    renamed = {"ce": "ce_backbone", "triplet": "triplet_backbone", "center": "center"}
    assert {k: v.item() for k, v in terms1.items()} == {renamed[k]: v.item() for k, v in terms2.items()}
    assert len(g1) == len(g2) and all(torch.equal(a, b) for a, b in zip(g1, g2))
    assert torch.equal(c1, c2) and torch.equal(d1, d2)


@pytest.mark.parametrize("width", [4, 6, 8])
def test_table3_centre_size_sets_the_cfm_window(width):
    _, _, out, _, _, cm_in = train_two_steps(f"t3_center{width}")
    assert out.maps["center_attention"].shape == (8, 1, width, width)
    fmap_gap = cm_in[:, 0]  # f_g's input is GAP(F_BB); f_c's input is GAP + the attended W x W window
    assert not torch.allclose(cm_in[:, -1], fmap_gap)


@pytest.mark.parametrize("parts", [1, 3, 4])
def test_table3_number_of_parts_sets_the_stripes_fed_to_sl_and_f_final(parts):
    _, model, out, terms, _, cm_in = train_two_steps(f"t3_parts{parts}")
    assert out.extras["part_features"].shape == (8, parts, 16)
    assert cm_in.shape[1] == 1 + parts + 1 and out.extras["final"].shape[1] == (2 + parts) * 16
    # the stripes average to the global feature: rows split evenly over a 4-row map (1, 2 or 4 parts)
    if parts != 3:
        assert torch.allclose(cm_in[:, 1 : 1 + parts].mean(dim=1), cm_in[:, 0], atol=1e-5)
    sl = ocnet.separation_loss(out.extras["global"], out.extras["part_features"])
    assert terms["sl"].item() == pytest.approx(sl.item()) and sl.item() >= parts  # each 1 + cos >= 1 (ReLU)


@pytest.mark.parametrize("gamma", [0, 2, 5])
def test_table3_gamma_weights_the_separation_loss(gamma):
    _, _, _, terms, total, _ = train_two_steps(f"t3_gamma{gamma}")
    lambdas = {"final": 0.8, "backbone": 0.5, "global": 0.25, "center": 0.25}
    branches = sum(w * (terms[f"ce_{n}"] + terms[f"triplet_{n}"]) for n, w in lambdas.items())
    assert ("sl" in terms) == (gamma > 0)
    expected = branches + (gamma * terms["sl"] if gamma else 0.0)
    assert total.item() == pytest.approx(float(expected), rel=1e-5)


def test_the_card_maps_every_table_row_to_one_config_and_names_every_config():
    rows = card_ablation_table(REPO / "docs" / "methods" / "ocnet.md")
    labels = [r for r, _ in rows]
    assert len(labels) == len(set(labels)) == 9 + 12  # Table 2's nine indices, Table 3's twelve columns
    assert all(len(cfgs) == 1 for _, cfgs in rows), [r for r in rows if len(r[1]) != 1]
    named = {Path(c).stem for _, (c,) in rows}
    assert named == set(CONFIGS)
    for index in TABLE2:
        (cfg,) = [c for r, c in rows if r.startswith(f"Table 2 index {index} ")]
        assert Path(cfg[0]).stem.startswith(f"t2_idx{index}_")
