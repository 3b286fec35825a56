"""Fault injection on real `occreid train` processes: signals (also inside a checkpoint write), a
truncated checkpoint, a full disk, NaN and exploding losses, a corrupt image, a second writer.

After each fault the run either resumes to the same final weights as an uninterrupted run, or stops
with a message that is true; no half-written file is left. Faults inside a process come from a
`sitecustomize` written by this file (`HOOKS`), active only where OCCREID_FAULT_DIR is set, so the
package itself carries no test hooks. Tiny: OSNet x0.25 on 32x16 images, 8 iterations, no workers;
the scenarios run two processes at a time (about 80 s of CPU in ~20 `occreid` processes).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from occreid.engine.checkpoint import load_checkpoint

ITERS, EVERY = 8, 3  # checkpoints at 3 and 6, the final one at 8

HOOKS = '''
"""Fault hooks for tests/test_faults.py; inert unless OCCREID_FAULT_DIR is set."""
import os

if os.environ.get("OCCREID_FAULT_DIR"):
    import errno
    import io
    import time
    from pathlib import Path

    import torch

    FAULT_DIR = Path(os.environ["OCCREID_FAULT_DIR"])

    def wait_for_go(marker):
        """Say where we are (a marker file), then wait until the test creates `go`."""
        (FAULT_DIR / marker).write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while not (FAULT_DIR / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.005)

    pause_iter = int(os.environ.get("OCCREID_FAULT_PAUSE_AFTER_ITER", "0"))
    if pause_iter:
        from occreid.engine import run_dir

        original_log = run_dir.RunDir.log

        def log(self, record):
            original_log(self, record)
            if record.get("iter") == pause_iter and "loss" in record:
                wait_for_go("paused")

        run_dir.RunDir.log = log

    pause_save = int(os.environ.get("OCCREID_FAULT_PAUSE_IN_SAVE", "0"))
    enospc_save = int(os.environ.get("OCCREID_FAULT_ENOSPC_IN_SAVE", "0"))
    if pause_save or enospc_save:
        real_save = torch.save
        writes = []

        def save(obj, f, *args, **kwargs):
            if ".last.pt.tmp" not in str(getattr(f, "name", "")):
                return real_save(obj, f, *args, **kwargs)
            writes.append(1)
            if len(writes) not in (pause_save, enospc_save):
                return real_save(obj, f, *args, **kwargs)
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])  # half the checkpoint is on disk now
            f.flush()
            if len(writes) == enospc_save:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            wait_for_go("in_save")
            f.write(data[len(data) // 2 :])

        torch.save = save
'''


def overrides(root: Path, out: Path, **extra) -> list[str]:
    o = {
        "model.name": "bot", "model.backbone": "osnet_x0_25", "data.dataset": "market1501", "data.root": str(root),
        "data.height": 32, "data.width": 16, "data.ids_per_batch": 4, "data.instances_per_id": 2,
        "data.workers": 0, "train.max_iters": ITERS, "train.checkpoint_every": EVERY, "train.log_every": 1,
        "train.warmup_epochs": 1, "run.out": str(out), "run.progress": False,
    }
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


class Occreid:
    """Starts `python -m occreid train ...` with the fault hooks on its path; one per scenario, each with
    its own folder of markers (`paused`, `in_save`, `go`) through which process and test meet."""

    def __init__(self, hooks: Path, cfg: Path, faults: Path):
        self.hooks, self.cfg, self.faults = hooks, cfg, faults
        faults.mkdir(parents=True, exist_ok=True)

    def start(self, args: list[str], **faults: int) -> subprocess.Popen:
        for marker in ("go", "paused", "in_save"):
            (self.faults / marker).unlink(missing_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(self.hooks), os.environ.get("PYTHONPATH", "")]),
               "OCCREID_FAULT_DIR": str(self.faults)}
        env.update({f"OCCREID_FAULT_{k.upper()}": str(v) for k, v in faults.items()})
        return subprocess.Popen([sys.executable, "-m", "occreid", "train", "--no-eval", *args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def new(self, root: Path, out: Path, **faults: int) -> subprocess.Popen:
        return self.start(["--config", str(self.cfg), *overrides(root, out)], **faults)

    def resume(self, out: Path) -> tuple[int, str]:
        return finish(self.start(["--resume", str(out)]))

    def wait_for(self, marker: str, proc: subprocess.Popen) -> None:
        """Block until the process reports it reached the fault point (no guessed sleeps)."""
        deadline = time.monotonic() + 240
        while not (self.faults / marker).exists():
            if proc.poll() is not None:
                raise AssertionError(f"process ended before {marker!r}: {proc.communicate()[0][-2000:]}")
            assert time.monotonic() < deadline, f"no {marker!r} within 240 s"
            time.sleep(0.005)

    def go(self) -> None:
        (self.faults / "go").write_text("")


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


def iteration_of(path: Path) -> int:
    return int(load_checkpoint(path)["iteration"])


def assert_nothing_half_written(run: Path) -> None:
    partial = sorted(p.name for p in run.glob(".*.tmp*"))
    assert partial == [], f"half-written files left in {run}: {partial}"
    assert not (run / ".lock").exists(), "the lock must be gone once no process writes"


def assert_took_over_lock(out: str, pid: int) -> None:
    assert re.search(rf"note: took over .*\.lock from process {pid} .*no longer running", out), out[-2000:]


def checkpoints_after_stop(it: int) -> tuple[int | None, int | None]:
    """(last.pt, last.prev.pt) iterations after a clean stop at `it`, with periodic saves every EVERY."""
    periodic = [i for i in range(EVERY, it + 1, EVERY)]
    held = periodic + ([] if it in periodic else [it])
    return held[-1], (held[-2] if len(held) > 1 else None)


# ---- scenarios: each drives processes and asserts along the way; returns its run folder -----------
def clean_run(lab: Occreid, data: Path, out: Path) -> dict:
    """The uninterrupted run; while it is paused at iteration 2, a second writer is refused."""
    first = lab.new(data, out, pause_after_iter=2)
    lab.wait_for("paused", first)
    log_before = (out / "metrics.jsonl").read_text()
    rc, text = finish(lab.new(data, out))
    lab.go()
    rc_first, text_first = finish(first)
    assert rc_first == 0, text_first[-2000:]
    return {"run": out, "second_rc": rc, "second_out": text, "first_pid": first.pid, "log_before": log_before}


def signal_at_iteration(lab: Occreid, data: Path, run: Path, sig: int, it: int) -> dict:
    p = lab.new(data, run, pause_after_iter=it)
    lab.wait_for("paused", p)
    p.send_signal(sig)
    lab.go()
    rc, out = finish(p)
    if sig == signal.SIGTERM:
        assert rc == 128 + sig, out[-2000:]
        last, prev = checkpoints_after_stop(it)
        said = f"last.pt holds iteration {last}" + (", written at the stop" if last % EVERY else "")
        said += f"; last.prev.pt holds iteration {prev}" if prev else ""
        assert f"SIGTERM received: stopped after iteration {it}. The run stopped: {said}." in out, out[-2000:]
        assert iteration_of(run / "last.pt") == last
        rc, out = lab.resume(run)
    elif it < EVERY:  # killed before the first checkpoint: resume says so, a restart is needed
        assert rc == -sig
        rc, out = lab.resume(run)
        assert_took_over_lock(out, p.pid)
        assert rc == 2, out[-2000:]
        assert f"--resume {run}: nothing to resume, it has no last.pt or last.prev.pt" in out
        assert f"start the run again with `occreid train --config {run / 'config.yaml'}`" in out
        rc, out = finish(lab.start(["--config", str(run / "config.yaml")]))
    else:
        assert rc == -sig
        assert iteration_of(run / "last.pt") == checkpoints_after_stop(it - it % EVERY)[0]
        rc, out = lab.resume(run)
        assert_took_over_lock(out, p.pid)
    assert rc == 0, out[-2000:]
    assert_nothing_half_written(run)
    return {"run": run}


def signal_during_checkpoint_write(lab: Occreid, data: Path, run: Path, sig: int) -> dict:
    p = lab.new(data, run, pause_in_save=2)  # half of iteration 6's last.pt is on disk, then it waits
    lab.wait_for("in_save", p)
    assert list(run.glob(".last.pt.tmp*")), "the write must be under way"
    p.send_signal(sig)
    lab.go()
    rc, out = finish(p)
    if sig == signal.SIGKILL:
        assert rc == -sig
        assert iteration_of(run / "last.pt") == 3, "a killed write must leave the previous last.pt whole"
        rc, out = lab.resume(run)
        assert_took_over_lock(out, p.pid)
        assert re.search(r"note: removed .*\.last\.pt\.tmp\d+, a checkpoint write that a stopped process", out)
    else:  # the write finishes, then the run stops: nothing more to save
        assert rc == 128 + sig, out[-2000:]
        assert "stopped after iteration 6. The run stopped: last.pt holds iteration 6; last.prev.pt holds " \
               "iteration 3." in out, out[-2000:]
        assert iteration_of(run / "last.pt") == 6
        rc, out = lab.resume(run)
    assert rc == 0, out[-2000:]
    assert_nothing_half_written(run)
    return {"run": run}


def truncated_checkpoint(lab: Occreid, data: Path, run: Path) -> dict:
    p = lab.new(data, run, pause_after_iter=7)
    lab.wait_for("paused", p)
    p.kill()
    finish(p)
    last = run / "last.pt"
    assert iteration_of(last) == 6 and iteration_of(run / "last.prev.pt") == 3
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])  # damaged on disk
    rc, out = lab.resume(run)
    assert rc == 0, out[-2000:]
    assert_took_over_lock(out, p.pid)
    assert re.search(r"note: .*last\.pt cannot be loaded \(.*\); renamed it to last\.pt\.corrupt", out), out[-2000:]
    assert re.search(r"note: resuming from .*last\.prev\.pt \(iteration 3\)", out)
    assert (run / "last.pt.corrupt").is_file()
    assert_nothing_half_written(run)
    return {"run": run}


def disk_full(lab: Occreid, data: Path, run: Path) -> dict:
    rc, out = finish(lab.new(data, run, enospc_in_save=2))  # iteration 6's write fails half way
    assert rc == 2, out[-2000:]
    assert "cannot write the checkpoint (no space left on the device of" in out
    assert "the partial file was removed and last.pt on disk is unchanged" in out
    assert "The run stopped: no further checkpoint was attempted; last.pt holds iteration 3." in out, out[-2000:]
    assert iteration_of(run / "last.pt") == 3
    assert_nothing_half_written(run)
    rc, out = lab.resume(run)  # space freed
    assert rc == 0, out[-2000:]
    return {"run": run}


def diverging(lab: Occreid, data: Path, run: Path, optimizer: str) -> dict:
    """The issue's reproduction, train.lr=1e6: SGD reaches NaN; Adam a finite ~1e13 loss that the loss
    guard (train.loss_guard, default 1000 x the median of the recent losses) stops."""
    rc, out = finish(lab.start(["--config", str(lab.cfg), *overrides(
        data, run, **{"train.lr": 1e6, "train.optimizer": optimizer, "train.warmup_epochs": 0})]))
    assert rc == 2, out[-2000:]
    bad = int(re.search(r"at iteration (\d+) ", out).group(1))
    logged = {json.loads(ln)["iter"]: json.loads(ln)["loss"] for ln in (run / "metrics.jsonl").read_text().splitlines()}
    assert max(logged) == bad - 1, "the message must name the iteration whose loss was bad, not a logged one"
    assert all(math.isfinite(v) for v in logged.values())
    if optimizer == "sgd":
        assert f"loss became nan at iteration {bad}" in out, out[-2000:]
    else:
        assert re.search(rf"loss [\d.e+]+ at iteration {bad} is more than train.loss_guard=1000 times", out), out
    assert f"last.pt holds iteration {bad - 1}, written at the stop" in out
    kept = load_checkpoint(run / "last.pt")
    assert kept["iteration"] == bad - 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
    assert_nothing_half_written(run)
    return {"run": run}


def corrupt_image(lab: Occreid, data: Path, run: Path) -> dict:
    """Decision: a training image that cannot be read stops the run (it is not skipped: skipping would
    change the batches, so the run would no longer be reproducible); last.pt is written first."""
    from occreid.data.datasets import load_dataset
    from occreid.data.sampler import IdentityBalancedSampler

    train = load_dataset("market1501", data).train
    sampler = IdentityBalancedSampler([r.pid for r in train], 4, 2, seed=0, item_seeds=True)
    sampler.set_epoch(0)
    items = [train[i].path for i, _ in sampler]
    assert sampler.batches_per_epoch > 5  # iteration 5 is inside the first epoch
    victim = Path(items[4 * 8])  # first image of iteration 5's batch: no earlier batch reads it
    intact = victim.read_bytes()
    victim.write_bytes(intact[:200])
    rc, out = finish(lab.new(data, run))
    assert rc == 2, out[-2000:]
    assert f"{victim}: cannot read image" in out
    assert "The run stopped: last.pt holds iteration 4, written at the stop; last.prev.pt holds iteration 3." in out
    assert iteration_of(run / "last.pt") == 4
    assert_nothing_half_written(run)
    victim.write_bytes(intact)  # repaired
    rc, out = lab.resume(run)
    assert rc == 0, out[-2000:]
    return {"run": run, "victim": victim}


SCENARIOS = {
    "clean": lambda lab, data, out: clean_run(lab, data, out),
    "sigkill_at_2": lambda lab, data, out: signal_at_iteration(lab, data, out, signal.SIGKILL, 2),
    "sigterm_at_4": lambda lab, data, out: signal_at_iteration(lab, data, out, signal.SIGTERM, 4),
    "sigkill_in_write": lambda lab, data, out: signal_during_checkpoint_write(lab, data, out, signal.SIGKILL),
    "sigterm_in_write": lambda lab, data, out: signal_during_checkpoint_write(lab, data, out, signal.SIGTERM),
    "truncated": truncated_checkpoint,
    "enospc": disk_full,
    "nan": lambda lab, data, out: diverging(lab, data, out, "sgd"),
    "explode": lambda lab, data, out: diverging(lab, data, out, "adam"),
    "corrupt_image": corrupt_image,
}
OWN_DATA = {"corrupt_image"}  # scenarios that damage the data get their own copy


@pytest.fixture(scope="module")
def outcomes(tiny_market, tmp_path_factory) -> dict:
    """Run every scenario, two processes at a time (the CI machine has 2 cores); each scenario's
    result or the exception it raised, by name."""
    base = tmp_path_factory.mktemp("faults")
    (base / "hooks").mkdir()
    (base / "hooks" / "sitecustomize.py").write_text(HOOKS)
    (base / "cfg.yaml").write_text("{}\n")

    def run(name: str) -> dict:
        data = tiny_market
        if name in OWN_DATA:
            data = base / name / "data"
            shutil.copytree(tiny_market, data)
        lab = Occreid(base / "hooks", base / "cfg.yaml", base / name / "signals")
        return SCENARIOS[name](lab, data, base / name / "run")

    results: dict = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, name) for name in SCENARIOS}
        for name, f in futures.items():
            try:
                results[name] = f.result()
            except BaseException as e:  # noqa: BLE001 - re-raised by the scenario's own test
                results[name] = e
    return results


def outcome(outcomes: dict, name: str) -> dict:
    result = outcomes[name]
    if isinstance(result, BaseException):
        raise result
    return result


def assert_same_final(outcomes: dict, name: str) -> None:
    """The run of `name` ended with the very weights of the uninterrupted run, and a log of every iteration."""
    run, ref = outcome(outcomes, name)["run"], outcome(outcomes, "clean")["run"]
    a, b = load_checkpoint(run / "last.pt"), load_checkpoint(ref / "last.pt")
    assert a["iteration"] == b["iteration"] == ITERS
    for part in ("model", "loss"):
        for k, v in b[part].items():
            assert torch.equal(a[part][k], v), f"{part}.{k} differs from the uninterrupted run"
    iters = [json.loads(ln)["iter"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert iters == list(range(1, ITERS + 1))


# ---- tests -----------------------------------------------------------------------------------------
def test_second_writer_into_a_running_folder_is_refused(outcomes):
    clean = outcome(outcomes, "clean")
    assert clean["second_rc"] == 2
    assert re.search(rf"is in use: process {clean['first_pid']} on .* is training into it", clean["second_out"])
    log = (clean["run"] / "metrics.jsonl").read_text()
    assert log.startswith(clean["log_before"]), "the refused writer must not touch the running run's log"
    assert_nothing_half_written(clean["run"])


@pytest.mark.parametrize("name", ["sigkill_at_2", "sigterm_at_4"])
def test_signal_at_an_iteration_then_resume_equals_uninterrupted(outcomes, name):
    assert_same_final(outcomes, name)


@pytest.mark.parametrize("name", ["sigkill_in_write", "sigterm_in_write"])
def test_signal_during_a_checkpoint_write_then_resume_equals_uninterrupted(outcomes, name):
    assert_same_final(outcomes, name)


def test_truncated_last_checkpoint_falls_back_to_the_previous_one(outcomes):
    assert_same_final(outcomes, "truncated")


def test_disk_full_during_a_checkpoint_write_stops_truthfully_then_resumes(outcomes):
    assert_same_final(outcomes, "enospc")


@pytest.mark.parametrize("name", ["nan", "explode"])
def test_diverging_run_stops_with_a_true_message_and_its_last_whole_iteration(outcomes, name):
    outcome(outcomes, name)


def test_corrupt_image_mid_epoch_stops_with_a_checkpoint_then_resumes(outcomes):
    assert_same_final(outcomes, "corrupt_image")
