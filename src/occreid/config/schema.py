"""The configuration schema. Each section is a dataclass; `method` holds the method's own options,
validated by the method's options dataclass (see `occreid.methods`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class DataConfig:
    dataset: str = "synthetic"
    root: str = "data"
    test_datasets: list[str] = field(default_factory=list)
    height: int = 256
    width: int = 128
    ids_per_batch: int = 16
    instances_per_id: int = 4
    test_batch_size: int = 128
    workers: int = 2
    labels_root: str | None = None
    partial_reid_query: Literal["partial", "occluded"] = "partial"
    cuhk03_variant: Literal["labeled", "detected"] = "labeled"
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    flip_prob: float = 0.5
    pad: int = 10
    erasing_prob: float = 0.5
    color_jitter: float = 0.0
    val_ids: int = 0


@dataclass
class ModelConfig:
    name: str = "bot"
    backbone: str = "resnet50"
    last_stride: int = 1
    pretrained_path: str | None = None
    backbone_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    epochs: int = 120
    max_iters: int | None = None
    optimizer: Literal["adam", "sgd", "adamw"] = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9
    backbone_lr_mult: float = 1.0
    scheduler: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[float] = field(default_factory=lambda: [40.0, 70.0])  # fractional epochs allowed
    gamma: float = 0.1
    warmup_epochs: float = 10.0
    warmup_factor: float = 0.1
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    grad_clip: float | None = None
    accum_steps: int = 1
    seed: int = 0
    checkpoint_every: int = 200
    eval_every: int = 0
    log_every: int = 20
    device: str = "auto"
    sync_bn: bool = True


@dataclass
class EvalConfig:
    distance: Literal["euclidean", "cosine"] = "euclidean"
    rerank: bool = False
    flip: bool = False
    max_rank: int = 50
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    rank_list_queries: int = 8


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
