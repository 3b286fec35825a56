"""SGSFA wiring: the whole-body attention's output feeds stages 2-4, the SGA vectors reach their classifiers,
the triplet and the test parts, the SFA regions theirs, only the head mask places the bands, only the
whole-body mask gives the band visibilities, each loss term reads its tensors, and the test distance reads
the parts (or branch, or global feature) its switches name; shown with stand-in sub-modules and by
perturbing one input at a time."""

from __future__ import annotations

import pytest
import torch

from occreid.methods import sgsfa
from occreid.models.output import ModelOutput

from .method_checks import PIDS8, method_cfg, single_thread
from .wiring_checks_a import changed, record_inputs, stand_in, tagged

one_thread = pytest.fixture(autouse=True)(single_thread)
SGA, FR = sgsfa.SGA_PARTS, sgsfa.FR
D = 32


def make_cfg(height: int = 128, width: int = 32, **method):
    """ResNet-18 (last stride 1) at 128x32: stage 4 is 8 x 2; 32-d vectors."""
    method.setdefault("feature_dim", D)
    return method_cfg("sgsfa", height, width, **method)


def small_model(**method) -> sgsfa.SGSFA:
    torch.manual_seed(0)
    return sgsfa.build_model(make_cfg(**method), 4).eval()


X = torch.randn(2, 3, 128, 32, generator=torch.Generator().manual_seed(3))


def test_whole_body_attention_output_is_what_stages_2_to_4_read():
    model = small_model()
    first, rest = sgsfa.split_backbone(model.backbone)
    with torch.no_grad():
        s1 = first(X)
    masked, logits = tagged(tuple(s1.shape), 4), tagged((2, 1, *s1.shape[2:]), 5)
    seen = stand_in(model.whole, lambda x: (masked, logits))
    to_parts = record_inputs(model.parts)
    with torch.no_grad():
        out = model(X)
        assert torch.allclose(seen[0], s1) and torch.allclose(to_parts[0], rest(masked), atol=1e-5)
    assert torch.equal(out.maps["whole_body_logits"], logits)


def test_sga_vectors_reach_their_own_classifier_the_triplet_embedding_and_the_test_parts():
    model = small_model()
    sga = tagged((2, 4, D), 6)
    stand_in(model.parts, lambda x: (sga, tagged((2, 4, 8, 2), 7)))
    with torch.no_grad():
        out = model(X)
        for i, n in enumerate(SGA):
            assert torch.equal(out.logits[f"sga_{n}"], model.sga_classifiers[i](sga[:, i])), n
    assert torch.equal(out.embeddings["sga"], sga.flatten(1)) and torch.equal(out.parts[:, :4], sga)


def test_sfa_regions_reach_their_own_classifier_and_the_bands_the_test_parts():
    model = small_model()
    sfa = tagged((2, 5, D), 8)
    seen = stand_in(model.sfa_embed, lambda x: sfa)
    with torch.no_grad():
        out = model(X)
        for i, n in enumerate(FR):
            assert torch.equal(out.logits[f"sfa_{n}"], model.sfa_classifiers[i](sfa[:, i])), n
    assert torch.equal(out.parts[:, 4:], sfa[:, :3]) and torch.equal(out.embeddings["sfa"], sfa[:, :3].flatten(1))
    assert seen[0].shape == (2, 5, model.backbone.out_channels)  # the five region poolings of the stage-4 map


def mask_outputs(model, part_logits, whole_logits=None):
    stand_in(model.parts, lambda x: (tagged((2, 4, D), 6), part_logits))
    if whole_logits is not None:
        stand_in(model.whole, lambda x: (x, whole_logits))
    with torch.no_grad():
        out = model(X)
    return {"bounds": out.extras["band_bounds"].float(), "part_vis": out.visibility[:, :4],
            "band_vis": out.visibility[:, 4:], "sfa": out.extras["sfa_regions"]}


def test_only_the_head_mask_places_the_bands_and_only_the_whole_body_mask_gives_band_visibility():
    model = small_model()
    logits = torch.full((2, 4, 8, 2), -5.0)
    logits[:, 0, 2] = 5.0  # head top at row 2 -> bands start at row 3
    whole = tagged((2, 1, 32, 8), 9)
    base = mask_outputs(model, logits, whole)
    assert base["bounds"][:, 0].tolist() == [3.0, 3.0]
    for k in range(4):
        moved = logits.clone()
        moved[:, k, 0] = 5.0  # part k now fires on row 0
        got = changed(base, mask_outputs(model, moved, whole))
        assert got == ({"bounds", "part_vis", "sfa", "band_vis"} if k == 0 else {"part_vis"}), (k, got)
    got = changed(base, mask_outputs(model, logits, whole + 3.0))
    assert got == {"band_vis"}, got


def test_horizontal_stripes_ignore_the_head_mask():
    model = small_model(band_split="stripes")
    logits = torch.full((2, 4, 8, 2), -5.0)
    base = mask_outputs(model, logits)
    logits[:, 0, 2] = 5.0
    after = mask_outputs(model, logits)
    assert base["bounds"].tolist() == [[0, 3, 5, 8]] * 2 and torch.equal(after["bounds"], base["bounds"])


