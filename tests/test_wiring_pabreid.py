"""PAB-ReID wiring: which tensor reaches each head, each loss term (Eq. 10-13) and the test distance. The
backbone map B and the pixel predictor's (logits, probabilities) are stand-in leaf tensors, so the
dependence of each output on the part channels (0 = background, 1..6 = parts) is read off by autograd."""

from __future__ import annotations

import pytest
import torch

from occreid.config import load_config
from occreid.methods import pabreid

from .method_checks import PIDS8, bn_eval, randomise_bn, single_thread
from .wiring_checks_b import StandIn, leaf, reached, spy

one_thread = pytest.fixture(autouse=True)(single_thread)

PARTS = set(range(1, 7))


def tiny(**method):
    """ResNet-18 at 64x32 (a 4x2 map, 512 channels), predictor width 16, soft-margin triplets."""
    method = {"predictor_channels": 16, "triplet_margin": "null", **method}
    return load_config(None, ["model.name=pabreid", "model.backbone=resnet18", "data.height=64", "data.width=32",
                              *(f"method.{k}={v}" for k, v in method.items())])


def with_stand_ins(train: bool = False, **method):
    """(cfg, model, loss, fmap, logits, probs): B = leaf [8, 512, 4, 2]; the predictor returns the leaves
    (logits, probs) [8, 7, 4, 2]; random BatchNorm statistics; eval mode unless `train`."""
    cfg = tiny(**method)
    torch.manual_seed(0)
    model = pabreid.build_model(cfg, 4)
    randomise_bn(model)
    fmap, logits = leaf(8, 512, 4, 2, seed=1), leaf(8, 7, 4, 2, seed=2)
    probs = torch.rand(8, 7, 4, 2, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    model.backbone = StandIn(fmap, out_channels=512)
    if model.predictor is not None:
        model.predictor = StandIn((logits, probs))
    return cfg, model.train(train), pabreid.build_loss(cfg, 4, model), fmap, logits, probs


def run(model):
    return model(torch.zeros(8, 3, 64, 32))


def batch():
    label = torch.randint(0, 7, (8, 64, 32), generator=torch.Generator().manual_seed(4))
    return {"pid": PIDS8, "label": label, "has_label": torch.ones(8, dtype=torch.bool)}


# ---- part attention block -> maps, visibility --------------------------------------------------------
def test_maps_and_visibility_come_from_the_predictors_part_channels():
    _, model, _, fmap, logits, probs = with_stand_ins()
    out = run(model)
    p = probs.detach()
    assert torch.equal(out.maps["parts"], p[:, 1:]) and torch.equal(out.maps["foreground"], p[:, 1:].amax(1, True))
    assert out.maps["part_logits"] is logits and out.maps["part_probs"] is probs
    for x in range(6):
        assert reached(out.visibility[:, x], probs) == {x + 1}
        assert torch.equal(out.visibility[:, x], p[:, x + 1].amax(dim=(1, 2)))
    assert not reached(out.visibility, fmap, dim=0)


# ---- focuser -> part / foreground features, heads ---------------------------------------------------------
@pytest.mark.parametrize("focuser", [True, False])
def test_each_part_feature_reads_its_own_map_and_the_foreground_reads_all(focuser):
    _, model, _, fmap, _, probs = with_stand_ins(focuser=focuser)
    out = run(model)
    for x in range(6):
        assert reached(out.parts[:, x], probs) == {x + 1}, x
    assert reached(out.extras["foreground_raw"], probs) == PARTS  # Eq. 6: the max over the part maps
    assert reached(out.parts, fmap, dim=0) == set(range(8))


def test_heads_read_their_own_feature():
    _, model, _, fmap, _, probs = with_stand_ins()
    out = run(model)
    gap = fmap.detach().mean(dim=(2, 3))
    fg = out.extras["foreground_raw"].detach()
    assert torch.allclose(out.extras["global_raw"], gap, atol=1e-6)
    for name, neck, x in (("global", model.global_neck, gap), ("foreground", model.foreground_neck, fg)):
        bn = bn_eval(x, neck.bn)
        assert torch.allclose(out.embeddings[name], bn, atol=1e-5), name
        assert torch.allclose(out.logits[name], bn @ neck.classifier.weight.T, atol=1e-5), name
    assert reached(out.logits["global"], probs) == set() and reached(out.embeddings["global"], probs) == set()
    assert reached(out.logits["foreground"], probs) == PARTS


def test_the_foreground_feature_is_pooled_with_the_foreground_map():
    """Slot 0 of the focuser is the foreground: with every part map equal to one map m, the foreground
    map is m too, so the foreground feature equals each part feature."""
    _, model, _, _, _, probs = with_stand_ins()
    with torch.no_grad():
        probs[:, 1:] = probs[:, 1:2]
    out = run(model)
    for x in range(6):
        assert torch.allclose(out.extras["foreground_raw"], out.parts[:, x], atol=1e-5)


# ---- loss terms ------------------------------------------------------------------------------------
@pytest.mark.parametrize("ids", [["global", "foreground"], ["foreground"], ["global"]])
def test_the_id_loss_reads_the_logits_of_id_embeddings(monkeypatch, ids):
    calls = spy(monkeypatch, pabreid, "cross_entropy_ls")
    cfg, model, loss, _, _, _ = with_stand_ins(id_embeddings=f"[{', '.join(ids)}]", triplet="none")
    out = run(model)
    total, terms = loss(out, batch())
    assert [c[0] for c in calls] == [out.logits[k] for k in ids]
    assert reached(total, out.parts) == set()  # no triplet: the parts get no gradient
    assert bool(reached(total, out.extras["foreground_raw"])) == ("foreground" in ids)


def test_the_part_triplet_reads_all_part_features(monkeypatch):
    calls = spy(monkeypatch, pabreid, "gathered_distance_triplet")
    _, model, loss, _, _, _ = with_stand_ins(id_embeddings="[]")
    out = run(model)
    total, terms = loss(out, batch())
    assert len(calls) == 1 and calls[0][0] is pabreid.part_pair_distance and calls[0][1] is out.parts
    assert set(terms) == {"part_triplet", "part"}
    assert reached(total, out.parts) == set(range(6))


@pytest.mark.parametrize("triplet", ["per_part", "global", "foreground", "concat_parts"])
def test_each_normal_triplet_reads_its_feature(monkeypatch, triplet):
    calls = spy(monkeypatch, pabreid, "global_batch_triplet")
    _, model, loss, _, _, _ = with_stand_ins(id_embeddings="[]", triplet=triplet, part_loss_weight=0)
    out = run(model)
    total, terms = loss(out, batch())
    fed = [c[0] for c in calls]
    if triplet == "per_part":
        assert len(fed) == 6 and all(torch.equal(f, out.parts[:, x]) for x, f in enumerate(fed))
    else:
        expected = {"global": out.extras["global_raw"], "foreground": out.extras["foreground_raw"],
                    "concat_parts": out.parts.flatten(1)}[triplet]
        assert len(fed) == 1 and torch.equal(fed[0], expected)
    assert set(terms) == {"triplet"}
    assert bool(reached(total, out.parts)) == (triplet in ("per_part", "concat_parts"))


@pytest.mark.parametrize("gamma", [0.0, 0.55])
def test_the_part_attention_loss_reads_the_predictor_logits(monkeypatch, gamma):
    calls = spy(monkeypatch, pabreid, "parsing_cross_entropy")
    _, model, loss, _, logits, _ = with_stand_ins(part_loss_weight=gamma)
    out = run(model)
    total, terms = loss(out, batch())
    assert [c[0] for c in calls] == ([logits] if gamma else [])
    assert bool(reached(total, logits)) == (gamma > 0)
    rest = terms["id"] + terms["part_triplet"]
    assert total.item() == pytest.approx(float(rest + gamma * terms.get("part", 0.0)), rel=1e-6)


# ---- test distance ---------------------------------------------------------------------------------
def _feats(n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"global": torch.randn(n, 4, generator=g), "foreground": torch.randn(n, 4, generator=g),
            "parts": torch.randn(n, 3, 4, generator=g), "visibility": torch.full((n, 3), 0.9)}


@pytest.mark.parametrize("embeddings", [["foreground", "parts"], ["global", "parts"], ["foreground"]])
def test_the_distance_reads_only_the_test_embeddings_and_mutually_visible_parts(embeddings):
    cfg = tiny(test_embeddings=f"[{', '.join(embeddings)}]", visibility_threshold=0.5)
    qf, gf = _feats(2, 1), _feats(4, 2)
    gf["visibility"][2, 1] = 0.4  # gallery 2: part 1 invisible
    d = pabreid.distance(qf, gf, cfg)

    def moved(key, index=None):
        g = {k: v.clone() for k, v in gf.items()}
        if index is None:
            g[key][2] = -g[key][2] + 0.5
        else:
            g[key][2, index] = -g[key][2, index] + 0.5
        return pabreid.distance(qf, g, cfg) - d

    for key in ("global", "foreground"):
        change = moved(key)
        assert torch.all(change[:, [0, 1, 3]] == 0)
        assert bool(torch.all(change[:, 2] != 0)) == (key in embeddings), key
    uses_parts = "parts" in embeddings
    assert bool(torch.all(moved("parts", 0)[:, 2] != 0)) == uses_parts
    assert torch.all(moved("parts", 1) == 0)  # not visible in gallery 2


def test_the_visibility_threshold_mu_decides_which_parts_are_matched():
    qf, gf = _feats(1, 1), _feats(1, 2)
    gf["visibility"][0, 0] = 0.4
    base = {k: v.clone() for k, v in gf.items()}
    gf["parts"][0, 0] += 3.0
    for mu, counted in ((0.5, False), (0.3, True)):
        cfg = tiny(visibility_threshold=mu)
        change = pabreid.distance(qf, gf, cfg) - pabreid.distance(qf, base, cfg)
        assert bool(change.abs().item() > 0) == counted, mu
