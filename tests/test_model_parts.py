"""Shared model parts: pooling formulas, gated convolution, part predictor, heads, complexity counts.

Expected values are computed here with explicit loops or by hand, never with the module under test.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from occreid.models.complexity import count_macs, count_parameters, profile_macs
from occreid.models.gated_conv import GatedConv
from occreid.models.heads import BNNeck, Classifier, EmbeddingHead, PartClassifiers, PartwiseLinear
from occreid.models.part_attention import Eq2PixelPredictor, PixelPartPredictor, foreground_map, part_visibility
from occreid.models.pooling import (
    GeM,
    adaptive_average_matrix,
    adaptive_avg_pool2d_fixed,
    gem_pool,
    global_avg_pool,
    global_max_pool,
    part_pool,
    stripe_pool,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------- pooling


def test_part_pool_hand_worked() -> None:
    feats = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # [1, 1, 2, 2]
    maps = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, 2.0]]]])  # [1, 2, 2, 2]
    # part 1: sum F*m = 1 + 4 = 5, sum m = 2, sum |m| = 2; part 2: -1 + 8 = 7, sum m = 1, sum |m| = 3
    hw = part_pool(feats, maps, norm="hw")
    mass = part_pool(feats, maps, norm="mass")
    abs_mass = part_pool(feats, maps, norm="abs_mass")
    assert hw.shape == (1, 2, 1)
    assert torch.allclose(hw[0, :, 0], torch.tensor([5 / 4, 7 / 4]))
    assert torch.allclose(mass[0, :, 0], torch.tensor([5 / 2, 7 / 1]))
    assert torch.allclose(abs_mass[0, :, 0], torch.tensor([5 / 2, 7 / 3]))


@pytest.mark.parametrize("norm", ["hw", "mass", "abs_mass"])
def test_part_pool_matches_loops(norm: str) -> None:
    b, c, k, h, w = 2, 3, 4, 5, 3
    feats = torch.randn(b, c, h, w, dtype=torch.float64)
    maps = torch.randn(b, k, h, w, dtype=torch.float64)
    if norm == "mass":
        maps = maps.abs()
    got = part_pool(feats, maps, norm=norm)
    expected = torch.zeros(b, k, c, dtype=torch.float64)
    for bi in range(b):
        for ki in range(k):
            num = [0.0] * c
            den = 0.0
            for y in range(h):
                for x in range(w):
                    m = maps[bi, ki, y, x].item()
                    den += {"hw": 1.0, "mass": m, "abs_mass": abs(m)}[norm]
                    for ci in range(c):
                        num[ci] += feats[bi, ci, y, x].item() * m
            for ci in range(c):
                expected[bi, ki, ci] = num[ci] / den
    assert torch.allclose(got, expected, atol=1e-12)


def test_part_pool_empty_map_is_guarded_and_bad_input_raises() -> None:
    feats = torch.randn(1, 2, 3, 3)
    maps = torch.zeros(1, 2, 3, 3)
    for norm in ("mass", "abs_mass"):
        out = part_pool(feats, maps, norm=norm, eps=1e-6)
        assert torch.isfinite(out).all() and (out == 0).all()
    with pytest.raises(ValueError, match="unknown norm"):
        part_pool(feats, maps, norm="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="do not match"):
        part_pool(feats, torch.zeros(1, 2, 4, 3))


def test_part_pool_accepts_boolean_masks() -> None:
    feats = torch.arange(4.0).reshape(1, 1, 2, 2)
    mask = torch.tensor([[[[True, False], [True, True]]]])
    assert part_pool(feats, mask, norm="mass")[0, 0, 0].item() == pytest.approx((0 + 2 + 3) / 3)


def test_stripe_pool_hand_worked_and_divisible() -> None:
    col = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 4, 1)
    assert torch.allclose(stripe_pool(col, 2)[0, :, 0], torch.tensor([1.5, 3.5]))

    x = torch.randn(2, 3, 6, 4)
    got = stripe_pool(x, 3)
    assert got.shape == (2, 3, 3)
    for b in range(2):
        for i in range(3):
            for c in range(3):
                rows = x[b, c, 2 * i : 2 * i + 2, :]
                assert got[b, i, c].item() == pytest.approx(rows.sum().item() / rows.numel(), abs=1e-6)


def test_stripe_pool_uneven_height_uses_adaptive_rule() -> None:
    h, n = 5, 3
    x = torch.randn(1, 2, h, 2)
    got = stripe_pool(x, n)
    for i in range(n):
        start, end = math.floor(i * h / n), math.ceil((i + 1) * h / n)
        for c in range(2):
            rows = x[0, c, start:end, :]
            assert got[0, i, c].item() == pytest.approx(rows.mean().item(), abs=1e-6)
    with pytest.raises(ValueError):
        stripe_pool(x, 6)


def test_stripe_pool_matches_adaptive_pooling_for_every_height_and_count() -> None:
    """Same stripes as torch's adaptive pooling (the previous implementation), PCB's 16 / 24 rows included."""
    for h in (1, 5, 7, 16, 24):
        x = torch.randn(2, 3, h, 4)
        for n in range(1, min(h, 8) + 1):
            expected = torch.nn.functional.adaptive_avg_pool2d(x, (n, 1))[:, :, :, 0].transpose(1, 2)
            assert torch.allclose(stripe_pool(x, n), expected, atol=1e-6), (h, n)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_stripe_pool_traces_to_a_graph_without_adaptive_pooling() -> None:
    """The exporter cannot lower adaptive pooling with uneven windows: the graph must hold a matrix product."""
    graph = torch.jit.trace(lambda x: stripe_pool(x, 6), torch.randn(1, 2, 16, 3)).graph
    kinds = {node.kind() for node in graph.nodes()}
    assert not any("adaptive" in k for k in kinds) and "aten::matmul" in kinds
    x = torch.randn(2, 2, 16, 3)
    rows = [(math.floor(i * 16 / 6), math.ceil((i + 1) * 16 / 6)) for i in range(6)]
    expected = torch.stack([x[:, :, a:b].mean(dim=(2, 3)) for a, b in rows], dim=1)
    assert torch.allclose(torch.jit.trace(lambda t: stripe_pool(t, 6), x)(x), expected, atol=1e-6)


def test_adaptive_average_matrix_hand_worked() -> None:
    # 5 inputs -> 3 outputs: windows [0, 2), [1, 4), [3, 5) (floor(i 5 / 3) .. ceil((i + 1) 5 / 3))
    expected = torch.tensor(
        [[1 / 2, 1 / 2, 0, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0], [0, 0, 0, 1 / 2, 1 / 2]], dtype=torch.float64
    )
    assert torch.allclose(adaptive_average_matrix(5, 3), expected)
    assert torch.equal(adaptive_average_matrix(4, 4), torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="size_out"):
        adaptive_average_matrix(3, 4)


@pytest.mark.parametrize("size_in,size_out", [((16, 8), (4, 2)), ((18, 8), (5, 2)), ((7, 5), (3, 4))])
def test_adaptive_avg_pool2d_fixed_matches_window_means(size_in, size_out) -> None:
    (hi, wi), (ho, wo) = size_in, size_out
    x = torch.randn(2, 3, hi, wi)
    got = adaptive_avg_pool2d_fixed(x, size_out)
    assert got.shape == (2, 3, ho, wo)
    for i in range(ho):
        r0, r1 = math.floor(i * hi / ho), math.ceil((i + 1) * hi / ho)
        for j in range(wo):
            c0, c1 = math.floor(j * wi / wo), math.ceil((j + 1) * wi / wo)
            for b in range(2):
                for c in range(3):
                    cells = [x[b, c, r, q].item() for r in range(r0, r1) for q in range(c0, c1)]
                    assert got[b, c, i, j].item() == pytest.approx(sum(cells) / len(cells), abs=1e-6)


def test_global_pools_and_gem() -> None:
    x = torch.rand(2, 3, 4, 5) + 0.1
    for b in range(2):
        for c in range(3):
            vals = [x[b, c, i, j].item() for i in range(4) for j in range(5)]
            assert global_avg_pool(x)[b, c].item() == pytest.approx(sum(vals) / len(vals), rel=1e-6)
            assert global_max_pool(x)[b, c].item() == pytest.approx(max(vals))
            gem = (sum(v**3 for v in vals) / len(vals)) ** (1 / 3)
            assert gem_pool(x, p=3)[b, c].item() == pytest.approx(gem, rel=1e-5)
    # hand-worked: values 1 and 2, p = 3 -> ((1 + 8) / 2)^(1/3)
    pair = torch.tensor([1.0, 2.0]).reshape(1, 1, 1, 2)
    assert gem_pool(pair, p=3).item() == pytest.approx(4.5 ** (1 / 3), rel=1e-6)
    assert gem_pool(pair, p=1).item() == pytest.approx(1.5, rel=1e-6)
    # negative inputs are clamped to eps before the power
    assert gem_pool(torch.full((1, 1, 2, 2), -3.0), p=3, eps=1e-6).item() == pytest.approx(1e-6, rel=1e-4)


def test_gem_module_learns_p() -> None:
    pool = GeM(p=3.0)
    pool(torch.rand(2, 3, 4, 4) + 0.1).sum().backward()
    assert pool.p.grad is not None and pool.p.grad.abs().item() > 0


# ---------------------------------------------------------------- gated convolution


def _bn_eval(v: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return (v - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


def _randomise_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.3, 0.3)


@pytest.mark.parametrize("guide_channels", [0, 2])
def test_gated_conv_matches_manual_formula(guide_channels: int) -> None:
    c, out_c, h, w = 4, 5, 3, 2
    gc = GatedConv(c, reduction=2, out_channels=out_c, guide_channels=guide_channels).eval()
    _randomise_bn(gc)
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    guide = torch.randn(2, guide_channels, h, w, dtype=torch.float64) if guide_channels else None
    gc = gc.double()
    with torch.no_grad():
        out, a = gc(x, guide)
    bn_in, conv1, _, conv2, bn_gate = gc.gate
    w1, b1 = conv1.weight[:, :, 0, 0], conv1.bias
    w2 = conv2.weight[:, :, 0, 0]
    assert conv2.bias is None  # a BatchNorm follows, so a bias there would never learn
    w_out = gc.out.weight[:, :, 0, 0]
    assert a.shape == (2, 1, h, w) and out.shape == (2, out_c, h, w)
    for b in range(2):
        for y in range(h):
            for xx in range(w):
                v = x[b, :, y, xx]
                g_in = v if guide is None else torch.cat([v, guide[b, :, y, xx]])
                z = (g_in - bn_in.running_mean) / torch.sqrt(bn_in.running_var + bn_in.eps)
                z = z * bn_in.weight + bn_in.bias
                hid = torch.clamp(w1 @ z + b1, min=0)
                s = w2 @ hid
                s = (s - bn_gate.running_mean) / torch.sqrt(bn_gate.running_var + bn_gate.eps)
                s = s * bn_gate.weight + bn_gate.bias
                gate = 1 / (1 + torch.exp(-s))
                assert a[b, 0, y, xx].item() == pytest.approx(gate.item(), abs=1e-12)
                expected = w_out @ (v * (1 + gate))
                assert torch.allclose(out[b, :, y, xx], expected, atol=1e-12)


def test_gated_conv_pool_then_project_equals_project_then_pool() -> None:
    """gated() is x (1 + a) before the output conv; project() is that conv on vectors, so pooling the
    gated map then projecting gives forward()'s output pooled (the 1x1 conv is bias-free and linear)."""
    c, out_c, h, w = 4, 3, 3, 2
    gc = GatedConv(c, reduction=2, out_channels=out_c).eval()
    _randomise_bn(gc)
    x = torch.randn(2, c, h, w)
    weights = torch.rand(2, 1, h, w)
    with torch.no_grad():
        out, a = gc(x)
        gated, a2 = gc.gated(x)
        pooled_then_projected = gc.project((gated * weights).sum(dim=(2, 3)))
        unprojected, a3 = gc(x, project=False)
    assert torch.equal(a, a2) and torch.equal(a, a3) and torch.equal(gated, unprojected)
    w_out = gc.out.weight[:, :, 0, 0]
    for b in range(2):
        for y in range(h):
            for xx in range(w):
                assert torch.allclose(gated[b, :, y, xx], x[b, :, y, xx] * (1 + a[b, 0, y, xx]), atol=1e-6)
        expected = sum(
            weights[b, 0, y, xx] * (w_out @ gated[b, :, y, xx]) for y in range(h) for xx in range(w)
        )
        assert torch.allclose(pooled_then_projected[b], expected, atol=1e-5)
        assert torch.allclose(pooled_then_projected[b], (out[b] * weights[b]).sum(dim=(1, 2)), atol=1e-5)
    # hand-worked: identity output conv, zero gate weights and identity BNs give a = sigmoid(0) = 1/2
    one = GatedConv(1).eval()
    with torch.no_grad():
        for p in one.parameters():
            p.zero_()
        for bn in (one.gate[0], one.gate[4]):
            bn.eps = 0.0
        one.gate[0].weight.fill_(1.0)
        one.out.weight.fill_(2.0)
        gated, a = one.gated(torch.tensor([4.0, -2.0]).view(1, 1, 1, 2))
        assert gated.flatten().tolist() == [6.0, -3.0] and torch.all(a == 0.5)
        assert one.project(torch.tensor([[3.0]])).item() == 6.0


