"""SGSFA (paper 004): every equation against explicit loops / closed forms, the Table 5 / Fig. 6 / matching
switches, learning on a fixed batch, the paper configuration, checkpoints, distance and the trainer."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from occreid.config import load_config
from occreid.errors import ConfigError
from occreid.methods import sgsfa
from occreid.models.output import ModelOutput
from occreid.models.part_attention import PartAttention, WholeBodyAttention

from .method_checks import (
    PIDS8,
    bn_eval,
    ce_ls,
    check_ablation_switches,
    conv1x1,
    fit_fixed_batch,
    last_metrics,
    method_cfg,
    paper_step,
    randomise_bn,
    reload_round_trip,
    reload_run,
    silent_parameters,
    single_thread,
    trainer_cfg,
    write_band_labels,
)

SGA = ["head", "upper_body", "lower_body", "shoes"]
FR = ["top", "middle", "bottom", "top+middle", "middle+bottom"]


one_thread = pytest.fixture(autouse=True)(single_thread)


def make_cfg(height: int = 64, width: int = 32, **method):
    """ResNet-18 (last stride 1) at 64x32: stage 1 is 16 x 8, stage 4 is 4 x 2; 32-d part vectors."""
    method.setdefault("feature_dim", 32)
    return method_cfg("sgsfa", height, width, **method)


def small_model(num_classes: int = 4, **method) -> sgsfa.SGSFA:
    torch.manual_seed(0)
    return sgsfa.build_model(make_cfg(**method), num_classes)


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def bce(logit: float, target: float) -> float:
    p = sigmoid(logit)
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def band_labels(n: int, h: int, w: int) -> torch.Tensor:
    """sgsfa4-grouped maps: head on top, upper body, lower body, shoes; shifted down per image."""
    out = torch.zeros(n, h, w, dtype=torch.long)
    for i in range(n):
        s = i % max(1, h // 8)
        out[i, s : s + h // 8, w // 4 : 3 * w // 4] = 1
        out[i, s + h // 8 : h // 2, w // 8 : 7 * w // 8] = 2
        out[i, h // 2 : 7 * h // 8, w // 4 : 3 * w // 4] = 3
        out[i, 7 * h // 8 :, w // 4 : 3 * w // 4] = 4
    return out


def eval_forward(model, x):
    randomise_bn(model)
    model.eval()
    with torch.no_grad():
        return model(x)


# ---- whole-body attention (Fig. 3) and part attentions (Fig. 4) -----------------------------------


def test_whole_body_attention_hand_worked_zero_logits_quarter_the_features():
    """Zero final spatial conv and channel FC: sigmoid(0) * sigmoid(0) = 1/4 of every feature."""
    att = WholeBodyAttention(16, reduction=8).eval()
    with torch.no_grad():
        att.spatial[3].weight.zero_()
        att.spatial[3].bias.zero_()
        att.channel[2].weight.zero_()
        att.channel[2].bias.zero_()
    x = torch.randn(2, 16, 3, 2)
    out, logits = att(x)
    assert att.spatial[0].out_channels == 2 and att.channel[0].out_features == 2  # reduction 8
    assert torch.all(logits == 0)
    assert torch.allclose(out, x / 4)


def test_whole_body_attention_after_stage1_matches_an_explicit_computation():
    model = small_model()
    x = torch.randn(2, 3, 64, 32)
    out = eval_forward(model, x)
    bb, att = model.backbone, model.whole
    with torch.no_grad():
        s1 = bb.layer1(bb.maxpool(bb.relu(bb.bn1(bb.conv1(x)))))
        hidden = torch.relu(bn_eval(conv1x1(s1, att.spatial[0]), att.spatial[1]))
        logits = conv1x1(hidden, att.spatial[3])
        pooled = s1.mean(dim=(2, 3))
        ch = torch.sigmoid(att.channel[2](torch.relu(att.channel[0](pooled))))
        masked = s1 * torch.sigmoid(logits) * ch[:, :, None, None]
        fmap = bb.layer4(bb.layer3(bb.layer2(masked)))
        plain = bb(x)
    assert out.maps["whole_body_logits"].shape == (2, 1, 16, 8)  # stage 1 of a 64x32 input
    assert torch.allclose(out.maps["whole_body_logits"], logits, atol=1e-5)
    assert torch.allclose(out.maps["whole_body"], torch.sigmoid(logits), atol=1e-6)
    # the part masks read the attended stage-4 map, not the plain backbone's
    parts = model.parts
    expected_logits = conv1x1(torch.relu(bn_eval(conv1x1(fmap, parts.shared[0]), parts.shared[1])), parts.masks)
    assert torch.allclose(out.maps["part_logits"], expected_logits, atol=1e-4)
    assert not torch.allclose(fmap, plain, atol=1e-3)


def test_part_attention_hand_worked():
    """One channel, one part, dim 1: mask logit 0 -> m = 1/2; embed weight 2, identity BN; x = (1, -3):
    relu(2 * 1/2 * x) = (1, 0) -> average 0.5."""
    att = PartAttention(1, num_parts=1, dim=1, reduction=1).eval()
    with torch.no_grad():
        att.masks.weight.zero_()
        att.masks.bias.zero_()
        att.embed.weight.fill_(2.0)
    att.bn.eps = 0.0
    vec, logits = att(torch.tensor([1.0, -3.0]).view(1, 1, 1, 2))
    assert torch.all(logits == 0)
    assert vec.shape == (1, 1, 1) and vec.item() == pytest.approx(0.5)


def test_part_attention_matches_a_per_part_conv_of_the_masked_map():
    """Each part: conv_k(m_k * F) + BN + ReLU + GAP, with conv_k the k-th slice of the fused convolution."""
    model = small_model()
    out = eval_forward(model, torch.randn(2, 3, 64, 32))
    att = model.parts
    with torch.no_grad():
        fmap, _ = model.trunk(torch.randn(2, 3, 64, 32))
        vec, logits = att(fmap)
        shared = torch.relu(bn_eval(conv1x1(fmap, att.shared[0]), att.shared[1]))
        assert torch.allclose(logits, conv1x1(shared, att.masks), atol=1e-4)
        d = att.dim
        for k in range(4):
            m = torch.sigmoid(logits[:, k : k + 1])
            sl = slice(k * d, (k + 1) * d)
            y = torch.einsum("dc,bchw->bdhw", att.embed.weight[sl, :, 0, 0], fmap * m)
            scale = att.bn.weight[sl] / torch.sqrt(att.bn.running_var[sl] + att.bn.eps)
            y = (y - att.bn.running_mean[sl].view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1)
            y = torch.relu(y + att.bn.bias[sl].view(1, -1, 1, 1))
            for b in range(2):
                assert torch.allclose(vec[b, k], y[b].mean(dim=(1, 2)), atol=1e-4)
    assert out.parts.shape == (2, 7, 32) and out.maps["part_logits"].shape == (2, 4, 4, 2)


# ---- Sec. 3.2.1: head top and body-proportion bands ------------------------------------------------


def bands_by_hand(h: int, head_row: int | None, offset: int = 1, props=(0.15, 0.23, 0.62)) -> list[int]:
    start = 0 if head_row is None else min(head_row + offset, h - 3)
    n = h - start
    c1 = min(max(math.floor(props[0] * n + 0.5), 1), n - 2)
    c2 = min(max(math.floor((props[0] + props[1]) * n + 0.5), c1 + 1), n - 1)
    return [start, start + c1, start + c2, h]


def test_band_bounds_hand_worked_16_rows():
    """Head top at row 0 -> start 1, n = 15: 0.15 * 15 = 2.25 -> 2 rows, 0.38 * 15 = 5.7 -> 6: bands
    [1, 3), [3, 7), [7, 16). Head top at row 15: start clamped to 13 so each band keeps one row."""
    top = torch.tensor([0, 15, 4])
    found = torch.tensor([True, True, False])
    bounds = sgsfa.band_bounds(top, found, 16, 1, [0.15, 0.23, 0.62])
    assert bounds.tolist() == [[1, 3, 7, 16], [13, 14, 15, 16], [0, 2, 6, 16]]
    rows = sgsfa.band_rows(bounds, 16)
    assert rows[0, 0].tolist() == [0, 1, 1] + [0] * 13
    assert rows[0, 1].tolist() == [0, 0, 0, 1, 1, 1, 1] + [0] * 9
    assert rows[0, 2].tolist() == [0] * 7 + [1] * 9


@pytest.mark.parametrize("h", [3, 4, 8, 16, 24])
def test_band_bounds_match_the_rule_for_every_head_row(h):
    for offset in (0, 1, 2):
        tops = list(range(h))
        bounds = sgsfa.band_bounds(torch.tensor(tops + [0]), torch.tensor([True] * h + [False]), h, offset,
                                   [0.15, 0.23, 0.62])
        for i, t in enumerate(tops + [None]):
            expected = bands_by_hand(h, t, offset)
            assert bounds[i].tolist() == expected, (h, t, offset)
            s, b1, b2, end = expected
            assert s < b1 < b2 < end  # three non-empty bands covering [start, h)
    with pytest.raises(ConfigError, match="3 rows"):
        sgsfa.band_bounds(torch.tensor([0]), torch.tensor([True]), 2, 1, [0.15, 0.23, 0.62])


def test_head_top_is_the_first_row_strictly_above_the_threshold():
    mask = torch.zeros(3, 5, 2)
    mask[0, 2, 1] = 0.9
    mask[0, 4, 0] = 0.9
    mask[1, 1, 0] = 0.5  # not > 0.5
    mask[1, 3, 1] = 0.51
    rows, found = sgsfa.head_top(mask, 0.5)
    assert rows.tolist()[:2] == [2, 3] and found.tolist() == [True, True, False]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_head_top_for_every_hit_pattern_and_through_a_fixed_shape_trace():
    """All 2^5 row patterns of a 5-row mask: the first hit row by a loop (0 and not found when none);
    a trace made on one batch gives the same on another batch with other hits (no data-dependent shapes)."""
    patterns = list(itertools.product([0, 1], repeat=5))
    mask = torch.zeros(len(patterns), 5, 3)
    for i, rows in enumerate(patterns):
        for r, on in enumerate(rows):
            if on:
                mask[i, r, (i + r) % 3] = 0.8  # one column above the threshold, the others at zero
    expected = [next((r for r, on in enumerate(rows) if on), 0) for rows in patterns]
    top, found = sgsfa.head_top(mask, 0.5)
    assert top.tolist() == expected and found.tolist() == [any(rows) for rows in patterns]
    traced = torch.jit.trace(lambda m: sgsfa.head_top(m, 0.5), mask[:2])
    top, found = traced(mask)
    assert top.tolist() == expected and found.tolist() == [any(rows) for rows in patterns]


def test_band_visibility_reads_adaptive_windows_when_the_maps_do_not_divide():
    """72 x 32 input: the whole-body mask is 18 x 8, the stage-4 map 5 x 2, so map cell (i, j) averages mask
    rows floor(18 i / 5) .. ceil(18 (i + 1) / 5) - 1 and columns 4 j .. 4 j + 3 (adaptive pooling's windows)."""
    torch.manual_seed(0)
    model = sgsfa.build_model(make_cfg(height=72), 4)
    out = eval_forward(model, torch.randn(2, 3, 72, 32))
    body = out.maps["whole_body"]
    assert body.shape == (2, 1, 18, 8) and out.maps["parts"].shape[-2:] == (5, 2)
    for b in range(2):
        pooled = [
            [
                sum(
                    body[b, 0, r, c].item()
                    for r in range(math.floor(18 * i / 5), math.ceil(18 * (i + 1) / 5))
                    for c in range(4 * j, 4 * j + 4)
                )
                / (4 * (math.ceil(18 * (i + 1) / 5) - math.floor(18 * i / 5)))
                for j in range(2)
            ]
            for i in range(5)
        ]
        s, b1, b2, end = out.extras["band_bounds"][b].tolist()
        for k, (lo, hi) in enumerate(((s, b1), (b1, b2), (b2, end))):
            cells = [pooled[r][c] for r in range(lo, hi) for c in range(2)]
            assert out.visibility[b, 4 + k].item() == pytest.approx(sum(cells) / len(cells), abs=1e-6)


def test_sfa_regions_pool_the_rows_of_their_bands():
    model = small_model()
    x = torch.randn(2, 3, 64, 32)
    out = eval_forward(model, x)
    with torch.no_grad():
        fmap, _ = model.trunk(x)
    bounds = out.extras["band_bounds"].tolist()
    head = out.maps["parts"][:, 0]
    emb = model.sfa_embed
    for b in range(2):
        hit = [r for r in range(4) if any(head[b, r, c].item() > 0.5 for c in range(2))]
        assert bounds[b] == bands_by_hand(4, hit[0] if hit else None)
        s, b1, b2, end = bounds[b]
        band = [list(range(s, b1)), list(range(b1, b2)), list(range(b2, end))]
        rows = [band[0], band[1], band[2], band[0] + band[1], band[1] + band[2]]
        for r, rs in enumerate(rows):
            pooled = sum(fmap[b, :, i, j] for i in rs for j in range(2)) / (2 * len(rs))
            y = torch.relu(bn_eval((emb.fc.weight @ pooled).view(1, -1), emb.bn))[0]
            assert torch.allclose(out.extras["sfa_regions"][b, r], y, atol=1e-4), (b, r)
            if r < 3:
                assert torch.allclose(out.parts[b, 4 + r], y, atol=1e-4)


# ---- Eq. 4-5: visibility ---------------------------------------------------------------------------


def test_eq4_visibility_parts_are_mask_means_and_bands_read_the_whole_body_mask():
    model = small_model()
    out = eval_forward(model, torch.randn(2, 3, 64, 32))
    masks, body = out.maps["parts"], out.maps["whole_body"]  # [2, 4, 4, 2], [2, 1, 16, 8]
    for b in range(2):
        for k in range(4):
            mean = sum(masks[b, k, r, c].item() for r in range(4) for c in range(2)) / 8
            assert out.visibility[b, k].item() == pytest.approx(mean, abs=1e-6)
        s, b1, b2, end = out.extras["band_bounds"][b].tolist()
        for i, (lo, hi) in enumerate(((s, b1), (b1, b2), (b2, end))):
            cells = [body[b, 0, r, c].item() for r in range(4 * lo, 4 * hi) for c in range(8)]  # stride 4 -> 16
            assert out.visibility[b, 4 + i].item() == pytest.approx(sum(cells) / len(cells), abs=1e-6)


def test_eq5_thresholds_are_strict_and_separate_for_parts_and_bands():
    vis = torch.tensor([[0.01, 0.02, 0.0, 0.5, 0.1, 0.11, 0.05]])
    assert sgsfa.visible_parts(vis, sgsfa.Options()).tolist() == [[0, 1, 0, 1, 0, 1, 0]]
    assert sgsfa.visible_parts(vis, sgsfa.Options(tau=0.0, region_tau=None)).tolist() == [[1, 1, 0, 1, 1, 1, 1]]
    assert sgsfa.visible_parts(vis, sgsfa.Options(tau=0.05, region_tau=0.05)).tolist() == [[0, 0, 0, 1, 1, 1, 0]]


# ---- Eq. 1-3: candidate regions and the dynamic classification loss --------------------------------


def test_eq3_candidate_regions_for_every_visibility_pattern():
    table = {  # (t, m, b) -> f_choose, written from Eq. 3
        (1, 1, 1): {"top", "middle", "bottom", "top+middle", "middle+bottom"},
        (1, 1, 0): {"top", "middle", "top+middle"},
        (1, 0, 1): {"top"},
        (1, 0, 0): {"top"},
        (0, 1, 1): set(),
        (0, 1, 0): set(),
        (0, 0, 1): set(),
        (0, 0, 0): set(),
    }
    pats = torch.tensor(list(table))
    cand = sgsfa.choose_regions(pats[:, 0], pats[:, 1], pats[:, 2])
    for i, key in enumerate(table):
        assert {FR[j] for j in range(5) if cand[i, j]} == table[key], key


def dcls_output(logits5: torch.Tensor, band_vis: torch.Tensor) -> ModelOutput:
    b = logits5.shape[0]
    logits = {f"sfa_{n}": logits5[:, i] for i, n in enumerate(FR)}
    return ModelOutput(visibility=torch.cat([torch.ones(b, 4), band_vis], dim=1), logits=logits)


def test_dcls_all_regions_matches_a_loop_and_the_empty_set_gives_zero():
    g = torch.Generator().manual_seed(3)
    logits5 = torch.randn(4, 5, 6, generator=g, requires_grad=True)
    band_vis = torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])
    pids = torch.tensor([0, 1, 2, 3])
    loss = sgsfa.build_loss(make_cfg(dcls_regions="all"), 6, None)
    got = loss.dynamic(dcls_output(logits5, band_vis), pids)
    chosen = {0: [0, 1, 2, 3, 4], 1: [0, 1, 3], 2: [0], 3: []}
    vals = [ce_ls(logits5[i, r].tolist(), int(pids[i]), 0.1) for i, rs in chosen.items() for r in rs]
    assert got.item() == pytest.approx(sum(vals) / len(vals), rel=1e-5)
    none = loss.dynamic(dcls_output(logits5, torch.zeros(4, 3)), pids)
    none.backward()
    assert none.item() == 0.0 and logits5.grad is not None


