"""PAN wiring: which tensor reaches the masks, the pooling, each FC, each classifier, each loss term and the
test distance, shown with stand-in stage maps / heads and by perturbing one input at a time; the buffer
layers' copies of the pretrained file, through `load_pretrained` and through the trainer."""

from __future__ import annotations

import pytest
import torch

from occreid.config import load_config
from occreid.methods import pan
from occreid.models.output import ModelOutput

from .method_checks import PIDS8, method_cfg, single_thread
from .wiring_checks_a import changed, record_inputs, stand_in, tagged

one_thread = pytest.fixture(autouse=True)(single_thread)
STAGES = ("conv40", "conv41", "conv50", "conv51")


def small_model(num_classes: int = 4, **method) -> pan.PAN:
    torch.manual_seed(0)
    method.setdefault("parts", 3)
    return pan.build_model(method_cfg("pan", **method), num_classes).eval()


def with_stage_maps(model: pan.PAN, maps: dict[str, torch.Tensor]) -> None:
    """Stand-in backbone: `stage_maps` returns these tagged tensors."""
    model.stage_maps = lambda x: maps  # type: ignore[method-assign]


def stage_maps(model: pan.PAN, seed: int = 0) -> dict[str, torch.Tensor]:
    """One distinct random map per Table 3 tensor, with the channel counts of the model's stages."""
    c4, c5 = model.backbone.stage_channels[-2:]
    return {k: tagged((2, c4 if k in ("conv40", "conv41") else c5, 4, 2), seed + i) for i, k in enumerate(STAGES)}


def outputs(model: pan.PAN, maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with_stage_maps(model, maps)
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 32))
    return {"masks": out.maps["masks"], "pooled_locals": out.extras["pooled_locals"],
            "pooled_global": out.extras["pooled_global"], "global": out.embeddings["global"],
            "parts": out.parts, "logit_global": out.logits["global"], "logit_local": out.logits["local"]}


@pytest.mark.parametrize(("mask_source", "local_source"), [
    ("conv40", "conv50"), ("conv40", "conv51"), ("conv41", "conv50"), ("conv41", "conv51"),
    ("conv50", "conv50"), ("conv50", "conv51")])
def test_table3_each_stage_map_reaches_exactly_its_consumers(mask_source, local_source):
    """Perturb one stage map: the masks move iff it is F_g^1, the pooled locals iff it is F_g^1 or F_g^2,
    the global branch iff it is Conv50 (F_g^3 is always Conv50)."""
    model = small_model(mask_source=mask_source, local_source=local_source)
    maps = stage_maps(model)
    base = outputs(model, maps)
    for k in STAGES:
        moved = changed(base, outputs(model, {**maps, k: maps[k] + tagged(maps[k].shape, 50)}))
        expected = set()
        if k == mask_source:
            expected |= {"masks", "pooled_locals", "parts", "logit_local"}
        if k == local_source:
            expected |= {"pooled_locals", "parts", "logit_local"}
        if k == "conv50":
            expected |= {"pooled_global", "global", "logit_global"}
        assert moved == expected, (k, moved, expected)


def test_heads_read_their_features_and_the_embeddings_are_built_from_them():
    """Stand-in FCs return tagged tensors: the classifiers, f_cat, `global` and `parts` carry exactly them."""
    model = small_model()
    maps = stage_maps(model)
    with_stage_maps(model, maps)
    g, loc = tagged((2, 512), 1), tagged((2, 3, 256), 2)
    seen_g = stand_in(model.global_fc, lambda x: g)
    seen_l = stand_in(model.local_fc, lambda x: loc)
    to_global = record_inputs(model.global_classifier)
    to_local = record_inputs(model.local_classifier)
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 32))
    assert torch.equal(seen_g[0], out.extras["pooled_global"]) and torch.equal(seen_l[0], out.extras["pooled_locals"])
    assert torch.equal(seen_g[0], maps["conv50"].amax(dim=(2, 3)))  # GMP of Conv50
    assert torch.equal(to_global[0], g) and torch.equal(to_local[0], loc.flatten(1))
    assert torch.equal(out.embeddings["global"], g) and torch.equal(out.parts, loc)
    assert torch.equal(out.embeddings["concat"], torch.cat([g, loc.flatten(1)], dim=1))
    with torch.no_grad():
        assert torch.equal(out.logits["global"], model.global_classifier(g))
        assert torch.equal(out.logits["local"], model.local_classifier(loc.flatten(1)))


def test_per_part_classifier_i_reads_part_i():
    model = small_model(local_classifier="per_part")
    with_stage_maps(model, stage_maps(model))
    loc = tagged((2, 3, 256), 2)
    stand_in(model.local_fc, lambda x: loc)
    with torch.no_grad():
        base = model(torch.zeros(2, 3, 64, 32)).logits
        moved = loc.clone()
        moved[:, 1] += 1.0
        stand_in(model.local_fc, lambda x: moved)
        after = model(torch.zeros(2, 3, 64, 32)).logits
    assert changed(base, after) == {"local1"}


def loss_output(seed: int = 0) -> ModelOutput:
    g = torch.Generator().manual_seed(seed)
    return ModelOutput(embeddings={"concat": torch.randn(8, 6, generator=g), "global": torch.randn(8, 3, generator=g)},
                       logits={"global": torch.randn(8, 4, generator=g), "local": torch.randn(8, 4, generator=g)})


def perturb(out: ModelOutput, where: str, key: str) -> ModelOutput:
    new = ModelOutput(embeddings=dict(out.embeddings), logits=dict(out.logits))
    getattr(new, where)[key] = getattr(out, where)[key] + 0.5 * tagged(getattr(out, where)[key].shape, 9)
    return new