def loss_output(seed: int = 0) -> ModelOutput:
    g = torch.Generator().manual_seed(seed)
    logits = {f"sga_{n}": torch.randn(8, 4, generator=g) for n in SGA}
    logits.update({f"sfa_{n}": torch.randn(8, 4, generator=g) for n in FR})
    vis = torch.cat([torch.full((8, 4), 0.5), torch.full((8, 3), 0.9)], dim=1)
    return ModelOutput(embeddings={"sga": torch.randn(8, 12, generator=g), "sfa": torch.randn(8, 9, generator=g)},
                       visibility=vis, logits=logits,
                       maps={"part_logits": torch.randn(8, 4, 8, 2, generator=g),
                             "whole_body_logits": torch.randn(8, 1, 32, 8, generator=g)})


def perturbed(out: ModelOutput, where: str, key: str | None, delta=None) -> ModelOutput:
    new = ModelOutput(embeddings=dict(out.embeddings), visibility=out.visibility, logits=dict(out.logits),
                      maps=dict(out.maps))
    if key is None:
        new.visibility = out.visibility if delta is None else out.visibility - delta
    else:
        getattr(new, where)[key] = getattr(out, where)[key] + tagged(tuple(getattr(out, where)[key].shape), 9)
    return new


def test_each_loss_term_reads_only_its_tensors():
    loss = sgsfa.build_loss(make_cfg(dcls_regions="all"), 4, None)
    label = torch.randint(0, 5, (8, 128, 32), generator=torch.Generator().manual_seed(2))
    batch = {"pid": PIDS8, "label": label, "has_label": torch.ones(8, dtype=torch.bool)}
    out = loss_output()
    _, base = loss(out, batch)
    reads = {("embeddings", "sga"): {"triplet"}, ("embeddings", "sfa"): set(),
             ("maps", "part_logits"): {"se"}, ("maps", "whole_body_logits"): {"se"}}
    reads.update({("logits", f"sga_{n}"): {"sga_id"} for n in SGA})
    reads.update({("logits", f"sfa_{n}"): {"dcls"} for n in FR})
    for (where, key), terms in reads.items():
        assert changed(base, loss(perturbed(out, where, key), batch)[1]) == terms, key
    hide_bottom = torch.tensor([0.0] * 6 + [0.85])  # band b below region_tau: Eq. 3 drops three regions
    assert changed(base, loss(perturbed(out, "visibility", None, hide_bottom), batch)[1]) == {"dcls"}
    hide_head = torch.tensor([0.5, 0, 0, 0, 0, 0, 0])  # part visibility is a test-time quantity only
    assert changed(base, loss(perturbed(out, "visibility", None, hide_head), batch)[1]) == set()


@pytest.mark.parametrize(("lam", "se_weight"), [(0.8, None), (0.3, 0.5)])
def test_eq11_weights_each_term_as_its_switches_say(lam, se_weight):
    cfg = make_cfg(lambda_weight=lam, se_weight=se_weight, dcls_regions="all")
    label = torch.randint(0, 5, (8, 128, 32), generator=torch.Generator().manual_seed(2))
    total, t = sgsfa.build_loss(cfg, 4, None)(loss_output(), {"pid": PIDS8, "label": label,
                                                              "has_label": torch.ones(8, dtype=torch.bool)})
    se = t["se"] * (lam if se_weight is None else se_weight)
    assert total.item() == pytest.approx((lam * (t["triplet"] + t["sga_id"]) + se + (1 - lam) * t["dcls"]).item(),
                                         rel=1e-6)


def features(seed: int, n: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"parts": torch.randn(n, 7, 3, generator=g), "visibility": torch.full((n, 7), 0.9),
            "sga": torch.randn(n, 12, generator=g), "global": torch.randn(n, 5, generator=g)}


@pytest.mark.parametrize(("matching", "branch", "read_parts"), [
    ("shared", "both", range(7)), ("shared", "semantic", range(4)), ("shared", "spatial", range(4, 7)),
    ("all", "semantic", range(4)), ("global", "both", ())])
def test_distance_reads_only_the_parts_of_its_branch_or_the_global_feature(matching, branch, read_parts):
    cfg = make_cfg(matching=matching, test_branch=branch)
    q, g = features(1, 2), features(2, 3)
    base = sgsfa.distance(q, g, cfg)
    for k in range(7):
        moved = q["parts"].clone()
        moved[:, k] += 1.0
        assert (not torch.allclose(sgsfa.distance({**q, "parts": moved}, g, cfg), base)) == (k in read_parts), k
    moved_global = sgsfa.distance({**q, "global": q["global"] + 1.0}, g, cfg)
    assert (not torch.allclose(moved_global, base)) == (matching == "global")


def test_global_matching_emits_the_global_average_of_the_stage4_map():
    model = small_model(matching="global")
    to_parts = record_inputs(model.parts)
    with torch.no_grad():
        out = model(X)
    assert torch.allclose(out.embeddings["global"], to_parts[0].mean(dim=(2, 3)))
    assert "global" not in small_model()(X).embeddings  # the default emits no extra feature
