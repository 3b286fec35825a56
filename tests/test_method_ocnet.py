"""OCNet (paper 002): Converter Module, Center-Focus Module, RAM, Separation Loss (Eq. 1), the weighted
losses (Eq. 2-3) and the test distance (Eq. 4), each against explicit loops or hand-worked values;
learning, paper-configuration, checkpoint and engine runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from occreid.config import load_config
from occreid.errors import ConfigError
from occreid.methods import ocnet
from occreid.models.output import ModelOutput

from .method_checks import (
    PIDS8,
    feature_triplet_loop,
    fit_fixed_batch,
    mean_ce_ls,
    paper_step,
    reload_round_trip,
    trainer_cfg,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "ocnet"


def small_cfg(*extra: str, height: int = 64, width: int = 32):
    return load_config(
        None, ["model.name=ocnet", "model.backbone=resnet18", f"data.height={height}", f"data.width={width}",
               *extra],
    )


# ---- independent references ---------------------------------------------------------------------
def cos_loop(a: list[float], b: list[float]) -> float:
    na, nb = math.sqrt(sum(v * v for v in a)), math.sqrt(sum(v * v for v in b))
    return sum(u * v for u, v in zip(a, b)) / (na * nb)


# ---- Converter Module ---------------------------------------------------------------------------
def test_converter_hand_worked():
    cm = ocnet.ConverterModule(in_dim=4, out_dim=2, num_features=1, groups=2).eval()
    with torch.no_grad():
        # out 0 reads inputs 0, 1 (group 0); out 1 reads inputs 2, 3 (group 1)
        cm.conv.weight.copy_(torch.tensor([[[1.0], [2.0]], [[3.0], [-1.0]]]))
        cm.bn.eps = 0.0
        cm.bn.bias.fill_(-4.5)
    y = cm(torch.tensor([[[1.0, 2.0, 3.0, 5.0]]]))
    # group 0: 1*1 + 2*2 = 5 -> 5 - 4.5 = 0.5; group 1: 3*3 - 5 = 4 -> relu(-0.5) = 0
    assert y.shape == (1, 1, 2)
    assert torch.allclose(y, torch.tensor([[[0.5, 0.0]]]), atol=1e-6)


def test_converter_is_one_grouped_conv_per_feature():
    torch.manual_seed(0)
    k, c, d, g = 3, 8, 4, 2
    cm = ocnet.ConverterModule(c, d, k, g).eval()
    with torch.no_grad():
        cm.bn.running_mean.uniform_(-1, 1)
        cm.bn.running_var.uniform_(0.5, 2)
        cm.bn.weight.uniform_(0.5, 1.5)
        cm.bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, k, c)
    y = cm(x)
    w = cm.conv.weight[:, :, 0]  # [k*d, c/g]
    bn = cm.bn
    cg, dg = c // g, d // g
    for b in range(2):
        for f in range(k):
            for o in range(d):
                ch = f * d + o  # output channel of feature f
                grp = o // dg  # its group inside feature f
                z = sum(w[ch, i].item() * x[b, f, grp * cg + i].item() for i in range(cg))
                z = (z - bn.running_mean[ch].item()) / math.sqrt(bn.running_var[ch].item() + bn.eps)
                z = max(0.0, z * bn.weight[ch].item() + bn.bias[ch].item())
                assert y[b, f, o].item() == pytest.approx(z, abs=1e-5)


# ---- Center-Focus Module ------------------------------------------------------------------------
def test_cfm_hand_worked():
    fmap = torch.tensor([[0.0, 0.0], [1.0, 3.0], [2.0, 2.0], [0.0, 0.0]]).view(1, 1, 4, 2)
    vec, att = ocnet.CenterFocusModule(2, "spatial")(fmap)
    # window = rows 1-2 = [[1, 3], [2, 2]]; softmax weights e^v / (e + e^3 + 2 e^2); GAP = 8 / 8 = 1
    z = math.e + math.e**3 + 2 * math.e**2
    expected = 1.0 + (1 * math.e + 3 * math.e**3 + 2 * 2 * math.e**2) / z
    assert vec.item() == pytest.approx(expected, rel=1e-6)
    assert att.shape == (1, 1, 2, 2)
    assert att[0, 0, 0, 1].item() == pytest.approx(math.e**3 / z, rel=1e-6)


@pytest.mark.parametrize("attention", ["spatial", "per_channel"])
@pytest.mark.parametrize("h,w,size", [(16, 8, 2), (5, 4, 3)])
def test_cfm_matches_loop(attention, h, w, size):
    torch.manual_seed(1)
    fmap = torch.randn(2, 3, h, w)
    vec, _ = ocnet.CenterFocusModule(size, attention)(fmap)
    top, left = (h - size) // 2, (w - size) // 2
    if (h, w, size) == (16, 8, 2):
        assert (top, left) == (7, 3)  # the paper geometry: rows 7-8, columns 3-4 of the 16x8 map
    for b in range(2):
        pos = [(top + i, left + j) for i in range(size) for j in range(size)]
        for c in range(3):
            if attention == "spatial":
                logit = [sum(fmap[b, k, r, q].item() for k in range(3)) / 3 for r, q in pos]
            else:
                logit = [fmap[b, c, r, q].item() for r, q in pos]
            e = [math.exp(v) for v in logit]
            att = [v / sum(e) for v in e]
            gap = sum(fmap[b, c, r, q].item() for r in range(h) for q in range(w)) / (h * w)
            expected = gap + sum(a * fmap[b, c, r, q].item() for a, (r, q) in zip(att, pos))
            assert vec[b, c].item() == pytest.approx(expected, abs=1e-5)


def test_cfm_window_too_large_is_an_error():
    with pytest.raises(ValueError, match="center_size"):
        ocnet.CenterFocusModule(3)(torch.zeros(1, 2, 4, 2))


# ---- Relational Adaptive Module -----------------------------------------------------------------
def _set_ram(ram, w1, b1, w2, b2):
    with torch.no_grad():
        ram.fc1.weight.copy_(torch.tensor(w1))
        ram.fc1.bias.copy_(torch.tensor(b1))
        ram.fc2.weight.copy_(torch.tensor(w2))
        ram.fc2.bias.copy_(torch.tensor(b2))


def test_ram_hand_worked():
    ram = ocnet.RelationalAdaptiveModule(dim=1, hidden=1, mode="ram")
    _set_ram(ram, [[1.0, 1.0]], [0.0], [[1.0]], [0.0])  # g(a, b) = relu(a + b)
    out, wts = ram(torch.tensor([[[1.0], [2.0]]]))
    # r_1 = relu(1+1) + relu(1+2) = 5, r_2 = relu(2+1) + relu(2+2) = 7
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert wts.flatten().tolist() == pytest.approx([sig(5), sig(7)], rel=1e-6)
    assert out.flatten().tolist() == pytest.approx([1 * sig(5), 2 * sig(7)], rel=1e-6)
    rn = ocnet.RelationalAdaptiveModule(dim=1, hidden=1, mode="relation_network")
    _set_ram(rn, [[1.0, 1.0]], [0.0], [[1.0]], [0.0])
    out, wts = rn(torch.tensor([[[1.0], [2.0]]]))
    assert wts is None and out.flatten().tolist() == pytest.approx([5.0, 7.0])


@pytest.mark.parametrize("mode", ["ram", "relation_network"])
def test_ram_matches_pair_loop(mode):
    torch.manual_seed(2)
    b, k, d, hdim = 2, 4, 3, 5
    ram = ocnet.RelationalAdaptiveModule(d, hdim, mode)
    f = torch.randn(b, k, d)
    out, wts = ram(f)
    w1, b1 = ram.fc1.weight.tolist(), ram.fc1.bias.tolist()
    w2, b2 = ram.fc2.weight.tolist(), ram.fc2.bias.tolist()
    for n in range(b):
        for i in range(k):
            r = [0.0] * d
            for j in range(k):
                pair = f[n, i].tolist() + f[n, j].tolist()
                hid = [max(0.0, sum(w1[u][v] * pair[v] for v in range(2 * d)) + b1[u]) for u in range(hdim)]
                for o in range(d):
                    r[o] += sum(w2[o][u] * hid[u] for u in range(hdim)) + b2[o]
            for o in range(d):
                if mode == "ram":
                    wt = 1 / (1 + math.exp(-r[o]))
                    assert wts[n, i, o].item() == pytest.approx(wt, abs=1e-5)
                    assert out[n, i, o].item() == pytest.approx(f[n, i, o].item() * wt, abs=1e-5)
                else:
                    assert out[n, i, o].item() == pytest.approx(r[o], abs=1e-4)


# ---- Separation Loss (Eq. 1) --------------------------------------------------------------------
def test_separation_loss_hand_worked():
    f_g = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    parts = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [-1.0, -1.0]]])
    # sample 0: (1 + 1) + (1 + 0) = 3; sample 1: (1 + 1/sqrt 2) + (1 - 1) = 1 + 1/sqrt 2
    expected = (3.0 + 1.0 + 1.0 / math.sqrt(2.0)) / 2
    assert ocnet.separation_loss(f_g, parts).item() == pytest.approx(expected, rel=1e-6)


def test_separation_loss_matches_loop():
    torch.manual_seed(3)
    f_g, parts = torch.randn(5, 7), torch.randn(5, 3, 7)
    expected = sum(
        sum(1 + cos_loop(f_g[b].tolist(), parts[b, p].tolist()) for p in range(3)) for b in range(5)
    ) / 5
    assert ocnet.separation_loss(f_g, parts).item() == pytest.approx(expected, rel=1e-5)


# ---- Eq. 2-3: weighted ID + triplet + gamma SL --------------------------------------------------
def _loss_for(cfg):
    model = ocnet.build_model(cfg, 3)
    return ocnet.build_loss(cfg, 3, model)


def test_total_loss_hand_worked():
    cfg = small_cfg()
    loss = _loss_for(cfg)
    pids = torch.tensor([0, 0, 1, 1])
    # 1-D positions 1, 3 | 3.5, 5: anchors give relu(2-2.5+.3)=0, relu(2-.5+.3)=1.8, 1.3, 0 -> 0.775
    feats = torch.tensor([[1.0, 0.0], [3.0, 0.0], [3.5, 0.0], [5.0, 0.0]])
    names = ("final", "backbone", "global", "center")
    out = ModelOutput(
        logits={n: torch.zeros(4, 3) for n in names},  # uniform: CE-LS = ln 3 whatever the smoothing
        extras={**{n: feats for n in names},
                "part_features": torch.tensor([[1.0, 0.0], [0.0, 1.0]]).expand(4, 2, 2)},
    )
    total, terms = loss(out, {"pid": pids})
    # SL per sample: (1 + cos(x, x)) + (1 + cos(x, y)) = 2 + 1 = 3
    expected = (0.8 + 0.5 + 0.25 + 0.25) * (math.log(3) + 0.775) + 1.0 * 3.0
    assert total.item() == pytest.approx(expected, rel=1e-5)
    assert terms["sl"].item() == pytest.approx(3.0)
    assert terms["triplet_final"].item() == pytest.approx(0.775, rel=1e-5)


def test_total_loss_weights_each_branch_as_configured():
    torch.manual_seed(4)
    lam = {"final": 0.1, "backbone": 0.2, "global": 0.3, "center": 0.4}
    gamma, eps, margin = 2.5, 0.2, 0.5
    cfg = small_cfg(*(f"method.lambda_{k}={v}" for k, v in lam.items()), f"method.sl_gamma={gamma}",
                    f"method.ce_epsilon={eps}", f"method.triplet_margin={margin}")
    loss = _loss_for(cfg)
    pids = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = {n: torch.randn(6, 3) * (i + 1) for i, n in enumerate(lam)}
    extras = {n: torch.randn(6, 4) * (i + 1) for i, n in enumerate(lam)}
    extras["part_features"] = torch.randn(6, 2, 4)
    total, terms = loss(ModelOutput(logits=logits, extras=extras), {"pid": pids})
    expected = sum(
        w * (mean_ce_ls(logits[n], pids, eps) + feature_triplet_loop(extras[n], pids, margin)) for n, w in lam.items()
    )
    g, parts = extras["global"].tolist(), extras["part_features"].tolist()
    sl = sum(sum(1 + cos_loop(g[b], parts[b][p]) for p in range(2)) for b in range(6)) / 6
    assert total.item() == pytest.approx(expected + gamma * sl, rel=1e-5)
    for n in lam:
        assert terms[f"ce_{n}"].item() == pytest.approx(mean_ce_ls(logits[n], pids, eps), rel=1e-5)


def test_optional_centre_loss_adds_its_weighted_term():
    torch.manual_seed(9)
    cfg = small_cfg("method.center_weight=0.5")
    model = ocnet.build_model(cfg, 2)
    loss = ocnet.build_loss(cfg, 2, model)
    assert loss.build_optimizer() is not None
    out = model(torch.randn(4, 3, 64, 32))
    pids = [0, 0, 1, 1]
    total, terms = loss(out, {"pid": torch.tensor(pids)})
    f, c = out.extras["backbone"].tolist(), loss.center.centers.tolist()
    centre = sum(sum((u - v) ** 2 for u, v in zip(f[i], c[p])) for i, p in enumerate(pids)) / 4
    assert terms["center"].item() == pytest.approx(centre, rel=1e-4)
    weights = {"final": 0.8, "backbone": 0.5, "global": 0.25, "center": 0.25}
    branches = sum(
        weights[k.split("_", 1)[1]] * v.item() for k, v in terms.items() if k.startswith(("ce_", "triplet_"))
    )
    assert total.item() == pytest.approx(branches + terms["sl"].item() + 0.5 * centre, rel=1e-5)


# ---- Eq. 4 ---------------------------------------------------------------------------------------
def test_distance_hand_worked():
    cfg = small_cfg("method.alpha=0.5")
    qf = {"final": torch.tensor([[2.0, 0.0]]), "backbone": torch.tensor([[1.0, 0.0]])}
    gf = {"final": torch.tensor([[0.0, 3.0], [5.0, 0.0]]), "backbone": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    d = ocnet.distance(qf, gf, cfg)
    # normalised: final (1,0) vs (0,1) -> sqrt 2, vs (1,0) -> 0; backbone 0 and sqrt 2 (x 0.5)
    assert d.shape == (1, 2)
    assert d[0].tolist() == pytest.approx([math.sqrt(2), 0.5 * math.sqrt(2)], rel=1e-5)


@pytest.mark.parametrize("normalize", [True, False])
def test_distance_matches_loop(normalize):
    torch.manual_seed(5)
    cfg = small_cfg("method.alpha=1.5", f"method.test_normalize={str(normalize).lower()}")
    qf = {"final": torch.randn(3, 6), "backbone": torch.randn(3, 4)}
    gf = {"final": torch.randn(5, 6), "backbone": torch.randn(5, 4)}
    d = ocnet.distance(qf, gf, cfg)

    def vec(t):
        v = t.tolist()
        n = math.sqrt(sum(x * x for x in v)) if normalize else 1.0
        return [x / n for x in v]

    for i in range(3):
        for j in range(5):
            e = math.dist(vec(qf["final"][i]), vec(gf["final"][j]))
            e += 1.5 * math.dist(vec(qf["backbone"][i]), vec(gf["backbone"][j]))
            assert d[i, j].item() == pytest.approx(e, abs=1e-4)


# ---- the assembled model ------------------------------------------------------------------------
def test_forward_composes_the_modules():
    torch.manual_seed(6)
    cfg = small_cfg(height=128, width=64)  # resnet18, last stride 1 -> 8x4 map
    model = ocnet.build_model(cfg, 5).eval()
    x = torch.randn(2, 3, 128, 64)
    out = model(x)
    with torch.no_grad():
        fmap = model.backbone(x)
        gap = fmap.mean(dim=(2, 3))
        top, bottom = fmap[:, :, :4].mean(dim=(2, 3)), fmap[:, :, 4:].mean(dim=(2, 3))
        win = fmap[:, :, 3:5, 1:3].flatten(2)  # the central 2x2 of the 8x4 map
        att = torch.softmax(win.mean(dim=1), dim=1)
        center = gap + (win * att.unsqueeze(1)).sum(dim=2)
        feats = model.converter(torch.stack([gap, top, bottom, center], dim=1))
        r = model.fusion.relations(feats)
        final = (feats * torch.sigmoid(r)).flatten(1)
        bn = model.final_neck.bn
        final_bn = (final - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    assert torch.allclose(out.extras["features"], feats, atol=1e-5)
    assert torch.allclose(out.extras["final"], final, atol=1e-5)
    assert torch.allclose(out.embeddings["final"], final_bn, atol=1e-4)
    assert out.embeddings["final"].shape == (2, 4 * 512)
    assert out.parts.shape == (2, 4, 512) and out.visibility.shape == (2, 4)
    assert torch.allclose(out.visibility, torch.sigmoid(r).mean(dim=2), atol=1e-6)
    assert set(out.logits) == {"final", "backbone", "global", "center"}


def test_invalid_options_are_config_errors():
    with pytest.raises(ConfigError, match="method.fusion"):
        small_cfg("method.concat=false")
    with pytest.raises(ConfigError, match="method.sl_gamma"):
        small_cfg("method.concat=false", "method.fusion=none")
    with pytest.raises(ConfigError, match="cm_groups"):
        small_cfg("method.cm_dim=510", "method.cm_groups=4")
    with pytest.raises(ConfigError, match="center_size"):
        ocnet.build_model(small_cfg("method.center_size=3"), 4)  # 4x2 map at 64x32


# ---- ablation switches --------------------------------------------------------------------------
ABLATIONS = sorted((CONFIGS / "ablations").glob("*.yaml"))


def test_every_ablation_config_builds_and_trains_its_terms():
    assert len(ABLATIONS) == 18
    x = torch.randn(4, 3, 128, 128)  # resnet18 -> 8x8 map: room for W = 8 and 4 parts
    pids = torch.tensor([0, 0, 1, 1])
    for path in ABLATIONS:
        cfg = load_config(path, ["model.backbone=resnet18", "data.height=128", "data.width=128"])
        o = ocnet.Options(**cfg.method)
        model = ocnet.build_model(cfg, 2).eval()
        with torch.no_grad():
            out = model(x)
            _, terms = ocnet.build_loss(cfg, 2, model)(out, {"pid": pids})
        k = (1 + o.num_parts if o.concat else 0) + int(o.cfm)
        assert ("sl" in terms) == (o.sl_gamma > 0), path.name
        assert ("ce_center" in terms) == o.cfm, path.name
        assert ("ce_final" in terms) == o.concat, path.name
        assert ("final" in out.embeddings) == (o.concat or o.cfm), path.name
        if o.concat:
            assert out.embeddings["final"].shape[1] == k * o.cm_dim, path.name
        assert (out.visibility is not None) == (o.fusion == "ram"), path.name


# ---- learning, paper configuration, checkpoint, engine ------------------------------------------
def test_thirty_steps_reduce_every_term_and_reach_every_parameter():
    torch.manual_seed(7)
    cfg = small_cfg()
    model = ocnet.build_model(cfg, 4)
    loss = ocnet.build_loss(cfg, 4, model)
    x = torch.randn(8, 3, 64, 32)
    first, last, silent = fit_fixed_batch(model, loss, x, {"pid": PIDS8}, lr=1e-3)
    assert not silent, f"no gradient reaches {silent}"
    assert set(last) == set(first) and len(last) == 9
    floor = {"sl": 2.0}  # Eq. 1 on ReLU features: each 1 + cos >= 1, so 2 parts give SL >= 2
    for name in first:
        f = floor.get(name, 0.0)
        assert last[name] - f <= 0.7 * (first[name] - f), f"{name}: {first[name]:.4f} -> {last[name]:.4f}"


@pytest.mark.parametrize("backbone", ["resnet50", "resnet50_ibn_a"])
def test_paper_configuration_forward_backward(backbone):
    model, out, total, _ = paper_step(ocnet, CONFIGS / "occluded_duke.yaml", [f"model.backbone={backbone}"])
    cfg = load_config(CONFIGS / "occluded_duke.yaml", [f"model.backbone={backbone}"])
    assert (cfg.data.height, cfg.data.width, cfg.model.last_stride) == (256, 128, 1)
    assert out.maps["center_attention"].shape == (2, 1, 2, 2)  # W = 2 of the 16x8 map
    assert out.embeddings["final"].shape == (2, 2048) and out.embeddings["backbone"].shape == (2, 2048)
    assert torch.isfinite(total)
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.fusion.fc1.weight.grad.abs().sum() > 0


def test_saved_model_reloads_to_the_same_features(tmp_path):
    torch.manual_seed(8)
    cfg = small_cfg()
    names, differing = reload_round_trip(ocnet.build_model(cfg, 4), cfg, 4, tmp_path)
    assert names == ["backbone", "final", "parts", "visibility"] and not differing, differing


def test_trainer_runs_and_evaluates(tiny_market, tmp_path):
    from occreid.data.datasets import load_dataset
    from occreid.engine.evaluate import evaluate_records
    from occreid.engine.trainer import Trainer

    cfg = trainer_cfg("ocnet", tiny_market, tmp_path / "run", iters=3, height=64, width=32)
    res = Trainer(cfg).fit()
    assert res.iterations == 3 and (tmp_path / "run" / "last.pt").is_file()
    splits = load_dataset("market1501", tiny_market)
    cpu = torch.device("cpu")
    m = evaluate_records(res.model, cfg, splits.query, splits.gallery, device=cpu, progress=False)
    assert m["distmat"].shape == (len(splits.query), len(splits.gallery))
    assert m["num_valid_queries"] == 4 and 0.0 <= m["mAP"] <= 1.0
