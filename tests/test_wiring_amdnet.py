"""AMD-Net wiring: SIM feeds only the part attention (and the release's guidance map), TFF reads the reduced
G and its output F is what every feature pools, the attention maps pool exactly their features, each BNNeck
reads its feature, each loss term reads its tensors, and the test distance reads the foreground feature and
the visible parts; shown with stand-in sub-modules and by perturbing one input at a time."""

from __future__ import annotations

import pytest
import torch

from occreid.errors import ConfigError
from occreid.methods import amdnet
from occreid.models.output import ModelOutput

from .method_checks import PIDS8, method_cfg, single_thread
from .wiring_checks_a import changed, record_inputs, stand_in, tagged

one_thread = pytest.fixture(autouse=True)(single_thread)
D = 16  # tff_channels of the small model


def make_cfg(**method):
    method.setdefault("tff_channels", D)
    method.setdefault("sim_channels", 4)
    return method_cfg("amdnet", **method)


def small_model(**method) -> amdnet.AMDNet:
    torch.manual_seed(0)
    return amdnet.build_model(make_cfg(**method), 4).eval()


X = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(3))


def test_sim_output_reaches_the_attention_and_the_guide_but_not_the_feature_branch():
    model = small_model(tff_gate_input="next_block", tff_guide=True)
    with torch.no_grad():
        g = model.backbone(X)
    s = tagged(tuple(g.shape), 5)
    seen_sim = stand_in(model.sim, lambda x: s)
    to_attention, to_guide, to_reduce = (record_inputs(m) for m in (model.attention, model.guide, model.reduce))
    with torch.no_grad():
        model(X)
    assert torch.allclose(seen_sim[0], g)
    assert torch.equal(to_attention[0], s) and torch.equal(to_guide[0], s)  # Eq. 1 reads F(G) = SIM(G)
    assert torch.allclose(to_reduce[0], g)  # Eq. 5 reads G itself, not SIM(G)


def test_without_sim_the_attention_reads_g():
    model = small_model(sim=False)
    to_attention = record_inputs(model.attention)
    with torch.no_grad():
        model(X)
        assert model.sim is None and torch.allclose(to_attention[0], model.backbone(X))


