"""The training loop: iteration-based, resumable to the same state, safe against NaN, DDP-ready.

Flow: records -> transforms -> identity-balanced sampler -> model -> ModelOutput -> method loss recipe.
A stop for any reason (an error, a NaN or exploding loss, SIGINT/SIGTERM) first writes last.pt at the
last whole iteration, and its message says which checkpoint holds which iteration.
On a GPU the losses stay on the device and are read (and checked) every train.sync_every iterations, at
log steps and before every checkpoint, so a step never waits for the device; a bad loss found late stops
the run without saving the weights that took its update (the checkpoints on disk were all checked).
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from occreid.config import Config, load_config
from occreid.data.records import DatasetSplits, Record
from occreid.engine.checkpoint import (
    CheckpointWriteError,
    load_for_resume,
    rng_state,
    save_atomic,
    set_rng_state,
)
from occreid.engine.distributed import (
    DistInfo,
    average_gradients,
    convert_sync_batchnorm,
    init_distributed,
    rank_device,
)
from occreid.engine.loss_reading import LossReading, PendingLosses
from occreid.engine.run_dir import RunDir
from occreid.engine.run_lock import RunLock
from occreid.engine.run_setup import dataset_load_options, resolve_device
from occreid.engine.schedule import lr_factor
from occreid.engine.step_speed import (
    fused_optimizer_options,
    resolve_sync_every,
    use_cudnn_autotuner,
    with_device_kernels,
)
from occreid.engine.stop_signals import StopNow, StopSignals
from occreid.errors import CheckpointError, ConfigError, OccreidError
from occreid.methods import get_method

LOSS_GUARD_WINDOW = 50  # train.loss_guard compares each loss with the median of this many before it


class TrainingDiverged(OccreidError):
    """The loss became NaN or infinite, or exploded past train.loss_guard; the message says what is saved."""


class TrainingInterrupted(OccreidError):
    """SIGINT or SIGTERM stopped the run; the message says which checkpoint holds which iteration."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's code for "killed by this signal"


@dataclass
class TrainResult:
    run_dir: Path
    iterations: int
    last_loss: float
    model: nn.Module


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

    splits = load_dataset(cfg.data.dataset, cfg.data.root, **dataset_load_options(cfg))
    if not splits.train:
        raise ConfigError(
            f"data.dataset={cfg.data.dataset}: no training split under {cfg.data.root}; "
            "test-only datasets are evaluated with data.test_datasets=[...] after training on another set"
        )
    return splits


def build_optimizer(cfg: Config, model: nn.Module, loss: nn.Module) -> torch.optim.Optimizer:
    """Per-group learning rates: backbone at `backbone_lr_mult` x the head's rate (PCB: 0.1). Fused
    kernels when every parameter is on CUDA (`fused_optimizer_options`); torch's default elsewhere."""
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
    kernels = fused_optimizer_options(p for g in groups for p in g["params"])
    if t.optimizer == "adam":
        return torch.optim.Adam(groups, lr=t.lr, weight_decay=t.weight_decay, **kernels)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay, **kernels)
    return torch.optim.SGD(
        groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=True, **kernels
    )


