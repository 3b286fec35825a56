"""PAN (paper 001): every equation against explicit loops / closed forms, the Table 2-4 and Fig. 2-3
switches, learning on a fixed batch, the paper configuration, checkpoints, distance and the trainer."""

from __future__ import annotations

import math

import pytest
import torch

from occreid.config import load_config
from occreid.errors import ConfigError
from occreid.methods import pan
from occreid.models.output import ModelOutput

from .method_checks import (
    PIDS8,
    bn_eval,
    feature_triplet_loop,
    fit_fixed_batch,
    last_metrics,
    mean_ce_ls,
    method_cfg,
    paper_step,
    randomise_bn,
    reload_round_trip,
    reload_run,
    silent_parameters,
    trainer_cfg,
)


def make_cfg(**method):
    """A small PAN config: ResNet-18 (last stride 1) at 64x32 with the given method options."""
    return method_cfg("pan", **method)


def small_model(num_classes: int = 4, **method) -> pan.PAN:
    torch.manual_seed(0)
    method.setdefault("parts", 3)
    return pan.build_model(make_cfg(**method), num_classes)


# ---- Eq. 1: masks from a 1x1 convolution, no softmax ----------------------------------------------


def test_eq1_masks_are_a_1x1_convolution_of_conv5_without_softmax():
    model = small_model().eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        src = model.stage_maps(x)["conv50"]
        masks = model(x).maps["masks"]
    w = model.mask_generator.weight[:, :, 0, 0]
    b = model.mask_generator.bias
    expected = torch.zeros(2, 3, *src.shape[2:])
    for n in range(2):
        for k in range(3):
            for i in range(src.shape[2]):
                for j in range(src.shape[3]):
                    expected[n, k, i, j] = sum(w[k, c] * src[n, c, i, j] for c in range(src.shape[1])) + b[k]
    assert torch.allclose(masks, expected, atol=1e-4)
    assert masks.min() < 0, "raw masks must keep negative values (no softmax, no ReLU)"


# ---- Eq. 2-3: weighted pooling divided by sum |m| -------------------------------------------------


def hand_maps(model: pan.PAN, conv50: torch.Tensor, conv51: torch.Tensor):
    """Replace the backbone by fixed maps, so Eq. 2-3 can be checked on hand-written numbers."""
    fixed = {"conv40": conv50, "conv50": conv50, "conv51": conv51}
    model.stage_maps = lambda x: fixed  # type: ignore[method-assign]


def test_eq3_hand_worked_pooling_divides_by_absolute_mask_mass():
    model = small_model(parts=2).eval()
    c = model.backbone.out_channels
    conv50 = torch.zeros(1, c, 1, 2)
    conv50[0, 0] = torch.tensor([[1.0, -3.0]])  # becomes mask 0 through the weights below
    conv51 = torch.zeros(1, c, 1, 2)
    conv51[0, 0] = torch.tensor([[2.0, 4.0]])
    with torch.no_grad():
        model.mask_generator.weight.zero_()
        model.mask_generator.bias.zero_()
        model.mask_generator.weight[0, 0] = 1.0
        model.mask_generator.weight[1, 0] = -0.5  # mask 1 = [-0.5, 1.5]
    hand_maps(model, conv50, conv51)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 32))
    pooled = out.extras["pooled_locals"]
    # mask 0: (2 * 1 + 4 * -3) / (|1| + |-3|) = -10 / 4 = -2.5
    assert pooled[0, 0, 0].item() == pytest.approx(-2.5)
    # mask 1: (2 * -0.5 + 4 * 1.5) / (0.5 + 1.5) = 5 / 2 = 2.5
    assert pooled[0, 1, 0].item() == pytest.approx(2.5)
    assert torch.all(pooled[0, :, 1:] == 0)
    # global branch: max over positions of conv50 (GMP): channel 0 -> max(1, -3) = 1
    assert out.extras["pooled_global"][0, 0].item() == pytest.approx(1.0)