def test_gated_conv_guide_must_match_construction() -> None:
    with pytest.raises(ValueError, match="guide"):
        GatedConv(3)(torch.randn(1, 3, 2, 2), torch.randn(1, 1, 2, 2))
    with pytest.raises(ValueError, match="guide"):
        GatedConv(3, guide_channels=1)(torch.randn(1, 3, 2, 2))


# ---------------------------------------------------------------- part attention


def test_pixel_part_predictor_shapes_and_softmax() -> None:
    pred = PixelPartPredictor(8, num_parts=6, mid_channels=16, num_layers=2)
    logits, probs = pred(torch.randn(2, 8, 6, 4))
    assert logits.shape == probs.shape == (2, 7, 6, 4)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2, 6, 4), atol=1e-6)
    assert (probs >= 0).all()
    convs3 = [m for m in pred.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs3) == 2
    no_bg = PixelPartPredictor(8, num_parts=5, num_layers=1, mid_channels=4, background=False)
    assert no_bg(torch.randn(1, 8, 3, 3))[0].shape == (1, 5, 3, 3)


def test_pixel_part_predictor_single_1x1_conv_when_no_layers() -> None:
    pred = PixelPartPredictor(3, num_parts=2, num_layers=0).eval()
    x = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    pred = pred.double()
    with torch.no_grad():
        logits, probs = pred(x)
    wt, bias = pred.classifier.weight[:, :, 0, 0], pred.classifier.bias
    for y in range(2):
        for xx in range(2):
            expected = wt @ x[0, :, y, xx] + bias
            assert torch.allclose(logits[0, :, y, xx], expected, atol=1e-12)
            e = torch.exp(expected)
            assert torch.allclose(probs[0, :, y, xx], e / e.sum(), atol=1e-12)