class Trainer:
    """Holds the state of one training run; `fit()` runs it to `total_iters`.

    The main process holds the run folder's lock (RUN/.lock) from construction until `fit()` ends or
    `close()` is called, so a second writer into the same folder is refused.
    """

    def __init__(self, cfg: Config, *, resume: bool = False, dist_info: DistInfo | None = None):
        self.cfg = cfg
        self.device = resolve_device(cfg.train.device)
        self.dist = dist_info or init_distributed(self.device)
        self.device = rank_device(self.device, self.dist)
        self.lock = RunLock(cfg.run.out) if self.dist.is_main else None
        if self.lock is not None and self.lock.note:
            self._note(self.lock.note)
        use_cudnn_autotuner(cfg.train.cudnn_benchmark, self.device)
        self.sync_every = resolve_sync_every(cfg.train.sync_every, self.device)
        self.pending = PendingLosses()  # losses not read yet (read every sync_every iterations)
        self.last_reading: LossReading | None = None  # the latest loss read and checked
        self.diverged_at: int | None = None  # the iteration whose loss stopped the run
        self.unrecorded: float | None = None  # the checked loss of the iteration in progress
        try:
            self._setup(resume)
        except BaseException:
            self.close()
            raise

    def _setup(self, resume: bool) -> None:
        from occreid.data.sampler import DistributedIdentitySampler, IdentityBalancedSampler
        from occreid.engine.train_data import build_train_dataset

        cfg = self.cfg
        self.run: RunDir | None = None
        resumed = self._resume_checkpoint() if resume else None
        self.method = get_method(cfg.model.name)
        seed_everything(cfg.train.seed)

        splits = load_training_data(cfg)
        train, self.val_records = carve_validation(splits.train, cfg.data.val_ids, cfg.train.seed)
        self.splits = splits
        self.train_records = train
        self.num_classes = len({r.pid for r in train})
        # per-image decoding, or the decode cache + batch augmentation on the device (data.decode_cache);
        # part labels only for methods that train with them
        self.dataset, self.augment = build_train_dataset(cfg, train, splits.root, self.method, self.device, self.dist)
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
        self.recent_losses: deque[float] = deque(maxlen=LOSS_GUARD_WINDOW)  # for train.loss_guard
        self.saved: dict[str, int | None] = {"last.pt": None, "last.prev.pt": None}  # iteration of each file
        self.updating = False  # True while a weight update is half applied (no checkpoint then)
        self.run = RunDir(cfg, write=self.dist.is_main, fresh=not resume)
        for note in self.run.notes:
            self._note(note)
        if resumed is not None:
            ckpt, path = resumed
            self._restore(ckpt)
            self.saved[path.name] = self.iteration
        self.good_rng = rng_state()  # the RNG state after the last whole iteration, as checkpoints store it
        self.good_buffers: list[torch.Tensor] = []  # model/loss buffers (BN statistics) before this forward
        self.forward_started = False  # this iteration's forward has run: buffers differ from good_buffers

    def _resume_checkpoint(self) -> tuple[dict, Path]:
        """The newest loadable checkpoint in run.out (last.pt, else last.prev.pt), or a clear error."""
        folder = Path(self.cfg.run.out)
        ckpt, path, notes = load_for_resume(folder, method=self.cfg.model.name, move_aside=self.dist.is_main)
        for note in notes:
            self._note(note)
        if ckpt is None:
            why = "; ".join(notes) or (
                "it has no last.pt or last.prev.pt: the run stopped before its first checkpoint "
                f"(train.checkpoint_every={self.cfg.train.checkpoint_every})"
            )
            raise CheckpointError(
                f"--resume {folder}: nothing to resume, {why}; start the run again with "
                f"`occreid train --config {folder / 'config.yaml'}`"
            )
        if path.name != "last.pt":
            self._note(f"resuming from {path} (iteration {int(ckpt['iteration'])}), the checkpoint before last.pt")
        return ckpt, path

    def _note(self, text: str) -> None:
        """A line for the user on stderr (main process only): what was repaired or taken over, and how."""
        if self.dist.is_main:
            print(f"occreid: note: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Close the run's writers and release the run folder's lock (fit() does this when it ends)."""
        run = getattr(self, "run", None)
        if run is not None:
            run.close()
        lock = getattr(self, "lock", None)
        if lock is not None:
            lock.release()

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
            "rng": self.good_rng,
            "recent_losses": torch.tensor(list(self.recent_losses), dtype=torch.float64),
        }
        if self.loss_optimizer is not None:
            state["loss_optimizer"] = self.loss_optimizer.state_dict()
        return state

    def _restore(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.loss.load_state_dict(ckpt["loss"])
        self.optimizer.load_state_dict(with_device_kernels(ckpt["optimizer"], self.optimizer))
        if self.loss_optimizer is not None and "loss_optimizer" in ckpt:
            self.loss_optimizer.load_state_dict(ckpt["loss_optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iteration = int(ckpt["iteration"])
        self.train_seconds = float(ckpt.get("train_seconds", 0.0))
        if "recent_losses" in ckpt:
            self.recent_losses.extend(float(v) for v in ckpt["recent_losses"])
        set_rng_state(ckpt["rng"])
        self.run.truncate_log(self.iteration)

    def save(self, name: str = "last.pt") -> None:
        """Write the state after the last whole iteration; last.pt keeps the one it replaces as last.prev.pt.
        The losses not read yet are read and checked first: a checkpoint holds checked iterations only."""
        self._read_losses()
        if not self.dist.is_main:
            return
        rotate = name == "last.pt"
        save_atomic(self.state_dict(), self.run.path / name, keep_previous=rotate)
        if rotate:
            self.saved["last.prev.pt"] = self.saved["last.pt"]
            self.saved["last.pt"] = self.iteration

    # ---- loop --------------------------------------------------------------------------------
    def _set_lr(self) -> float:
        f = lr_factor(self.cfg.train, self.iteration / self.batches_per_epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * f
        return f * self.cfg.train.lr

    def _batches(self):
        """Yield (epoch, batch) from the current iteration on, the batch already on the device (and
        through the batch augmentation when the decode cache is on). An epoch's batches and every item's
        augmentation seed are pure functions of (seed, epoch, position), so a resumed run replays
        exactly the batches it had not done yet; on CUDA the next batch is copied (pinned, on a side
        stream) while the current step runs."""
        from occreid.data.images import collate
        from occreid.data.prefetch import DevicePrefetcher

        bpe = self.batches_per_epoch
        local_batch = getattr(self.sampler, "local_batch_size", self.sampler.batch_size)
        while self.iteration < self.total_iters:
            epoch, skip = divmod(self.iteration, bpe)
            self.sampler.set_epoch(epoch, start_batch=skip)
            self.dataset.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                self.dataset, sampler=self.sampler, batch_size=local_batch,
                num_workers=self.cfg.data.workers, collate_fn=collate, drop_last=True,
                pin_memory=self.device.type == "cuda",
            )
            for batch in DevicePrefetcher(loader, self.device, getattr(self, "augment", None)):
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
        """Train to the end (or `stop_after` more iterations); checkpoint every `checkpoint_every`.

        A stop on the way (an error, a NaN or exploding loss, SIGINT/SIGTERM) first writes last.pt at the
        last whole iteration, then re-raises with what the run folder holds; the lock is released.
        """
        if self.dist.is_main and (self.lock is None or not self.lock.held):  # fit() again after a fit()
            self.lock = RunLock(self.cfg.run.out)
        with StopSignals(enabled=not self.dist.enabled) as signals:  # DDP ranks must stop together
            try:
                return self._train(signals, stop_after)
            except StopNow as e:
                raise TrainingInterrupted(
                    f"a second {e} stopped the run at once during iteration {self.iteration + 1}, without "
                    f"saving; {self._on_disk()}.{self._next_step()}", e.signum,
                ) from None
            except BaseException as e:
                self._explain_stop(e)
                raise
            finally:
                self.close()

    def _train(self, signals: StopSignals, stop_after: int | None) -> TrainResult:
        from tqdm import tqdm

        t = self.cfg.train
        self.ddp_model.train()
        bar = tqdm(
            total=self.total_iters, initial=self.iteration, disable=not (self.cfg.run.progress and self.dist.is_main),
            desc=f"train {self.cfg.model.name}", unit="it", dynamic_ncols=True,
        )
        self.unrecorded = None
        start = self.iteration
        accum = max(1, t.accum_steps)
        tick = time.perf_counter()
        try:
            for _epoch, batch in self._batches():
                lr = self._set_lr()
                batch = {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v)
                         for k, v in batch.items()}
                images = batch["image"].to(self.input_dtype)
                if t.channels_last and self.device.type == "cuda":
                    images = images.contiguous(memory_format=torch.channels_last)
                self._snapshot_buffers()
                self.forward_started = True
                with self._autocast():
                    out = self.forward_model(images)
                    loss, terms = self.loss(out, batch)
                loss = loss.float()
                self.pending.add(self.iteration + 1, loss, terms)  # kept on the device: no wait for it here
                if (self.iteration + 1) % self.sync_every == 0:  # sync_every=1: each loss before its update
                    self._read_losses()
                self.scaler.scale(loss / accum).backward()
                if (self.iteration + 1) % accum == 0:
                    self.updating = True
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
                self.updating = self.forward_started = False
                if self.unrecorded is not None:  # read before its update; the guard's window takes it now
                    self.recent_losses.append(self.unrecorded)
                    self.unrecorded = None
                self.good_rng = rng_state()
                at_end = self.iteration == self.total_iters
                log_now = self.iteration % max(1, t.log_every) == 0 or at_end
                save_now = bool(t.checkpoint_every) and self.iteration % t.checkpoint_every == 0
                eval_now = bool(t.eval_every and self.val_records) and (self.iteration % t.eval_every == 0 or at_end)
                if log_now or save_now or eval_now:
                    self._read_losses()  # before the clock: waiting for the device is training time
                now = time.perf_counter()
                self.train_seconds += now - tick
                bar.update(1)
                if log_now:
                    r = self.last_reading
                    rec = {"iter": self.iteration, "epoch": round(self.iteration / self.batches_per_epoch, 3),
                           "lr": lr, "loss": r.loss, "train_s": round(self.train_seconds, 1), **r.terms}
                    self.run.log(rec)
                    bar.set_postfix(loss=f"{r.loss:.3f}")
                if save_now:
                    self.save()
                if eval_now:
                    self.validate()  # also at the last iteration, so best.pt can be the final model
                if signals.requested and not at_end:
                    raise TrainingInterrupted(
                        f"{signals.name} received: stopped after iteration {self.iteration}", signals.signum
                    )
                if stop_after is not None and self.iteration - start >= stop_after:
                    break
                tick = time.perf_counter()  # checkpointing and validation are not training time
        finally:
            bar.close()
        self._read_losses()  # after stop_after: the window and last_reading cover every whole iteration
        if self.iteration >= self.total_iters and self.saved["last.pt"] != self.iteration:
            self.save()
        last_loss = self.last_reading.loss if self.last_reading is not None else float("nan")
        return TrainResult(self.run.path, self.iteration, last_loss, self.model)

    def _read_losses(self) -> None:
        """Read the pending losses in one host transfer and check them in iteration order; the first bad
        one raises TrainingDiverged naming its iteration (the later ones are dropped)."""
        if not len(self.pending):
            return
        for r in self.pending.read():
            try:
                self._check_loss(r.loss, r.terms, r.iteration)
            except TrainingDiverged:
                self.diverged_at = r.iteration
                raise
            self.last_reading = r
            if r.iteration <= self.iteration:
                self.recent_losses.append(r.loss)
            else:  # the iteration in progress: its loss joins the window once its update is done
                self.unrecorded = r.loss

    def _check_loss(self, value: float, terms: dict, it: int) -> None:
        """Stop on a NaN/inf loss, or on one above train.loss_guard x the median of the recent losses;
        `it` is the loss's iteration, numbered as in metrics.jsonl."""
        if not math.isfinite(value):
            raise TrainingDiverged(f"loss became {value} at iteration {it} ({terms_text(terms)})")
        guard = self.cfg.train.loss_guard
        if guard and self.recent_losses:
            ref = statistics.median_low(self.recent_losses)
            if ref > 0 and value > guard * ref:
                raise TrainingDiverged(
                    f"loss {value:.4g} at iteration {it} is more than train.loss_guard={guard:g} times the "
                    f"median {ref:.4g} of the last {len(self.recent_losses)} losses ({terms_text(terms)})"
                )

    # ---- stopping ----------------------------------------------------------------------------
    def _explain_stop(self, e: BaseException) -> None:
        """Save last.pt at the last whole iteration if possible, then say what the run folder holds: in
        an occreid error's message, or on stderr before any other exception's traceback."""
        if not self.dist.is_main or self.run is None:
            return
        held = self._save_on_stop(e)
        advice = self._next_step(diverged=isinstance(e, TrainingDiverged))
        if isinstance(e, OccreidError) and len(e.args) == 1 and isinstance(e.args[0], str):
            e.args = (f"{worker_message(e.args[0])}. The run stopped: {held}.{advice}",)
        else:
            print(f"occreid: the run stopped ({type(e).__name__}) during iteration {self.iteration + 1}: "
                  f"{held}.{advice}", file=sys.stderr, flush=True)

    def _save_on_stop(self, e: BaseException) -> str:
        """Write last.pt now unless it already holds this iteration or the state is not whole; return a
        true sentence about what was saved and what the run folder holds."""
        it = self.iteration
        if self.saved["last.pt"] == it:
            return self._on_disk()
        if self.forward_started and not self.updating:  # that forward moved the BN statistics: undo it
            self._restore_buffers()
        why = self._why_not_saved(e)
        if why is None:
            try:
                self.save()
                return self._on_disk(just_written=True)
            except StopNow:
                why = "writing last.pt was cancelled by a second signal"
            except CheckpointWriteError as w:
                why = f"writing last.pt at iteration {it} failed too ({w})"
        return f"{why}; {self._on_disk()}"

    def _why_not_saved(self, e: BaseException) -> str | None:
        it = self.iteration
        accum = max(1, self.cfg.train.accum_steps)
        if it == 0:
            return "no iteration was complete, so nothing was saved"
        if isinstance(e, CheckpointWriteError):
            return "no further checkpoint was attempted"
        if self.updating:
            return f"the weight update of iteration {it + 1} was half applied, so no whole state was saved"
        if it % accum:
            return f"iteration {it} falls inside a train.accum_steps={accum} accumulation, so it was not saved"
        why = self._read_losses_at_stop() or self._tainted()
        if why:
            return why
        if not self._state_is_finite():
            return f"the weights after iteration {it} are not finite, so they were not saved"
        return None

    def _read_losses_at_stop(self) -> str | None:
        """Read the losses of the whole iterations that were not read yet, before a save at a stop. A bad
        one sets `diverged_at` and is told as part of the reason; one that cannot be read (the device
        error that stopped the run, say) is the reason itself."""
        self.pending.drop_after(self.iteration)
        try:
            self._read_losses()
        except TrainingDiverged as d:
            return f"{d}, read at the stop; {self._tainted()}"
        except Exception as err:  # noqa: BLE001 - anything that breaks the read stops the save, with its name
            return (f"the losses since the last read could not be read ({type(err).__name__}: {err}), so "
                    "nothing was saved")
        return None

    def _tainted(self) -> str | None:
        """Why the weights in memory must not be saved: they took the update of a bad loss that was read
        only after that update (train.sync_every > 1); None when no such update was applied."""
        it = self.iteration
        if self.diverged_at is None or self.diverged_at > it:
            return None
        return (f"the weights after iteration {it} carry the update of iteration {self.diverged_at} (train."
                f"sync_every={self.sync_every} reads the losses every {self.sync_every} iterations), so they were "
                "not saved")

    def _buffers(self) -> list[torch.Tensor]:
        return [*self.model.buffers(), *self.loss.buffers()]

    def _snapshot_buffers(self) -> None:
        """Keep the buffers as they were after the last whole iteration (a forward updates BN's running
        statistics in place), so a stop inside an iteration can save exactly that state."""
        bufs = self._buffers()
        if not bufs:
            return
        if [b.shape for b in bufs] == [c.shape for c in self.good_buffers] and all(
            b.dtype == c.dtype and b.device == c.device for b, c in zip(bufs, self.good_buffers, strict=True)
        ):
            torch._foreach_copy_(self.good_buffers, bufs)
        else:
            self.good_buffers = [b.detach().clone() for b in bufs]

    def _restore_buffers(self) -> None:
        if self.good_buffers:
            with torch.no_grad():
                torch._foreach_copy_(self._buffers(), self.good_buffers)
        self.forward_started = False

    def _state_is_finite(self) -> bool:
        tensors = [*self.model.state_dict().values(), *self.loss.state_dict().values()]
        for group in self.optimizer.state.values():
            tensors += [v for v in group.values() if torch.is_tensor(v)]
        return all(torch.isfinite(v).all() for v in tensors if v.is_floating_point())

    def _on_disk(self, *, just_written: bool = False) -> str:
        """Which checkpoint file of this run holds which iteration, as far as this process knows."""
        last, prev = self.saved["last.pt"], self.saved["last.prev.pt"]
        held = []
        if last is not None:
            held.append(f"last.pt holds iteration {last}" + (", written at the stop" if just_written else ""))
        if prev is not None:
            held.append(f"last.prev.pt holds iteration {prev}")
        if not held:
            return f"no checkpoint was written (train.checkpoint_every={self.cfg.train.checkpoint_every})"
        return "; ".join(held)

    def _next_step(self, *, diverged: bool = False) -> str:
        """What to do after the stop: resume when a checkpoint exists, else start again."""
        saved = self.saved["last.pt"] is not None or self.saved["last.prev.pt"] is not None
        if diverged:
            fix = " Lower train.lr or set train.grad_clip (or check the data), then"
            if not saved:
                return f"{fix} start the run again."
            return (f"{fix} continue with `occreid train --resume {self.run.path} train.lr=...` (if it diverges "
                    "again from there, move last.prev.pt to last.pt to go back one checkpoint).")
        return f" Continue with `occreid train --resume {self.run.path}`." if saved else ""

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


def worker_message(message: str) -> str:
    """An error re-raised from a DataLoader worker carries the worker's traceback; keep its last line."""
    if not (message.startswith("Caught ") and "Original Traceback" in message):
        return message
    last = [ln for ln in message.splitlines() if ln.strip()][-1]
    name, sep, rest = last.partition(": ")
    return rest if sep and "." in name else last


def terms_text(terms: dict) -> str:
    """Every loss term, NaN and inf included, for the message that stops a diverged run."""
    return ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())


def train(config_path: str | None, overrides: list[str], *, resume_dir: str | None = None) -> TrainResult:
    """`occreid train`: a new run from a config, or `--resume RUN_DIR` with its saved config."""
    if resume_dir:
        if not (Path(resume_dir) / "config.yaml").is_file():
            raise ConfigError(
                f"--resume {resume_dir}: no config.yaml there, so it is not a run folder; give the folder "
                "that `occreid train` wrote (its run.out), or start a run with --config"
            )
        cfg = load_config(Path(resume_dir) / "config.yaml", [*overrides, f"run.out={resume_dir}"])
        return Trainer(cfg, resume=True).fit()  # no checkpoint there: a clear error, never a silent restart
    cfg = load_config(config_path, overrides)
    return Trainer(cfg).fit()