def one_image_five_regions() -> tuple[torch.Tensor, list[float]]:
    """Logits [1, 5, 4] of one image whose five Eq. 3 regions each give a different CE, and those CEs."""
    logits5 = torch.zeros(1, 5, 4)
    for r in range(5):
        logits5[0, r, 0] = float(r)
    return logits5, [ce_ls(logits5[0, r].tolist(), 0, 0.1) for r in range(5)]


def test_dcls_sampling_draws_one_region_from_each_images_candidates():
    logits5, per_region = one_image_five_regions()
    pid = torch.tensor([0])
    loss = sgsfa.build_loss(make_cfg(dcls_regions="sample"), 4, None)
    torch.manual_seed(0)
    seen = {round(loss.dynamic(dcls_output(logits5, torch.tensor([[0.5, 0.5, 0.0]])), pid).item(), 5)
            for _ in range(60)}
    assert seen == {round(per_region[r], 5) for r in (0, 1, 3)}  # {top, middle, top+middle}
    only_top = loss.dynamic(dcls_output(logits5, torch.tensor([[0.5, 0.0, 0.5]])), pid)
    assert only_top.item() == pytest.approx(per_region[0], rel=1e-6)


def test_dcls_default_averages_every_eq3_region_of_each_image():
    """The default (`dcls_regions: all`, chosen on the pretrained protocol's validation split) is the mean
    CE over the whole Eq. 3 set, the same value every call: top, middle and top+middle here."""
    logits5, per_region = one_image_five_regions()
    loss = sgsfa.build_loss(make_cfg(), 4, None)
    assert loss.opts.dcls_regions == "all"
    out = dcls_output(logits5, torch.tensor([[0.5, 0.5, 0.0]]))
    expected = sum(per_region[r] for r in (0, 1, 3)) / 3
    for _ in range(3):
        assert loss.dynamic(out, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)