def test_table4_softmax_row_hand_worked():
    """With a softmax over the masks at each position: m0 = sigma(1, 0), sigma(-3, 0) at the two positions."""
    model = small_model(parts=2, mask_activation="softmax_parts", pool_norm="mass").eval()
    c = model.backbone.out_channels
    conv50 = torch.zeros(1, c, 1, 2)
    conv50[0, 0] = torch.tensor([[1.0, -3.0]])
    conv51 = torch.zeros(1, c, 1, 2)
    conv51[0, 0] = torch.tensor([[2.0, 4.0]])
    with torch.no_grad():
        model.mask_generator.weight.zero_()
        model.mask_generator.bias.zero_()
        model.mask_generator.weight[0, 0] = 1.0
    hand_maps(model, conv50, conv51)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 32))
    a = math.exp(1) / (math.exp(1) + 1)  # 0.7311
    b = math.exp(-3) / (math.exp(-3) + 1)  # 0.0474
    assert out.extras["pooled_locals"][0, 0, 0].item() == pytest.approx((2 * a + 4 * b) / (a + b), rel=1e-5)
    expected_1 = (2 * (1 - a) + 4 * (1 - b)) / (2 - a - b)
    assert out.extras["pooled_locals"][0, 1, 0].item() == pytest.approx(expected_1)
    assert torch.allclose(out.maps["masks"].sum(1), torch.ones(1, 1, 2))


def test_eq2_3_pooling_matches_an_explicit_loop_on_a_forward_pass():
    model = small_model().eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        f2 = model.stage_maps(x)["conv51"]
        out = model(x)
    m = out.maps["masks"]
    expected = torch.zeros(2, 3, f2.shape[1])
    for n in range(2):
        for i in range(3):
            num = torch.zeros(f2.shape[1])
            den = 0.0
            for r in range(f2.shape[2]):
                for s in range(f2.shape[3]):
                    num += f2[n, :, r, s] * m[n, i, r, s]  # Eq. 2: F_l,i = F_g^2 (x) m_i
                    den += abs(m[n, i, r, s].item())
            expected[n, i] = num / den  # Eq. 3
    assert torch.allclose(out.extras["pooled_locals"], expected, atol=1e-4, rtol=1e-4)


def test_softmax_space_normalises_each_mask_over_positions():
    model = small_model(mask_activation="softmax_space").eval()
    with torch.no_grad():
        m = model(torch.randn(2, 3, 64, 32)).maps["masks"]
    assert torch.allclose(m.sum(dim=(2, 3)), torch.ones(2, 3), atol=1e-5)


# ---- global branch, shared FC, concatenation ------------------------------------------------------


def test_global_max_pool_fc_and_shared_local_fc_form_the_concatenated_embedding():
    model = small_model()
    randomise_bn(model)
    model.eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        f3 = model.stage_maps(x)["conv50"]
        out = model(x)
    gmp = torch.stack([torch.stack([f3[n, c].max() for c in range(f3.shape[1])]) for n in range(2)])
    assert torch.allclose(out.extras["pooled_global"], gmp)
    g = bn_eval(gmp @ model.global_fc.fc.weight.t(), model.global_fc.bn)
    assert torch.allclose(out.embeddings["global"], g, atol=1e-4)
    w, bn = model.local_fc.fc.weight, model.local_fc.bn
    pooled = out.extras["pooled_locals"]
    for i in range(3):  # the same weights for every part (shared FC)
        assert torch.allclose(out.parts[:, i], bn_eval(pooled[:, i] @ w.t(), bn), atol=1e-4)
    expected_concat = torch.cat([g] + [out.parts[:, i] for i in range(3)], dim=1)
    assert out.embeddings["concat"].shape == (2, 512 + 3 * 256)
    assert torch.allclose(out.embeddings["concat"], expected_concat, atol=1e-4)
    assert out.visibility is None


@pytest.mark.parametrize("local_bn", ["shared", "per_part"])
def test_table2_separate_fc_uses_one_weight_per_part(local_bn):
    shared = small_model(shared_local_fc=True)
    separate = small_model(shared_local_fc=False, local_bn=local_bn)
    n_shared = sum(p.numel() for p in shared.local_fc.parameters())
    n_sep = sum(p.numel() for p in separate.local_fc.parameters())
    c, d = shared.backbone.out_channels, 256
    assert n_shared == c * d + 2 * d  # weight + BN affine
    # Table 2 changes the FC only: the BN stays one BN of d channels unless local_bn=per_part
    assert n_sep == 3 * c * d + (2 * d if local_bn == "shared" else 3 * 2 * d)
    randomise_bn(separate)
    separate.eval()
    with torch.no_grad():
        out = separate(torch.randn(2, 3, 64, 32))
    pooled, lf = out.extras["pooled_locals"], separate.local_fc
    for i in range(3):
        y = pooled[:, i] @ lf.weight[i].t()
        sl = slice(i * d, (i + 1) * d) if local_bn == "per_part" else slice(0, d)
        expected = (y - lf.bn.running_mean[sl]) / torch.sqrt(lf.bn.running_var[sl] + lf.bn.eps)
        expected = expected * lf.bn.weight[sl] + lf.bn.bias[sl]
        assert torch.allclose(out.parts[:, i], expected, atol=1e-4)


