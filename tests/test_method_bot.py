"""BoT's loss on the shared ID + triplet + centre recipe (occreid.losses.recipes): a hand-worked total,
the centre term against a loop, and the centres' own optimiser with the unscaled gradient."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from occreid.methods import bot
from occreid.models.output import ModelOutput

from .method_checks import feature_triplet_loop, mean_ce_ls, method_cfg


def bot_loss(num_classes: int, dim: int, **method) -> bot.BoTLoss:
    stub = SimpleNamespace(backbone=SimpleNamespace(out_channels=dim))
    return bot.build_loss(method_cfg("bot", **method), num_classes, stub)


def test_ce_triplet_and_centre_hand_worked():
    # 1-D features 1, 3 | 3.5, 5 (ids 0 0 1 1): anchors give relu(2 - 2.5 + .3) = 0, relu(2 - .5 + .3) = 1.8,
    # 1.3, 0 -> triplet 0.775; zero logits over 3 classes: CE-LS = ln 3; centres 0 and 4: squared distances
    # 1, 9, 0.25, 1 -> centre 2.8125; total = ln 3 + 0.775 + 0.5 * 2.8125
    loss = bot_loss(3, 1, center_weight=0.5)
    with torch.no_grad():
        loss.center.centers.copy_(torch.tensor([[0.0], [4.0], [7.0]]))
    feats = torch.tensor([[1.0], [3.0], [3.5], [5.0]])
    out = ModelOutput(embeddings={"global": feats}, logits={"id": torch.zeros(4, 3)})
    total, terms = loss(out, {"pid": torch.tensor([0, 0, 1, 1])})
    assert list(terms) == ["ce", "triplet", "center"]
    assert terms["ce"].item() == pytest.approx(math.log(3), abs=1e-6)
    assert terms["triplet"].item() == pytest.approx(0.775, abs=1e-6)
    assert terms["center"].item() == pytest.approx(2.8125, abs=1e-6)
    assert total.item() == pytest.approx(math.log(3) + 0.775 + 0.5 * 2.8125, abs=1e-6)
    assert not any(t.requires_grad for t in terms.values())


def test_random_outputs_match_loops_and_the_centres_step_with_their_own_unscaled_gradient():
    g = torch.Generator().manual_seed(4)
    pids = torch.tensor([0, 0, 1, 1, 2, 2])
    feats = torch.randn(6, 4, generator=g, requires_grad=True)
    logits = torch.randn(6, 3, generator=g)
    loss = bot_loss(3, 4, center_weight=5e-4, center_lr=0.5, ce_epsilon=0.2, triplet_margin=0.5)
    centers = loss.center.centers.detach().clone()
    total, terms = loss(ModelOutput(embeddings={"global": feats}, logits={"id": logits}), {"pid": pids})
    f, c, p = feats.tolist(), centers.tolist(), pids.tolist()
    centre = sum(sum((u - v) ** 2 for u, v in zip(f[i], c[p[i]])) for i in range(6)) / 6
    expected = mean_ce_ls(logits, pids, 0.2) + feature_triplet_loop(feats.detach(), pids, 0.5) + 5e-4 * centre
    assert total.item() == pytest.approx(expected, rel=1e-5)
    opt = loss.build_optimizer()
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["lr"] == 0.5
    total.backward()
    loss.before_step()  # the centres move as if the loss had weight 1: grad of the mean of ||f - c||^2
    for k in range(3):
        rows = [i for i in range(6) if p[i] == k]
        grad = [sum(-2 * (f[i][d] - c[k][d]) for i in rows) / 6 for d in range(4)]
        assert loss.center.centers.grad[k].tolist() == pytest.approx(grad, rel=1e-4, abs=1e-6)
    opt.step()
    assert torch.allclose(loss.center.centers, centers - 0.5 * loss.center.centers.grad, atol=1e-6)


def test_without_centre_weight_there_are_no_centres_and_no_optimiser():
    loss = bot_loss(3, 2, center_weight=0)
    assert loss.center is None and loss.build_optimizer() is None and not list(loss.parameters())
    out = ModelOutput(embeddings={"global": torch.randn(4, 2)}, logits={"id": torch.randn(4, 3)})
    total, terms = loss(out, {"pid": torch.tensor([0, 0, 1, 1])})
    loss.before_step()  # nothing to unscale
    assert list(terms) == ["ce", "triplet"]
    assert total.item() == pytest.approx(terms["ce"].item() + terms["triplet"].item(), rel=1e-6)