def test_eq2_pixel_predictor_is_conv_bn_relu_to_the_maps_then_softmax() -> None:
    pred = Eq2PixelPredictor(3, num_parts=2, mid_channels=4, num_layers=2).eval()
    _randomise_bn(pred)
    assert [type(m).__name__ for m in pred.body] == ["Conv2d", "BatchNorm2d", "ReLU"] * 2
    x = torch.randn(1, 3, 3, 2)
    with torch.no_grad():
        logits, probs = pred(x)
        h = x
        for conv, bn in ((pred.body[0], pred.body[1]), (pred.body[3], pred.body[4])):
            y = nn.functional.conv2d(h, conv.weight, padding=1)
            h = torch.clamp(_bn_eval(y.permute(0, 2, 3, 1), bn).permute(0, 3, 1, 2), min=0)
    assert logits.shape == (1, 3, 3, 2) and (logits >= 0).all()
    assert torch.allclose(logits, h, atol=1e-5)
    for y in range(3):
        for xx in range(2):
            e = torch.exp(h[0, :, y, xx])
            assert torch.allclose(probs[0, :, y, xx], e / e.sum(), atol=1e-6)
    with pytest.raises(ValueError, match="num_layers"):
        Eq2PixelPredictor(3, num_parts=2, mid_channels=4, num_layers=0)


