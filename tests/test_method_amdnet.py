"""AMD-Net (paper 000): every equation against explicit loops / closed forms, the Table 2 switches, learning
on a fixed batch, the paper configuration, checkpoints, the distance recipe and the trainer."""

from __future__ import annotations

import cmath
import math
from pathlib import Path

import pytest
import torch

from occreid.config import load_config
from occreid.errors import ConfigError
from occreid.methods import amdnet
from occreid.models.output import ModelOutput

from .method_checks import (
    PIDS8,
    batch_hard_loop,
    blocky_pixel_case,
    bn_eval,
    ce_ls,
    check_ablation_switches,
    conv1x1,
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
    trainer_cfg,
    write_band_labels,
)


def make_cfg(**method):
    """A small AMD-Net config: ResNet-18 (last stride 1) at 64x32 (a 4 x 2 map), narrow SIM and TFF."""
    method.setdefault("tff_channels", 16)
    method.setdefault("sim_channels", 4)
    return method_cfg("amdnet", **method)


def small_model(num_classes: int = 4, **method) -> amdnet.AMDNet:
    torch.manual_seed(0)
    return amdnet.build_model(make_cfg(**method), num_classes)


def conv3x3(x: torch.Tensor, conv) -> torch.Tensor:
    """A 3x3 'same' convolution (no bias) by shifted 1x1 products over the 9 taps."""
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    out = 0
    for dy in range(3):
        for dx in range(3):
            out = out + torch.einsum(
                "oc,bchw->bohw", conv.weight[:, :, dy, dx], padded[:, :, dy : dy + h, dx : dx + w]
            )
    return out


def residual_block(x: torch.Tensor, blk) -> torch.Tensor:
    """ResNet basic block in eval mode: relu(x + BN(conv(relu(BN(conv(x))))))."""
    y = torch.relu(bn_eval(conv3x3(x, blk.conv1), blk.bn1))
    return torch.relu(x + bn_eval(conv3x3(y, blk.conv2), blk.bn2))