# ---- Eq. 8-9: semantic attention loss; Eq. 10-11: classification and total ---------------------------


def se_output(part_logits, whole_logits=None):
    maps = {"part_logits": part_logits}
    if whole_logits is not None:
        maps["whole_body_logits"] = whole_logits
    return ModelOutput(maps=maps)


def test_eq8_9_semantic_loss_hand_worked_zero_logits_is_five_ln2():
    """All logits 0: every pixel's BCE is ln 2 whatever the target, so L_se = 5 ln 2 (whole body + 4 parts)."""
    loss = sgsfa.build_loss(make_cfg(), 3, None)
    batch = {"label": band_labels(2, 64, 32), "has_label": torch.tensor([True, True])}
    got = loss.semantic(se_output(torch.zeros(2, 4, 4, 2), torch.zeros(2, 1, 16, 8)), batch)
    assert got.item() == pytest.approx(5 * math.log(2), rel=1e-6)
    got = loss.semantic(se_output(torch.zeros(2, 4, 4, 2)), batch)  # Table 5: no whole-body term
    assert got.item() == pytest.approx(4 * math.log(2), rel=1e-6)


def test_eq8_9_semantic_loss_matches_a_pixel_loop_and_skips_unlabelled_images():
    g = torch.Generator().manual_seed(4)
    parts = torch.randn(3, 4, 2, 2, generator=g)
    whole = torch.randn(3, 1, 4, 4, generator=g)
    coarse = torch.randint(0, 5, (3, 4, 4), generator=g)
    label = coarse.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # 8 x 8, constant 2 x 2 blocks
    valid = torch.tensor([True, False, True])
    loss = sgsfa.build_loss(make_cfg(), 3, None)
    got = loss.semantic(se_output(parts, whole), {"label": label, "has_label": valid})
    # nearest resize samples the centre of each block: 8 -> 2 reads rows / cols 2 and 6 (coarse 1 and 3)
    whole_terms = [bce(whole[b, 0, r, c].item(), float(coarse[b, r, c] > 0))
                   for b in (0, 2) for r in range(4) for c in range(4)]
    expected = sum(whole_terms) / len(whole_terms)
    for k in range(4):
        terms = [bce(parts[b, k, r, c].item(), float(coarse[b, 2 * r + 1, 2 * c + 1] == k + 1))
                 for b in (0, 2) for r in range(2) for c in range(2)]
        expected += sum(terms) / len(terms)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    area = sgsfa.build_loss(make_cfg(label_resize="area"), 3, None)
    got = area.semantic(se_output(parts), {"label": label, "has_label": valid})
    expected = 0.0
    for k in range(4):
        terms = []
        for b in (0, 2):
            for r in range(2):
                for c in range(2):
                    frac = sum(float(label[b, i, j] == k + 1) for i in range(4 * r, 4 * r + 4)
                               for j in range(4 * c, 4 * c + 4)) / 16
                    terms.append(bce(parts[b, k, r, c].item(), frac))
        expected += sum(terms) / len(terms)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    none = loss.semantic(se_output(parts, whole), {"label": label, "has_label": torch.zeros(3, dtype=torch.bool)})
    assert none.item() == 0.0


