"""The training loop: iteration-based, resumable to the same state, safe against NaN, DDP-ready.

Flow: records -> transforms -> identity-balanced sampler -> model -> ModelOutput -> method loss recipe.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from occreid.config import Config, load_config
from occreid.data.records import DatasetSplits, Record
from occreid.engine.checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state
from occreid.engine.distributed import (
    DistInfo,
    average_gradients,
    convert_sync_batchnorm,
    init_distributed,
    rank_device,
)
from occreid.engine.run_dir import RunDir
from occreid.engine.schedule import lr_factor
from occreid.errors import ConfigError, OccreidError
from occreid.methods import get_method


class TrainingDiverged(OccreidError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    iterations: int
    last_loss: float
    model: nn.Module


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name}: CUDA is not available on this machine; use train.device=cpu")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds third-party code that uses the legacy global RNG
    torch.manual_seed(seed)


def carve_validation(train: list[Record], val_ids: int, seed: int) -> tuple[list[Record], list[Record]]:
    """Hold out `val_ids` training identities (never the test set) for checkpoint selection."""
    if val_ids <= 0:
        return train, []
    pids = sorted({r.pid for r in train})
    if val_ids >= len(pids):
        raise ConfigError(f"data.val_ids={val_ids} leaves no training identity (only {len(pids)} ids)")
    rng = np.random.default_rng(seed)
    held = set(rng.choice(pids, size=val_ids, replace=False).tolist())
    from occreid.data.records import relabel

    keep = relabel([r for r in train if r.pid not in held])
    return keep, [r for r in train if r.pid in held]


def load_training_data(cfg: Config) -> DatasetSplits:
    from occreid.data.datasets import load_dataset

    splits = load_dataset(cfg.data.dataset, cfg.data.root, **dataset_options(cfg))
    if not splits.train:
        raise ConfigError(
            f"data.dataset={cfg.data.dataset}: no training split under {cfg.data.root}; "
            "test-only datasets are evaluated with data.test_datasets=[...] after training on another set"
        )
    return splits


def dataset_options(cfg: Config) -> dict:
    opts: dict = {"labels_root": cfg.data.labels_root}
    if cfg.data.dataset == "partial_reid":
        opts["query"] = cfg.data.partial_reid_query
    if cfg.data.dataset == "cuhk03":
        opts["variant"] = cfg.data.cuhk03_variant
    return opts


def build_optimizer(cfg: Config, model: nn.Module, loss: nn.Module) -> torch.optim.Optimizer:
    """Per-group learning rates: backbone at `backbone_lr_mult` x the head's rate (PCB: 0.1)."""
    backbone = getattr(model, "backbone", None)
    bb_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    bb = [p for p in model.parameters() if id(p) in bb_ids and p.requires_grad]
    head = [p for p in model.parameters() if id(p) not in bb_ids and p.requires_grad]
    head += [p for p in loss.parameters() if p.requires_grad and not getattr(loss, "own_optimizer", False)]
    t = cfg.train
    groups = [
        {"params": bb, "lr": t.lr * t.backbone_lr_mult, "base_lr": t.lr * t.backbone_lr_mult},
        {"params": head, "lr": t.lr, "base_lr": t.lr},
    ]
    groups = [g for g in groups if g["params"]]
    if t.optimizer == "adam":
        return torch.optim.Adam(groups, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=True)


