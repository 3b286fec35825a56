"""CPU bf16 autocast: the guard against oneDNN's AMX bf16 convolution bug (pytorch/pytorch#169688).

On AMX CPUs the unguarded convolutions below give errors larger than their output, or NaN. On other
CPUs they are right either way, and these tests still check that the guard keeps them right.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from occreid.config import load_config
from occreid.engine.amp import cpu_bf16_autocast, strided_to_width_one
from occreid.engine.trainer import Trainer


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want).norm() / want.norm()).item()


def test_guard_predicate_is_the_bug_class_only():
    assert strided_to_width_one((8, 128, 4, 2), (256, 128, 3, 3), 2, 1)  # ResNet-18 layer3.0.conv1 at 32x16
    assert strided_to_width_one((8, 128, 4, 1), (256, 128, 3, 3), (2, 2), (1, 1))
    assert strided_to_width_one((4, 128, 1), (128, 128, 3), (2,), (1,))
    assert not strided_to_width_one((8, 128, 4, 2), (256, 128, 3, 3), 1, 1)  # unit stride
    assert not strided_to_width_one((8, 128, 4, 4), (256, 128, 3, 3), 2, 1)  # output width 2
    assert not strided_to_width_one((8, 128, 4, 2), (256, 128, 3, 3), (2, 1), 1)  # innermost stride 1
    assert not strided_to_width_one((8, 128, 4, 2), (256, 128, 3, 3), 1, "same")


@pytest.mark.parametrize(
    ("conv", "x_shape", "w_shape"),
    [
        (F.conv2d, (8, 128, 4, 2), (256, 128, 3, 3)),  # AMX forward kernel wrong
        (F.conv2d, (8, 128, 2, 1), (256, 128, 3, 3)),  # AMX weight-gradient kernel wrong
        (F.conv1d, (4, 128, 1), (128, 128, 3)),
        (F.conv3d, (2, 64, 2, 4, 1), (64, 64, 3, 3, 3)),
    ],
)
def test_strided_width_one_convolution_is_right_under_cpu_bf16_autocast(conv, x_shape, w_shape):
    torch.manual_seed(0)
    x = torch.randn(x_shape, requires_grad=True)
    w = (0.05 * torch.randn(w_shape)).requires_grad_()
    xd = x.detach().bfloat16().double().requires_grad_()
    wd = w.detach().bfloat16().double().requires_grad_()
    ref = conv(xd, wd, stride=2, padding=1)
    grad = torch.randn_like(ref)
    ref.backward(grad)
    for _ in range(3):  # the broken kernels read memory they never wrote: results change between calls
        with cpu_bf16_autocast():
            y = conv(x, w, stride=2, padding=1)
        assert y.dtype == torch.bfloat16
        y.backward(grad.float())
        assert rel_err(y, ref) < 2e-2
        assert rel_err(x.grad, xd.grad) < 2e-2
        assert rel_err(w.grad, wd.grad) < 2e-2
        x.grad = w.grad = None


def test_other_convolutions_keep_bf16():
    torch.manual_seed(0)
    x, w = torch.randn(4, 64, 8, 4), torch.randn(64, 64, 3, 3) * 0.05
    with cpu_bf16_autocast():
        y = F.conv2d(x, w, stride=2, padding=1)  # output 4x2: not in the bug's class
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, F.conv2d(x.bfloat16(), w.bfloat16(), stride=2, padding=1))


def test_trainer_bf16_forward_matches_float32(tiny_market, tmp_path):
    """BoT ResNet-18 at 32x16 under the trainer's bf16 autocast (unguarded on AMX: NaN or ~13% off)."""
    o = {"model.name": "bot", "model.backbone": "resnet18", "data.dataset": "market1501",
         "data.root": str(tiny_market), "data.height": 32, "data.width": 16, "data.ids_per_batch": 4,
         "data.instances_per_id": 2, "data.workers": 0, "train.max_iters": 1, "train.amp": "bf16",
         "train.device": "cpu", "run.out": str(tmp_path / "run"), "run.progress": False}
    trainer = Trainer(load_config(None, [f"{k}={v}" for k, v in o.items()]))
    model = trainer.model.eval()
    _epoch, batch = next(iter(trainer._batches()))
    images = batch["image"].float()
    with torch.no_grad():
        want = model(images).embeddings["global"].double()
        for _ in range(2):
            with trainer._autocast():
                got = model(images).embeddings["global"]
            assert got.dtype == torch.bfloat16
            assert rel_err(got, want) < 2e-2
