"""OCNet wiring: which tensor reaches each head, each loss term (Eq. 1-3) and the test distance (Eq. 4).
The backbone map and the Converter Module's output are replaced by stand-in leaf tensors, so each
output's dependence on f_g, f_t, f_b, f_c (slots 0..3 of the CM output) is read off by autograd."""

from __future__ import annotations

import pytest
import torch

from occreid.config import load_config
from occreid.losses import recipes
from occreid.methods import ocnet

from .method_checks import PIDS8, bn_eval, randomise_bn, single_thread
from .wiring_checks_b import StandIn, leaf, reached, spy

one_thread = pytest.fixture(autouse=True)(single_thread)

D = 16  # cm_dim of the tiny model
G, T, B, C = 0, 1, 2, 3  # slots of the CM output: f_g, f_t, f_b, f_c


def tiny(*extra: str):
    """ResNet-18 at 64x32 (a 4x2 map, 512 channels), CM width 16, soft-margin triplets (never a zero hinge)."""
    return load_config(None, ["model.name=ocnet", "model.backbone=resnet18", "data.height=64", "data.width=32",
                              f"method.cm_dim={D}", "method.ram_hidden=8", "method.triplet_margin=null", *extra])


def with_stand_ins(*extra: str, train: bool = False):
    """(cfg, model, loss, fmap, feats): the backbone returns the leaf `fmap` [8, 512, 4, 2] and the CM the
    leaf `feats` [8, K, 16]; BatchNorms have random statistics; eval mode unless `train`."""
    cfg = tiny(*extra)
    torch.manual_seed(0)
    model = ocnet.build_model(cfg, 4)
    loss = ocnet.build_loss(cfg, 4, model)
    randomise_bn(model)
    fmap = leaf(8, 512, 4, 2, seed=1)
    model.backbone = StandIn(fmap, out_channels=512)
    feats = leaf(8, model.num_features, D, seed=2)
    if model.converter is not None:
        model.converter = StandIn(feats)
    return cfg, model.train(train), loss, fmap, feats


def run(model):
    return model(torch.zeros(8, 3, 64, 32))


# ---- features into the Converter Module ---------------------------------------------------------
def test_the_converter_receives_gap_top_bottom_and_the_centre_feature_in_that_order():
    _, model, _, fmap, _ = with_stand_ins()
    run(model)
    (x,) = model.converter.inputs[0]
    f = fmap.detach()
    gap = f.mean(dim=(2, 3))
    win = f[:, :, 1:3, :]  # the central 2x2 of the 4x2 map
    att = torch.softmax(win.mean(dim=1).flatten(1), dim=1).view(8, 1, 2, 2)
    expected = torch.stack([gap, f[:, :, :2].mean(dim=(2, 3)), f[:, :, 2:].mean(dim=(2, 3)),
                            gap + (win * att).sum(dim=(2, 3))], dim=1)
    assert torch.allclose(x.detach(), expected, atol=1e-6)


def test_without_cfm_or_concat_the_converter_gets_only_its_features():
    _, model, _, fmap, _ = with_stand_ins("method.cfm=false")
    run(model)
    assert model.converter.inputs[0][0].shape == (8, 3, 512)  # f_g, f_t, f_b
    _, model, _, fmap, _ = with_stand_ins("method.concat=false", "method.fusion=none", "method.sl_gamma=0")
    run(model)
    (x,) = model.converter.inputs[0]
    f = fmap.detach()
    win = f[:, :, 1:3, :]
    att = torch.softmax(win.mean(dim=1).flatten(1), dim=1).view(8, 1, 2, 2)
    assert x.shape == (8, 1, 512)  # f_c alone
    assert torch.allclose(x[:, 0], f.mean(dim=(2, 3)) + (win * att).sum(dim=(2, 3)), atol=1e-6)


# ---- heads ---------------------------------------------------------------------------------------
def test_each_classifier_reads_its_own_feature():
    _, model, _, fmap, feats = with_stand_ins()
    out = run(model)
    assert reached(out.logits["global"], feats) == {G}
    assert reached(out.logits["center"], feats) == {C}
    assert reached(out.logits["final"], feats) == {G, T, B, C}
    assert reached(out.logits["backbone"], feats) == set() and reached(out.logits["backbone"], fmap, dim=0)
    f = feats.detach()
    for name, neck, x in (("global", model.global_neck, f[:, G]), ("center", model.center_neck, f[:, C]),
                          ("final", model.final_neck, out.extras["final"].detach()),
                          ("backbone", model.backbone_neck, fmap.detach().mean(dim=(2, 3)))):
        expected = bn_eval(x, neck.bn) @ neck.classifier.weight.T
        assert torch.allclose(out.logits[name], expected, atol=1e-5), name


def test_the_loss_features_are_the_pre_bn_vectors_of_their_branch():
    _, model, _, fmap, feats = with_stand_ins()
    out = run(model)
    f = feats.detach()
    assert torch.equal(out.extras["global"], f[:, G]) and torch.equal(out.extras["center"], f[:, C])
    assert torch.equal(out.extras["part_features"], f[:, T : B + 1])
    assert torch.allclose(out.extras["backbone"], fmap.detach().mean(dim=(2, 3)))


