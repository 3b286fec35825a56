"""Helpers shared by the method test files: small configs, written-out reference layers and losses, the
fixed-batch learning run, the checkpoint round trip and the trainer run. Reference values built here use
explicit loops and closed forms, never the module under test."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from occreid.config import Config, load_config, to_dict
from occreid.evaluation.distances import matched_embeddings

PIDS8 = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


def single_thread() -> Iterator[None]:
    """Small models run fastest on one thread; two threads on a shared 2-core machine thrash. A test
    module opts in with `one_thread = pytest.fixture(autouse=True)(single_thread)`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- configs -------------------------------------------------------------------------------------


def method_cfg(name: str, height: int = 64, width: int = 32, **method) -> Config:
    """Method `name` on ResNet-18 (last stride 1) at height x width with `method.*` options (None: null)."""
    o = {"model.name": name, "model.backbone": "resnet18", "data.height": height, "data.width": width}
    o.update({f"method.{k}": ("null" if v is None else v) for k, v in method.items()})
    return load_config(None, [f"{k}={v}" for k, v in o.items()])


def trainer_cfg(
    name: str, data_root: Path, out: Path, overrides: dict | None = None, iters: int = 2, height: int = 32,
    width: int = 16,
) -> Config:
    """A short CPU training run of method `name` on the Market-layout data at data_root: 4 ids x 2 images,
    `iters` iterations with a checkpoint at the end, metrics logged every iteration to out/."""
    o = {
        "model.name": name, "model.backbone": "resnet18", "data.dataset": "market1501",
        "data.root": str(data_root), "data.height": height, "data.width": width, "data.ids_per_batch": 4,
        "data.instances_per_id": 2, "data.workers": 0, "train.max_iters": iters,
        "train.checkpoint_every": iters, "train.log_every": 1, "train.warmup_epochs": 1, "run.out": str(out),
        "run.progress": False, **(overrides or {}),
    }
    return load_config(None, [f"{k}={v}" for k, v in o.items()])


# ---- written-out layers --------------------------------------------------------------------------


