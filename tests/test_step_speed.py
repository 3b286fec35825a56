"""occreid.engine.step_speed: fused optimiser kernels where every parameter is on CUDA (and torch's default,
hence unchanged results, elsewhere), the kernel choice kept across a resume, and the cuDNN autotuner switch."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from occreid.config import load_config
from occreid.engine import trainer as trainer_module
from occreid.engine.step_speed import fused_optimizer_options, use_cudnn_autotuner, with_device_kernels
from occreid.engine.trainer import build_optimizer


def fake_param(cuda: bool, floating: bool = True):
    return SimpleNamespace(is_cuda=cuda, is_floating_point=lambda: floating)


def test_fused_only_when_every_parameter_is_a_floating_cuda_tensor():
    assert fused_optimizer_options([fake_param(True), fake_param(True)]) == {"fused": True}
    assert fused_optimizer_options([fake_param(True), fake_param(False)]) == {}
    assert fused_optimizer_options([fake_param(True, floating=False)]) == {}
    assert fused_optimizer_options([]) == {}
    assert fused_optimizer_options(nn.Linear(3, 2).parameters()) == {}  # CPU: torch's default, as before


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Linear(6, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(torch.relu(self.backbone(x)))


def two_steps(opt: torch.optim.Optimizer, model: nn.Module) -> dict:
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 6, generator=g)).square().mean().backward()
        opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_on_the_cpu_the_optimiser_is_torchs_default_and_steps_as_before(name):
    cfg = load_config(None, [f"train.optimizer={name}", "train.backbone_lr_mult=0.1"])
    model = Tiny()
    opt = build_optimizer(cfg, model, nn.Module())
    assert all(not g.get("fused") for g in opt.param_groups)
    plain_model = copy.deepcopy(model)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    extra = {"momentum": cfg.train.momentum, "nesterov": True} if name == "sgd" else {}
    t = cfg.train
    plain = cls([{"params": list(plain_model.backbone.parameters()), "lr": t.lr * 0.1},
                 {"params": list(plain_model.head.parameters()), "lr": t.lr}],
                lr=t.lr, weight_decay=t.weight_decay, **extra)
    got, want = two_steps(opt, model), two_steps(plain, plain_model)
    for k in want:
        assert torch.equal(got[k], want[k]), k


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_the_fused_choice_reaches_the_optimiser_and_computes_the_same_update(name, monkeypatch):
    """Fused kernels also run on the CPU (torch >= 2.4), so the wiring is checked here; CUDA takes the same path."""
    cfg = load_config(None, [f"train.optimizer={name}"])
    monkeypatch.setattr(trainer_module, "fused_optimizer_options", lambda params: {"fused": True})
    fused_model, model = Tiny(), Tiny()
    fused = build_optimizer(cfg, fused_model, nn.Module())
    assert all(g["fused"] is True for g in fused.param_groups)
    monkeypatch.setattr(trainer_module, "fused_optimizer_options", lambda params: {})
    got, want = two_steps(fused, fused_model), two_steps(build_optimizer(cfg, model, nn.Module()), model)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-7)


def test_a_resumed_optimiser_keeps_the_kernels_of_the_device_it_runs_on():
    model = Tiny()
    saved_opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # as written by a CPU run
    two_steps(saved_opt, model)
    saved = saved_opt.state_dict()
    live = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # as built on a GPU
    live.load_state_dict(with_device_kernels(saved, live))
    assert live.param_groups[0]["fused"] is True and saved["param_groups"][0]["fused"] is None
    two_steps(live, model)  # the loaded step counters suit the fused kernel
    assert int(live.state_dict()["state"][0]["step"]) == 4
    other = {**saved, "param_groups": saved["param_groups"] * 2}  # another layout: left for torch to refuse
    assert with_device_kernels(other, live) is other


def test_the_cudnn_autotuner_is_set_on_cuda_only():
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        use_cudnn_autotuner(True, torch.device("cpu"))
        assert torch.backends.cudnn.benchmark is False
        use_cudnn_autotuner(True, torch.device("cuda"))
        assert torch.backends.cudnn.benchmark is True
        assert load_config(None, []).train.cudnn_benchmark is True
    finally:
        torch.backends.cudnn.benchmark = before
