"""PCB wiring: the backbone map is a stand-in leaf tensor; which stripe reaches each reduction head and
each classifier, what the loss sums, what the test embedding concatenates and what the distance reads."""

from __future__ import annotations

import pytest
import torch

from occreid.methods import pcb
from occreid.models.output import ModelOutput

from .method_checks import PIDS8, bn_eval, mean_ce_ls, method_cfg, randomise_bn, single_thread
from .wiring_checks_b import StandIn, leaf, reached, spy

one_thread = pytest.fixture(autouse=True)(single_thread)

N = 4  # stripes of the tiny model: one per row of the 4x2 map


def with_stand_in(train: bool = False, **method):
    cfg = method_cfg("pcb", **{"stripes": N, "reduced_dim": 8, **method})
    torch.manual_seed(0)
    model = pcb.build_model(cfg, 5)
    randomise_bn(model)
    fmap = leaf(8, 512, 4, 2, seed=1)
    model.backbone = StandIn(fmap, out_channels=512, stride=16)
    return cfg, model.train(train), fmap


def hooked(modules) -> list[list]:
    seen = [[] for _ in modules]
    for i, m in enumerate(modules):
        m.register_forward_hook(lambda mod, args, res, i=i: seen[i].append((args[0], res)))
    return seen


def test_stripe_i_feeds_reduction_head_i_and_classifier_i():
    _, model, fmap = with_stand_in()
    reduce_io, clf_io = hooked(model.reduce), hooked(model.classifiers)
    out = model(torch.zeros(8, 3, 64, 32))
    for i in range(N):
        (x, y), = reduce_io[i]
        assert reached(x, fmap, dim=2) == {i}  # stripe i = row i of the map
        assert torch.allclose(x, fmap.detach()[:, :, i].mean(dim=2), atol=1e-6)
        head = model.reduce[i]
        assert torch.allclose(y, torch.relu(bn_eval(x @ head.fc.weight.T, head.bn)), atol=1e-5)
        (cx, logits), = clf_io[i]
        assert torch.equal(cx, out.parts[:, i]) and out.logits[f"stripe{i}"] is logits
        assert reached(out.logits[f"stripe{i}"], fmap, dim=2) == {i}


def test_the_test_embeddings_concatenate_the_stripes_in_order():
    _, model, fmap = with_stand_in()
    reduce_io = hooked(model.reduce)
    out = model(torch.zeros(8, 3, 64, 32))
    assert torch.equal(out.embeddings["stripes"], torch.cat([reduce_io[i][0][1] for i in range(N)], dim=1))
    assert torch.allclose(out.embeddings["pooled"], fmap.detach().mean(dim=3).transpose(1, 2).flatten(1), atol=1e-6)
    assert torch.equal(out.parts.flatten(1), out.embeddings["stripes"])


def test_dropout_sits_between_the_reduced_feature_and_its_classifier():
    _, model, _ = with_stand_in(train=True, dropout=0.5)
    clf_io = hooked(model.classifiers)
    out = model(torch.zeros(8, 3, 64, 32))
    for i in range(N):
        (cx, _), = clf_io[i]
        kept = cx != 0
        assert torch.allclose(cx[kept], 2 * out.parts[:, i][kept], atol=1e-6)
        assert (out.parts[:, i][~kept] != 0).any()


def test_the_loss_is_the_sum_of_one_ce_per_stripe(monkeypatch):
    calls = spy(monkeypatch, pcb, "cross_entropy_ls")
    cfg = method_cfg("pcb", stripes=N, ce_epsilon=0.2)
    g = torch.Generator().manual_seed(3)
    logits = {f"stripe{i}": torch.randn(8, 5, generator=g) * (i + 1) for i in range(N)}
    total, terms = pcb.build_loss(cfg, 5, None)(ModelOutput(logits=logits), {"pid": PIDS8})
    assert [c[0] for c in calls] == list(logits.values())
    expected = sum(mean_ce_ls(v, PIDS8, 0.2) for v in logits.values())
    assert total.item() == pytest.approx(expected, rel=1e-5) and terms["ce"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("test_feature", ["stripes", "pooled"])
def test_the_distance_reads_only_the_test_feature(test_feature):
    cfg = method_cfg("pcb", test_feature=test_feature)
    g = torch.Generator().manual_seed(4)
    qf = {"stripes": torch.randn(2, 6, generator=g), "pooled": torch.randn(2, 6, generator=g)}
    gf = {"stripes": torch.randn(3, 6, generator=g), "pooled": torch.randn(3, 6, generator=g)}
    d = pcb.distance(qf, gf, cfg)
    expected = torch.cdist(torch.nn.functional.normalize(qf[test_feature], dim=1),
                           torch.nn.functional.normalize(gf[test_feature], dim=1))
    assert torch.allclose(d, expected, atol=1e-5)
    other = "pooled" if test_feature == "stripes" else "stripes"
    assert torch.equal(pcb.distance(qf, {**gf, other: -gf[other]}, cfg), d)
