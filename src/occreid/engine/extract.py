"""Feature extraction: model -> named test features for a list of records (batched, optionally
flip-averaged, sharded over processes with the padding dropped)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from occreid.config import Config
from occreid.data.records import Record
from occreid.engine.distributed import all_gather_objects
from occreid.engine.phase_timer import PhaseTimer

#: images [B, 3, H, W] -> name -> features [B, ...]: the model's own `features()` or another runtime's
Forward = Callable[[torch.Tensor], dict[str, torch.Tensor]]


@torch.no_grad()
def extract_features(
    model: nn.Module,
    records: list[Record],
    cfg: Config,
    *,
    device: torch.device,
    flip: bool | None = None,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
    forward: Forward | None = None,
    timer: PhaseTimer | None = None,
) -> dict[str, torch.Tensor]:
    """Return name -> tensor [N, ...] in the order of `records` (float32, on CPU).

    With `flip`, embeddings of the image and its mirror are averaged (visibility: mean of both); L2
    normalisation happens once, later, in the distance recipe (fast-reid normalises twice). `forward`
    replaces `model(x).features()` (e.g. ONNX Runtime); `timer` gets the phases `data` (waiting for
    decoded, preprocessed batches) and `forward`.
    """
    from tqdm import tqdm

    from occreid.data.images import ReidImageDataset, collate
    from occreid.data.sampler import InferenceSampler
    from occreid.data.transforms import build_transforms

    flip = cfg.eval.flip if flip is None else flip
    ds = ReidImageDataset(records, build_transforms(cfg.data, train=False), train=False, labels=False)
    sampler = InferenceSampler(len(records), rank=rank, world_size=world_size)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=cfg.data.test_batch_size, sampler=list(iter(sampler)),
        num_workers=cfg.data.workers, collate_fn=collate,
    )
    was_training = model.training
    model.eval()
    timer = timer or PhaseTimer()
    run = forward or (lambda x: model(x).features())
    chunks: dict[str, list[torch.Tensor]] = {}
    dtype = next(model.parameters()).dtype
    batches = iter(tqdm(loader, desc="extract", unit="batch", disable=not progress, dynamic_ncols=True))
    while True:
        with timer.phase("data"):
            batch = next(batches, None)
        if batch is None:
            break
        with timer.phase("forward"):
            images = batch["image"].to(device, dtype=dtype)
            feats = run(images)
            if flip:
                mirrored = run(torch.flip(images, dims=[3]))
                feats = {k: flip_merge(k, v, mirrored[k]) for k, v in feats.items()}
            for k, v in feats.items():
                chunks.setdefault(k, []).append(v.float().cpu())
    model.train(was_training)
    local = {k: torch.cat(v) for k, v in chunks.items()}
    if world_size > 1:
        gathered = all_gather_objects(local)
        local = {k: torch.cat([g[k] for g in gathered]) for k in local}
        order = torch.tensor(
            [i for r in range(world_size) for i in InferenceSampler(len(records), rank=r, world_size=world_size)]
        )
        out = {}
        for k, v in local.items():
            buf = torch.empty((len(records), *v.shape[1:]), dtype=v.dtype)
            buf[order] = v  # padded rows repeat real ones: writing them twice drops them
            out[k] = buf
        local = out
    return local


def flip_merge(name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Average image and mirror features index by index: models are trained with flips that swap the
    left / right part labels, so channel i of the mirror still describes body part i."""
    return (a + b) / 2