@torch.no_grad()
def sim_explicit(g: torch.Tensor, sim, alpha: float, amplitude: str = "image_mean") -> torch.Tensor:
    """Eq. 3-4 by explicit DFT sums: project, half-spectrum DFT, constant amplitude (mean |X| over the
    half spectrum, per image and channel), phase MLP (1x1 conv, LeakyReLU 0.1, 1x1 conv), inverse as
    (1 / hw) sum_uv w_v Re(Y_uv e^{2 pi i (um/h + vn/w)}), restore, blend."""
    z = conv1x1(g, sim.project).double()
    b, c, h, w = z.shape
    nv = w // 2 + 1
    spec = [
        [
            [
                [
                    sum(
                        complex(z[i, k, m, n]) * cmath.exp(-2j * math.pi * (u * m / h + v * n / w))
                        for m in range(h)
                        for n in range(w)
                    )
                    for v in range(nv)
                ]
                for u in range(h)
            ]
            for k in range(c)
        ]
        for i in range(b)
    ]
    # bins with (u, v) = (-u mod h, -v mod w) are real for a real map: their phase is 0 or +pi exactly
    real = [[(2 * u) % h == 0 and (2 * v) % w == 0 for v in range(nv)] for u in range(h)]
    phase = torch.tensor(
        [
            [
                [
                    [
                        math.atan2(0.0 if real[u][v] else spec[i][k][u][v].imag, spec[i][k][u][v].real)
                        for v in range(nv)
                    ]
                    for u in range(h)
                ]
                for k in range(c)
            ]
            for i in range(b)
        ],
        dtype=torch.float64,
    )
    hidden = conv1x1(phase.float(), sim.phase_mlp[0])
    new_phase = conv1x1(torch.where(hidden > 0, hidden, 0.1 * hidden), sim.phase_mlp[2]).double()
    out = torch.zeros(b, c, h, w, dtype=torch.float64)
    for i in range(b):
        for k in range(c):
            amp = sum(abs(spec[i][k][u][v]) for u in range(h) for v in range(nv)) / (h * nv)
            if amplitude == "one":
                amp = 1.0
            for m in range(h):
                for n in range(w):
                    total = 0.0
                    for u in range(h):
                        for v in range(nv):
                            weight = 1.0 if v == 0 or (w % 2 == 0 and v == w // 2) else 2.0
                            y = amp * cmath.exp(1j * float(new_phase[i, k, u, v]))
                            total += weight * (y * cmath.exp(2j * math.pi * (u * m / h + v * n / w))).real
                    out[i, k, m, n] = total / (h * w)
    return alpha * conv1x1(out.float(), sim.restore) + (1 - alpha) * g


def band_labels(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """amdnet5-grouped maps: head on top, arms beside the trunk, legs, feet; shifted per image."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, h, w, dtype=torch.long)
    for i in range(n):
        s = int(torch.randint(0, max(1, h // 8), (1,), generator=g))
        out[i, s : s + h // 6, w // 4 : 3 * w // 4] = 1  # head
        out[i, s + h // 6 : h // 2, : w // 4] = 2  # arms
        out[i, s + h // 6 : h // 2, 3 * w // 4 :] = 2
        out[i, s + h // 6 : h // 2, w // 4 : 3 * w // 4] = 3  # trunk
        out[i, h // 2 : 7 * h // 8, w // 4 : 3 * w // 4] = 4  # legs
        out[i, 7 * h // 8 :, w // 4 : 3 * w // 4] = 5  # feet
    return out


def part_soft_loop(parts: list, pids: list[int], beta: float, margin: float | None) -> float:
    """Eq. 12-13 by loops: head (part 0) weighted 1 + beta, divided by K + beta; batch-hard; mean."""
    k = len(parts[0])

    def d(i, j):
        return (
            (1 + beta) * math.dist(parts[i][0], parts[j][0])
            + sum(math.dist(parts[i][p], parts[j][p]) for p in range(1, k))
        ) / (k + beta)

    return batch_hard_loop(d, pids, margin)


# ---- Eq. 1: part attention -----------------------------------------------------------------------


def test_eq1_attention_is_sim_then_one_1x1_conv_and_a_softmax_over_background_and_five_parts():
    model = small_model()
    randomise_bn(model)
    model.eval()
    assert len(model.attention.body) == 0 and model.attention.classifier.out_channels == 6
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        g = model.backbone(x)
        out = model(x)
        logits = conv1x1(sim_explicit(g, model.sim, 0.35), model.attention.classifier)
    assert out.maps["part_logits"].shape == (2, 6, 4, 2)
    assert torch.allclose(out.maps["part_logits"], logits, atol=1e-4, rtol=1e-4)
    probs = out.maps["part_probs"]
    for b in range(2):
        for r in range(4):
            for c in range(2):
                e = [math.exp(v) for v in logits[b, :, r, c].tolist()]
                for k in range(6):
                    assert probs[b, k, r, c].item() == pytest.approx(e[k] / sum(e), abs=1e-5)
    no_bg = small_model(background=False).eval()
    assert no_bg.attention.classifier.out_channels == 5
    with torch.no_grad():
        assert torch.allclose(no_bg(x).maps["part_probs"].sum(dim=1), torch.ones(2, 4, 2), atol=1e-5)


# ---- Eq. 2: part attention loss ------------------------------------------------------------------


def test_eq2_part_attention_loss_hand_worked_and_masked_by_has_label():
    # logits (0, ln 4, 0, 0, 0, 0): p = (1/9, 4/9, 1/9, ...); target 1 (head), sigma 0.15 over 6 channels:
    # 0.85 (-ln 4/9) + 0.15 (-(ln 4/9 + 5 ln 1/9) / 6) = 0.689290 + 0.294927 = 0.984217
    hand = 0.85 * -math.log(4 / 9) + 0.15 * -(math.log(4 / 9) + 5 * math.log(1 / 9)) / 6
    assert hand == pytest.approx(0.984217, abs=1e-6)
    logits = torch.zeros(2, 6, 1, 1)
    logits[0, 1] = math.log(4)
    logits[1] = torch.randn(6, 1, 1) * 5  # an unlabelled image: must not count
    label = torch.full((2, 4, 2), 1)  # image-resolution labels, downsampled to the 1 x 1 map
    zeros = {k: torch.zeros(2, 3) for k in ("foreground", "concat", "global")}
    out = ModelOutput(parts=torch.zeros(2, 5, 3), logits=zeros, maps={"part_logits": logits})
    batch = {"pid": torch.tensor([0, 1]), "label": label, "has_label": torch.tensor([True, False])}
    total, terms = amdnet.build_loss(make_cfg(), 3, None)(out, batch)
    assert terms["part_attention"].item() == pytest.approx(hand, abs=1e-5)
    # zero logits, equal parts: L_global = log 3; part-soft triplet = margin 0.3 (all distances ~0)
    assert terms["id"].item() == pytest.approx(math.log(3), abs=1e-6)
    assert terms["part_triplet"].item() == pytest.approx(0.3, abs=1e-4)
    assert total.item() == pytest.approx(math.log(3) + terms["part_triplet"].item() + hand, abs=1e-5)
    batch["has_label"] = torch.tensor([False, False])
    _, terms = amdnet.build_loss(make_cfg(), 3, None)(out, batch)
    assert terms["part_attention"].item() == 0.0


def test_eq2_part_attention_loss_matches_a_pixel_loop_with_downsampled_labels():
    logits, coarse, label, valid = blocky_pixel_case(6)  # image 1 has no label
    zeros = {k: torch.zeros(3, 2) for k in ("foreground", "concat", "global")}
    out = ModelOutput(parts=torch.zeros(3, 5, 2), logits=zeros, maps={"part_logits": logits})
    batch = {"pid": torch.tensor([0, 0, 1]), "label": label, "has_label": valid}
    _, terms = amdnet.build_loss(make_cfg(), 2, None)(out, batch)
    assert terms["part_attention"].item() == pytest.approx(pixel_ce_loop(logits, coarse, 0.15, (0, 2)), rel=1e-5)


def test_eq2_without_background_channel_hand_worked():
    """K = 5 channels, logits (ln 4, 0, 0, 0, 0): p = (1/2, 1/8 x 4). A head pixel: 0.85 (-ln 1/2) +
    0.15 mean(-ln p) = 0.85 ln 2 + 0.15 (ln 2 + 4 ln 8) / 5; a background pixel: 0.15 (ln 2 + 4 ln 8) / 5."""
    logits = torch.zeros(1, 5, 1, 2)
    logits[0, 0] = math.log(4)
    label = torch.tensor([[[1, 0]]])  # head pixel, background pixel
    zeros = {k: torch.zeros(1, 2) for k in ("foreground", "concat", "global")}
    out = ModelOutput(parts=torch.zeros(1, 5, 2), logits=zeros, maps={"part_logits": logits})
    batch = {"pid": torch.tensor([0]), "label": label, "has_label": torch.tensor([True])}
    _, terms = amdnet.build_loss(make_cfg(background=False), 2, None)(out, batch)
    uniform = 0.15 * (math.log(2) + 4 * math.log(8)) / 5
    assert terms["part_attention"].item() == pytest.approx(
        (0.85 * math.log(2) + uniform + uniform) / 2, abs=1e-6
    )


# ---- Eq. 3-4: Spatial-frequency Interaction Module -------------------------------------------------


def test_eq3_4_sim_hand_worked_phase_only_reconstruction_and_blend():
    """G = [1, 3] (1 channel, 1 x 2), identity projections and an identity phase MLP (LeakyReLU 0.1 with
    weights (1, -1) then (10/11, -10/11)). rfft: (4, -2): amplitudes (4, 2) -> constant 3, phases (0, pi).
    IFFT of (3, -3): ((3 - 3) / 2, (3 + 3) / 2) = (0, 3). Eq. 4: 0.35 (0, 3) + 0.65 (1, 3) = (0.65, 3)."""
    sim = amdnet.SpatialFrequencyInteraction(1, width=1, alpha=0.35)
    with torch.no_grad():
        for conv in (sim.project, sim.restore):
            conv.weight.fill_(1.0)
            conv.bias.zero_()
        sim.phase_mlp[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        sim.phase_mlp[0].bias.zero_()
        sim.phase_mlp[2].weight.copy_(torch.tensor([10 / 11, -10 / 11]).view(1, 2, 1, 1))
        sim.phase_mlp[2].bias.zero_()
        g = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)
        assert torch.allclose(sim.frequency(g).flatten(), torch.tensor([0.0, 3.0]), atol=1e-5)
        assert torch.allclose(sim(g).flatten(), torch.tensor([0.65, 3.0]), atol=1e-5)


@pytest.mark.parametrize("amplitude", ["image_mean", "one"])
def test_eq3_4_sim_matches_explicit_dft_sums(amplitude):
    torch.manual_seed(3)
    sim = amdnet.SpatialFrequencyInteraction(3, width=2, alpha=0.35, amplitude=amplitude)
    g = torch.randn(2, 3, 3, 4)
    with torch.no_grad():
        got = sim(g)
    assert torch.allclose(got, sim_explicit(g, sim, 0.35, amplitude), atol=1e-4)
    # the blend is at the full width, and the test feature of one image does not depend on its batch
    assert got.shape == g.shape
    with torch.no_grad():
        assert torch.allclose(sim(g[:1]), got[:1], atol=1e-6)


def test_eq4_sim_blend_with_alpha_zero_and_one():
    torch.manual_seed(4)
    g = torch.randn(1, 3, 3, 4)
    for alpha in (0.0, 1.0):
        sim = amdnet.SpatialFrequencyInteraction(3, width=2, alpha=alpha)
        with torch.no_grad():
            expected = g if alpha == 0.0 else sim_explicit(g, sim, 1.0)
            assert torch.allclose(sim(g), expected, atol=1e-4)


def dft_loop(x: torch.Tensor) -> torch.Tensor:
    """rfft2 of one real map [h, w] by the explicit double sum, complex128 [h, w // 2 + 1]."""
    h, w = x.shape
    return torch.tensor(
        [
            [
                sum(
                    float(x[m, n]) * cmath.exp(-2j * math.pi * (u * m / h + v * n / w))
                    for m in range(h)
                    for n in range(w)
                )
                for v in range(w // 2 + 1)
            ]
            for u in range(h)
        ],
        dtype=torch.complex128,
    )


def idft_loop(y: torch.Tensor, w: int) -> torch.Tensor:
    """irfft2 of a half spectrum [h, nv] by (1 / hw) sum_uv w_v Re(Y_uv e^{2 pi i (um/h + vn/w)})."""
    h, nv = y.shape
    weights = [1.0 if v == 0 or 2 * v == w else 2.0 for v in range(nv)]
    return torch.tensor(
        [
            [
                sum(
                    weights[v] * (complex(y[u, v]) * cmath.exp(2j * math.pi * (u * m / h + v * n / w))).real
                    for u in range(h)
                    for v in range(nv)
                )
                / (h * w)
                for n in range(w)
            ]
            for m in range(h)
        ],
        dtype=torch.float64,
    )


def test_real_dft_hand_worked():
    """[[1, 2], [3, 4]]: X_uv = sum x_mn (-1)^(um + vn) = [[10, -2], [-4, 0]], all real. [0, 1, 0] (w = 3):
    X_v = e^{-2 pi i v / 3} = (1, -1/2 - i sqrt(3)/2). Inverse of (1, i) at w = 3: (1 - 2 sin(2 pi n / 3)) / 3;
    of (3 + 5i, -3 + 7i) at w = 2: (0, 3), the imaginary parts of the self-conjugate columns ignored."""
    re, im = amdnet.rfft2_real(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))
    assert torch.allclose(re[0, 0], torch.tensor([[10.0, -2.0], [-4.0, 0.0]])) and not im.any()
    re, im = amdnet.rfft2_real(torch.tensor([[[[0.0, 1.0, 0.0]]]]))
    assert torch.allclose(re.flatten(), torch.tensor([1.0, -0.5]), atol=1e-7)
    assert torch.allclose(im.flatten(), torch.tensor([0.0, -math.sqrt(3) / 2]), atol=1e-7)
    s3 = math.sqrt(3) / 2
    got = amdnet.irfft2_real(torch.tensor([[[[1.0, 0.0]]]]), torch.tensor([[[[0.0, 1.0]]]]), 3)
    assert torch.allclose(got.flatten(), torch.tensor([1 / 3, (1 - 2 * s3) / 3, (1 + 2 * s3) / 3]), atol=1e-6)
    got = amdnet.irfft2_real(torch.tensor([[[[3.0, -3.0]]]]), torch.tensor([[[[5.0, 7.0]]]]), 2)
    assert torch.allclose(got.flatten(), torch.tensor([0.0, 3.0]), atol=1e-6)


@pytest.mark.parametrize("h,w", [(3, 4), (4, 5), (1, 3), (2, 1)])
def test_real_dft_matches_explicit_sums(h, w):
    torch.manual_seed(h * 10 + w)
    x = torch.randn(2, 3, h, w)
    re, im = amdnet.rfft2_real(x)
    y = torch.randn(2, 3, h, w // 2 + 1, dtype=torch.complex64)  # not Hermitian on purpose
    back = amdnet.irfft2_real(y.real, y.imag, w)
    for b in range(2):
        for c in range(3):
            expected = dft_loop(x[b, c])
            assert torch.allclose(re[b, c].double(), expected.real, atol=1e-5)
            assert torch.allclose(im[b, c].double(), expected.imag, atol=1e-5)
            assert torch.allclose(back[b, c].double(), idft_loop(y[b, c], w), atol=1e-5)


@pytest.mark.parametrize("h,w", [(16, 8), (8, 4), (24, 8), (7, 5)])
def test_real_dft_agrees_with_torch_fft_within_1e_5(h, w):
    torch.manual_seed(h + w)
    x = torch.randn(4, 8, h, w) / math.sqrt(h * w)  # unit-scale spectrum
    re, im = amdnet.rfft2_real(x)
    spectrum = torch.fft.rfft2(x)
    assert (re - spectrum.real).abs().max() <= 1e-5 and (im - spectrum.imag).abs().max() <= 1e-5
    y = torch.randn(4, 8, h, w // 2 + 1, dtype=torch.complex64)
    assert (amdnet.irfft2_real(y.real, y.imag, w) - torch.fft.irfft2(y, s=(h, w))).abs().max() <= 1e-5


def test_sim_fft_and_matmul_paths_agree_forward_and_backward():
    torch.manual_seed(5)
    sims = {}
    for dft in ("matmul", "fft"):
        torch.manual_seed(5)
        sims[dft] = amdnet.SpatialFrequencyInteraction(8, width=4, alpha=0.35, dft=dft)
    g0 = torch.randn(3, 8, 16, 8)
    outs, grads = {}, {}
    for dft, sim in sims.items():
        g = g0.clone().requires_grad_()
        outs[dft] = sim(g)
        outs[dft].square().sum().backward()
        grads[dft] = g.grad
    assert (outs["matmul"] - outs["fft"]).abs().max() <= 1e-5
    assert torch.allclose(grads["matmul"], grads["fft"], atol=1e-4, rtol=1e-4)
    small = torch.randn(1, 3, 3, 4)
    sim = amdnet.SpatialFrequencyInteraction(3, width=2, alpha=0.35, dft="fft")
    with torch.no_grad():
        assert torch.allclose(sim(small), sim_explicit(small, sim, 0.35), atol=1e-4)


def test_sim_phase_of_negative_self_conjugate_bins_is_plus_pi_and_zero_maps_have_finite_gradients():
    # rows 0 and h/2 x columns 0 and w/2 (w = 4): their phase is 0 or +pi whatever the sign of the zero
    real = -torch.ones(1, 1, 4, 3)
    imag = torch.full((1, 1, 4, 3), -0.0)
    imag[0, 0, 2, 0], imag[0, 0, 0, 2], imag[0, 0, 1, 1] = 1e-6, -1e-6, 0.5  # round-off; an ordinary bin
    phase = amdnet.spectrum_phase(real, imag, 4)
    for u in range(4):
        for v in range(3):
            if u in (0, 2) and v in (0, 2):
                expected = math.pi
            else:
                expected = math.atan2(float(imag[0, 0, u, v]), -1.0 + amdnet.PHASE_EPS)
            assert phase[0, 0, u, v].item() == pytest.approx(expected, abs=1e-6), (u, v)
    assert phase[0, 0, 1, 1].item() == pytest.approx(math.pi - math.atan(0.5), abs=1e-6)
    assert amdnet.spectrum_phase(-real, imag, 4)[0, 0, 2, 0].item() == 0.0
    sim = amdnet.SpatialFrequencyInteraction(3, width=2)
    with torch.no_grad():
        sim.project.bias.zero_()
    sim(torch.zeros(2, 3, 4, 4)).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in sim.parameters())


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_sim_matmul_path_traces_without_complex_ops_and_bad_dft_is_refused():
    sim = amdnet.SpatialFrequencyInteraction(3, width=2).eval()
    g = torch.randn(2, 3, 4, 3)
    traced = torch.jit.trace(sim, g)
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert not any("fft" in k or "complex" in k or "polar" in k for k in kinds)
    g2 = torch.randn(5, 3, 4, 3)  # another batch size through the same trace
    with torch.no_grad():
        assert torch.allclose(traced(g2), sim(g2), atol=1e-6)
    with pytest.raises(ConfigError, match="sim_dft"):
        make_cfg(sim_dft="dct")


# ---- Eq. 8-11: Taylor-inspired Feature Filter ------------------------------------------------------


def test_eq10_11_basis_block_hand_worked():
    """Zero convolutions (R(t) = relu(t)), a gate of sigmoid(0) = 1/2 and an identity output conv give
    gate(t0) = 1.5 t0; t2 = relu(t0) + 1.5 t0 + 3 (relu(t0) - t0): t0 = (2, -1) -> (5, 1.5)."""
    block = amdnet.TaylorBasisBlock(1).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
        for bn in (block.residual.bn1, block.residual.bn2, block.gate.gate[0], block.gate.gate[4]):
            bn.eps = 0.0
        block.gate.gate[0].weight.fill_(1.0)
        block.gate.out.weight.fill_(1.0)
        t2, a = block(torch.tensor([2.0, -1.0]).view(1, 1, 1, 2))
    assert torch.allclose(a.flatten(), torch.tensor([0.5, 0.5]))
    assert torch.allclose(t2.flatten(), torch.tensor([5.0, 1.5]))


def test_eq11_tff_three_blocks_match_an_explicit_computation():
    model = small_model()
    randomise_bn(model)
    model.eval()
    assert len(model.tff.blocks) == 3
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        g = model.backbone(x)
        got, gates = model.features(g, None)
        red = model.reduce
        t = torch.relu(bn_eval(torch.einsum("dc,bchw->bdhw", red.fc.weight, g), red.bn))
        for blk in model.tff.blocks:
            t1 = residual_block(t, blk.residual)
            t = t1 + gated_conv(t, blk.gate) + 3 * (t1 - t)  # Eq. 11, the gate reads tau_j (Eq. 10)
    assert gates.shape == (2, 3, 4, 2)
    assert torch.allclose(got, t, atol=1e-4, rtol=1e-4)


def test_tff_release_switches_gate_the_next_block_and_read_a_guidance_map():
    model = small_model(tff_gate_input="next_block", tff_guide=True)
    randomise_bn(model)
    model.eval()
    blk = model.tff.blocks[0]
    assert blk.next_block is not None and blk.gate.guide_channels == 1
    g = torch.randn(2, 512, 4, 2)
    with torch.no_grad():
        t0 = torch.randn(2, 16, 4, 2)
        guide = conv1x1(g, model.guide)
        t2, _ = blk(t0, guide)
        t1 = residual_block(t0, blk.residual)
        expected = t1 + gated_conv(residual_block(t1, blk.next_block), blk.gate, guide) + 3 * (t1 - t0)
    assert torch.allclose(t2, expected, atol=1e-4, rtol=1e-4)
    assert small_model().guide is None and small_model().tff.blocks[0].next_block is None


# ---- Eq. 5-7: foreground, parts, global; quality scores ---------------------------------------------


@pytest.mark.parametrize("norm", ["hw", "mass"])
def test_eq5_7_pooled_features_and_visibility_match_loops(norm):
    model = small_model(pool_norm=norm)
    randomise_bn(model)
    model.eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        out = model(x)
        f, _ = model.features(model.backbone(x), None)
    p = out.maps["part_probs"][:, 1:]
    for b in range(2):
        pt = [[max(p[b, k, r, c].item() for k in range(5)) for c in range(2)] for r in range(4)]
        assert torch.allclose(out.maps["foreground"][b, 0], torch.tensor(pt), atol=1e-6)
        maps = [pt] + [p[b, k].tolist() for k in range(5)]
        pooled = []
        for m in maps:
            num = sum(f[b, :, r, c] * m[r][c] for r in range(4) for c in range(2))
            den = 8.0 if norm == "hw" else sum(m[r][c] for r in range(4) for c in range(2))
            pooled.append(num / den)  # Eq. 6
        assert torch.allclose(out.extras["foreground_raw"][b], pooled[0], atol=1e-5, rtol=1e-4)
        for k in range(5):
            assert torch.allclose(out.parts[b, k], pooled[k + 1], atol=1e-5, rtol=1e-4)
            best = max(p[b, k, r, c].item() for r in range(4) for c in range(2))
            assert out.visibility[b, k].item() == pytest.approx(best)  # quality score before gamma
        gap = sum(f[b, :, r, c] for r in range(4) for c in range(2)) / 8  # Eq. 7
        assert torch.allclose(out.extras["global_raw"][b], gap, atol=1e-5)
        assert torch.allclose(out.extras["concat_raw"][b], torch.cat(pooled[1:]), atol=1e-5, rtol=1e-4)
    neck = model.foreground_neck.bn
    assert torch.allclose(
        out.embeddings["foreground"], bn_eval(out.extras["foreground_raw"], neck), atol=1e-5
    )


def test_quality_score_threshold_gamma_is_strict():
    scores = [0.4, 0.41, 0.2]
    for gamma, expected in ((0.4, [1, 0, 1, 0]), (0.2, [1, 1, 1, 0]), (0.5, [1, 0, 0, 0])):
        assert matched_weights(scores, amdnet.Options(visibility_threshold=gamma)) == expected  # foreground first
    continuous = matched_weights(scores, amdnet.Options(matching="continuous"))
    assert continuous == pytest.approx([1.0, 0.4, 0.41, 0.2])


# ---- Eq. 12-14: part-soft triplet and the total ----------------------------------------------------


def test_eq12_13_part_soft_triplet_hand_worked():
    # K = 2 one-dimensional parts (head first), beta 0.5: d = (1.5 |a_i - a_j| + |b_i - b_j|) / 2.5
    # rows 0: (., 1.8, 2.2, 3.4)  1: (1.8, ., 2.0, 3.2)  2: (2.2, 2.0, ., 1.2)  3: (3.4, 3.2, 1.2, .)
    # pids 0 0 1 1 -> (ap, an) = (1.8, 2.2), (1.8, 2.0), (1.2, 2.0), (1.2, 3.2) -> 0, 0.1, 0, 0 -> mean 0.025
    parts = torch.tensor([[[0.0], [0.0]], [[1.0], [3.0]], [[3.0], [1.0]], [[5.0], [1.0]]])
    hand = torch.tensor([[0, 1.8, 2.2, 3.4], [1.8, 0, 2.0, 3.2], [2.2, 2.0, 0, 1.2], [3.4, 3.2, 1.2, 0]])
    assert torch.allclose(amdnet.part_soft_distance(parts, parts, head_weight=0.5), hand, atol=1e-5)
    zeros = {k: torch.zeros(4, 2) for k in ("foreground", "concat", "global")}
    out = ModelOutput(parts=parts, logits=zeros)
    pids = {"pid": torch.tensor([0, 0, 1, 1])}
    _, terms = amdnet.build_loss(make_cfg(), 2, None)(out, pids)
    assert terms["part_triplet"].item() == pytest.approx(0.025, abs=1e-5)
    # beta 0 is the plain part average: distances (2, 2, 3 / 2, 3 / 1) -> (0.3 + 0.3 + 0 + 0) / 4
    _, terms = amdnet.build_loss(make_cfg(head_weight=0.0), 2, None)(out, pids)
    assert terms["part_triplet"].item() == pytest.approx(0.15, abs=1e-5)


def test_eq12_14_total_matches_loops_on_random_outputs():
    g = torch.Generator().manual_seed(3)
    pids = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = {k: torch.randn(6, 5, generator=g) for k in ("foreground", "concat", "global")}
    parts = torch.randn(6, 5, 4, generator=g)
    part_logits = torch.randn(6, 6, 2, 2, generator=g)
    label = torch.randint(0, 6, (6, 2, 2), generator=g)
    out = ModelOutput(parts=parts, logits=logits, maps={"part_logits": part_logits})
    batch = {"pid": pids, "label": label, "has_label": torch.ones(6, dtype=torch.bool)}
    p = pids.tolist()
    for margin, beta, weight, reduction in ((0.3, 0.5, 1.0, "mean"), (None, 1.0, 0.5, "mean"), (0.3, 0.5, 1.0, "sum")):
        cfg = make_cfg(triplet_margin=margin, head_weight=beta, part_loss_weight=weight, id_reduction=reduction)
        total, terms = amdnet.build_loss(cfg, 5, None)(out, batch)
        e_id = sum(ce_ls(logits[k][i].tolist(), p[i], 0.1) for k in logits for i in range(6)) / 6  # sum of 3
        e_id = e_id / 3 if reduction == "mean" else e_id
        e_tri = part_soft_loop(parts.tolist(), p, beta, margin)
        e_part = pixel_ce_loop(part_logits, label, 0.15, range(6))
        assert terms["id"].item() == pytest.approx(e_id, rel=1e-5)
        assert terms["part_triplet"].item() == pytest.approx(e_tri, rel=1e-5)
        assert terms["part_attention"].item() == pytest.approx(e_part, rel=1e-5)
        assert total.item() == pytest.approx(e_tri + e_id + weight * e_part, rel=1e-5)


def test_tff_init_he_fan_out_touches_only_the_tff_convolutions():
    """tff_init=he_fan_out (issue #28, AMD-Net hypothesis 2): every TFF conv drawn from N(0, 2 / fan_out)
    with zero bias; the layers outside TFF keep the default initialisation (same seed, same values)."""
    default, he = small_model(), small_model(tff_init="he_fan_out")
    convs = [(n, m) for n, m in he.tff.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) >= 6
    weights = torch.cat([m.weight.flatten() for _, m in convs])
    fan_out = torch.cat([torch.full((m.weight.numel(),), m.out_channels * m.kernel_size[0] * m.kernel_size[1],
                                    dtype=torch.float32) for _, m in convs])
    z = weights / torch.sqrt(2.0 / fan_out)  # standard normal if drawn from He fan-out
    assert abs(z.mean().item()) < 0.05 and z.std().item() == pytest.approx(1.0, abs=0.05)
    assert all(m.bias is None or not m.bias.any() for _, m in convs)
    default_w = torch.cat([m.weight.flatten() for m in default.tff.modules() if isinstance(m, torch.nn.Conv2d)])
    assert not torch.allclose(default_w, weights)
    for name in ("attention", "reduce", "foreground_neck"):
        a, b = getattr(default, name).state_dict(), getattr(he, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


# ---- Table 2 switches -----------------------------------------------------------------------------


def test_table2_without_part_attention_stripes_replace_the_maps_and_no_labels_are_read():
    cfg = make_cfg(part_attention="stripes")
    assert amdnet.label_grouping(cfg) is None and amdnet.label_grouping(make_cfg()) == "amdnet5"
    model = small_model(part_attention="stripes", tff_blocks=0, tff_channels=None).eval()
    assert model.attention is None and model.sim is None
    x = torch.randn(2, 3, 96, 32)  # a 6 x 2 map
    with torch.no_grad():
        g = model.backbone(x)
        out = model(x)
    # 5 stripes over 6 rows (adaptive pooling): stripe i covers rows floor(6i/5) .. ceil(6(i+1)/5) - 1
    rows = [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]
    for k, rs in enumerate(rows):
        assert torch.allclose(out.parts[:, k], g[:, :, rs].mean(dim=(2, 3)), atol=1e-5)
    assert torch.allclose(out.extras["foreground_raw"], g.mean(dim=(2, 3)), atol=1e-5)
    assert torch.all(out.visibility == 1) and "part_logits" not in out.maps
    _, terms = amdnet.build_loss(cfg, 4, model)(
        model.train()(torch.randn(4, 3, 96, 32)), {"pid": torch.tensor([0, 0, 1, 1])}
    )
    assert sorted(terms) == ["id", "part_triplet"]
    with pytest.raises(ConfigError, match="stripes"):
        model(torch.randn(2, 3, 64, 32))  # 4 rows cannot hold 5 stripes


def test_table2_without_sim_the_attention_reads_the_backbone_map():
    model = small_model(sim=False)
    randomise_bn(model)
    model.eval()
    assert model.sim is None
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        out = model(x)
        expected = conv1x1(model.backbone(x), model.attention.classifier)
    assert torch.allclose(out.maps["part_logits"], expected, atol=1e-4, rtol=1e-4)


def test_table2_without_tff_the_features_are_the_backbone_map():
    model = small_model(tff_blocks=0, tff_channels=None)
    randomise_bn(model)
    model.eval()
    assert model.tff is None and model.reduce is None
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        out = model(x)
        g = model.backbone(x)
    assert out.parts.shape == (2, 5, 512) and "tff_gates" not in out.maps
    assert torch.allclose(out.extras["global_raw"], g.mean(dim=(2, 3)), atol=1e-5)


def test_table2_part_id_loss_replaces_the_triplet():
    model = small_model(part_loss="id").train()
    out = model(torch.randn(8, 3, 64, 32))
    batch = {"pid": PIDS8, "label": band_labels(8, 64, 32), "has_label": torch.ones(8, dtype=torch.bool)}
    _, terms = amdnet.build_loss(make_cfg(part_loss="id"), 4, model)(out, batch)
    assert sorted(terms) == ["id", "part_attention", "part_id"]
    clf = model.part_classifiers
    parts = out.parts.detach()
    mean, var = parts.reshape(8, -1).mean(0), parts.reshape(8, -1).var(0, unbiased=False)
    normed = (
        (parts.reshape(8, -1) - mean) / torch.sqrt(var + clf.bn.eps) * clf.bn.weight + clf.bn.bias
    ).view(8, 5, -1)
    expected = (
        sum(
            ce_ls((clf.fc.weight[k] @ normed[i, k]).tolist(), int(PIDS8[i]), 0.1)
            for i in range(8)
            for k in range(5)
        )
        / 40
    )
    assert terms["part_id"].item() == pytest.approx(expected, rel=1e-4)


def test_table2_hard_triplet_is_batch_hard_on_each_part_then_averaged():
    parts = torch.tensor([[[0.0], [0.0]], [[1.0], [3.0]], [[3.0], [1.0]], [[5.0], [1.0]]])
    zeros = {k: torch.zeros(4, 2) for k in ("foreground", "concat", "global")}
    _, terms = amdnet.build_loss(make_cfg(part_loss="hard_triplet"), 2, None)(
        ModelOutput(parts=parts, logits=zeros), {"pid": torch.tensor([0, 0, 1, 1])}
    )
    # part 0 (0, 1, 3, 5): (ap, an) = (1, 3), (1, 2), (2, 2), (2, 4) -> 0, 0, 0.3, 0 -> 0.075
    # part 1 (0, 3, 1, 1): (3, 1), (3, 2), (0, 1), (0, 2) -> 2.3, 1.3, 0, 0 -> 0.9; mean 0.4875
    assert terms["part_hard_triplet"].item() == pytest.approx(0.4875, abs=1e-5)


def test_ablation_configs_set_their_switches_and_the_paper_settings():
    root = Path("configs/amdnet")
    expected = {
        "table2_no_part_attention": {"part_attention": "stripes"},
        "table2_no_sim": {"sim": False},
        "table2_no_tff": {"tff_blocks": 0},
        "table2_no_sim_no_tff": {"sim": False, "tff_blocks": 0},
        "table2_part_id_loss": {"part_loss": "id"},
        "table2_part_hard_triplet": {"part_loss": "hard_triplet"},
    }
    full = check_ablation_switches(root, expected)
    assert all(full[k] != v for switch in expected.values() for k, v in switch.items())  # each one a change
    paper = load_config(root / "occluded_duke.yaml", [])
    assert (paper.model.backbone, paper.data.height, paper.data.width) == ("hrnet_w32", 384, 128)
    assert paper.data.ids_per_batch * paper.data.instances_per_id == 64
    assert (paper.train.lr, paper.train.epochs, paper.train.milestones) == (3e-4, 120, [50, 80])
    assert (full["visibility_threshold"], full["part_loss_epsilon"], full["head_weight"]) == (0.4, 0.15, 0.5)
    assert (full["sim_alpha"], full["tff_blocks"], full["grouping"]) == (0.35, 3, "amdnet5")
    for name, tests in (("occluded_reid", ["occluded_reid"]), ("partial_reid", ["partial_reid"])):
        cfg = load_config(root / f"{name}.yaml", [])
        assert cfg.data.dataset == "market1501" and cfg.data.test_datasets == tests
    for name in ("market1501", "dukemtmcreid", "p_dukemtmc"):
        assert load_config(root / f"{name}.yaml", []).data.dataset == name
    proto = load_config("configs/protocols/cpu_occduke/amdnet.yaml", [])
    assert (proto.model.name, proto.model.backbone, proto.data.height, proto.data.ids_per_batch) == (
        "amdnet",
        "resnet18",
        128,
        16,
    )
    synth = load_config(root / "synthetic.yaml", [])
    assert (synth.model.backbone, synth.data.dataset) == ("resnet18", "synthetic")


def test_bad_options_are_refused_with_the_key():
    with pytest.raises(ConfigError, match="test_embeddings"):
        make_cfg(test_embeddings="[parts, concat]")
    with pytest.raises(ConfigError, match="visibility_threshold"):
        make_cfg(visibility_threshold=1.5)
    with pytest.raises(ConfigError, match="sim_alpha"):
        make_cfg(sim_alpha=2)
    with pytest.raises(ConfigError, match="grouping"):
        make_cfg(grouping="seven")


# ---- learning, paper configuration, checkpoints ----------------------------------------------------


def test_thirty_steps_on_a_fixed_batch_reduce_every_term_and_reach_every_parameter():
    torch.manual_seed(0)
    cfg = make_cfg(tff_channels=64)
    model = amdnet.build_model(cfg, 4).train()
    loss_fn = amdnet.build_loss(cfg, 4, model)
    images = torch.randn(8, 3, 64, 32, generator=torch.Generator().manual_seed(5))
    batch = {"pid": PIDS8, "label": band_labels(8, 64, 32), "has_label": torch.ones(8, dtype=torch.bool)}
    first, last, missing = fit_fixed_batch(model, loss_fn, images, batch, lr=3e-4)
    assert not missing, f"parameters without gradient: {missing}"
    assert sorted(first) == ["id", "part_attention", "part_triplet"]
    for k in first:
        assert last[k] <= 0.7 * first[k], (k, float(first[k]), float(last[k]))


@pytest.mark.slow
def test_paper_configuration_forward_and_backward():
    """HRNet-W32 (1,920 channels at stride 4), 384x128, K = 5, SIM at 64, TFF at 256: one step at batch 2."""
    model, out, total, terms = paper_step(amdnet, "configs/amdnet/occluded_duke.yaml", labels=band_labels,
                                          size=(384, 128))
    assert out.maps["part_logits"].shape == (2, 6, 96, 32)
    assert out.parts.shape == (2, 5, 256) and out.visibility.shape == (2, 5)
    assert torch.isfinite(total) and sorted(terms) == ["id", "part_attention", "part_triplet"]
    assert model.sim.project.in_channels == 1920
    for module in (
        model.sim,
        model.attention,
        model.tff,
        model.backbone.incre_modules,
        model.concat_neck.classifier,
    ):
        assert all(
            p.grad is not None and torch.isfinite(p.grad).all()
            for p in module.parameters()
            if p.requires_grad
        )
        assert any(torch.any(p.grad != 0) for p in module.parameters() if p.requires_grad)


def test_saved_and_reloaded_model_gives_the_same_features(tmp_path):
    names, differing = reload_round_trip(small_model(), make_cfg(), 4, tmp_path)
    assert names == ["concat", "foreground", "global", "parts", "visibility"] and not differing, differing


@pytest.mark.parametrize("matching", ["binary", "continuous"])
def test_distance_recipe_matches_an_explicit_loop(matching):
    cfg = make_cfg(matching=matching)
    g = torch.Generator().manual_seed(7)

    def feats(n):
        vis = torch.rand(n, 3, generator=g)
        vis[0] = torch.tensor([0.2, 0.9, 0.45])
        return {
            "foreground": torch.randn(n, 4, generator=g),
            "global": torch.randn(n, 4, generator=g),
            "parts": torch.randn(n, 3, 4, generator=g),
            "visibility": vis,
        }

    qf, gf = feats(3), feats(5)
    d = amdnet.distance(qf, gf, cfg)

    def unit(v):
        return [a / math.sqrt(sum(b * b for b in v)) for a in v]

    for i in range(3):
        for j in range(5):
            dists = [math.dist(unit(qf["foreground"][i].tolist()), unit(gf["foreground"][j].tolist()))]
            weights = [1.0]
            for k in range(3):
                vq, vg = float(qf["visibility"][i, k]), float(gf["visibility"][j, k])
                w = float(vq > 0.4 and vg > 0.4) if matching == "binary" else math.sqrt(vq * vg)
                dists.append(math.dist(unit(qf["parts"][i, k].tolist()), unit(gf["parts"][j, k].tolist())))
                weights.append(w)
            expected = sum(w * x for w, x in zip(weights, dists)) / sum(weights)
            assert float(d[i, j]) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("with_labels", [False, True])
def test_trainer_runs_amdnet_end_to_end_and_its_checkpoint_reloads(tiny_market, tmp_path, with_labels):
    from occreid.engine.trainer import Trainer

    out = tmp_path / "run"
    if with_labels:
        assert write_band_labels(tiny_market, tmp_path / "labels", 64) == 64  # every training image
    method = {"method.tff_channels": 16, "method.sim_channels": 4, "data.labels_root": str(tmp_path / "labels")}
    cfg = trainer_cfg("amdnet", tiny_market, out, method)
    trainer = Trainer(cfg)
    labelled = sum(r.label_path is not None for r in trainer.train_records)
    assert labelled == (64 if with_labels else 0)
    item = trainer.dataset[0]
    assert bool(item["has_label"]) == with_labels
    if with_labels:
        assert set(item["label"].unique().tolist()) <= {0, 1, 2, 3, 4, 5}  # amdnet5: feet 7, 8 -> 5
        assert 0 < item["label"].max() <= 5
    res = trainer.fit()
    assert res.iterations == 2
    last = last_metrics(out)
    assert {"id", "part_triplet", "part_attention"} <= set(last)
    assert (last["part_attention"] > 0) == with_labels  # no label: the masked loss is exactly 0
    model = reload_run(out, "amdnet", cfg)
    with torch.no_grad():
        feats = model(torch.randn(2, 3, 32, 16)).features()
    assert feats["parts"].shape == (2, 5, 16) and feats["visibility"].shape == (2, 5)