def test_shared_fc_with_per_part_bn_keeps_one_weight_and_normalises_each_part_alone():
    """local_bn=per_part with the shared FC (issue #28, hypothesis 1): one weight for all parts, but each
    part's channels get their own batch statistics, so no batch-common vector survives in any part."""
    shared, per_part = small_model(), small_model(local_bn="per_part")
    c, d = shared.backbone.out_channels, 256
    assert per_part.local_fc.fc.weight.shape == (d, c)  # still one FC
    assert per_part.local_fc.bn.num_features == 3 * d and shared.local_fc.bn.num_features == d
    x = torch.randn(6, 3, 64, 32)
    for model, per_part_zero in ((per_part, True), (shared, False)):
        model.train()
        with torch.no_grad():
            out = model(x)
        pooled = out.extras["pooled_locals"]
        y = pooled @ model.local_fc.fc.weight.t()  # the shared FC, recomputed
        if per_part_zero:
            mean, var = y.mean(0, keepdim=True), y.var(0, unbiased=False, keepdim=True)  # per part
        else:
            mean, var = y.mean((0, 1), keepdim=True), y.var((0, 1), unbiased=False, keepdim=True)
        assert torch.allclose(out.parts, (y - mean) / torch.sqrt(var + 1e-5), atol=1e-3)
        part_means = out.parts.mean(0).abs().max().item()
        assert (part_means < 1e-4) == per_part_zero, part_means


# ---- Eq. 4: gamma ---------------------------------------------------------------------------------


def test_eq4_gamma_hand_worked_and_solved_for_local_dim():
    assert pan.Options().ratio == 7.0  # 14 * 256 / 512
    assert pan.Options(gamma=1.75).resolved_local_dim == 64  # 1.75 * 512 / 14
    assert pan.Options(gamma=28).resolved_local_dim == 1024
    assert pan.Options(parts=16).ratio == 8.0  # 16 * 256 / 512
    model = small_model(parts=14, gamma=3.5)
    assert model.gamma == 3.5
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, 64, 32))
    assert out.parts.shape == (1, 14, 128)
    assert out.embeddings["concat"].shape == (1, 512 + 14 * 128)
    with pytest.raises(ConfigError, match="gamma"):
        pan.Options(gamma=1.0)  # 512 / 14 is not a whole number


# ---- Eq. 5: the loss -----------------------------------------------------------------------------


