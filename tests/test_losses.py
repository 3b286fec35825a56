"""Losses against closed forms and explicit loops (expected values never come from occreid.losses)."""

from __future__ import annotations

import math

import pytest
import torch

from occreid.losses import (
    CenterLoss,
    batch_hard_triplet,
    cross_entropy_ls,
    downsample_label,
    euclidean_dist,
    pixel_bce,
    pixel_cross_entropy,
    soft_downsample,
    triplet_loss,
)


def _log_softmax_row(values: list[float]) -> list[float]:
    z = math.log(sum(math.exp(v) for v in values))
    return [v - z for v in values]


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# ---------------------------------------------------------------- cross-entropy with label smoothing


def test_ce_ls_hand_worked() -> None:
    # probabilities 1/4, 1/2, 1/4; target 1; eps 0.1 over C = 3 classes:
    # -(0.9 + 0.1/3) ln(1/2) - 2 (0.1/3) ln(1/4) = (0.9 + 0.1 * 5/3) ln 2 = (16/15) ln 2
    logits = torch.tensor([[0.0, math.log(2.0), 0.0]])
    loss = cross_entropy_ls(logits, torch.tensor([1]), epsilon=0.1)
    assert loss.item() == pytest.approx(16.0 / 15.0 * math.log(2.0), rel=1e-6)


def test_ce_ls_matches_explicit_sum() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, generator=g)
    targets = torch.tensor([0, 3, 6, 2, 3])
    eps = 0.2
    expected = 0.0
    for b in range(5):
        logp = _log_softmax_row(logits[b].tolist())
        for c in range(7):
            q = (1 - eps) * (c == targets[b].item()) + eps / 7
            expected -= q * logp[c]
    expected /= 5
    assert cross_entropy_ls(logits, targets, eps).item() == pytest.approx(expected, rel=1e-5)
    plain = torch.nn.functional.cross_entropy(logits, targets).item()
    assert cross_entropy_ls(logits, targets, 0.0).item() == pytest.approx(plain, rel=1e-6)


# ---------------------------------------------------------------- triplet


def test_euclidean_dist_and_gradient_at_zero() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, generator=g, requires_grad=True)
    y = torch.randn(2, 3, generator=g)
    d = euclidean_dist(x, y)
    for i in range(4):
        for j in range(2):
            ref = math.sqrt(sum((x[i, k].item() - y[j, k].item()) ** 2 for k in range(3)))
            assert d[i, j].item() == pytest.approx(ref, rel=1e-5)
    self_d = euclidean_dist(x, x)
    self_d.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert self_d.diagonal().max().item() < 1e-5


def test_batch_hard_hand_worked() -> None:
    # 1-D points 0, 2 | 3, 4 with pids 0, 0 | 1, 1:
    # (d_ap, d_an) = (2, 3), (2, 1), (1, 1), (1, 2)
    x = torch.tensor([[0.0], [2.0], [3.0], [4.0]])
    pids = torch.tensor([0, 0, 1, 1])
    d = euclidean_dist(x, x)
    # margin 0.3: relu -> 0, 1.3, 0.3, 0 ; mean 0.4
    assert batch_hard_triplet(d, pids, margin=0.3).item() == pytest.approx(0.4, abs=1e-5)
    soft = (_softplus(-1.0) + _softplus(1.0) + _softplus(0.0) + _softplus(-1.0)) / 4
    assert batch_hard_triplet(d, pids, margin=None).item() == pytest.approx(soft, rel=1e-5)


def _explicit_triplet(dist: torch.Tensor, rows: list[int], cols: list[int], margin: float | None) -> float:
    total = 0.0
    for i, pi in enumerate(rows):
        ap = max(dist[i, j].item() for j, pj in enumerate(cols) if pj == pi)
        an = min(dist[i, j].item() for j, pj in enumerate(cols) if pj != pi)
        total += _softplus(ap - an) if margin is None else max(0.0, ap - an + margin)
    return total / len(rows)


@pytest.mark.parametrize("margin", [0.3, None])
def test_batch_hard_matches_loops(margin: float | None) -> None:
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(8, 5, generator=g)
    pids = [0, 0, 1, 1, 2, 2, 3, 3]
    d = euclidean_dist(feats, feats)
    loss = batch_hard_triplet(d, torch.tensor(pids), margin)
    assert loss.item() == pytest.approx(_explicit_triplet(d, pids, pids, margin), rel=1e-5)
    normed = torch.nn.functional.normalize(feats, dim=1)
    d_n = euclidean_dist(normed, normed)
    expected_n = _explicit_triplet(d_n, pids, pids, margin)
    assert triplet_loss(feats, torch.tensor(pids), margin, normalize=True).item() == pytest.approx(
        expected_n, rel=1e-5
    )