@pytest.mark.parametrize("fusion", ["ram", "relation_network", "none"])
def test_each_fusion_mode_computes_its_own_f_final(fusion):
    """RAM: F_concat * sigmoid(r); RN (Table 2): r itself; none: F_concat. r = sum_j g(f_i, f_j)."""
    _, model, _, _, feats = with_stand_ins(f"method.fusion={fusion}")
    out = run(model)
    f = feats.detach()
    if fusion == "none":
        assert model.fusion is None
        expected = f
    else:
        with torch.no_grad():
            r = model.fusion.relations(f)
        expected = f * torch.sigmoid(r) if fusion == "ram" else r
    assert torch.allclose(out.extras["final"], expected.flatten(1), atol=1e-6)
    assert ("relation_weights" in out.extras) == (fusion == "ram")
    assert (out.visibility is not None) == (fusion == "ram")


# ---- loss terms ----------------------------------------------------------------------------------
LAMBDAS = ("final", "backbone", "global", "center")


@pytest.mark.parametrize(("branch", "slots"), [("final", {G, T, B, C}), ("backbone", set()), ("global", {G}),
                                               ("center", {C}), ("sl", {G, T, B})])
def test_each_loss_term_reaches_only_its_features(branch, slots):
    """One term at a time (the others weighted 0): which CM outputs its gradient reaches."""
    weights = [f"method.lambda_{n}={1.0 if n == branch else 0.0}" for n in LAMBDAS]
    _, model, loss, fmap, feats = with_stand_ins(*weights, f"method.sl_gamma={1.0 if branch == 'sl' else 0.0}")
    total, terms = loss(run(model), {"pid": PIDS8})
    assert set(terms) == ({"sl"} if branch == "sl" else {f"ce_{branch}", f"triplet_{branch}"})
    assert reached(total, feats) == slots
    assert bool(reached(total, fmap, dim=0)) == (branch == "backbone")


def test_separation_loss_gets_f_g_and_exactly_the_part_features(monkeypatch):
    calls = spy(monkeypatch, ocnet, "separation_loss")
    _, model, loss, _, feats = with_stand_ins("method.num_parts=3")
    _, terms = loss(run(model), {"pid": PIDS8})
    (f_g, parts), = calls
    f = feats.detach()
    assert torch.equal(f_g.detach(), f[:, 0]) and torch.equal(parts.detach(), f[:, 1:4])  # not f_c (slot 4)
    assert terms["sl"].item() == pytest.approx(ocnet.separation_loss(f[:, 0], f[:, 1:4]).item())


def test_ce_reads_the_logits_and_the_triplet_the_pre_bn_feature_of_each_branch(monkeypatch):
    ces = spy(monkeypatch, recipes, "cross_entropy_ls")
    tris = spy(monkeypatch, recipes, "global_batch_triplet")
    _, model, loss, _, _ = with_stand_ins("method.center_weight=0.5")
    out = run(model)
    centre = []
    loss.center.register_forward_hook(lambda m, args, res: centre.append(args[0]))
    loss(out, {"pid": PIDS8})
    assert [c[0] for c in ces] == [out.logits[n] for n in LAMBDAS]
    assert all(t[0] is out.extras[n] for t, n in zip(tris, LAMBDAS, strict=True))
    assert centre == [out.extras["backbone"]]  # BoT's centre loss on F_BB


# ---- test-time embeddings and Eq. 4 -----------------------------------------------------------------
@pytest.mark.parametrize("test_feature", ["bnneck", "raw"])
def test_test_embeddings_are_f_final_and_f_bb(test_feature):
    _, model, _, fmap, feats = with_stand_ins(f"method.test_feature={test_feature}")
    out = run(model)
    final, bb = out.extras["final"].detach(), fmap.detach().mean(dim=(2, 3))
    if test_feature == "bnneck":
        final, bb = bn_eval(final, model.final_neck.bn), bn_eval(bb, model.backbone_neck.bn)
    assert torch.allclose(out.embeddings["final"], final, atol=1e-5)
    assert torch.allclose(out.embeddings["backbone"], bb, atol=1e-5)
    assert torch.equal(out.parts, out.embeddings["final"].view(8, 4, D))
    assert reached(out.embeddings["backbone"], feats) == set()


def test_table2_index2_uses_f_c_in_place_of_f_final():
    _, model, _, _, feats = with_stand_ins("method.concat=false", "method.fusion=none", "method.sl_gamma=0")
    out = run(model)
    assert torch.allclose(out.embeddings["final"], bn_eval(feats.detach()[:, 0], model.center_neck.bn), atol=1e-5)
    assert set(out.logits) == {"backbone", "center"}


def _feats(n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"final": torch.randn(n, 6, generator=g), "backbone": torch.randn(n, 4, generator=g),
            "parts": torch.randn(n, 3, 2, generator=g), "visibility": torch.rand(n, 3, generator=g)}


def _unit_dist(q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return torch.cdist(torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g, dim=1))


@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_eq4_distance_reads_f_final_and_alpha_times_f_bb_only(alpha):
    cfg = tiny(f"method.alpha={alpha}")
    qf, gf = _feats(3, 1), _feats(5, 2)
    d = ocnet.distance(qf, gf, cfg)
    for key in ("final", "backbone", "parts", "visibility"):
        moved = {**gf, key: gf[key].clone()}
        moved[key][2] = moved[key][2] * -1.5 + 0.3
        change = ocnet.distance(qf, moved, cfg) - d
        assert torch.all(change[:, [0, 1, 3, 4]] == 0), key
        if key == "final":
            expected = _unit_dist(qf["final"], moved["final"]) - _unit_dist(qf["final"], gf["final"])
        elif key == "backbone":
            q = qf["backbone"]
            expected = alpha * (_unit_dist(q, moved["backbone"]) - _unit_dist(q, gf["backbone"]))
        else:
            expected = torch.zeros_like(d)
        assert torch.allclose(change[:, 2], expected[:, 2], atol=1e-5), key