def test_eq10_ce_ls_hand_worked_and_eq11_total_matches_loops():
    # Eq. 10, zero logits over K = 3: -(1 - eps + eps/3) log(1/3) - 2 eps/3 log(1/3) = ln 3
    assert ce_ls([0.0, 0.0, 0.0], 1, 0.1) == pytest.approx(math.log(3))
    g = torch.Generator().manual_seed(5)
    n, k = 6, 5
    pids = torch.tensor([0, 0, 1, 1, 2, 2])
    sga = torch.randn(n, 4 * 3, generator=g)
    logits = {f"sga_{p}": torch.randn(n, k, generator=g) for p in SGA}
    logits.update({f"sfa_{r}": torch.randn(n, k, generator=g) for r in FR})
    parts = torch.randn(n, 4, 2, 2, generator=g)
    whole = torch.randn(n, 1, 4, 4, generator=g)
    label = torch.randint(0, 5, (n, 8, 8), generator=g)
    band_vis = torch.tensor([[0.5, 0.5, 0.5]] * 3 + [[0.5, 0.5, 0.0]] * 3)
    out = ModelOutput(embeddings={"sga": sga}, visibility=torch.cat([torch.ones(n, 4), band_vis], 1), logits=logits,
                      maps={"part_logits": parts, "whole_body_logits": whole})
    batch = {"pid": pids, "label": label, "has_label": torch.ones(n, dtype=torch.bool)}
    p = pids.tolist()
    f = sga.tolist()
    tri = 0.0
    for a in range(n):
        ap = max(math.dist(f[a], f[j]) for j in range(n) if p[j] == p[a])
        an = min(math.dist(f[a], f[j]) for j in range(n) if p[j] != p[a])
        tri += max(0.0, ap - an + 0.3) / n
    sga_id = sum(ce_ls(logits[f"sga_{q}"][i].tolist(), p[i], 0.1) for q in SGA for i in range(n)) / (4 * n)
    chosen = [(i, r) for i in range(n) for r in ((0, 1, 2, 3, 4) if i < 3 else (0, 1, 3))]
    dcls = sum(ce_ls(logits[f"sfa_{FR[r]}"][i].tolist(), p[i], 0.1) for i, r in chosen) / len(chosen)
    for lam, w in ((0.8, 1.0), (0.2, 0.0), (1.0, 1.0)):
        loss = sgsfa.build_loss(make_cfg(lambda_weight=lam, sga_ce_weight=w, dcls_regions="all"), k, None)
        total, terms = loss(out, batch)
        se = terms["se"].item()
        assert terms["triplet"].item() == pytest.approx(tri, rel=1e-5)
        assert terms["sga_id"].item() == pytest.approx(sga_id, rel=1e-5)
        assert terms["dcls"].item() == pytest.approx(dcls, rel=1e-5)
        assert total.item() == pytest.approx(lam * (tri + se + w * sga_id) + (1 - lam) * dcls, rel=1e-5)


