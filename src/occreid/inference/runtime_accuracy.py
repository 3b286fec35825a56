"""Accuracy of exported models (ONNX fp32 / INT8, OpenVINO) next to PyTorch on a test dataset: R1 and mAP of
each runtime with the method's own distance, the mAP change and the share of queries whose top-1 gallery
image changes. A tracker export (one `output`) is compared with PyTorch's global embedding, both by cosine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from occreid.api import ReidModel
from occreid.errors import DatasetError

#: An exported model that loses more mAP points than this is reported as not recommended.
MAX_MAP_DROP = 1.0


class RuntimeOutput:
    def __init__(self, feats: dict[str, torch.Tensor]) -> None:
        self.feats = feats

    def features(self) -> dict[str, torch.Tensor]:
        return self.feats


class RuntimeModule(nn.Module):
    """An exported model's runner (`run(x)` -> name -> array) in the nn.Module shape `extract_features`
    takes; the parameter only tells it the input dtype."""

    def __init__(self, runner: Any) -> None:
        super().__init__()
        self.runner = runner
        self.dtype_anchor = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> RuntimeOutput:
        return RuntimeOutput({k: torch.from_numpy(v) for k, v in self.runner.run(x).items()})


@dataclass
class FormatAccuracy:
    """One runtime's R1 / mAP (fractions), its reference's, and the share of queries whose top-1 changed."""

    name: str
    rank1: float
    mAP: float
    reference: str
    reference_mAP: float
    top1_changed: float

    @property
    def map_drop(self) -> float:
        """mAP points lost against the reference (negative: gained)."""
        return 100 * (self.reference_mAP - self.mAP)

    @property
    def ok(self) -> bool:
        return self.map_drop <= MAX_MAP_DROP


@dataclass
class AccuracyReport:
    dataset: str
    num_query: int
    num_gallery: int
    rows: list[FormatAccuracy] = field(default_factory=list)

    def table(self) -> str:
        """Markdown: one row per runtime (references first)."""
        lines = [f"{self.dataset}: {self.num_query} queries, {self.num_gallery} gallery images", "",
                 "| runtime | R1 | mAP | mAP change (points) | top-1 changed | verdict |", "|---|---|---|---|---|---|"]
        for r in self.rows:
            if r.name == r.reference:
                lines.append(f"| {r.name} | {100 * r.rank1:.1f} | {100 * r.mAP:.1f} | reference | - | - |")
                continue
            verdict = "OK" if r.ok else f"loses more than {MAX_MAP_DROP:g} mAP point: not recommended"
            lines.append(f"| {r.name} | {100 * r.rank1:.1f} | {100 * r.mAP:.1f} | {-r.map_drop:+.2f} vs {r.reference} "
                         f"| {100 * r.top1_changed:.1f}% | {verdict} |")
        return "\n".join(lines)


def market_top1(dist: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_cams: np.ndarray,
                g_cams: np.ndarray) -> np.ndarray:
    """Index of each query's first gallery image after the Market rule (same pid and camera removed);
    ties go to the lower index as in evaluation."""
    d = np.array(dist, dtype=np.float64)
    d[(q_pids[:, None] == g_pids[None]) & (q_cams[:, None] == g_cams[None])] = np.inf
    return d.argmin(axis=1)


def cosine_distance(qf: dict[str, torch.Tensor], gf: dict[str, torch.Tensor], key: str) -> np.ndarray:
    q = nn.functional.normalize(qf[key].float(), dim=1)
    g = nn.functional.normalize(gf[key].float(), dim=1)
    return (1 - q @ g.T).numpy()


def compare_runtimes(reid: ReidModel, runners: dict[str, Any], dataset: str | None = None,
                     root: str | None = None, *, workers: int = 0, progress: bool = False) -> AccuracyReport:
    """Evaluate PyTorch and each runner (name -> runner with `run(x)`) on `dataset` (default: the
    checkpoint's first test dataset) under `root` (default: its data.root), with the checkpoint's
    eval.flip. Full exports use the method's distance; tracker exports the cosine of the global embedding."""
    from occreid.config import apply_overrides, from_dict_config, to_dict
    from occreid.data.datasets import load_dataset
    from occreid.engine.evaluate import compute_distances
    from occreid.engine.extract import extract_features
    from occreid.engine.run_setup import dataset_load_options
    from occreid.evaluation import rank_metrics

    key = dataset or (reid.cfg.data.test_datasets or [reid.cfg.data.dataset])[0]
    extra = [f"data.dataset={key}", f"data.workers={workers}"] + ([f"data.root={root}"] if root else [])
    cfg = from_dict_config(apply_overrides(to_dict(reid.cfg), extra))
    splits = load_dataset(key, cfg.data.root, **dataset_load_options(cfg))
    if not splits.query or not splits.gallery:
        raise DatasetError(f"{key} under {cfg.data.root}: no query or gallery split to compare runtimes on")
    qp, qc = (np.array([getattr(r, a) for r in splits.query]) for a in ("pid", "camid"))
    gp, gc = (np.array([getattr(r, a) for r in splits.gallery]) for a in ("pid", "camid"))
    device = reid.device

    def features(model: nn.Module) -> tuple[dict, dict]:
        dev = device if model is reid.model else torch.device("cpu")
        return (extract_features(model, splits.query, cfg, device=dev, progress=progress),
                extract_features(model, splits.gallery, cfg, device=dev, progress=progress))

    def scored(name: str, dist: np.ndarray, reference: FormatAccuracy | None, ref_top1: np.ndarray | None):
        m = rank_metrics(dist, qp, gp, qc, gc, max_rank=cfg.eval.max_rank)
        top1 = market_top1(dist, qp, gp, qc, gc)
        changed = 0.0 if ref_top1 is None else float((top1 != ref_top1).mean())
        ref = reference or FormatAccuracy(name, 0, 0, name, 0, 0)
        row = FormatAccuracy(name, float(m["cmc"][0]), float(m["mAP"]), ref.name,
                             float(m["mAP"]) if reference is None else ref.mAP, changed)
        return row, top1

    report = AccuracyReport(key, len(splits.query), len(splits.gallery))
    pq, pg = features(reid.model)
    torch_row, torch_top1 = scored("PyTorch", compute_distances(cfg, pq, pg, rerank=False), None, None)
    report.rows.append(torch_row)
    global_ref = None
    for name, runner in runners.items():
        rq, rg = features(RuntimeModule(runner))
        if list(rq) == ["output"]:  # tracker export: cosine of the global embedding on both sides
            if global_ref is None:
                k = runner.metadata["tracker_embedding"]
                global_ref = scored(f"PyTorch {k} (cosine)", cosine_distance(pq, pg, k), None, None)
                report.rows.append(global_ref[0])
            row, _ = scored(name, cosine_distance(rq, rg, "output"), *global_ref)
        else:
            row, _ = scored(name, compute_distances(cfg, rq, rg, rerank=False), torch_row, torch_top1)
        report.rows.append(row)
    return report
