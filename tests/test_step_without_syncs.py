"""What was changed so a GPU step neither waits for the device nor launches needless kernels computes what it
computed before: HRNet's fused upsample-and-add, SGSFA's dynamic loss without a mask selection, and the
constants (DFT and pooling matrices) copied to a GPU once instead of in every forward."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from occreid.config import load_config
from occreid.losses import cross_entropy_ls
from occreid.methods import sgsfa
from occreid.models import device_constants
from occreid.models.backbones.hrnet import HighResolutionModule, add_nearest_upsampled
from occreid.models.device_constants import device_constant
from occreid.models.output import ModelOutput


def fuse_as_before(module: HighResolutionModule, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """HighResolutionModule.forward before the change: F.interpolate(nearest), then +."""
    xs = [branch(x) for branch, x in zip(module.branches, xs)]
    fused = []
    for i, row in enumerate(module.fuse_layers):
        total = xs[i]
        for j, layer in enumerate(row):
            if j == i:
                continue
            y = layer(xs[j])
            if j > i:
                y = F.interpolate(y, size=xs[i].shape[-2:], mode="nearest")
            total = total + y
        fused.append(F.relu(total))
    return fused


@pytest.mark.parametrize("sizes", [[(16, 8), (8, 4), (4, 2), (2, 1)], [(18, 10), (9, 5), (5, 3), (3, 2)]],
                         ids=["multiples", "odd sizes (interpolate path)"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_hrnet_exchange_unit_gives_the_same_outputs_and_gradients(sizes, channels_last):
    # float64: the two fusions sum the same gradient terms in another order, and in float32 that order
    # alone moves a weight gradient of ~500 by ~1e-4 (more with one thread than with two)
    torch.manual_seed(0)
    channels = (8, 16, 32, 64)
    module = HighResolutionModule(channels, depth=1).train().double()
    before = copy.deepcopy(module)
    xs = [torch.randn(2, c, h, w, dtype=torch.float64) for c, (h, w) in zip(channels, sizes)]
    if channels_last:
        module, before = (m.to(memory_format=torch.channels_last) for m in (module, before))
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    a = [x.clone().requires_grad_() for x in xs]
    b = [x.clone().requires_grad_() for x in xs]
    got, want = module(a), fuse_as_before(before, b)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    weights = [torch.randn_like(w) for w in want]
    sum((g * r).sum() for g, r in zip(got, weights)).backward()
    sum((w * r).sum() for w, r in zip(want, weights)).backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-9, atol=1e-9)  # sums in another order
    for (name, p), q in zip(module.named_parameters(), before.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-9, msg=name)


def test_the_fused_add_keeps_channels_last_and_needs_no_upsampled_copy():
    total = torch.randn(2, 4, 8, 6).contiguous(memory_format=torch.channels_last)
    y = torch.randn(2, 4, 4, 3).contiguous(memory_format=torch.channels_last)
    out = add_nearest_upsampled(total, y)
    assert torch.equal(out, total + F.interpolate(y, size=(8, 6), mode="nearest"))
    assert out.is_contiguous(memory_format=torch.channels_last)


def dynamic_as_before(loss, out: ModelOutput, pids: torch.Tensor) -> torch.Tensor:
    """SGSFALoss.dynamic before the change: a nonzero() selection of the chosen pairs (two host syncs)."""
    o = loss.opts
    logits = torch.stack([out.logits[f"sfa_{n}"] for n in sgsfa.FR], dim=1)
    vis = out.visibility[:, len(sgsfa.SGA_PARTS):] > o.region_threshold
    cand = sgsfa.choose_regions(vis[:, 0], vis[:, 1], vis[:, 2])
    if o.dcls_regions == "sample":
        scores = torch.rand(cand.shape, device=cand.device).masked_fill(~cand, -1.0)
        cand = F.one_hot(scores.argmax(dim=1), len(sgsfa.FR)).bool() & cand
    if not cand.any():
        return logits.sum() * 0.0
    rows, cols = cand.nonzero(as_tuple=True)
    return cross_entropy_ls(logits[rows, cols], pids[rows], o.ce_epsilon)


def sfa_output(logits5: torch.Tensor, visibility: torch.Tensor) -> ModelOutput:
    return ModelOutput(visibility=visibility, logits={f"sfa_{n}": logits5[:, i] for i, n in enumerate(sgsfa.FR)})


@pytest.mark.parametrize("regions", ["all", "sample"])
def test_sgsfa_dynamic_loss_without_selection_equals_the_selection(regions):
    cfg = load_config(None, ["model.name=sgsfa", f"method.dcls_regions={regions}"])
    loss = sgsfa.build_loss(cfg, 7, None)
    g = torch.Generator().manual_seed(5)
    for vis in (torch.rand(9, 3, generator=g), torch.zeros(9, 3)):  # mixed candidates, then none at all
        logits5 = torch.randn(9, 5, 7, generator=g)
        pids = torch.randint(0, 7, (9,), generator=g)
        out_vis = torch.cat([torch.ones(9, 4), vis], dim=1)
        a, b = logits5.clone().requires_grad_(), logits5.clone().requires_grad_()
        torch.manual_seed(11)
        got = loss.dynamic(sfa_output(a, out_vis), pids)
        torch.manual_seed(11)
        want = dynamic_as_before(loss, sfa_output(b, out_vis), pids)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0.0)
        got.backward()
        want.backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-9)


def test_device_constants_are_built_each_time_on_the_cpu_and_once_per_key_elsewhere(monkeypatch):
    monkeypatch.setattr(device_constants, "_ON_DEVICE", {})
    built = []

    def build() -> torch.Tensor:
        built.append(1)
        return torch.arange(3, dtype=torch.float64)

    cpu = [device_constant("k", build, torch.device("cpu"), torch.float32) for _ in range(2)]
    assert len(built) == 2 and cpu[0].dtype == torch.float32 and torch.equal(cpu[0], cpu[1])
    meta = torch.device("meta")  # stands for a GPU here: any device but the CPU is cached
    first = device_constant("k", build, meta, torch.float32)
    assert device_constant("k", build, meta, torch.float32) is first and len(built) == 3
    assert device_constant("k", build, meta, torch.float16).dtype == torch.float16 and len(built) == 4
    assert device_constant(("k", 2), build, meta) is not first and len(built) == 5