# ---- Eq. 6-7: matching ---------------------------------------------------------------------------


def test_eq7_distance_hand_worked():
    """Seven 2-d parts. Query parts all (1, 0); gallery parts (1, 0) except part 1 = (0, 1) (distance sqrt 2)
    and part 5 = (-1, 0) (distance 2). Shared visible: parts 0, 1, 5 -> sum = 0 + sqrt 2 + 2."""
    q = {"parts": torch.tensor([[[1.0, 0.0]] * 7]),
         "visibility": torch.tensor([[0.5, 0.5, 0.5, 0.0, 0.5, 0.5, 0.0]])}
    gp = torch.tensor([[[1.0, 0.0]] * 7])
    gp[0, 1] = torch.tensor([0.0, 3.0])  # unnormalised: L2 normalisation makes it (0, 1)
    gp[0, 5] = torch.tensor([-1.0, 0.0])
    g = {"parts": gp, "visibility": torch.tensor([[0.5, 0.5, 0.0, 0.5, 0.0, 0.5, 0.5]])}
    d = sgsfa.distance(q, g, make_cfg())
    assert d.item() == pytest.approx(math.sqrt(2) + 2, abs=1e-5)
    assert sgsfa.distance(q, g, make_cfg(normalise_distance=True)).item() == pytest.approx((math.sqrt(2) + 2) / 3,
                                                                                          abs=1e-5)
    assert sgsfa.distance(q, g, make_cfg(matching="all")).item() == pytest.approx(math.sqrt(2) + 2, abs=1e-5)
    g["visibility"] = torch.tensor([[0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.5]])  # nothing shared with q
    assert sgsfa.distance(q, g, make_cfg()).item() == pytest.approx(14.0)