def test_eq5_soft_margin_triplet_hand_worked():
    # 1-D points 0, 1 (id 0) and 3, 5 (id 1): (d_ap, d_an) = (1, 3), (1, 2), (2, 2), (2, 4)
    hand = (math.log1p(math.exp(-2)) * 2 + math.log1p(math.exp(-1)) + math.log(2)) / 4
    assert hand == pytest.approx(0.315066, abs=1e-6)
    feats = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    pids = torch.tensor([0, 0, 1, 1])
    logits = torch.zeros(4, 2)
    out = ModelOutput(embeddings={"concat": feats, "global": feats},
                      logits={"global": logits, "local": logits})
    loss = pan.build_loss(make_cfg(), 2, None)
    total, terms = loss(out, {"pid": pids})
    assert terms["triplet"].item() == pytest.approx(hand, abs=1e-6)
    # zero logits: CE-LS = log 2 whatever the smoothing; total = 0.5 (log 2 + log 2) + triplet
    assert terms["ce_global"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert total.item() == pytest.approx(math.log(2) + hand, abs=1e-6)


def test_eq5_total_matches_closed_form_on_random_outputs():
    g = torch.Generator().manual_seed(3)
    pids = torch.tensor([0, 0, 1, 1, 2, 2])
    lg, ll = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    cat, glob = torch.randn(6, 7, generator=g), torch.randn(6, 4, generator=g)
    out = ModelOutput(embeddings={"concat": cat, "global": glob}, logits={"global": lg, "local": ll})
    p = pids.tolist()
    for margin, feature in ((None, "concat"), (0.3, "global")):
        loss = pan.build_loss(make_cfg(triplet_margin=margin, triplet_feature=feature), 5, None)
        total, terms = loss(out, {"pid": pids})
        f = (cat if feature == "concat" else glob).tolist()
        e_g, e_l = mean_ce_ls(lg, p, 0.1), mean_ce_ls(ll, p, 0.1)
        e_t = feature_triplet_loop(f, p, margin)
        assert terms["ce_global"].item() == pytest.approx(e_g, rel=1e-5)
        assert terms["ce_local"].item() == pytest.approx(e_l, rel=1e-5)
        assert terms["triplet"].item() == pytest.approx(e_t, rel=1e-5)
        assert total.item() == pytest.approx(0.5 * (e_g + e_l) + e_t, rel=1e-5)


def test_per_part_local_classifiers_average_their_cross_entropies():
    model = small_model(num_classes=5, local_classifier="per_part")
    model.train()
    pids = torch.tensor([0, 1, 2, 3])
    out = model(torch.randn(4, 3, 64, 32))
    assert sorted(out.logits) == ["global", "local0", "local1", "local2"]
    for i in range(3):  # part i's logits = part i's classifier on part i's embedding
        expected = out.parts[:, i] @ model.local_classifier.weight[i].t()
        assert torch.allclose(out.logits[f"local{i}"], expected, atol=1e-5)
    _, terms = pan.build_loss(make_cfg(local_classifier="per_part"), 5, model)(out, {"pid": pids})
    per_part = [mean_ce_ls(out.logits[f"local{i}"], pids, 0.1) for i in range(3)]
    assert terms["ce_local"].item() == pytest.approx(sum(per_part) / 3, rel=1e-5)


# ---- Table 3: mask source and local source --------------------------------------------------------

TABLE3 = [("conv40", "conv50"), ("conv40", "conv51"), ("conv41", "conv50"),
          ("conv41", "conv51"), ("conv50", "conv50"), ("conv50", "conv51")]


@pytest.mark.parametrize(("mask_source", "local_source"), TABLE3)
def test_table3_rows_take_masks_and_locals_from_the_named_tensors(mask_source, local_source):
    model = small_model(mask_source=mask_source, local_source=local_source).eval()
    bb = model.backbone
    assert (model.buffer_conv41 is not None) == (mask_source == "conv41")
    assert (model.buffer_conv51 is not None) == (local_source == "conv51")
    for buffer, stage in ((model.buffer_conv41, bb.layer3), (model.buffer_conv51, bb.layer4)):
        if buffer is not None:  # a deep copy: same weights, separate tensors
            for (ka, a), (kb, b) in zip(buffer.state_dict().items(), stage.state_dict().items()):
                assert ka == kb and torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        maps = model.stage_maps(x)
        out = model(x)
        # the stage outputs, recomputed from the backbone's own modules
        h = bb.maxpool(bb.relu(bb.bn1(bb.conv1(x))))
        h2 = bb.layer2(bb.layer1(h))
        conv40 = bb.layer3(h2)
        ref = {"conv40": conv40, "conv50": bb.layer4(conv40)}
        if model.buffer_conv41 is not None:
            ref["conv41"] = model.buffer_conv41(h2)
        if model.buffer_conv51 is not None:
            ref["conv51"] = model.buffer_conv51(ref.get("conv41", conv40))
    assert sorted(maps) == sorted(ref)
    for k in ref:
        assert torch.allclose(maps[k], ref[k], atol=1e-5)
    src = ref[mask_source]
    assert model.mask_generator.in_channels == src.shape[1]
    expected_masks = torch.einsum("kc,bchw->bkhw", model.mask_generator.weight[:, :, 0, 0], src)
    expected_masks = expected_masks + model.mask_generator.bias.view(1, -1, 1, 1)
    assert torch.allclose(out.maps["masks"], expected_masks, atol=1e-4)
    f2, m = ref[local_source], out.maps["masks"]
    num = (f2.unsqueeze(1) * m.unsqueeze(2)).sum(dim=(3, 4))
    expected = num / m.abs().sum(dim=(2, 3)).unsqueeze(2)
    assert torch.allclose(out.extras["pooled_locals"], expected, atol=1e-4, rtol=1e-4)


def test_pretrained_weights_reach_the_buffer_layer(tmp_path):
    source = small_model()
    state = {k: (torch.randn_like(v) if v.is_floating_point() else v)
             for k, v in source.backbone.state_dict().items()}
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    cfg = load_config(None, ["model.name=pan", "model.backbone=resnet18", f"model.pretrained_path={path}"])
    model = pan.build_model(cfg, 4)
    model.load_pretrained(cfg.model.pretrained_path)  # what the trainer calls when the path is set
    assert torch.equal(model.backbone.layer4[0].conv1.weight, state["layer4.0.conv1.weight"])
    assert torch.equal(model.buffer_conv51[0].conv1.weight, state["layer4.0.conv1.weight"])
    assert torch.equal(model.buffer_conv51[1].bn2.running_var, state["layer4.1.bn2.running_var"])


def test_osnet_backbone_copies_its_last_stage():
    torch.manual_seed(0)
    cfg = load_config(None, ["model.name=pan", "model.backbone=osnet_x0_25", "method.parts=4"])
    model = pan.build_model(cfg, 3)
    assert type(model.buffer_conv51) is type(model.backbone.conv5)
    model.train()
    out = model(torch.randn(2, 3, 64, 32))
    assert out.parts.shape == (2, 4, 256) and out.embeddings["concat"].shape == (2, 512 + 4 * 256)
    with pytest.raises(ConfigError, match="pan"):
        pan.build_model(load_config(None, ["model.name=pan", "model.backbone=hrnet_w32"]), 3)


# ---- learning, paper configuration, checkpoints ----------------------------------------------------


def test_thirty_steps_on_a_fixed_batch_reduce_every_term_and_reach_every_parameter():
    torch.manual_seed(0)
    cfg = make_cfg(parts=3)
    model = pan.build_model(cfg, 4).train()
    loss_fn = pan.build_loss(cfg, 4, model)
    images = torch.randn(8, 3, 48, 24, generator=torch.Generator().manual_seed(5))  # 4 ids x 2; 3x2 maps
    first, last, missing = fit_fixed_batch(model, loss_fn, images, {"pid": PIDS8}, lr=3.5e-4)
    assert not missing, f"parameters without gradient: {missing}"
    for k in ("ce_global", "ce_local", "triplet"):
        assert last[k] <= 0.7 * first[k], (k, float(first[k]), float(last[k]))


def test_paper_configuration_forward_and_backward():
    """ResNet-50, last stride 1, 256x128, p = 14, buffer layer: one training step at batch 2."""
    model, out, total, _ = paper_step(pan, "configs/pan/occluded_duke.yaml")
    assert out.maps["masks"].shape == (2, 14, 16, 8)
    assert out.embeddings["concat"].shape == (2, 512 + 14 * 256)
    assert torch.isfinite(total)
    assert not silent_parameters(model.buffer_conv51, model.mask_generator, model.backbone.layer4, model.local_fc)


def test_saved_and_reloaded_model_gives_the_same_features(tmp_path):
    names, differing = reload_round_trip(small_model(), make_cfg(parts=3), 4, tmp_path)
    assert names == ["concat", "global", "parts"] and not differing, differing


@pytest.mark.parametrize(("test_feature", "metric"), [("concat", "euclidean"), ("locals", "euclidean"),
                                                      ("global", "cosine")])
def test_distance_recipe_matches_an_explicit_loop(test_feature, metric):
    evaluation = pytest.importorskip("occreid.evaluation")
    if not hasattr(evaluation, "global_distance"):
        pytest.skip("occreid.evaluation.global_distance is not available yet")
    cfg = load_config(None, ["model.name=pan", f"method.test_feature={test_feature}",
                             f"eval.distance={metric}"])
    g = torch.Generator().manual_seed(7)
    qf = {"concat": torch.randn(3, 8, generator=g), "global": torch.randn(3, 4, generator=g),
          "parts": torch.randn(3, 2, 2, generator=g)}
    gf = {"concat": torch.randn(5, 8, generator=g), "global": torch.randn(5, 4, generator=g),
          "parts": torch.randn(5, 2, 2, generator=g)}
    d = pan.distance(qf, gf, cfg)
    pick = {"concat": lambda f: f["concat"], "global": lambda f: f["global"],
            "locals": lambda f: f["parts"].reshape(len(f["parts"]), -1)}[test_feature]
    q, gal = pick(qf), pick(gf)
    for i in range(3):
        for j in range(5):
            a = q[i] / math.sqrt(sum(v * v for v in q[i].tolist()))
            b = gal[j] / math.sqrt(sum(v * v for v in gal[j].tolist()))
            if metric == "euclidean":
                expected = math.sqrt(sum((u - v) ** 2 for u, v in zip(a.tolist(), b.tolist())))
            else:
                expected = 1 - sum(u * v for u, v in zip(a.tolist(), b.tolist()))
            assert float(d[i, j]) == pytest.approx(expected, abs=1e-5)


def test_trainer_runs_pan_end_to_end_and_its_checkpoint_reloads(tiny_market, tmp_path):
    from occreid.engine.trainer import Trainer

    out = tmp_path / "run"
    cfg = trainer_cfg("pan", tiny_market, out, {"method.parts": 4}, iters=3)
    res = Trainer(cfg).fit()
    assert res.iterations == 3
    assert {"ce_global", "ce_local", "triplet"} <= set(last_metrics(out))
    model = reload_run(out, "pan", cfg)
    with torch.no_grad():
        feats = model(torch.randn(2, 3, 32, 16)).features()
    assert feats["concat"].shape == (2, 512 + 4 * 256)