class Trainer:
    """Holds the state of one training run; `fit()` runs it to `total_iters`."""

    def __init__(self, cfg: Config, *, resume: bool = False, dist_info: DistInfo | None = None):
        from occreid.data.images import ReidImageDataset
        from occreid.data.sampler import DistributedIdentitySampler, IdentityBalancedSampler
        from occreid.data.transforms import build_transforms

        self.cfg = cfg
        self.device = resolve_device(cfg.train.device)
        self.dist = dist_info or init_distributed(self.device)
        self.device = rank_device(self.device, self.dist)
        self.method = get_method(cfg.model.name)
        seed_everything(cfg.train.seed)

        splits = load_training_data(cfg)
        train, self.val_records = carve_validation(splits.train, cfg.data.val_ids, cfg.train.seed)
        self.splits = splits
        self.train_records = train
        self.num_classes = len({r.pid for r in train})
        grouping = self.method.label_grouping(cfg) if hasattr(self.method, "label_grouping") else None
        self.dataset = ReidImageDataset(
            train, build_transforms(cfg.data, train=True), grouping=grouping, train=True, seed=cfg.train.seed
        )
        pids = [r.pid for r in train]
        d = cfg.data
        if self.dist.enabled:
            self.sampler = DistributedIdentitySampler(
                pids, d.ids_per_batch * self.dist.world_size, d.instances_per_id, seed=cfg.train.seed,
                rank=self.dist.rank, world_size=self.dist.world_size, item_seeds=True,
            )
        else:
            self.sampler = IdentityBalancedSampler(
                pids, d.ids_per_batch, d.instances_per_id, seed=cfg.train.seed, item_seeds=True
            )
        self.batches_per_epoch = self.sampler.batches_per_epoch
        t = cfg.train
        self.total_iters = t.max_iters if t.max_iters is not None else t.epochs * self.batches_per_epoch

        self.model = self.method.build_model(cfg, self.num_classes).to(self.device)
        if cfg.model.pretrained_path:
            # a model may load more than its backbone (PAN copies stage 4 into its buffer layer)
            loader = getattr(self.model, "load_pretrained", None) or self.model.backbone.load_pretrained
            report = loader(cfg.model.pretrained_path)
            if self.dist.is_main:
                print(report)
        self.loss = self.method.build_loss(cfg, self.num_classes, self.model).to(self.device)
        if self.dist.enabled and t.sync_bn:
            self.model = convert_sync_batchnorm(self.model, self.device)
        if t.channels_last and self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(cfg, self.model, self.loss)
        self.loss_optimizer = self.loss.build_optimizer() if hasattr(self.loss, "build_optimizer") else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=(t.amp == "fp16" and self.device.type == "cuda"))
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index or 0] if self.device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.forward_model = torch.compile(self.ddp_model) if t.compile else self.ddp_model

        self.input_dtype = next(self.model.parameters()).dtype
        self.iteration = 0
        self.train_seconds = 0.0  # wall time in training steps (data wait included), summed across resumes
        self.run = RunDir(cfg, write=self.dist.is_main, fresh=not resume)
        if resume:
            self._restore(load_checkpoint(self.run.last, method=cfg.model.name))

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        from occreid.config import to_dict

        state = {
            "format": 1,
            "method": self.cfg.model.name,
            "config": to_dict(self.cfg),
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "train_seconds": self.train_seconds,
            "num_classes": self.num_classes,
            "rng": rng_state(),
        }
        if self.loss_optimizer is not None:
            state["loss_optimizer"] = self.loss_optimizer.state_dict()
        return state

    def _restore(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.loss.load_state_dict(ckpt["loss"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.loss_optimizer is not None and "loss_optimizer" in ckpt:
            self.loss_optimizer.load_state_dict(ckpt["loss_optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iteration = int(ckpt["iteration"])
        self.train_seconds = float(ckpt.get("train_seconds", 0.0))
        set_rng_state(ckpt["rng"])
        self.run.truncate_log(self.iteration)

    def save(self, name: str = "last.pt") -> None:
        if self.dist.is_main:
            save_atomic(self.state_dict(), self.run.path / name)

    # ---- loop --------------------------------------------------------------------------------
    def _set_lr(self) -> float:
        f = lr_factor(self.cfg.train, self.iteration / self.batches_per_epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * f
        return f * self.cfg.train.lr

    def _batches(self):
        """Yield (epoch, batch) from the current iteration on. An epoch's batches and every item's
        augmentation seed are pure functions of (seed, epoch, position), so a resumed run replays
        exactly the batches it had not done yet."""
        from occreid.data.images import collate

        bpe = self.batches_per_epoch
        local_batch = getattr(self.sampler, "local_batch_size", self.sampler.batch_size)
        while self.iteration < self.total_iters:
            epoch, skip = divmod(self.iteration, bpe)
            self.sampler.set_epoch(epoch, start_batch=skip)
            self.dataset.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                self.dataset, sampler=self.sampler, batch_size=local_batch,
                num_workers=self.cfg.data.workers, collate_fn=collate, drop_last=True,
            )
            for batch in loader:
                yield epoch, batch
                if self.iteration >= self.total_iters:
                    return

    def _autocast(self):
        amp = self.cfg.train.amp
        if amp == "none":
            return torch.autocast(self.device.type, enabled=False)
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        if self.device.type == "cpu" and dtype is torch.bfloat16:
            from occreid.engine.amp import cpu_bf16_autocast

            return cpu_bf16_autocast()  # guards a oneDNN AMX bf16 convolution bug, see occreid.engine.amp
        return torch.autocast(self.device.type, dtype=dtype)

    def fit(self, *, stop_after: int | None = None) -> TrainResult:
        """Train to the end (or `stop_after` more iterations); checkpoint every `checkpoint_every`."""
        from tqdm import tqdm

        t = self.cfg.train
        self.ddp_model.train()
        bar = tqdm(
            total=self.total_iters, initial=self.iteration, disable=not (self.cfg.run.progress and self.dist.is_main),
            desc=f"train {self.cfg.model.name}", unit="it", dynamic_ncols=True,
        )
        last_loss = float("nan")
        start = self.iteration
        accum = max(1, t.accum_steps)
        tick = time.perf_counter()
        for _epoch, batch in self._batches():
            lr = self._set_lr()
            batch = {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
            images = batch["image"].to(self.input_dtype)
            if t.channels_last and self.device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                out = self.forward_model(images)
                loss, terms = self.loss(out, batch)
            loss = loss.float()
            if not torch.isfinite(loss):
                bar.close()
                raise TrainingDiverged(
                    f"loss became {loss.item()} at iteration {self.iteration} ({terms_text(terms)}); "
                    f"the last good checkpoint is kept at {self.run.last}. Lower train.lr, enable "
                    "train.grad_clip, or check the data; resume with `occreid train --resume RUN_DIR`."
                )
            self.scaler.scale(loss / accum).backward()
            if (self.iteration + 1) % accum == 0:
                average_gradients(self.loss.parameters())
                if t.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
                if self.loss_optimizer is not None:  # e.g. BoT's centres, with their own SGD
                    self.scaler.unscale_(self.loss_optimizer)
                    self.loss.before_step()
                    self.scaler.step(self.loss_optimizer)
                    self.loss_optimizer.zero_grad(set_to_none=True)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
            self.iteration += 1
            last_loss = loss.item()
            now = time.perf_counter()
            self.train_seconds += now - tick
            bar.update(1)
            if self.iteration % max(1, t.log_every) == 0 or self.iteration == self.total_iters:
                rec = {"iter": self.iteration, "epoch": round(self.iteration / self.batches_per_epoch, 3),
                       "lr": lr, "loss": last_loss, "train_s": round(self.train_seconds, 1),
                       **{k: float(v) for k, v in terms.items()}}
                self.run.log(rec)
                bar.set_postfix(loss=f"{last_loss:.3f}")
            if t.checkpoint_every and self.iteration % t.checkpoint_every == 0:
                self.save()
            at_end = self.iteration == self.total_iters
            if t.eval_every and self.val_records and (self.iteration % t.eval_every == 0 or at_end):
                self.validate()  # also at the last iteration, so best.pt can be the final model
            if stop_after is not None and self.iteration - start >= stop_after:
                break
            tick = time.perf_counter()  # checkpointing and validation are not training time
        bar.close()
        if self.iteration >= self.total_iters:
            self.save()
        self.run.close()
        return TrainResult(self.run.path, self.iteration, last_loss, self.model)

    def validate(self) -> dict:
        """Rank-1 / mAP on the held-out training identities (query = first image per id and camera)."""
        from occreid.engine.evaluate import evaluate_records

        q, g = split_validation(self.val_records)
        res = evaluate_records(self.model, self.cfg, q, g, device=self.device, progress=False, dist_info=self.dist)
        self.ddp_model.train()
        if res is None:  # not rank 0: extraction shard done, rank 0 ranks and keeps the best checkpoint
            return {}
        best = getattr(self, "_best_val", -1.0)
        metrics = {"iter": self.iteration, "val_rank1": res["rank1"], "val_mAP": res["mAP"]}
        self.run.log(metrics)
        if res["mAP"] > best:
            self._best_val = res["mAP"]
            self.save("best.pt")
        return metrics


def split_validation(records: list[Record]) -> tuple[list[Record], list[Record]]:
    """Leave-one-out on the held-out identities: every image queries all of them, as at test time.

    Query and gallery are the same records with their cameras, so the Market rule drops each query's
    own image and its same-camera mates as junk and scores cross-camera matches only. This uses every
    held-out image as a query (one query per identity, the earlier rule, gave a noisy rank-1). The same
    list is returned twice, so its features are extracted once.
    """
    both = list(records)
    return both, both


def terms_text(terms: dict) -> str:
    """Every loss term, NaN and inf included, for the message that stops a diverged run."""
    return ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())


def train(config_path: str | None, overrides: list[str], *, resume_dir: str | None = None) -> TrainResult:
    """`occreid train`: a new run from a config, or `--resume RUN_DIR` with its saved config."""
    if resume_dir:
        cfg = load_config(Path(resume_dir) / "config.yaml", [*overrides, f"run.out={resume_dir}"])
        return Trainer(cfg, resume=(Path(resume_dir) / "last.pt").exists()).fit()
    cfg = load_config(config_path, overrides)
    return Trainer(cfg).fit()