def randomise_bn(model: nn.Module) -> None:
    """Non-trivial running statistics and affine weights for every BatchNorm (eval-mode checks see them)."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def bn_eval(x: torch.Tensor, bn) -> torch.Tensor:
    """Eval-mode BatchNorm written out, over dim 1 of x."""
    shape = [1, -1] + [1] * (x.dim() - 2)
    scale = bn.weight.view(shape) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
    return (x - bn.running_mean.view(shape)) * scale + bn.bias.view(shape)


def conv1x1(x: torch.Tensor, conv) -> torch.Tensor:
    """A 1x1 convolution as an einsum over channels (plus the bias, if any)."""
    y = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x)
    return y if conv.bias is None else y + conv.bias.view(1, -1, 1, 1)


def gated_conv(x: torch.Tensor, gate, guide: torch.Tensor | None = None) -> torch.Tensor:
    """GatedConv written out: out = 1x1conv(x (1 + a)), a = sigmoid(BN(1x1(ReLU(1x1(BN([x, guide])))))))."""
    z = x if guide is None else torch.cat([x, guide], dim=1)
    hidden = torch.relu(conv1x1(bn_eval(z, gate.gate[0]), gate.gate[1]))
    a = torch.sigmoid(bn_eval(conv1x1(hidden, gate.gate[3]), gate.gate[4]))
    return conv1x1(x * (1 + a), gate.out)


# ---- written-out losses --------------------------------------------------------------------------


def ce_ls(logits: Sequence[float], target: int, eps: float) -> float:
    """Label-smoothed CE of one row: target (1 - eps) one_hot + eps / K over the K = len(logits) classes."""
    z = math.log(sum(math.exp(v) for v in logits))
    k = len(logits)
    return -sum(((1 - eps) * (j == target) + eps / k) * (v - z) for j, v in enumerate(logits))


def mean_ce_ls(rows, targets, eps: float) -> float:
    """Mean of `ce_ls` over rows (lists or tensors [N, K] and [N])."""
    rows = rows.tolist() if torch.is_tensor(rows) else rows
    targets = targets.tolist() if torch.is_tensor(targets) else targets
    return sum(ce_ls(r, t, eps) for r, t in zip(rows, targets)) / len(targets)


def batch_hard_loop(dist: Callable[[int, int], float], pids: Sequence[int], margin: float | None) -> float:
    """Batch-hard triplet by loops over a pair distance dist(i, j): mean over anchors of
    max(0, d_ap - d_an + margin), or softplus(d_ap - d_an) for margin None (soft margin)."""
    n = len(pids)
    total = 0.0
    for a in range(n):
        ap = max(dist(a, j) for j in range(n) if pids[j] == pids[a])
        an = min(dist(a, j) for j in range(n) if pids[j] != pids[a])
        total += math.log1p(math.exp(ap - an)) if margin is None else max(0.0, ap - an + margin)
    return total / n


def feature_triplet_loop(feats, pids, margin: float | None) -> float:
    """`batch_hard_loop` on Euclidean distances between feature rows (lists or tensors)."""
    x = feats.tolist() if torch.is_tensor(feats) else feats
    p = pids.tolist() if torch.is_tensor(pids) else list(pids)
    return batch_hard_loop(lambda i, j: math.dist(x[i], x[j]), p, margin)


def blocky_pixel_case(channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Part logits [3, channels, 2, 2], their coarse labels [3, 2, 2], the 8 x 8 image labels (constant 4 x 4
    blocks, so downsampling to the map reads the coarse label) and has_label with image 1 unlabelled."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, channels, 2, 2, generator=g)
    coarse = torch.randint(0, channels, (3, 2, 2), generator=g)
    label = coarse.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    return logits, coarse, label, torch.tensor([True, False, True])


def pixel_ce_loop(logits: torch.Tensor, target: torch.Tensor, eps: float, images: Sequence[int]) -> float:
    """Mean of `ce_ls` over every pixel of the listed images: logits [B, C, h, w], target [B, h, w]."""
    h, w = target.shape[1:]
    pixels = [(b, r, c) for b in images for r in range(h) for c in range(w)]
    vals = [ce_ls(logits[b, :, r, c].tolist(), int(target[b, r, c]), eps) for b, r, c in pixels]
    return sum(vals) / len(vals)


def matched_with(feats: dict, opts):
    """The shared `matched_embeddings` with a method's Options (test embeddings, matching, threshold)."""
    return matched_embeddings(feats, opts.test_embeddings, opts.matching, opts.visibility_threshold)


def matched_weights(part_scores: list[float], opts) -> list[float]:
    """The weights `matched_with` gives one image with a foreground feature and parts of these scores."""
    k = len(part_scores)
    feats = {"foreground": torch.zeros(1, 3), "parts": torch.zeros(1, k, 3)}
    feats["visibility"] = torch.tensor([part_scores])
    return matched_with(feats, opts)[1][0].tolist()


# ---- configs on disk -----------------------------------------------------------------------------


def check_ablation_switches(root: Path, expected: dict[str, dict]) -> dict:
    """The YAML files under root/ablations are exactly `expected`'s names; each trains on occluded_duke and
    differs from root/occluded_duke.yaml only in its switch's method keys, set to the switch's values.
    Returns the full model's method options."""
    full = load_config(root / "occluded_duke.yaml", []).method
    assert sorted(p.stem for p in (root / "ablations").glob("*.yaml")) == sorted(expected)
    for name, switch in expected.items():
        cfg = load_config(root / "ablations" / f"{name}.yaml", [])
        assert cfg.data.dataset == "occluded_duke", name
        changed = {k: v for k, v in cfg.method.items() if full[k] != v}
        assert changed == {k: v for k, v in switch.items() if full[k] != v}, name
        assert all(cfg.method[k] == v for k, v in switch.items()), name
    return full


# ---- learning, checkpoints, trainer --------------------------------------------------------------


