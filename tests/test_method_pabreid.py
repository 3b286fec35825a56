"""PAB-ReID (paper 003): every equation against explicit loops / closed forms, the Table III and Fig. 6
switches, learning on a fixed batch, the paper configuration, checkpoints, distance and the trainer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from occreid.config import load_config
from occreid.errors import ConfigError
from occreid.methods import pabreid
from occreid.models.output import ModelOutput
from occreid.models.part_attention import Eq2PixelPredictor

from .method_checks import (
    PIDS8,
    batch_hard_loop,
    blocky_pixel_case,
    bn_eval,
    ce_ls,
    check_ablation_switches,
    conv1x1,
    feature_triplet_loop,
    fit_fixed_batch,
    gated_conv,
    last_metrics,
    matched_weights,
    method_cfg,
    paper_step,
    pixel_ce_loop,
    randomise_bn,
    reload_round_trip,
    reload_run,
    silent_parameters,
    single_thread,
    trainer_cfg,
    write_band_labels,
)

one_thread = pytest.fixture(autouse=True)(single_thread)


def make_cfg(**method):
    """A small PAB-ReID config: ResNet-18 (last stride 1) at 64x32 (a 4 x 2 map), 32 predictor channels."""
    method.setdefault("predictor_channels", 32)
    return method_cfg("pabreid", **method)


def small_model(num_classes: int = 4, **method) -> pabreid.PABReID:
    torch.manual_seed(0)
    return pabreid.build_model(make_cfg(**method), num_classes)


def band_labels(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """pabreid6-grouped maps: head on top, arms beside the torso, legs below, shifted per image."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, h, w, dtype=torch.long)
    for i in range(n):
        s = int(torch.randint(0, max(1, h // 8), (1,), generator=g))
        out[i, s : s + h // 6, w // 4 : 3 * w // 4] = 1  # head
        out[i, s + h // 6 : h // 2, : w // 4] = 2  # left arm
        out[i, s + h // 6 : h // 2, 3 * w // 4 :] = 3  # right arm
        out[i, s + h // 6 : h // 2, w // 4 : 3 * w // 4] = 4  # torso
        out[i, h // 2 :, w // 4 : w // 2] = 5  # left leg
        out[i, h // 2 :, w // 2 : 3 * w // 4] = 6  # right leg
    return out


def part_triplet_loop(parts: list, pids: list[int], margin: float | None) -> float:
    """Eq. 10-11 by loops: pair distance = mean over parts of Euclidean distances; batch-hard."""
    x = len(parts[0])
    return batch_hard_loop(lambda i, j: sum(math.dist(parts[i][p], parts[j][p]) for p in range(x)) / x, pids, margin)


# ---- Eq. 1-2: pixel-level attention predictor ------------------------------------------------------


def test_eq1_2_predictor_is_two_3x3_conv_bn_relu_then_a_softmax_over_seven_maps():
    model = small_model()
    layers = list(model.predictor.body)
    kinds = [type(m).__name__ for m in layers]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU"]
    assert all(m.kernel_size == (3, 3) for m in layers if isinstance(m, torch.nn.Conv2d))
    randomise_bn(model)
    model.eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        fmap = model.backbone(x)
        out = model(x)
        h = fmap
        for conv, bn in ((layers[0], layers[1]), (layers[3], layers[4])):
            h = torch.relu(bn_eval(torch.nn.functional.conv2d(h, conv.weight, padding=1), bn))
        logits = conv1x1(h, model.predictor.classifier)
    assert out.maps["part_logits"].shape == (2, 7, 4, 2)
    assert torch.allclose(out.maps["part_logits"], logits, atol=1e-4)
    probs = out.maps["part_probs"]
    for b in range(2):
        for r in range(4):
            for c in range(2):
                e = [math.exp(v) for v in logits[b, :, r, c].tolist()]
                for k in range(7):
                    assert probs[b, k, r, c].item() == pytest.approx(e[k] / sum(e), abs=1e-5)


def test_eq2_literal_predictor_hand_worked_relu_before_softmax():
    """One 3x3 conv to 7 channels on a 1 x 1 input (only the centre tap sees it), identity BN, ReLU:
    pre-activations (0, ln 2, ln 3, -1, 0, 0, 0) -> ReLU (0, ln 2, ln 3, 0, 0, 0, 0) -> exp (1, 2, 3, 1, 1,
    1, 1) / 10."""
    pred = Eq2PixelPredictor(1, 6, mid_channels=4, num_layers=1).eval()
    conv, bn = pred.body[0], pred.body[1]
    bn.eps = 0.0
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 0, 1, 1] = torch.tensor([0.0, math.log(2), math.log(3), -1.0, 0.0, 0.0, 0.0])
    logits, probs = pred(torch.ones(1, 1, 1, 1))
    assert logits.min() >= 0
    assert torch.allclose(probs[0, :, 0, 0], torch.tensor([0.1, 0.2, 0.3, 0.1, 0.1, 0.1, 0.1]), atol=1e-6)
    model = small_model(predictor_output="eq2")
    assert [type(m).__name__ for m in model.predictor.body] == ["Conv2d", "BatchNorm2d", "ReLU"] * 2
    assert model.predictor.body[3].out_channels == 7


# ---- Eq. 3-4: part attention loss ----------------------------------------------------------------


def test_eq3_4_part_loss_hand_worked_and_masked_by_has_label():
    # logits (0, 0, ln 4, 0, 0, 0, 0): p = (.1, .1, .4, .1, .1, .1, .1); target 2, eps 0.1 over 7 channels:
    # 0.9 (-ln .4) + 0.1 (-(ln .4 + 6 ln .1) / 7) = 1.035116
    hand = 0.9 * -math.log(0.4) + 0.1 * -(math.log(0.4) + 6 * math.log(0.1)) / 7
    assert hand == pytest.approx(1.035116, abs=1e-6)
    logits = torch.zeros(2, 7, 1, 1)
    logits[0, 2] = math.log(4)
    logits[1] = torch.randn(7, 1, 1) * 5  # an unlabelled image: must not count
    label = torch.full((2, 4, 2), 2)  # image-resolution labels, downsampled to the 1 x 1 map
    zeros = torch.zeros(2, 3)
    out = ModelOutput(parts=torch.zeros(2, 6, 3), logits={"global": zeros, "foreground": zeros},
                      maps={"part_logits": logits})
    batch = {"pid": torch.tensor([0, 1]), "label": label, "has_label": torch.tensor([True, False])}
    total, terms = pabreid.build_loss(make_cfg(), 3, None)(out, batch)
    assert terms["part"].item() == pytest.approx(hand, abs=1e-5)
    # zero logits and equal parts: L_ID = log 3, part triplet = margin 0.3 (all distances ~0)
    assert terms["id"].item() == pytest.approx(math.log(3), abs=1e-6)
    assert total.item() == pytest.approx(math.log(3) + terms["part_triplet"].item() + 0.35 * hand, abs=1e-5)
    batch["has_label"] = torch.tensor([False, False])
    _, terms = pabreid.build_loss(make_cfg(), 3, None)(out, batch)
    assert terms["part"].item() == 0.0


def test_eq3_part_loss_matches_a_pixel_loop_with_downsampled_labels():
    logits, coarse, label, valid = blocky_pixel_case(7)  # image 1 has no label
    out = ModelOutput(parts=torch.zeros(3, 6, 2), logits={"global": torch.zeros(3, 2), "foreground": torch.zeros(3, 2)},
                      maps={"part_logits": logits})
    _, terms = pabreid.build_loss(make_cfg(), 2, None)(out, {"pid": torch.tensor([0, 0, 1]), "label": label,
                                                             "has_label": valid})
    assert terms["part"].item() == pytest.approx(pixel_ce_loop(logits, coarse, 0.1, (0, 2)), rel=1e-5)


# ---- Eq. 5: visibility ---------------------------------------------------------------------------


def test_eq5_visibility_scores_are_the_max_of_each_part_map_and_mu_is_strict():
    model = small_model().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 32))
    probs = out.maps["part_probs"]
    for b in range(2):
        for k in range(6):
            best = max(probs[b, k + 1, r, c].item() for r in range(4) for c in range(2))
            assert out.visibility[b, k].item() == pytest.approx(best)
    scores = [0.5, 0.51, 0.3]
    for mu, expected in ((0.5, [1, 0, 1, 0]), (0.3, [1, 1, 1, 0]), (0.7, [1, 0, 0, 0])):
        assert matched_weights(scores, pabreid.Options(visibility_threshold=mu)) == expected  # foreground first
    assert matched_weights(scores, pabreid.Options(matching="continuous")) == pytest.approx([1.0, 0.5, 0.51, 0.3])


# ---- Eq. 6-9: fine-grained feature focuser ---------------------------------------------------------


def test_eq6_9_focuser_matches_an_explicit_computation():
    model = small_model()
    randomise_bn(model)
    model.eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        fmap = model.backbone(x)
        out = model(x)
        probs = out.maps["part_probs"]
        parts = probs[:, 1:]
        fg = parts.max(dim=1, keepdim=True).values  # Eq. 6 as a max
        maps = torch.cat([fg, parts], dim=1)
        k1 = model.k1
        kk = torch.relu(bn_eval(torch.einsum("dc,bchw->bdhw", k1.fc.weight, fmap), k1.bn))  # Eq. 7
        expected = torch.zeros(2, 7, kk.shape[1])
        for i in range(7):
            p = kk * maps[:, i : i + 1]  # Eq. 8
            q = gated_conv(p, model.gate)  # Eq. 9
            for b in range(2):
                expected[b, i] = q[b].sum(dim=(1, 2)) / maps[b, i].sum()
    assert torch.allclose(out.maps["foreground"], fg)
    assert torch.allclose(out.embeddings["foreground"], bn_eval(expected[:, 0], model.foreground_neck.bn), atol=1e-4)
    assert torch.allclose(out.parts, expected[:, 1:], atol=1e-4, rtol=1e-4)
    gap = torch.stack([fmap[b].mean(dim=(1, 2)) for b in range(2)])
    assert torch.allclose(out.extras["global_raw"], gap, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_focuser_pooling_before_the_gate_output_conv_keeps_the_features(training):
    """The focuser pools the gated map and then applies the gate's bias-free 1x1 output conv (about 3.7 of
    12.8 GMACs fewer at paper size); features equal the per-position conv then pooling within 1e-5."""
    model = small_model()
    randomise_bn(model)
    model.eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        fmap = model.backbone(x)
        maps = model.attention(fmap)["maps"]
        model.train(training)
        got, gate = model.focus(fmap, maps)
        p = model.k1(fmap).unsqueeze(1) * maps.unsqueeze(2)
        q, a = model.gate(p.flatten(0, 1))  # Eq. 9 at every position
        expected = pabreid.masked_sum_pool(q.view(2, 7, *q.shape[1:]), maps, "mass")
    assert got.shape == (2, 7, q.shape[1])
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    assert torch.equal(gate, a.view(2, 7, *a.shape[2:]))


def test_masked_sum_pool_hand_worked():
    q = torch.tensor([[2.0, 4.0]]).view(1, 1, 1, 1, 2)
    maps = torch.tensor([[0.25, 0.75]]).view(1, 1, 1, 2)
    assert pabreid.masked_sum_pool(q, maps, "mass").item() == pytest.approx(6.0)  # (2 + 4) / (0.25 + 0.75)
    assert pabreid.masked_sum_pool(q, maps, "hw").item() == pytest.approx(3.0)  # (2 + 4) / 2 positions


# ---- Eq. 10-11: part triplet; Eq. 12: ID loss; Eq. 13: total --------------------------------------


def test_eq10_11_part_triplet_hand_worked():
    # two 1-D parts; d(i, j) = (|a_i - a_j| + |b_i - b_j|) / 2:
    # rows 0: (., 2, 2, 3)  1: (2, ., 2, 3)  2: (2, 2, ., 1)  3: (3, 3, 1, .)
    # pids 0 0 1 1 -> (ap, an) = (2, 2), (2, 2), (1, 2), (1, 3) -> 0.3, 0.3, 0, 0 -> mean 0.15
    parts = torch.tensor([[[0.0], [0.0]], [[1.0], [3.0]], [[3.0], [1.0]], [[5.0], [1.0]]])
    d = pabreid.part_pair_distance(parts, parts)
    hand = torch.tensor([[0, 2, 2, 3], [2, 0, 2, 3], [2, 2, 0, 1], [3, 3, 1, 0]], dtype=torch.float32)
    assert torch.allclose(d, hand, atol=1e-5)
    out = ModelOutput(parts=parts, logits={"global": torch.zeros(4, 2), "foreground": torch.zeros(4, 2)})
    _, terms = pabreid.build_loss(make_cfg(), 2, None)(out, {"pid": torch.tensor([0, 0, 1, 1])})
    assert terms["part_triplet"].item() == pytest.approx(0.15, abs=1e-5)


def test_eq10_13_total_matches_loops_on_random_outputs():
    g = torch.Generator().manual_seed(3)
    pids = torch.tensor([0, 0, 1, 1, 2, 2])
    lg, lf = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    parts = torch.randn(6, 6, 4, generator=g)
    logits = torch.randn(6, 7, 2, 2, generator=g)
    label = torch.randint(0, 7, (6, 2, 2), generator=g)
    out = ModelOutput(parts=parts, logits={"global": lg, "foreground": lf}, maps={"part_logits": logits})
    batch = {"pid": pids, "label": label, "has_label": torch.ones(6, dtype=torch.bool)}
    p = pids.tolist()
    for margin, weight in ((0.3, 0.35), (None, 0.55)):
        loss = pabreid.build_loss(make_cfg(triplet_margin=margin, part_loss_weight=weight), 5, None)
        total, terms = loss(out, batch)
        e_id = sum(ce_ls(lg[i].tolist(), p[i], 0.1) + ce_ls(lf[i].tolist(), p[i], 0.1) for i in range(6)) / 12
        e_tri = part_triplet_loop(parts.tolist(), p, margin)
        e_part = pixel_ce_loop(logits, label, 0.1, range(6))
        assert terms["id"].item() == pytest.approx(e_id, rel=1e-5)
        assert terms["part_triplet"].item() == pytest.approx(e_tri, rel=1e-5)
        assert terms["part"].item() == pytest.approx(e_part, rel=1e-5)
        assert total.item() == pytest.approx(e_tri + e_id + weight * e_part, rel=1e-5)


# ---- Table III and Fig. 6 switches ---------------------------------------------------------------


def test_table3_row1_stripes_replace_the_part_attention_block():
    cfg = make_cfg(part_attention="stripes", stripes=3)
    assert pabreid.label_grouping(cfg) is None
    assert pabreid.label_grouping(make_cfg()) == "pabreid6"
    model = small_model(part_attention="stripes", stripes=3, focuser=False).eval()
    assert model.predictor is None
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        fmap = model.backbone(x)
        out = model(x)
    # a 4-row map in 3 stripes: row r belongs to stripe floor(3 r / 4) -> rows {0, 1}, {2}, {3}
    rows = [[0, 1], [2], [3]]
    for k, rs in enumerate(rows):
        expected = fmap[:, :, rs].mean(dim=(2, 3))
        assert torch.allclose(out.parts[:, k], expected, atol=1e-5)
    assert torch.all(out.visibility == 1) and torch.all(out.maps["foreground"] == 1)
    assert "part_logits" not in out.maps
    _, terms = pabreid.build_loss(cfg, 4, model)(model.train()(torch.randn(4, 3, 64, 32)),
                                                 {"pid": torch.tensor([0, 0, 1, 1])})
    assert sorted(terms) == ["id", "part_triplet"]
    with pytest.raises(ConfigError, match="stripes"):
        small_model(part_attention="stripes", stripes=6)(torch.randn(2, 3, 64, 32))


def test_table3_row2_without_focuser_the_maps_pool_the_backbone_map():
    model = small_model(focuser=False).eval()
    assert model.k1 is None and model.gate is None
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        fmap = model.backbone(x)
        out = model(x)
    m = out.maps["parts"]
    for b in range(2):
        for k in range(6):
            num = sum(fmap[b, :, r, c] * m[b, k, r, c] for r in range(4) for c in range(2))
            assert torch.allclose(out.parts[b, k], num / m[b, k].sum(), atol=1e-4, rtol=1e-4)


def test_table3_row3_without_pixel_predictor_a_single_1x1_conv_predicts_the_maps():
    model = small_model(predictor_layers=0).eval()
    assert len(model.predictor.body) == 0 and model.predictor.classifier.kernel_size == (1, 1)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        fmap = model.backbone(x)
        out = model(x)
    assert torch.allclose(out.maps["part_logits"], conv1x1(fmap, model.predictor.classifier), atol=1e-4)


def test_table3_row4_plain_triplet_on_the_global_feature():
    model = small_model(triplet="global").train()
    out = model(torch.randn(8, 3, 64, 32))
    batch = {"pid": PIDS8, "label": band_labels(8, 64, 32), "has_label": torch.ones(8, dtype=torch.bool)}
    _, terms = pabreid.build_loss(make_cfg(triplet="global"), 4, model)(out, batch)
    assert "part_triplet" not in terms
    expected = feature_triplet_loop(out.extras["global_raw"].detach(), PIDS8, 0.3)
    assert terms["triplet"].item() == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_table3_row4_normal_triplet_per_part_is_the_mean_of_one_triplet_per_part():
    """The Table III row 4 reading: a normal batch-hard triplet on each part alone, averaged over parts."""
    g = torch.Generator().manual_seed(11)
    parts = torch.randn(8, 6, 5, generator=g)
    out = ModelOutput(parts=parts, logits={"global": torch.zeros(8, 4), "foreground": torch.zeros(8, 4)})
    _, terms = pabreid.build_loss(make_cfg(triplet="per_part"), 4, None)(out, {"pid": PIDS8})
    expected = sum(feature_triplet_loop(parts[:, x], PIDS8, 0.3) for x in range(6)) / 6
    assert sorted(terms) == ["id", "triplet"]
    assert terms["triplet"].item() == pytest.approx(expected, rel=1e-5)


def test_fig5_loss_study_switches_drop_their_terms():
    out = ModelOutput(parts=torch.randn(8, 6, 5), logits={"global": torch.randn(8, 4), "foreground": torch.randn(8, 4)})
    total, terms = pabreid.build_loss(make_cfg(triplet="none"), 4, None)(out, {"pid": PIDS8})
    assert sorted(terms) == ["id"] and total.item() == pytest.approx(terms["id"].item())
    total, terms = pabreid.build_loss(make_cfg(id_embeddings="[]", triplet="per_part"), 4, None)(out, {"pid": PIDS8})
    assert sorted(terms) == ["triplet"] and total.item() == pytest.approx(terms["triplet"].item())
    with pytest.raises(ConfigError, match="id_embeddings"):
        make_cfg(id_embeddings="[]", triplet="none")
    with pytest.raises(ConfigError, match="id_embeddings"):
        make_cfg(id_embeddings="[global, global]")


def test_ablation_and_grid_configs_set_their_switches():
    root = Path("configs/pabreid")
    expected = {
        "table3_row1_no_part_attention_block": {"part_attention": "stripes"},
        "table3_row2_no_focuser": {"focuser": False},
        "table3_row3_no_pixel_predictor": {"predictor_layers": 0},
        "table3_row4_normal_triplet": {"triplet": "per_part"},
        "fig5_col1_id_only": {"triplet": "none"},
        "fig5_col2_triplet_only": {"id_embeddings": [], "triplet": "per_part"},
    }
    for mu in (0.3, 0.5, 0.7):
        for gamma in (0.15, 0.35, 0.55):
            expected[f"fig6_mu{mu}_gamma{gamma}"] = {"visibility_threshold": mu, "part_loss_weight": gamma}
    full = check_ablation_switches(root, expected)
    paper = load_config(root / "occluded_duke.yaml", [])
    assert (paper.model.backbone, paper.model.last_stride, paper.data.height, paper.data.width) == ("resnet50", 1,
                                                                                                    256, 128)
    assert (paper.data.ids_per_batch, paper.data.instances_per_id, paper.train.milestones) == (8, 4, [40, 70])
    assert (full["visibility_threshold"], full["part_loss_weight"], full["triplet_margin"]) == (0.5, 0.35, 0.3)
    for name, tests in (("occluded_reid", ["occluded_reid"]), ("partial_reid", ["partial_reid"])):
        cfg = load_config(root / f"{name}.yaml", [])
        assert cfg.data.dataset == "market1501" and cfg.data.test_datasets == tests
    proto = load_config("configs/protocols/cpu_occduke/pabreid.yaml", [])
    assert (proto.model.name, proto.model.backbone, proto.data.height, proto.data.ids_per_batch) == (
        "pabreid", "resnet18", 128, 16)


def test_bad_options_are_refused_with_the_key():
    with pytest.raises(ConfigError, match="test_embeddings"):
        make_cfg(test_embeddings="[parts, head]")
    with pytest.raises(ConfigError, match="visibility_threshold"):
        make_cfg(visibility_threshold=1.5)
    with pytest.raises(ConfigError, match="global"):
        small_model(focuser_channels=64, test_embeddings="[global, parts]")


# ---- learning, paper configuration, checkpoints ----------------------------------------------------


def test_thirty_steps_on_a_fixed_batch_reduce_every_term_and_reach_every_parameter():
    torch.manual_seed(0)
    cfg = make_cfg()
    model = pabreid.build_model(cfg, 4).train()
    loss_fn = pabreid.build_loss(cfg, 4, model)
    images = torch.randn(8, 3, 64, 32, generator=torch.Generator().manual_seed(5))
    batch = {"pid": PIDS8, "label": band_labels(8, 64, 32), "has_label": torch.ones(8, dtype=torch.bool)}
    first, last, missing = fit_fixed_batch(model, loss_fn, images, batch, lr=3.5e-4)
    assert not missing, f"parameters without gradient: {missing}"
    assert sorted(first) == ["id", "part", "part_triplet"]
    for k in first:
        assert last[k] <= 0.7 * first[k], (k, float(first[k]), float(last[k]))


def test_paper_configuration_forward_and_backward():
    """ResNet-50, last stride 1, 256x128, X = 6, focuser on 2048 channels: one training step at batch 2."""
    model, out, total, terms = paper_step(pabreid, "configs/pabreid/occluded_duke.yaml", labels=band_labels)
    assert out.maps["part_logits"].shape == (2, 7, 16, 8)
    assert out.parts.shape == (2, 6, 2048) and out.visibility.shape == (2, 6)
    assert torch.isfinite(total) and sorted(terms) == ["id", "part", "part_triplet"]
    assert not silent_parameters(model.predictor, model.k1, model.gate, model.backbone.layer4,
                                 model.foreground_neck.classifier)


def test_saved_and_reloaded_model_gives_the_same_features(tmp_path):
    names, differing = reload_round_trip(small_model(), make_cfg(), 4, tmp_path)
    assert names == ["foreground", "global", "parts", "visibility"] and not differing, differing


@pytest.mark.parametrize(("matching", "metric"), [("binary", "euclidean"), ("continuous", "euclidean"),
                                                  ("binary", "cosine")])
def test_distance_recipe_matches_an_explicit_loop(matching, metric):
    cfg = make_cfg(matching=matching)
    cfg.eval.distance = metric
    g = torch.Generator().manual_seed(7)

    def feats(n):
        vis = torch.rand(n, 3, generator=g)
        vis[0] = torch.tensor([0.2, 0.9, 0.4])
        return {"foreground": torch.randn(n, 4, generator=g), "global": torch.randn(n, 4, generator=g),
                "parts": torch.randn(n, 3, 4, generator=g), "visibility": vis}

    qf, gf = feats(3), feats(5)
    d = pabreid.distance(qf, gf, cfg)

    def unit(v):
        return [a / math.sqrt(sum(b * b for b in v)) for a in v]

    def dist(a, b):
        a, b = unit(a.tolist()), unit(b.tolist())
        return math.dist(a, b) if metric == "euclidean" else 1 - sum(x * y for x, y in zip(a, b))

    for i in range(3):
        for j in range(5):
            dists = [dist(qf["foreground"][i], gf["foreground"][j])]
            weights = [1.0]
            for k in range(3):
                vq, vg = float(qf["visibility"][i, k]), float(gf["visibility"][j, k])
                w = float(vq > 0.5 and vg > 0.5) if matching == "binary" else math.sqrt(vq * vg)
                dists.append(dist(qf["parts"][i, k], gf["parts"][j, k]))
                weights.append(w)
            expected = sum(w * x for w, x in zip(weights, dists)) / sum(weights)
            assert float(d[i, j]) == pytest.approx(expected, abs=1e-5)


def test_distance_hand_worked_only_mutually_visible_parts_count():
    # foreground (1, 0) vs (0, 1): sqrt 2, always counted; part 0 equal (0), visible in both; part 1
    # opposite (2), visibility 0.9 vs 0.4: matched only when mu < 0.4
    qf = {"foreground": torch.tensor([[1.0, 0.0]]), "parts": torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]),
          "visibility": torch.tensor([[0.8, 0.9]])}
    gf = {"foreground": torch.tensor([[0.0, 3.0]]), "parts": torch.tensor([[[2.0, 0.0], [-1.0, 0.0]]]),
          "visibility": torch.tensor([[0.7, 0.4]])}
    assert pabreid.distance(qf, gf, make_cfg()).item() == pytest.approx(math.sqrt(2) / 2, abs=1e-6)
    d = pabreid.distance(qf, gf, make_cfg(visibility_threshold=0.3)).item()
    assert d == pytest.approx((math.sqrt(2) + 2) / 3, abs=1e-6)


@pytest.mark.parametrize("with_labels", [False, True])
def test_trainer_runs_pabreid_end_to_end_and_its_checkpoint_reloads(tiny_market, tmp_path, with_labels):
    from occreid.engine.trainer import Trainer

    out = tmp_path / "run"
    if with_labels:
        assert write_band_labels(tiny_market, tmp_path / "labels", 64) == 64  # every training image
    cfg = trainer_cfg("pabreid", tiny_market, out, {"method.predictor_channels": 16,
                                                     "data.labels_root": str(tmp_path / "labels")})
    trainer = Trainer(cfg)
    labelled = sum(r.label_path is not None for r in trainer.train_records)
    assert labelled == (64 if with_labels else 0)
    item = trainer.dataset[0]
    assert bool(item["has_label"]) == with_labels
    if with_labels:
        assert 0 < item["label"].max() <= 6  # grouped to pabreid6 (atomic feet 7, 8 join the legs)
    res = trainer.fit()
    assert res.iterations == 2
    last = last_metrics(out)
    assert {"id", "part_triplet", "part"} <= set(last)
    assert (last["part"] > 0) == with_labels  # no label: the masked part loss is exactly 0
    model = reload_run(out, "pabreid", cfg)
    with torch.no_grad():
        feats = model(torch.randn(2, 3, 32, 16)).features()
    assert feats["parts"].shape == (2, 6, 512) and feats["visibility"].shape == (2, 6)