def test_tff_reads_the_reduced_g_and_every_pooled_feature_reads_tff_output():
    """Stand-in TFF returns a tagged F: f_g = GAP(F), f_t / f_i = Eq. 6 pooling of F by p_t / p_i."""
    model = small_model()
    f = tagged((2, D, 4, 2), 7)
    seen = stand_in(model.tff, lambda x, *a: (f, torch.zeros(2, 3, 4, 2)))
    to_reduce = record_inputs(model.reduce)
    with torch.no_grad():
        out = model(X)
        assert torch.allclose(seen[0], model.reduce(to_reduce[0]))
    fg, parts = out.maps["foreground"], out.maps["parts"]
    assert torch.allclose(out.extras["global_raw"], f.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(out.extras["foreground_raw"], (f * fg).sum(dim=(2, 3)) / 8, atol=1e-6)
    assert torch.allclose(fg, parts.amax(dim=1, keepdim=True))
    for k in range(5):
        assert torch.allclose(out.parts[:, k], (f * parts[:, k : k + 1]).sum(dim=(2, 3)) / 8, atol=1e-6)
    assert torch.equal(out.extras["concat_raw"], out.parts.flatten(1))


def attention_outputs(model, probs):
    """Stand-in part attention returning the given probabilities: the outputs that depend on them."""
    stand_in(model.attention, lambda x: (probs.log(), probs))
    with torch.no_grad():
        out = model(X)
    named = {f"part{k}": out.parts[:, k] for k in range(5)}
    named.update(foreground=out.extras["foreground_raw"], visibility=out.visibility,
                 global_=out.extras["global_raw"], part_logits=out.maps["part_logits"])
    return named


def test_each_part_map_pools_only_its_part_and_the_background_channel_only_the_foreground_max():
    model = small_model()
    probs = torch.softmax(tagged((2, 6, 4, 2), 11), dim=1)
    base = attention_outputs(model, probs)
    for ch in range(6):
        moved = probs.clone()
        moved[:, ch] *= 1.5
        got = changed(base, attention_outputs(model, moved))
        if ch == 0:  # background: no part, no foreground, only the logits the loss reads
            assert got == {"part_logits"}, got
        else:
            assert got == {f"part{ch - 1}", "foreground", "visibility", "part_logits"}, (ch, got)


def test_each_neck_reads_its_feature_and_names_its_outputs():
    model = small_model()
    inputs = {n: record_inputs(getattr(model, f"{n}_neck")) for n in ("foreground", "concat", "global")}
    tags = {n: (tagged((2, 3), i), tagged((2, 4), 10 + i)) for i, n in enumerate(("foreground", "concat", "global"))}
    for n, (emb, logit) in tags.items():
        getattr(model, f"{n}_neck").register_forward_hook(lambda m, a, o, t=(emb, logit): t)
    with torch.no_grad():
        out = model(X)
    for n in ("foreground", "concat", "global"):
        assert torch.equal(inputs[n][0], out.extras[f"{n}_raw"]), n
        assert torch.equal(out.embeddings[n], tags[n][0]) and torch.equal(out.logits[n], tags[n][1]), n


def loss_output(seed: int = 0) -> ModelOutput:
    g = torch.Generator().manual_seed(seed)
    logits = {k: torch.randn(8, 4, generator=g) for k in ("foreground", "concat", "global")}
    return ModelOutput(parts=torch.randn(8, 5, 3, generator=g), logits=logits,
                       maps={"part_logits": torch.randn(8, 6, 4, 2, generator=g)},
                       extras={"part_id_logits": torch.randn(8, 5, 4, generator=g)})


def labelled_batch():
    label = torch.randint(0, 6, (8, 64, 32), generator=torch.Generator().manual_seed(2))
    return {"pid": PIDS8, "label": label, "has_label": torch.ones(8, dtype=torch.bool)}


def perturbed(out: ModelOutput, where: str, key: str | None) -> ModelOutput:
    new = ModelOutput(parts=out.parts, logits=dict(out.logits), maps=dict(out.maps), extras=dict(out.extras))
    if key is None:
        new.parts = out.parts + tagged(tuple(out.parts.shape), 9)
    else:
        getattr(new, where)[key] = getattr(out, where)[key] + tagged(tuple(getattr(out, where)[key].shape), 9)
    return new


@pytest.mark.parametrize(("part_loss", "ids"), [("part_soft", ["foreground", "concat", "global"]),
                                                ("hard_triplet", ["foreground"]), ("id", ["concat", "global"])])
def test_each_loss_term_reads_only_its_tensors(part_loss, ids):
    loss = amdnet.build_loss(make_cfg(part_loss=part_loss, id_embeddings=str(ids).replace("'", "")), 4, None)
    out, batch = loss_output(), labelled_batch()
    _, base = loss(out, batch)
    part_term = {"part_soft": "part_triplet", "hard_triplet": "part_hard_triplet", "id": "part_id"}[part_loss]
    assert sorted(base) == sorted(["id", part_term, "part_attention"])
    for n in ("foreground", "concat", "global"):
        assert changed(base, loss(perturbed(out, "logits", n), batch)[1]) == ({"id"} if n in ids else set()), n
    assert changed(base, loss(perturbed(out, "parts", None), batch)[1]) == ({part_term} - {"part_id"})
    assert changed(base, loss(perturbed(out, "extras", "part_id_logits"), batch)[1]) == (
        {"part_id"} if part_loss == "id" else set())
    assert changed(base, loss(perturbed(out, "maps", "part_logits"), batch)[1]) == {"part_attention"}


def test_part_soft_distance_weights_the_first_part_as_the_head():
    a = torch.zeros(1, 5, 2)
    for k in range(5):
        b = torch.zeros(1, 5, 2)
        b[0, k, 0] = 1.0
        d = amdnet.part_soft_distance(a, b, head_weight=0.5).item()
        assert d == pytest.approx((1.5 if k == 0 else 1.0) / 5.5, abs=1e-5), k


def test_distance_reads_the_foreground_feature_and_only_the_parts_visible_in_both():
    cfg = make_cfg()
    q = {"foreground": tagged((2, 3), 1), "global": tagged((2, 3), 2), "concat": tagged((2, 15), 3),
         "parts": tagged((2, 5, 3), 4), "visibility": torch.tensor([[0.9, 0.9, 0.1, 0.9, 0.9]] * 2)}
    g = {"foreground": tagged((3, 3), 5), "global": tagged((3, 3), 6), "concat": tagged((3, 15), 7),
         "parts": tagged((3, 5, 3), 8), "visibility": torch.tensor([[0.9, 0.1, 0.9, 0.9, 0.9]] * 3)}
    base = amdnet.distance(q, g, cfg)
    for key in ("foreground", "global", "concat"):
        d = amdnet.distance({**q, key: q[key] + tagged(q[key].shape, 9)}, g, cfg)
        assert (not torch.allclose(d, base)) == (key == "foreground"), key
    for k in range(5):  # part 1 is hidden in the gallery, part 2 in the query: they never count
        moved = q["parts"].clone()
        moved[:, k] += 1.0
        d = amdnet.distance({**q, "parts": moved}, g, cfg)
        assert (not torch.allclose(d, base)) == (k in (0, 3, 4)), k


# ---- Table 2 switches change what they name -----------------------------------------------------------


def test_without_tff_f_is_the_reduced_g_at_the_same_width():
    model = small_model(tff_blocks=0)
    assert model.tff is None and model.reduce is not None
    with torch.no_grad():
        out = model(X)
        f = model.reduce(model.backbone(X))
    assert out.parts.shape == (2, 5, D) and "tff_gates" not in out.maps
    assert torch.allclose(out.extras["global_raw"], f.mean(dim=(2, 3)), atol=1e-6)


def test_stripes_pool_horizontal_stripes_of_f_and_the_release_guide_is_refused_there():
    model = small_model(part_attention="stripes")
    x = torch.randn(2, 3, 96, 32)
    f = tagged((2, D, 6, 2), 7)
    stand_in(model.tff, lambda x, *a: (f, torch.zeros(2, 3, 6, 2)))
    with torch.no_grad():
        out = model(x)
    rows = [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]
    for k, rs in enumerate(rows):
        assert torch.allclose(out.parts[:, k], f[:, :, rs].mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(out.extras["foreground_raw"], f.mean(dim=(2, 3)), atol=1e-6)
    with pytest.raises(ConfigError, match=r"method.tff_guide.*method.part_attention=stripes"):
        small_model(part_attention="stripes", tff_guide=True)