def fit_fixed_batch(
    model: nn.Module, loss_fn: nn.Module, images: torch.Tensor, batch: dict, lr: float, steps: int = 30,
    reach_steps: int = 1, last_seed: int | None = None,
) -> tuple[dict, dict, list[str]]:
    """Adam on one batch for `steps` steps. Returns the loss terms of the first step, the terms of a
    no-grad pass after the last step (under torch.manual_seed(last_seed) when given, for losses that
    sample) and the trainable parameters whose gradient was never non-zero in the first `reach_steps`."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    reached: set[str] = set()
    first = None
    for step in range(steps):
        opt.zero_grad()
        total, terms = loss_fn(model(images), batch)
        total.backward()
        if step < reach_steps:
            reached |= {n for n, p in model.named_parameters() if p.grad is not None and p.grad.any()}
        if first is None:
            first = terms
        opt.step()
    with torch.no_grad():
        if last_seed is not None:
            torch.manual_seed(last_seed)
        _, last = loss_fn(model(images), batch)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in reached]
    return first, last, missing


def paper_step(
    method, config: str | Path, overrides: Sequence[str] = (), labels: Callable | None = None,
    size: tuple[int, int] = (256, 128), num_classes: int = 702,
) -> tuple[nn.Module, object, torch.Tensor, dict]:
    """One training step of a paper configuration at batch 2 (pids 0, 1): the model, its output, the total
    (after backward) and the loss terms. `labels(n, h, w)` gives the batch's parsing labels, if any."""
    torch.manual_seed(0)
    cfg = load_config(config, list(overrides))
    model = method.build_model(cfg, num_classes).train()
    out = model(torch.randn(2, 3, *size))
    batch = {"pid": torch.tensor([0, 1])}
    if labels is not None:
        batch.update(label=labels(2, *size), has_label=torch.ones(2, dtype=torch.bool))
    total, terms = method.build_loss(cfg, num_classes, model)(out, batch)
    total.backward()
    return model, out, total, terms


def reload_round_trip(
    model: nn.Module, cfg: Config, num_classes: int, tmp_path: Path, size: tuple[int, int] = (64, 32)
) -> tuple[list[str], list[str]]:
    """Save `model` as a checkpoint and reload it with `load_model` after two training-mode passes have moved
    its BatchNorm statistics. Returns the sorted feature names of three random images and the names whose
    features are not bit-identical after the reload (or exist on one side only)."""
    from occreid.engine.evaluate import load_model

    model.train()
    for _ in range(2):
        model(torch.randn(4, 3, *size))
    model.eval()
    x = torch.randn(3, 3, *size)
    with torch.no_grad():
        before = model(x).features()
    ckpt = {"model": model.state_dict(), "num_classes": num_classes, "config": to_dict(cfg)}
    torch.save(ckpt, tmp_path / "m.pt")
    reloaded = load_model(torch.load(tmp_path / "m.pt", weights_only=True), cfg)
    with torch.no_grad():
        after = reloaded(x).features()
    differing = [k for k in sorted(set(before) | set(after)) if k not in before or k not in after]
    differing += [k for k in sorted(before) if k in after and not torch.equal(before[k], after[k])]
    return sorted(before), differing


def silent_parameters(*modules: nn.Module) -> list[str]:
    """Trainable parameters of the modules (after a backward pass) whose gradient is missing or all zero."""
    return [
        f"{type(m).__name__}.{n}"
        for m in modules
        for n, p in m.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.any(p.grad != 0))
    ]


def write_band_labels(market_root: Path, labels_root: Path, count: int) -> int:
    """Atomic label PNGs (head / torso / arms / legs / feet bands) for the first `count` train images."""
    from occreid.labels.format import write_label

    images = sorted((market_root / "Market-1501" / "bounding_box_train").glob("*.jpg"))[:count]
    for p in images:
        lab = np.zeros((32, 16), np.uint8)
        lab[:6, 4:12] = 1  # head
        lab[6:16, 4:12] = 2  # torso
        lab[6:16, :4], lab[6:16, 12:] = 3, 4  # arms
        lab[16:28, :8], lab[16:28, 8:] = 5, 6  # legs
        lab[28:, :8], lab[28:, 8:] = 7, 8  # feet
        write_label(labels_root / "bounding_box_train" / f"{p.stem}.png", lab)
    return len(images)


def last_metrics(out: Path) -> dict:
    """The last record of a run's metrics.jsonl."""
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])


def reload_run(out: Path, name: str, cfg: Config) -> nn.Module:
    """The model of a run's last.pt, loaded the way `occreid evaluate` loads it."""
    from occreid.engine.checkpoint import load_checkpoint
    from occreid.engine.evaluate import load_model

    return load_model(load_checkpoint(out / "last.pt", method=name), cfg)