@pytest.mark.parametrize("matching,normalise", [("shared", False), ("shared", True), ("all", False)])
def test_distance_recipe_matches_an_explicit_loop(matching, normalise):
    cfg = make_cfg(matching=matching, normalise_distance=normalise)
    g = torch.Generator().manual_seed(7)

    def feats(n):
        return {"parts": torch.randn(n, 7, 3, generator=g), "visibility": torch.rand(n, 7, generator=g) * 0.2,
                "sga": torch.randn(n, 4, generator=g)}

    qf, gf = feats(3), feats(5)
    d = sgsfa.distance(qf, gf, cfg)

    def unit(v):
        return [a / math.sqrt(sum(b * b for b in v)) for a in v]

    def vis(f, i, k):
        tau = 0.01 if k < 4 else 0.1
        return 1.0 if matching == "all" else float(f["visibility"][i, k] > tau)

    for i in range(3):
        for j in range(5):
            w = [vis(qf, i, k) * vis(gf, j, k) for k in range(7)]
            dist = [math.dist(unit(qf["parts"][i, k].tolist()), unit(gf["parts"][j, k].tolist())) for k in range(7)]
            total = sum(a * b for a, b in zip(w, dist))
            if sum(w) == 0:
                expected = 2.0 if normalise else 14.0
            else:
                expected = total / sum(w) if normalise else total
            assert float(d[i, j]) == pytest.approx(expected, abs=1e-5), (i, j)


