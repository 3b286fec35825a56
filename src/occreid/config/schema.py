"""The configuration schema. Each section is a dataclass; `method` holds the method's own options,
validated by the method's options dataclass (see `occreid.methods`). Numeric keys declare their allowed
range with the aliases of `occreid.config.ranges` (checked on load)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from occreid.config.ranges import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    Range,
)


@dataclass
class DataConfig:
    dataset: str = "synthetic"
    root: str = "data"
    test_datasets: list[str] = field(default_factory=list)
    height: PositiveInt = 256
    width: PositiveInt = 128
    ids_per_batch: PositiveInt = 16
    instances_per_id: PositiveInt = 4
    test_batch_size: PositiveInt = 128
    workers: NonNegativeInt = 2
    labels_root: str | None = None
    partial_reid_query: Literal["partial", "occluded"] = "partial"
    cuhk03_variant: Literal["labeled", "detected"] = "labeled"
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[PositiveFloat] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    flip_prob: Probability = 0.5
    pad: NonNegativeInt = 10
    erasing_prob: Probability = 0.5
    # random erasing also marks the erased rectangle background (0) in the part label: the synthetic
    # occluder is then not body for a parsing / visibility target (false = BoT's image-only erasing)
    erase_labels: bool = False
    color_jitter: NonNegativeFloat = 0.0
    val_ids: NonNegativeInt = 0
    # decoded, resized training images in a memory-mapped cache, augmented in batch on the device:
    # true, false, or auto (on with CUDA; off on the CPU, see benchmarks/RESULTS.md "Training data path")
    decode_cache: bool | Literal["auto"] = "auto"
    cache_dir: str | None = None  # where the decode cache lives; null = $OCCREID_CACHE or ~/.cache/occreid


@dataclass
class ModelConfig:
    name: str = "bot"
    backbone: str = "resnet50"
    last_stride: Annotated[int, Range(low=1, high=2)] = 1
    pretrained_path: str | None = None
    backbone_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    epochs: PositiveInt = 120
    max_iters: PositiveInt | None = None
    optimizer: Literal["adam", "sgd", "adamw"] = "adam"
    lr: NonNegativeFloat = 3.5e-4
    weight_decay: NonNegativeFloat = 5e-4
    momentum: Probability = 0.9
    backbone_lr_mult: NonNegativeFloat = 1.0
    scheduler: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[NonNegativeFloat] = field(default_factory=lambda: [40.0, 70.0])  # fractional epochs allowed
    gamma: PositiveFloat = 0.1
    warmup_epochs: NonNegativeFloat = 10.0
    warmup_factor: Probability = 0.1
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    grad_clip: PositiveFloat | None = None
    # stop (with last.pt) when a loss exceeds this multiple of the median of the last 50; null = off
    loss_guard: Annotated[float, Range(low=1, low_open=True)] | None = 1000.0
    # read the losses (NaN/inf check, loss_guard, the log) in one host transfer every this many iterations,
    # and always at log steps, before a checkpoint and at the end; auto = 1 on the CPU, 8 on a GPU
    sync_every: PositiveInt | Literal["auto"] = "auto"
    cudnn_benchmark: bool = True  # CUDA: cuDNN times its convolution algorithms once per input shape
    accum_steps: PositiveInt = 1
    seed: NonNegativeInt = 0
    checkpoint_every: NonNegativeInt = 200
    eval_every: NonNegativeInt = 0
    log_every: NonNegativeInt = 20
    device: str = "auto"
    sync_bn: bool = True


@dataclass
class EvalConfig:
    distance: Literal["euclidean", "cosine"] = "euclidean"
    rerank: bool = False
    flip: bool = False
    max_rank: PositiveInt = 50
    k1: PositiveInt = 20
    k2: PositiveInt = 6
    lambda_value: Probability = 0.3
    rank_list_queries: NonNegativeInt = 8


@dataclass
class RunConfig:
    out: str = "runs/default"
    name: str = ""
    tensorboard: bool = False
    progress: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    method: dict[str, Any] = field(default_factory=dict)