@pytest.mark.parametrize("triplet_feature", [None, "concat", "global"])
def test_each_loss_term_reads_only_its_tensor(triplet_feature):
    """None: the default, which reads f_g (chosen on validation, issue #28); concat = f_cat."""
    cfg = method_cfg("pan", **({"triplet_feature": triplet_feature} if triplet_feature else {}))
    loss = pan.build_loss(cfg, 4, None)
    triplet_feature = triplet_feature or "global"
    out = loss_output()
    _, base = loss(out, {"pid": PIDS8})
    reads = {("logits", "global"): {"ce_global"}, ("logits", "local"): {"ce_local"},
             ("embeddings", "concat"): {"triplet"} if triplet_feature == "concat" else set(),
             ("embeddings", "global"): {"triplet"} if triplet_feature == "global" else set()}
    for (where, key), terms in reads.items():
        _, after = loss(perturb(out, where, key), {"pid": PIDS8})
        assert changed(base, after) == terms, (where, key)


@pytest.mark.parametrize("test_feature", ["concat", "global", "locals"])
def test_distance_reads_only_the_test_feature(test_feature):
    cfg = load_config(None, ["model.name=pan", f"method.test_feature={test_feature}"])
    feats = {"concat": tagged((3, 8), 1), "global": tagged((3, 4), 2), "parts": tagged((3, 2, 2), 3)}
    gal = {"concat": tagged((4, 8), 4), "global": tagged((4, 4), 5), "parts": tagged((4, 2, 2), 6)}
    base = pan.distance(feats, gal, cfg)
    read = {"concat": "concat", "global": "global", "locals": "parts"}[test_feature]
    for key in feats:
        d = pan.distance({**feats, key: feats[key] + tagged(feats[key].shape, 7)}, gal, cfg)
        assert (not torch.allclose(d, base)) == (key == read), key


# ---- Table 2: the FC sharing, and the BatchNorm as a separate switch ---------------------------------


@pytest.mark.parametrize(("shared_fc", "local_bn"),
                         [(True, "shared"), (True, "per_part"), (False, "shared"), (False, "per_part")])
def test_table2_fc_sharing_and_part_bn_each_change_one_thing(shared_fc, local_bn):
    """Identical pooled parts give identical local features iff the FC is shared; the BN's statistics are
    pooled over the parts (n_l channels) unless local_bn=per_part (p n_l channels)."""
    model = small_model(shared_local_fc=shared_fc, local_bn=local_bn).train()
    c = model.backbone.out_channels
    same = tagged((8, 1, c), 3).expand(8, 3, c)
    y = model.local_fc(same)
    assert torch.allclose(y[:, 0], y[:, 1], atol=1e-5) == shared_fc
    bn = model.local_fc.bn
    assert bn.num_features == (256 if local_bn == "shared" else 3 * 256)
    # train-mode BN: shared statistics give every part channel mean 0 over batch AND parts only
    per_part_means = y.mean(dim=0)  # [3, 256]
    assert torch.allclose(y.mean(dim=(0, 1)), torch.zeros(256), atol=1e-4)
    assert torch.allclose(per_part_means, torch.zeros(3, 256), atol=1e-4) == (local_bn == "per_part" or shared_fc)


def test_per_part_bn_with_the_shared_fc_keeps_one_weight_for_every_part():
    """local_bn=per_part with the shared FC: the BN has p n_l channels, the FC stays one [n_l, C] weight."""
    shared, per_part = small_model(), small_model(local_bn="per_part")
    assert per_part.local_fc.fc.weight.shape == shared.local_fc.fc.weight.shape
    assert sum(p.numel() for p in per_part.local_fc.parameters()) == \
        sum(p.numel() for p in shared.local_fc.parameters()) + 2 * 2 * 256  # p = 3: two more BN affines


# ---- the buffer layers start from the pretrained file ----------------------------------------------


def fake_weights(model: pan.PAN, path) -> dict:
    state = {k: (torch.randn_like(v) if v.is_floating_point() else v) for k, v in model.backbone.state_dict().items()}
    state = {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in state.items()}
    torch.save(state, path)
    return state


def test_conv41_and_conv51_buffers_are_resynced_from_the_loaded_file(tmp_path):
    model = small_model(mask_source="conv41", local_source="conv51")
    state = fake_weights(model, tmp_path / "w.pth")
    model.load_pretrained(tmp_path / "w.pth")
    for buffer, prefix in ((model.buffer_conv41, "layer3."), (model.buffer_conv51, "layer4.")):
        got = buffer.state_dict()
        assert all(torch.equal(v, state[prefix + k]) for k, v in got.items()), prefix
        assert buffer.state_dict().keys() == {k[len(prefix):] for k in state if k.startswith(prefix)}


def test_trainer_loads_the_pretrained_file_into_the_buffer_layers(tiny_market, tmp_path):
    from occreid.engine.trainer import Trainer

    from .method_checks import trainer_cfg

    model = small_model(mask_source="conv41")
    state = fake_weights(model, tmp_path / "w.pth")
    cfg = trainer_cfg("pan", tiny_market, tmp_path / "run", {
        "method.parts": 3, "method.mask_source": "conv41", "model.pretrained_path": str(tmp_path / "w.pth")})
    trained = Trainer(cfg).model  # the trainer loads the file at construction
    for buffer, prefix in ((trained.buffer_conv41, "layer3."), (trained.buffer_conv51, "layer4.")):
        assert all(torch.equal(v.cpu(), state[prefix + k]) for k, v in buffer.state_dict().items()), prefix