def test_batch_hard_rectangular_and_no_negative() -> None:
    g = torch.Generator().manual_seed(3)
    local = torch.randn(3, 4, generator=g)
    gathered = torch.cat([local, torch.randn(5, 4, generator=g)])
    rows, cols = [0, 1, 2], [0, 1, 2, 0, 1, 2, 1, 0]
    d = euclidean_dist(local, gathered)
    loss = batch_hard_triplet(d, torch.tensor(rows), 0.3, pids_other=torch.tensor(cols))
    assert loss.item() == pytest.approx(_explicit_triplet(d, rows, cols, 0.3), rel=1e-5)
    # all one identity: no negative, loss 0 with a finite gradient
    x = torch.randn(3, 2, generator=g, requires_grad=True)
    same = batch_hard_triplet(euclidean_dist(x, x), torch.zeros(3, dtype=torch.long), 0.3)
    same.backward()
    assert same.item() == 0.0 and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------- centre loss


def test_center_loss_hand_worked_and_grad_unscale() -> None:
    crit = CenterLoss(num_classes=2, dim=2)
    with torch.no_grad():
        crit.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    feats = torch.tensor([[1.0, 0.0], [1.0, 3.0]])
    loss = crit(feats, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx((1.0 + 4.0) / 2)  # ||(1,0)||^2 = 1, ||(0,2)||^2 = 4
    (5e-4 * loss).backward()
    # d/dc_y of mean ||f - c_y||^2 = -2 (f - c_y) / B, times 5e-4, divided back by 5e-4
    crit.unscale_grad(5e-4)
    expected = torch.tensor([[-1.0, 0.0], [0.0, -2.0]])
    assert torch.allclose(crit.centers.grad, expected, atol=1e-5)
    opt = crit.make_optimizer()
    assert opt.param_groups[0]["lr"] == 0.5


# ---------------------------------------------------------------- pixel losses


def test_pixel_ce_hand_worked_pixel() -> None:
    # one 1x1 map, 2 channels with p = (3/4, 1/4), target 0, eps 0.1 over 2 channels
    logits = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1)
    loss = pixel_cross_entropy(logits, torch.zeros(1, 1, 1, dtype=torch.long), epsilon=0.1)
    assert loss.item() == pytest.approx(-(0.95 * math.log(0.75) + 0.05 * math.log(0.25)), rel=1e-6)


def test_pixel_ce_matches_loop_and_masks_unlabelled() -> None:
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 4, 2, 2, generator=g)
    target = torch.randint(0, 4, (3, 2, 2), generator=g)
    valid = torch.tensor([True, False, True])
    eps = 0.15
    total, count = 0.0, 0
    for b in (0, 2):
        for i in range(2):
            for j in range(2):
                logp = _log_softmax_row(logits[b, :, i, j].tolist())
                for c in range(4):
                    q = (1 - eps) * (c == target[b, i, j].item()) + eps / 4
                    total -= q * logp[c]
                count += 1
    loss = pixel_cross_entropy(logits, target, eps, valid)
    assert loss.item() == pytest.approx(total / count, rel=1e-5)
    # the unlabelled image does not matter, whatever its logits
    wild = logits.clone()
    wild[1] = 1e4
    assert pixel_cross_entropy(wild, target, eps, valid).item() == pytest.approx(loss.item(), rel=1e-6)


def test_pixel_losses_all_invalid_is_zero_with_grad() -> None:
    logits = torch.randn(2, 3, 2, 2, requires_grad=True)
    none = torch.zeros(2, dtype=torch.bool)
    loss = pixel_cross_entropy(logits, torch.zeros(2, 2, 2, dtype=torch.long), 0.1, none)
    loss.backward()
    assert loss.item() == 0.0 and loss.requires_grad
    assert torch.count_nonzero(logits.grad) == 0
    bce_logits = torch.randn(2, 2, 2, requires_grad=True)
    bce = pixel_bce(bce_logits, torch.ones(2, 2, 2), none)
    bce.backward()
    assert bce.item() == 0.0 and torch.count_nonzero(bce_logits.grad) == 0


