"""Training engine: runs, resumes to the same state after SIGKILL, stops on NaN, checkpoints safely."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from occreid.config import load_config
from occreid.engine.checkpoint import load_checkpoint
from occreid.engine.trainer import Trainer, TrainingDiverged
from occreid.errors import CheckpointError, ConfigError


def small_overrides(root: Path, out: Path, **extra) -> list[str]:
    o = {
        "model.name": "bot", "model.backbone": "resnet18", "data.dataset": "market1501", "data.root": str(root),
        "data.height": 32, "data.width": 16, "data.ids_per_batch": 4, "data.instances_per_id": 2,
        "data.workers": 0, "train.max_iters": 12, "train.checkpoint_every": 4, "train.log_every": 1,
        "train.warmup_epochs": 1, "run.out": str(out), "run.progress": False,
    }
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


def test_short_run_writes_config_metrics_and_checkpoint(tiny_market, tmp_path):
    cfg = load_config(None, small_overrides(tiny_market, tmp_path / "run", **{"train.max_iters": 3}))
    res = Trainer(cfg).fit()
    assert res.iterations == 3
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["train"]["max_iters"] == 3
    lines = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [ln["iter"] for ln in lines] == [1, 2, 3]
    assert {"ce", "triplet", "center", "lr"} <= set(lines[0])
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)  # must not need pickle code
    assert ckpt["iteration"] == 3 and ckpt["config"]["model"]["name"] == "bot"


def test_fresh_run_never_overwrites_a_checkpoint_and_starts_a_clean_log(tiny_market, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stale = {"time": 0.0, "iter": 7, "loss": 9.9}  # a run killed before its first checkpoint
    (run / "metrics.jsonl").write_text(json.dumps(stale) + "\n")
    cfg = load_config(None, small_overrides(tiny_market, run, **{"train.max_iters": 2}))
    Trainer(cfg).fit()
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [ln["iter"] for ln in lines] == [1, 2]
    before = (run / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"already holds a run.*--resume"):
        Trainer(cfg)
    assert (run / "last.pt").read_bytes() == before


def test_checkpoint_from_another_method_is_refused(tiny_market, tmp_path):
    cfg = load_config(None, small_overrides(tiny_market, tmp_path / "run", **{"train.max_iters": 1}))
    Trainer(cfg).fit()
    with pytest.raises(CheckpointError, match="bot"):
        load_checkpoint(tmp_path / "run" / "last.pt", method="pcb")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pt"):
        load_checkpoint(tmp_path / "broken.pt")


def _run_cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "occreid", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_mid_interval_then_resume_equals_uninterrupted(tiny_market, tmp_path):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("{}\n")
    killed = tmp_path / "killed"
    p = _run_cli(["train", "--config", str(cfg_file), "--no-eval", *small_overrides(tiny_market, killed)])
    log = killed / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if log.is_file() and any(json.loads(ln)["iter"] >= 5 for ln in log.read_text().splitlines() if ln):
            break
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    at_kill = load_checkpoint(killed / "last.pt")["iteration"]
    assert at_kill == 4, "the kill must land between checkpoints (after iteration 5, before 8)"

    resumed = _run_cli(["train", "--resume", str(killed), "--no-eval"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out.decode()[-2000:]

    clean = tmp_path / "clean"
    full = _run_cli(["train", "--config", str(cfg_file), "--no-eval", *small_overrides(tiny_market, clean)])
    out, _ = full.communicate(timeout=300)
    assert full.returncode == 0, out.decode()[-2000:]

    a = load_checkpoint(killed / "last.pt")
    b = load_checkpoint(clean / "last.pt")
    assert a["iteration"] == b["iteration"] == 12
    for k in b["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    iters = [json.loads(ln)["iter"] for ln in (killed / "metrics.jsonl").read_text().splitlines()]
    assert iters == list(range(1, 13)), "the log must not keep lines from past the restored checkpoint"


def test_nan_loss_stops_with_last_good_checkpoint(tiny_market, tmp_path, monkeypatch):
    cfg = load_config(None, small_overrides(tiny_market, tmp_path / "run"))
    trainer = Trainer(cfg)
    original = trainer.loss.forward
    calls = {"n": 0}

    def poisoned(out, batch):
        calls["n"] += 1
        total, terms = original(out, batch)
        return (total * float("nan"), terms) if calls["n"] == 6 else (total, terms)

    monkeypatch.setattr(trainer.loss, "forward", poisoned)
    # the 6th loss is iteration 6 in metrics.jsonl; the stop saves iteration 5, the last whole one
    with pytest.raises(TrainingDiverged, match=r"at iteration 6 .*last\.pt holds iteration 5, written at the stop; "
                                               r"last\.prev\.pt holds iteration 4"):
        trainer.fit()
    kept = load_checkpoint(tmp_path / "run" / "last.pt")
    assert kept["iteration"] == 5
    assert load_checkpoint(tmp_path / "run" / "last.prev.pt")["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_cpu_bf16_autocast_step(tiny_market, tmp_path):
    cfg = load_config(None, small_overrides(tiny_market, tmp_path / "run",
                                            **{"train.max_iters": 2, "train.amp": "bf16"}))
    res = Trainer(cfg).fit()
    assert res.iterations == 2 and res.last_loss == res.last_loss  # finite, not NaN


def test_grad_accumulation_and_clipping_run(tiny_market, tmp_path):
    cfg = load_config(None, small_overrides(tiny_market, tmp_path / "run", **{
        "train.max_iters": 4, "train.accum_steps": 2, "train.grad_clip": 1.0, "train.optimizer": "sgd"}))
    before = {k: v.clone() for k, v in Trainer(cfg).model.state_dict().items()}
    res = Trainer(cfg).fit()
    after = res.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


def _pid_of(path) -> int:
    return int(Path(path).name.split("_")[0])


def test_validation_split_holds_out_training_ids_and_selects_best_on_them(tiny_market, tmp_path):
    """data.val_ids carves identities out of train (never the test set); eval_every scores them and
    keeps best.pt at the best validation mAP."""
    from occreid.engine.evaluate import evaluate_records
    from occreid.engine.trainer import split_validation

    cfg = load_config(None, small_overrides(
        tiny_market, tmp_path / "run", **{"data.val_ids": 3, "train.eval_every": 2, "train.max_iters": 5}
    ))
    trainer = Trainer(cfg)
    held = {_pid_of(r.path) for r in trainer.val_records}
    trained = {_pid_of(r.path) for r in trainer.train_records}
    assert len(held) == 3 and len(trained) == 5 and not held & trained
    assert held <= set(range(1, 9))  # training identities of the fixture, not its test ids 100+
    assert trainer.num_classes == 5 and {r.pid for r in trainer.train_records} == set(range(5))

    trainer.fit()
    lines = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [ln for ln in lines if "val_mAP" in ln]
    assert [ln["iter"] for ln in val] == [2, 4, 5]  # and once more at the last iteration
    best_iter = max(val, key=lambda ln: ln["val_mAP"])["iter"]  # first maximum wins ties
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=True)["iteration"] == best_iter

    # leave-one-out with the Market rule: every held-out image is a query (3 ids x 2 cams x 4 images),
    # each with its 4 cross-camera mates as positives and its own camera's images as junk
    q, g = split_validation(trainer.val_records)
    res = evaluate_records(trainer.model, cfg, q, g, device=torch.device("cpu"), progress=False)
    assert res["num_valid_queries"] == 24 and res["num_skipped_queries"] == 0
    assert (res["num_positives"] == 4).all()
