"""BoT wiring: the backbone map is a stand-in leaf tensor; which tensor reaches the BNNeck, the classifier,
each loss term (CE on the BN feature's logits, triplet and centre on the pooled feature) and the test
distance (the `test_feature`)."""

from __future__ import annotations

import pytest
import torch

from occreid.losses import recipes
from occreid.methods import bot
from occreid.models.pooling import gem_pool, global_avg_pool, global_max_pool

from .method_checks import PIDS8, bn_eval, method_cfg, randomise_bn, single_thread
from .wiring_checks_b import StandIn, leaf, spy

one_thread = pytest.fixture(autouse=True)(single_thread)


def with_stand_in(**method):
    cfg = method_cfg("bot", **method)
    torch.manual_seed(0)
    model = bot.build_model(cfg, 4)
    loss = bot.build_loss(cfg, 4, model)
    randomise_bn(model)
    fmap = leaf(8, 512, 4, 2, seed=1)
    model.backbone = StandIn(fmap, out_channels=512)
    return cfg, model.eval(), loss, fmap


@pytest.mark.parametrize(("pooling", "pool"), [("avg", global_avg_pool), ("max", global_max_pool),
                                               ("gem", gem_pool)])
def test_the_pooled_feature_the_bn_feature_and_the_logits(pooling, pool):
    _, model, _, fmap = with_stand_in(pooling=pooling)
    out = model(torch.zeros(8, 3, 64, 32))
    g = pool(fmap.detach())
    assert torch.allclose(out.embeddings["global"], g, atol=1e-6)
    bn = bn_eval(g, model.neck.bn)
    assert torch.allclose(out.embeddings["bnneck"], bn, atol=1e-5)
    assert torch.allclose(out.logits["id"], bn @ model.neck.classifier.weight.T, atol=1e-5)


def test_the_pooling_switch_changes_the_feature():
    feats = [with_stand_in(pooling=p)[1](torch.zeros(8, 3, 64, 32)).embeddings["global"] for p in ("avg", "max")]
    assert not torch.allclose(*feats)


def test_ce_reads_the_logits_triplet_and_centre_the_pooled_feature(monkeypatch):
    ces = spy(monkeypatch, recipes, "cross_entropy_ls")
    tris = spy(monkeypatch, recipes, "global_batch_triplet")
    _, model, loss, _ = with_stand_in(center_weight=0.5)
    centre = []
    loss.center.register_forward_hook(lambda m, args, res: centre.append(args[0]))
    out = model(torch.zeros(8, 3, 64, 32))
    total, terms = loss(out, {"pid": PIDS8})
    assert [c[0] for c in ces] == [out.logits["id"]]
    assert [t[0] for t in tris] == [out.embeddings["global"]]  # before the BN (BoT)
    assert centre == [out.embeddings["global"]]
    assert total.item() == pytest.approx(float(terms["ce"] + terms["triplet"] + 0.5 * terms["center"]), rel=1e-6)


@pytest.mark.parametrize("test_feature", ["bnneck", "global"])
def test_the_distance_reads_only_the_test_feature(test_feature):
    cfg = method_cfg("bot", test_feature=test_feature)
    g = torch.Generator().manual_seed(2)
    qf = {"global": torch.randn(2, 4, generator=g), "bnneck": torch.randn(2, 4, generator=g)}
    gf = {"global": torch.randn(3, 4, generator=g), "bnneck": torch.randn(3, 4, generator=g)}
    d = bot.distance(qf, gf, cfg)
    expected = torch.cdist(torch.nn.functional.normalize(qf[test_feature], dim=1),
                           torch.nn.functional.normalize(gf[test_feature], dim=1))
    assert torch.allclose(d, expected, atol=1e-5)
    other = "global" if test_feature == "bnneck" else "bnneck"
    moved = {**gf, other: -gf[other]}
    assert torch.equal(bot.distance(qf, moved, cfg), d)