# ---- Table 5, Fig. 6 and option checks --------------------------------------------------------------


def test_table5_without_whole_attention_uses_the_plain_trunk_and_the_part_union_for_bands():
    model = small_model(whole_body_attention=False)
    assert model.whole is None
    x = torch.randn(2, 3, 64, 32)
    out = eval_forward(model, x)
    assert "whole_body_logits" not in out.maps
    with torch.no_grad():
        fmap = model.backbone(x)
    parts = model.parts
    logits = conv1x1(torch.relu(bn_eval(conv1x1(fmap, parts.shared[0]), parts.shared[1])), parts.masks)
    assert torch.allclose(out.maps["part_logits"], logits, atol=1e-4)
    masks = out.maps["parts"]
    for b in range(2):
        s, b1, b2, end = out.extras["band_bounds"][b].tolist()
        for i, (lo, hi) in enumerate(((s, b1), (b1, b2), (b2, end))):
            cells = [max(masks[b, k, r, c].item() for k in range(4)) for r in range(lo, hi) for c in range(2)]
            assert out.visibility[b, 4 + i].item() == pytest.approx(sum(cells) / len(cells), abs=1e-6)


def test_ablation_configs_set_their_switches():
    root = Path("configs/sgsfa")
    expected = {"table5_no_whole_attention": {"whole_body_attention": False},
                "sec431_all_parts_matching": {"matching": "all"},
                "sec431_global_matching": {"matching": "global"},
                "sec431_horizontal_stripes": {"band_split": "stripes"},
                "fig6_lambda_0.0": {"lambda_weight": 0.0, "se_weight": 0.8, "test_branch": "spatial"},
                "fig6_lambda_1.0": {"lambda_weight": 1.0, "test_branch": "semantic"}}
    for lam in ("0.2", "0.4", "0.6", "0.8"):
        expected[f"fig6_lambda_{lam}"] = {"lambda_weight": float(lam)}
    full = check_ablation_switches(root, expected)
    paper = load_config(root / "occluded_duke.yaml", [])
    assert (paper.model.backbone, paper.model.last_stride, paper.data.height, paper.data.width) == ("resnet50", 1,
                                                                                                    256, 128)
    assert (paper.data.ids_per_batch, paper.data.instances_per_id) == (16, 4)
    assert (paper.train.lr, paper.train.milestones, paper.train.epochs) == (3e-4, [50, 80, 100, 120], 120)
    assert (full["lambda_weight"], full["triplet_margin"], full["proportions"]) == (0.8, 0.3, [0.15, 0.23, 0.62])
    for name, train, tests in (("occluded_reid", "market1501", ["occluded_reid"]),
                               ("partial_reid", "market1501", ["partial_reid"]),
                               ("partial_reid_occluded", "market1501", ["partial_reid"]),
                               ("p_dukemtmc_from_market", "market1501", ["p_dukemtmc"]),
                               ("p_dukemtmc", "p_dukemtmc", [])):
        cfg = load_config(root / f"{name}.yaml", [])
        assert cfg.data.dataset == train and cfg.data.test_datasets == tests, name
    assert load_config(root / "partial_reid_occluded.yaml", []).data.partial_reid_query == "occluded"
    assert load_config(root / "partial_reid.yaml", []).data.partial_reid_query == "partial"
    proto = load_config("configs/protocols/cpu_occduke/sgsfa.yaml", [])
    assert (proto.model.name, proto.model.backbone, proto.data.height, proto.data.ids_per_batch) == (
        "sgsfa", "resnet18", 128, 16)
    assert sgsfa.label_grouping(paper) == "sgsfa4"


def test_bad_options_are_refused_with_the_key():
    with pytest.raises(ConfigError, match="proportions"):
        make_cfg(proportions="[0.2, 0.2, 0.2]")
    with pytest.raises(ConfigError, match="lambda_weight"):
        make_cfg(lambda_weight=1.5)
    with pytest.raises(ConfigError, match="tau"):
        make_cfg(tau=1.0)
    with pytest.raises(ConfigError, match="whole_body_attention"):
        sgsfa.build_model(load_config(None, ["model.name=sgsfa", "model.backbone=hrnet_w32"]), 3)


# ---- learning, paper configuration, checkpoints ----------------------------------------------------