def test_foreground_map_and_visibility_rule() -> None:
    # channels: background, part 1, part 2 over a 1 x 2 image
    probs = torch.tensor([[[[0.5, 0.25]], [[0.25, 0.625]], [[0.25, 0.125]]]])
    fg = foreground_map(probs)
    assert fg.shape == (1, 1, 1, 2)
    assert fg[0, 0, 0].tolist() == [0.25, 0.625]  # max of parts only, background ignored
    scores, visible = part_visibility(probs, threshold=0.5)
    assert scores.tolist() == [[0.625, 0.25]]
    assert visible.tolist() == [[True, False]]
    # strict inequality: a score equal to the threshold is not visible
    _, vis_eq = part_visibility(probs, threshold=0.625)
    assert vis_eq.tolist() == [[False, False]]

    rand = torch.rand(3, 5, 4, 3).softmax(dim=1)
    scores, visible = part_visibility(rand, threshold=0.3)
    for b in range(3):
        for k in range(4):
            m = max(rand[b, k + 1, y, x].item() for y in range(4) for x in range(3))
            assert scores[b, k].item() == pytest.approx(m)
            assert bool(visible[b, k]) == (m > 0.3)
    s_nb, _ = part_visibility(rand, threshold=0.3, has_background=False)
    assert s_nb.shape == (3, 5)


