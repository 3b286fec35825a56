"""The run folder: resolved config, metrics.jsonl, optional TensorBoard, checkpoints (last.pt, last.prev.pt)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from occreid.config import Config, config_hash, save_config
from occreid.engine.checkpoint import previous_path, remove_partial_writes
from occreid.errors import ConfigError


class RunDir:
    """Everything a run writes lives here; only the main process writes."""

    def __init__(self, cfg: Config, path: str | Path | None = None, *, write: bool = True, fresh: bool = False):
        """fresh: a new run, which must not overwrite another run's checkpoint; the log of a run killed
        before its first checkpoint is cleared, so metrics.jsonl describes this run only. The writer
        must hold the folder's RunLock: it removes what a killed writer left half-written."""
        self.path = Path(path or cfg.run.out)
        self.write = write
        self.notes: list[str] = []  # repairs made on opening, for the user
        self._tb = None
        held = [p for p in (self.last, previous_path(self.last)) if p.is_file()]
        if fresh and held:
            raise ConfigError(
                f"run.out={self.path} already holds a run ({held[0]}): continue it with "
                f"`occreid train --resume {self.path}`, or set run.out to a new folder"
            )
        if fresh and write:
            (self.path / "metrics.jsonl").unlink(missing_ok=True)
        if write:
            for p in remove_partial_writes(self.path):
                self.notes.append(f"removed {p}, a checkpoint write that a stopped process never finished")
            self.path.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.path / "config.yaml")
            if cfg.run.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    raise ConfigError(
                        "run.tensorboard=true needs the tensorboard package: pip install tensorboard"
                    ) from None
                self._tb = SummaryWriter(str(self.path / "tb"))
        self.config_hash = config_hash(cfg)

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    def log(self, record: dict[str, Any]) -> None:
        if not self.write:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None and "iter" in record:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("iter", "time"):
                    self._tb.add_scalar(k, v, record["iter"])

    def truncate_log(self, after_iter: int) -> None:
        """On resume, drop log lines past the checkpoint so the log matches the restored state."""
        f = self.path / "metrics.jsonl"
        if not (self.write and f.is_file()):
            return
        keep = [ln for ln in f.read_text().splitlines() if json.loads(ln).get("iter", 0) <= after_iter]
        f.write_text("".join(ln + "\n" for ln in keep))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