def test_thirty_steps_on_a_fixed_batch_reduce_every_term_and_reach_every_parameter():
    torch.manual_seed(0)
    cfg = make_cfg()
    model = sgsfa.build_model(cfg, 4).train()
    loss_fn = sgsfa.build_loss(cfg, 4, model)
    images = torch.randn(8, 3, 64, 32, generator=torch.Generator().manual_seed(5))
    batch = {"pid": PIDS8, "label": band_labels(8, 64, 32), "has_label": torch.ones(8, dtype=torch.bool)}
    # 3e-3: the classifiers start at std 0.001 and only (1 - lambda) = 0.2 of the loss reaches the SFA heads;
    # the dynamic loss samples regions, so a region classifier may wait a few steps for its gradient
    first, last, missing = fit_fixed_batch(model, loss_fn, images, batch, lr=3e-3, reach_steps=10, last_seed=1)
    assert not missing, f"parameters without gradient: {missing}"
    assert sorted(first) == ["dcls", "se", "sga_id", "triplet"]
    for k in first:
        assert last[k] <= 0.7 * first[k], (k, float(first[k]), float(last[k]))


def test_paper_configuration_forward_and_backward():
    """ResNet-50, last stride 1, 256x128: stage 1 64x32, stage 4 16x8; one training step at batch 2."""
    model, out, total, terms = paper_step(sgsfa, "configs/sgsfa/occluded_duke.yaml", labels=band_labels)
    assert out.maps["whole_body_logits"].shape == (2, 1, 64, 32)
    assert out.maps["part_logits"].shape == (2, 4, 16, 8)
    assert out.parts.shape == (2, 7, 256) and out.visibility.shape == (2, 7)
    assert torch.isfinite(total) and sorted(terms) == ["dcls", "se", "sga_id", "triplet"]
    assert not silent_parameters(model.whole, model.parts, model.backbone.layer1, model.backbone.layer4,
                                 model.sfa_embed)


def test_saved_and_reloaded_model_gives_the_same_features(tmp_path):
    names, differing = reload_round_trip(small_model(), make_cfg(), 4, tmp_path)
    assert names == ["parts", "sfa", "sga", "visibility"] and not differing, differing


@pytest.mark.parametrize("with_labels", [False, True])
def test_trainer_runs_sgsfa_end_to_end_and_its_checkpoint_reloads(tiny_market, tmp_path, with_labels):
    from occreid.engine.evaluate import evaluate_records
    from occreid.engine.trainer import Trainer

    out = tmp_path / "run"
    if with_labels:
        assert write_band_labels(tiny_market, tmp_path / "labels", 64) == 64  # every training image
    method = {"method.feature_dim": 16, "data.labels_root": str(tmp_path / "labels")}
    cfg = trainer_cfg("sgsfa", tiny_market, out, method, height=64, width=32)
    trainer = Trainer(cfg)
    assert sum(r.label_path is not None for r in trainer.train_records) == (64 if with_labels else 0)
    item = trainer.dataset[0]
    assert bool(item["has_label"]) == with_labels
    if with_labels:
        assert set(item["label"].unique().tolist()) <= {0, 1, 2, 3, 4} and item["label"].max() == 4  # sgsfa4
    res = trainer.fit()
    assert res.iterations == 2
    last = last_metrics(out)
    assert {"triplet", "se", "sga_id", "dcls"} <= set(last)
    assert (last["se"] > 0) == with_labels  # no label: the masked semantic loss is exactly 0
    model = reload_run(out, "sgsfa", cfg)
    if with_labels:
        return
    m = evaluate_records(model, cfg, trainer.splits.query, trainer.splits.gallery, device=torch.device("cpu"),
                         progress=False)
    assert m["distmat"].shape == (len(trainer.splits.query), len(trainer.splits.gallery))
    assert 0.0 <= m["rank1"] <= 1.0 and np.isfinite(m["distmat"]).all()
    # `occreid eval ... method.normalise_distance=true`: a test-time option reaches the distance recipe
    from occreid.config import apply_overrides, from_dict_config, to_dict
    from occreid.engine.evaluate import evaluate_checkpoint

    (plain,) = evaluate_checkpoint(str(out / "last.pt"), out_dir=str(tmp_path / "e0"), progress=False)
    (norm,) = evaluate_checkpoint(str(out / "last.pt"), out_dir=str(tmp_path / "e1"), progress=False,
                                  overrides=["method.normalise_distance=true"])
    assert plain["config_hash"] != norm["config_hash"]
    norm_cfg = from_dict_config(apply_overrides(to_dict(cfg), ["method.normalise_distance=true"]))
    direct = evaluate_records(model, norm_cfg, trainer.splits.query, trainer.splits.gallery,
                              device=torch.device("cpu"), progress=False)
    assert norm["mAP"] == pytest.approx(float(direct["mAP"]), abs=1e-6)


def test_all_visibility_patterns_reach_the_sampled_loss_without_error():
    loss = sgsfa.build_loss(make_cfg(), 3, None)
    logits5 = torch.randn(8, 5, 3)
    pats = torch.tensor(list(itertools.product([0.0, 0.5], repeat=3)))
    value = loss.dynamic(dcls_output(logits5, pats), torch.arange(8) % 3)
    assert torch.isfinite(value) and value > 0
