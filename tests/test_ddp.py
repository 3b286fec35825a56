"""DDP on CPU (gloo): 2 processes x (P x K) train like one process with the global batch, distributed
feature extraction returns exactly the single-process rows, and a sharded `occreid eval` equals one process.

Both runs use float64 parameters: in float32, the last-bit differences between a reduction over two
processes and over one batch flip near-tied max-pooling choices, and the first convolution's gradient
then differs by far more than the tolerance although both computations are right."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from occreid.config import load_config
from occreid.engine.distributed import DistInfo
from occreid.engine.extract import extract_features
from occreid.engine.trainer import Trainer

from .test_engine import small_overrides


def _overrides(root, out, ids_per_batch):
    return small_overrides(root, out, **{
        "data.ids_per_batch": ids_per_batch, "train.max_iters": 3, "train.checkpoint_every": 0,
        "train.optimizer": "sgd", "train.lr": 0.05, "train.warmup_epochs": 0,
        "data.erasing_prob": 0.5, "data.test_batch_size": 5,
    })


def _worker(rank: int, world: int, init_file: str, root: str, out: str, result: str) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cfg = load_config(None, _overrides(root, out, 2))
        trainer = Trainer(cfg, dist_info=DistInfo(rank, world, 0))
        trainer.fit()
        feats = extract_features(trainer.model, trainer.train_records[:13], cfg, device=torch.device("cpu"),
                                 progress=False, rank=rank, world_size=world)
        if rank == 0:
            torch.save({"model": trainer.model.state_dict(), "loss": trainer.loss.state_dict(),
                        "feats": feats}, result)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_global_batch(noisy_market, tmp_path):
    result = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(noisy_market), str(tmp_path / "ddp"), str(result)),
             nprocs=2, join=True)
    ddp = torch.load(result, weights_only=True)

    torch.set_num_threads(1)
    cfg = load_config(None, _overrides(noisy_market, tmp_path / "single", 4))
    torch.set_default_dtype(torch.float64)
    try:
        single = Trainer(cfg, dist_info=DistInfo())
        single.fit()
    finally:
        torch.set_default_dtype(torch.float32)
    sd = single.model.state_dict()
    assert set(ddp["model"]) == set(sd)
    for k, v in sd.items():
        if v.is_floating_point():
            assert torch.allclose(ddp["model"][k], v, atol=1e-5, rtol=0), (k, (ddp["model"][k] - v).abs().max())
        else:
            assert torch.equal(ddp["model"][k], v), k
    for k, v in single.loss.state_dict().items():
        assert torch.allclose(ddp["loss"][k], v, atol=1e-5, rtol=0), k

    # distributed extraction: same rows, same order, padding dropped (13 rows over 2 ranks)
    ref = extract_features(single.model, single.train_records[:13], cfg, device=torch.device("cpu"), progress=False)
    for k, v in ref.items():
        assert ddp["feats"][k].shape == v.shape
        assert torch.allclose(ddp["feats"][k], v, atol=1e-4), k


def _eval_worker(rank: int, world: int, port: int, ckpt: str, out: str, result: str) -> None:
    """What `torchrun --nproc_per_node 2 -m occreid eval` does in each process: env:// rendezvous."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from occreid.engine.evaluate import evaluate_checkpoint

    try:
        res = evaluate_checkpoint(ckpt, out_dir=out, progress=False)
        torch.save({"results": [{k: v for k, v in r.items() if isinstance(v, (int, float))} for r in res]},
                   f"{result}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_eval_matches_single_process_and_only_rank0_reports(tiny_market, tmp_path):
    import socket

    cfg = load_config(None, small_overrides(tiny_market, tmp_path / "run", **{
        "train.max_iters": 2, "train.checkpoint_every": 0, "data.test_batch_size": 7}))
    Trainer(cfg, dist_info=DistInfo()).fit()
    ckpt = str(tmp_path / "run" / "last.pt")
    from occreid.engine.evaluate import evaluate_checkpoint

    (single,) = evaluate_checkpoint(ckpt, out_dir=str(tmp_path / "single"), progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_eval_worker, args=(2, port, ckpt, str(tmp_path / "ddp"), str(tmp_path / "res")), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "res.0", weights_only=True)["results"]
    r1 = torch.load(tmp_path / "res.1", weights_only=True)["results"]
    assert r1 == []  # rank 1 only extracted its shard
    (dd,) = r0
    for k in ("rank1", "rank5", "mAP", "mINP", "num_query", "num_gallery", "num_valid_queries"):
        assert dd[k] == pytest.approx(single[k], abs=1e-6), k
    assert (tmp_path / "ddp" / "market1501" / "metrics.json").is_file()