def test_pixel_bce_matches_loop() -> None:
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 2, 2, 3, generator=g)
    target = torch.rand(3, 2, 2, 3, generator=g)
    valid = torch.tensor([False, True, True])
    total, count = 0.0, 0
    for b in (1, 2):
        for k in range(2):
            for i in range(2):
                for j in range(3):
                    s = 1.0 / (1.0 + math.exp(-logits[b, k, i, j].item()))
                    t = target[b, k, i, j].item()
                    total -= t * math.log(s) + (1 - t) * math.log(1 - s)
                    count += 1
    assert pixel_bce(logits, target, valid).item() == pytest.approx(total / count, rel=1e-5)
    # hand-worked: logit 0 gives ln 2 whatever the target
    assert pixel_bce(torch.zeros(1, 2, 2), torch.rand(1, 2, 2)).item() == pytest.approx(math.log(2.0))


# ---------------------------------------------------------------- label downsampling


def test_downsample_label_reads_block_centres() -> None:
    # 4x4 -> 2x2: target cell i reads source row/col floor((i + 0.5) * 2) = 1, 3
    label = torch.arange(16).view(1, 4, 4)
    assert downsample_label(label, (2, 2)).tolist() == [[[5, 7], [13, 15]]]
    g = torch.Generator().manual_seed(6)
    label = torch.randint(0, 9, (2, 7, 5), generator=g)
    out = downsample_label(label, (3, 2))
    assert out.dtype == torch.long and out.shape == (2, 3, 2)
    for b in range(2):
        for i in range(3):
            for j in range(2):
                si = min(int((i + 0.5) * 7 / 3), 6)
                sj = min(int((j + 0.5) * 5 / 2), 4)
                assert out[b, i, j].item() == label[b, si, sj].item()


def test_soft_downsample_is_block_fractions() -> None:
    g = torch.Generator().manual_seed(7)
    label = torch.randint(0, 3, (3, 4, 6), generator=g)
    out = soft_downsample(label, 3, (2, 3), chunk=2)
    assert out.shape == (3, 3, 2, 3)
    for b in range(3):
        for c in range(3):
            for i in range(2):
                for j in range(3):
                    block = [label[b, 2 * i + u, 2 * j + v].item() for u in range(2) for v in range(2)]
                    assert out[b, c, i, j].item() == pytest.approx(block.count(c) / 4)
    # hand-worked: a 2x2 block with one head pixel -> head fraction 1/4
    one = torch.tensor([[[1, 0], [0, 0]]])
    assert soft_downsample(one, 2, (1, 1))[0, :, 0, 0].tolist() == [0.75, 0.25]


def test_area_part_targets_against_a_loop() -> None:
    """parsing_cross_entropy(targets="area"): per cell, -sum_c ((1 - eps) frac_c + eps / C) log p_c, with
    frac_c the share of the cell's label pixels of class c; mean over cells of the valid images only."""
    from occreid.losses.maps import parsing_cross_entropy

    gen = torch.Generator().manual_seed(0)
    label = torch.randint(0, 4, (3, 8, 6), generator=gen).to(torch.uint8)
    logits = torch.randn(3, 4, 2, 3, generator=gen)
    valid = torch.tensor([True, False, True])
    eps = 0.1
    got = parsing_cross_entropy(logits, {"label": label, "has_label": valid}, eps, targets="area")
    logp = torch.log_softmax(logits.double(), dim=1)
    cells = []
    for b in (0, 2):
        for i in range(2):
            for j in range(3):
                block = label[b, 4 * i : 4 * i + 4, 2 * j : 2 * j + 2].reshape(-1).long()
                frac = torch.bincount(block, minlength=4).double() / block.numel()
                cells.append(-(((1 - eps) * frac + eps / 4) * logp[b, :, i, j]).sum())
    assert got.item() == pytest.approx(torch.stack(cells).mean().item(), rel=1e-6)
    # uniform cells: the soft target is the hard one, so both readings agree
    flat = label[:, ::4, ::2].repeat_interleave(4, 1).repeat_interleave(2, 2)
    hard = parsing_cross_entropy(logits, {"label": flat, "has_label": valid}, eps)
    soft = parsing_cross_entropy(logits, {"label": flat, "has_label": valid}, eps, targets="area")
    assert soft.item() == pytest.approx(hard.item(), rel=1e-6)
    with pytest.raises(ValueError, match="background"):
        parsing_cross_entropy(logits, {"label": label}, eps, background=False, targets="area")