# ---------------------------------------------------------------- heads


def test_bnneck_shapes_frozen_bias_and_train_normalisation() -> None:
    neck = BNNeck(6, 4)
    x = torch.randn(5, 6)
    feat, logits = neck(x)
    assert feat.shape == (5, 6) and logits.shape == (5, 4)
    assert neck.classifier.bias is None
    assert not neck.bn.bias.requires_grad and neck.bn.weight.requires_grad
    assert 0 < neck.classifier.weight.std().item() < 0.01
    for j in range(6):
        col = [x[i, j].item() for i in range(5)]
        mean = sum(col) / 5
        var = sum((v - mean) ** 2 for v in col) / 5  # BN normalises with the biased variance
        for i in range(5):
            assert feat[i, j].item() == pytest.approx((col[i] - mean) / math.sqrt(var + 1e-5), abs=1e-5)
    opt = torch.optim.SGD([p for p in neck.parameters() if p.requires_grad], lr=1.0)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3, 0])).backward()
    opt.step()
    assert (neck.bn.bias == 0).all()
    assert BNNeck(6, 4, bias_free_bn=False).bn.bias.requires_grad


def test_classifier_bn_and_plain() -> None:
    clf = Classifier(5, 3)
    assert clf(torch.randn(4, 5)).shape == (4, 3)
    plain = Classifier(5, 3, bn=False)
    x = torch.randn(2, 5)
    w = plain.fc.weight
    for i in range(2):
        for j in range(3):
            expected = sum(w[j, k].item() * x[i, k].item() for k in range(5))
            assert plain(x)[i, j].item() == pytest.approx(expected, abs=1e-6)


def test_embedding_head_same_map_for_vectors_parts_and_pixels() -> None:
    head = EmbeddingHead(4, 3, bn=True, relu=True).eval()
    _randomise_bn(head)
    vecs = torch.randn(6, 4)
    with torch.no_grad():
        flat = head(vecs)
        parts = head(vecs.reshape(2, 3, 4))
        pixels = head(vecs.reshape(2, 3, 4).permute(0, 2, 1).reshape(2, 4, 3, 1))
    bn = head.bn
    for i in range(6):
        z = head.fc.weight @ vecs[i]
        z = (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        assert torch.allclose(flat[i], torch.clamp(z, min=0), atol=1e-6)
    assert torch.allclose(parts.reshape(6, 3), flat, atol=1e-6)
    assert torch.allclose(pixels[:, :, :, 0].permute(0, 2, 1).reshape(6, 3), flat, atol=1e-6)
    with pytest.raises(ValueError):
        head(torch.randn(4))


def test_partwise_linear_uses_one_weight_per_part() -> None:
    layer = PartwiseLinear(3, 4, 2, bn=False)
    assert layer.bias is not None and PartwiseLinear(3, 4, 2, bn=True).bias is None
    with torch.no_grad():
        layer.bias.copy_(torch.randn(3, 2))
        x = torch.randn(5, 3, 4)
        y = layer(x)
    for b in range(5):
        for p in range(3):
            for d in range(2):
                expected = sum(layer.weight[p, d, c].item() * x[b, p, c].item() for c in range(4))
                assert y[b, p, d].item() == pytest.approx(expected + layer.bias[p, d].item(), abs=1e-5)
    clf = PartwiseLinear(3, 4, 2, bn=False, classifier=True)
    assert clf.bias is None and 0 < clf.weight.std().item() < 0.01


def test_part_classifiers_normalise_each_part_channel_then_classify_per_part() -> None:
    b, k, d, classes = 6, 2, 3, 4
    clf = PartClassifiers(k, d, classes)
    x = torch.randn(b, k, d)
    with torch.no_grad():
        logits = clf(x)  # training mode: batch statistics
    assert logits.shape == (b, k, classes)
    for p in range(k):
        for c in range(d):
            col = [x[i, p, c].item() for i in range(b)]
            mean = sum(col) / b
            var = sum((v - mean) ** 2 for v in col) / b
            x[:, p, c] = torch.tensor([(v - mean) / math.sqrt(var + 1e-5) for v in col])
    for i in range(b):
        for p in range(k):
            for j in range(classes):
                expected = sum(clf.fc.weight[p, j, c].item() * x[i, p, c].item() for c in range(d))
                assert logits[i, p, j].item() == pytest.approx(expected, abs=1e-5)


# ---------------------------------------------------------------- complexity


def test_count_macs_linear_is_in_times_out() -> None:
    assert count_macs(nn.Linear(10, 20), (1, 10)) * 1e9 == pytest.approx(200.0)


def test_count_macs_conv_closed_form_and_breakdown() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.Conv2d(8, 4, kernel_size=1, groups=2, bias=False),
    )
    model.train()
    report = profile_macs(model, (2, 3, 9, 7))
    assert model.training  # flag restored
    h_out, w_out = (9 + 2 - 3) // 2 + 1, (7 + 2 - 3) // 2 + 1  # 5 x 4
    conv1 = 2 * 8 * h_out * w_out * 3 * 3 * 3
    conv2 = 2 * 4 * h_out * w_out * (8 // 2)
    assert report.total_gmacs * 1e9 == pytest.approx(conv1 + conv2)
    assert report.by_module["0"] * 1e9 == pytest.approx(conv1)
    assert report.by_module["2"] * 1e9 == pytest.approx(conv2)
    assert report.by_module.get("1", 0.0) == 0.0


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2, bias=False)
        self.alias = self.a  # same module registered twice: counted once
        self.scale = nn.Parameter(torch.ones(5))
        self.b.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) * self.scale.sum()


def test_count_parameters_breakdown_sums_to_total() -> None:
    model = _Shared()
    counts = count_parameters(model)
    total = 3 * 4 + 4 + 4 * 2 + 5
    assert counts["total"] == total
    assert counts["trainable"] == total - 8
    assert sum(counts["by_module"].values()) == total
    assert counts["by_module"]["a"] == 16 and counts["by_module"]["b"] == 8
    assert counts["by_module"]["(own)"] == 5
