"""Evaluation pipeline: model -> features -> method distance recipe -> ranking metrics -> report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from occreid.config import Config, config_hash, from_dict_config
from occreid.data.records import Record
from occreid.engine.distributed import DistInfo, current_dist_info, init_distributed, rank_device
from occreid.engine.extract import Forward, extract_features
from occreid.engine.phase_timer import PhaseTimer
from occreid.errors import ConfigError, DatasetError
from occreid.evaluation.report import claim_report_folder, report_folder_name
from occreid.methods import get_method


def _arrays(records: list[Record]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([r.pid for r in records]), np.array([r.camid for r in records])


def compute_distances(cfg: Config, qf: dict, gf: dict, *, rerank: bool,
                      timer: PhaseTimer | None = None) -> np.ndarray:
    """The method's own test distance, optionally k-reciprocal re-ranked (on the same distance);
    `timer` gets the phases `distance` and `rerank`."""
    timer = timer or PhaseTimer()
    method = get_method(cfg.model.name)
    with timer.phase("distance"):
        dist = method.distance(qf, gf, cfg)
    if rerank:
        from occreid.evaluation import k_reciprocal_rerank

        with timer.phase("rerank"):
            dist = k_reciprocal_rerank(
                dist, method.distance(qf, qf, cfg), method.distance(gf, gf, cfg),
                k1=cfg.eval.k1, k2=cfg.eval.k2, lambda_value=cfg.eval.lambda_value,
            )
    return np.asarray(dist.cpu().numpy() if torch.is_tensor(dist) else dist, dtype=np.float32)


def evaluate_records(
    model: nn.Module, cfg: Config, query: list[Record], gallery: list[Record], *,
    device: torch.device, progress: bool = True, rerank: bool | None = None, dist_info: DistInfo | None = None,
    forward: Forward | None = None, timer: PhaseTimer | None = None,
) -> dict | None:
    """Extract, compute distances, rank. Returns the metrics dict plus `distmat`.

    Under a process group (torchrun), every rank extracts its shard of query and gallery; rank 0
    gathers the rows, ranks them and returns the metrics, the other ranks return None. `forward`
    replaces the model's own forward (e.g. ONNX Runtime); `timer` gets the phase times.
    """
    from occreid.evaluation import rank_metrics

    if not query:
        raise DatasetError("the query set is empty: check data.dataset / data.root with `occreid data check`")
    if not gallery:
        raise DatasetError("the gallery set is empty: check data.dataset / data.root with `occreid data check`")
    rerank = cfg.eval.rerank if rerank is None else rerank
    di = dist_info or current_dist_info()
    timer = timer or PhaseTimer()
    shard = {"rank": di.rank, "world_size": di.world_size, "forward": forward, "timer": timer}
    qf = extract_features(model, query, cfg, device=device, progress=progress and di.is_main, **shard)
    gf = qf if gallery is query else extract_features(  # leave-one-out validation: one extraction
        model, gallery, cfg, device=device, progress=progress and di.is_main, **shard
    )
    if not di.is_main:
        return None
    dist = compute_distances(cfg, qf, gf, rerank=rerank, timer=timer)
    q_pids, q_cams = _arrays(query)
    g_pids, g_cams = _arrays(gallery)
    with timer.phase("metrics"):
        m = rank_metrics(dist, q_pids, g_pids, q_cams, g_cams, max_rank=cfg.eval.max_rank)
    cmc = m["cmc"]
    m.update(
        rank1=float(cmc[0]), rank5=float(cmc[min(4, len(cmc) - 1)]), rank10=float(cmc[min(9, len(cmc) - 1)]),
        distmat=dist, query_features=qf, gallery_features=gf,
    )
    return m


def evaluate_checkpoint(
    checkpoint: str, *, dataset: str | None = None, root: str | None = None, overrides: list[str] = (),
    rerank: bool = False, flip: bool | None = None, json_out: str | None = None, out_dir: str | None = None,
    progress: bool = True, runtime: str = "torch", report_images: str = "embed",
) -> list[dict]:
    """`occreid eval`: evaluate a checkpoint on its test dataset(s) and write reports.

    Under torchrun, extraction is sharded over the processes; rank 0 writes the reports and returns
    the results, the other ranks return []. `runtime="onnx"` extracts through ONNX Runtime on the CPU
    (parity-checked against PyTorch on the first batch). Phase times go to metrics.json's `timing`.
    `report_images`: report.html embeds thumbnails ("embed") or links the images ("link").
    """
    from occreid.config import apply_overrides
    from occreid.data.datasets import load_dataset
    from occreid.engine.checkpoint import load_checkpoint
    from occreid.engine.run_setup import dataset_load_options, resolve_device
    from occreid.evaluation.html_report import html_report, visibility_options
    from occreid.evaluation.pictures import plot_cmc, rank_lists
    from occreid.evaluation.query_breakdown import query_breakdown
    from occreid.evaluation.report import write_report

    ckpt_path = Path(checkpoint) / "last.pt" if Path(checkpoint).is_dir() else Path(checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    extra = list(overrides)
    refuse_model_change(ckpt_path, ckpt["config"], extra)
    if dataset:
        extra += [f"data.dataset={dataset}", "data.test_datasets=[]"]
    if root:
        extra.append(f"data.root={root}")
    if flip is not None:
        extra.append(f"eval.flip={str(flip).lower()}")
    cfg = from_dict_config(apply_overrides(ckpt["config"], extra))
    rerank = bool(rerank) or cfg.eval.rerank  # `--rerank` or `eval.rerank=true`
    setup = PhaseTimer()
    with setup.phase("setup"):
        device = resolve_device("cpu" if runtime == "onnx" else cfg.train.device)
        di = init_distributed(device)
        device = rank_device(device, di)
        model = load_model(ckpt, cfg).to(device)
        forward = None
        if runtime != "torch":
            from occreid.inference.onnx_features import check_runtime, onnx_forward

            check_runtime(runtime)
            forward = onnx_forward(model, cfg, ckpt_path)
    out_dir = Path(out_dir or ckpt_path.parent / "eval")
    results = []
    for key in cfg.data.test_datasets or [cfg.data.dataset]:
        sub = from_dict_config(apply_overrides(ckpt["config"], [*extra, f"data.dataset={key}"]))
        stored = from_dict_config(apply_overrides(ckpt["config"], [f"data.dataset={key}"]))
        dest = out_dir / report_folder_name(key, settings_tags(ckpt_path, stored, sub, rerank))
        if di.is_main:
            claim_report_folder(dest, ckpt_path)
        timer = PhaseTimer()
        timer.seconds.update(setup.seconds)
        with timer.phase("dataset"):
            splits = load_dataset(key, sub.data.root, **dataset_load_options(sub))
        if not splits.query or not splits.gallery:
            raise DatasetError(
                f"{key} under {sub.data.root}: query or gallery split is absent "
                f"({'; '.join(splits.notes) or 'see occreid data check'})"
            )
        t0 = time.time()
        m = evaluate_records(model, cfg, splits.query, splits.gallery, device=device, progress=progress,
                             rerank=rerank, dist_info=di, forward=forward, timer=timer)
        if m is None:
            continue
        summary = {
            "dataset": key,
            "protocol": protocol_name(key, sub),
            "rank1": m["rank1"], "rank5": m["rank5"], "rank10": m["rank10"],
            "mAP": float(m["mAP"]), "mINP": float(m["mINP"]),
            "num_query": len(splits.query), "num_gallery": len(splits.gallery),
            "num_valid_queries": int(m["num_valid_queries"]),
            "num_skipped_queries": int(m["num_skipped_queries"]),
            "rerank": bool(rerank), "flip": bool(cfg.eval.flip),
            "checkpoint": str(checkpoint), "checkpoint_path": str(ckpt_path.resolve()),
            "method": cfg.model.name, "config_hash": config_hash(cfg), "report_dir": str(dest),
            "seconds": round(time.time() - t0, 2),
        }
        per_query = {
            "path": [r.path for r in splits.query], "ap": m["ap"], "first_hit": m["first_hit"],
        }
        with timer.phase("breakdown"):
            bd = query_breakdown(m["distmat"], splits.query, splits.gallery, m["query_features"])
            groups = bd.groups(m["ap"], m["first_hit"])  # accuracy by occlusion level and camera pair
        with timer.phase("report"):
            write_report(dest, summary, {**per_query, **bd.csv_columns(splits.gallery)}, m["cmc"], groups=groups)
            html_report(dest / "report.html", summary, m["cmc"], m["ap"], m["first_hit"], splits.query,
                        splits.gallery, bd, groups, images=report_images,
                        **visibility_options(cfg, m["query_features"], m["gallery_features"]))
        with timer.phase("pictures"):
            plot_cmc(m["cmc"], dest / "cmc.png")
            qp, qc = _arrays(splits.query)
            gp, gc = _arrays(splits.gallery)
            n_show = min(cfg.eval.rank_list_queries, len(splits.query))
            if n_show:
                pick = np.linspace(0, len(splits.query) - 1, n_show).astype(int)
                rank_lists(m["distmat"], [r.path for r in splits.query], [r.path for r in splits.gallery],
                           qp, gp, qc, gc, pick, dest)
        summary["timing"] = {"runtime": runtime, **timer.as_dict()}
        add_timing(dest / "metrics.json", summary["timing"])
        results.append(summary)
    if json_out and results:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(results if len(results) > 1 else results[0], indent=2))
    return results


def add_timing(metrics_file: Path, timing: dict) -> None:
    """Add the phase times (seconds, measured after the report was written) to metrics.json."""
    data = json.loads(metrics_file.read_text())
    data["timing"] = timing
    metrics_file.write_text(json.dumps(data, indent=2) + "\n")


def refuse_model_change(checkpoint: Path, stored: dict, overrides: list[str]) -> None:
    """An override of the architecture (model.name / model.backbone) cannot apply to saved weights:
    ConfigError naming the checkpoint's own value and the fix, before the config is validated."""
    from occreid.config.loader import parse_override

    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] == "model" and len(parts) == 2 and parts[1] in ("name", "backbone"):
            own = stored.get("model", {}).get(parts[1])
            if value != own:
                raise ConfigError(
                    f"{text}: {checkpoint} holds a {own!r} model ({'method' if parts[1] == 'name' else 'backbone'} "
                    f"model.{parts[1]}={own}); evaluation always uses the checkpoint's own model. Drop {text}, "
                    f"or pass a checkpoint trained with model.{parts[1]}={value}"
                )


#: Keys that say where the data is or how fast to run, not what is measured: left out of report names.
#: eval.rerank and eval.flip are named by their own tags.
UNNAMED_KEYS = ("data.dataset", "data.test_datasets", "data.root", "data.labels_root", "data.workers",
                "data.test_batch_size", "data.decode_cache", "data.cache_dir", "train.device", "run.", "eval.rerank",
                "eval.flip")


def settings_tags(checkpoint: Path, stored: Config, used: Config, rerank: bool) -> list[str]:
    """What makes this evaluation differ from the checkpoint's own (the one `occreid train` runs): a
    checkpoint file other than last.pt, re-ranking, flip, and every other changed key as key=value."""
    from occreid.config import to_dict
    from occreid.config.loader import flat_dict

    tags = [] if checkpoint.stem == "last" else [checkpoint.stem]
    if rerank != stored.eval.rerank:
        tags.append("rerank" if rerank else "no-rerank")
    if used.eval.flip != stored.eval.flip:
        tags.append("flip" if used.eval.flip else "no-flip")
    a, b = flat_dict(to_dict(stored)), flat_dict(to_dict(used))
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k) and not k.startswith(UNNAMED_KEYS):
            tags.append(f"{k}={b.get(k)}")
    return tags


def protocol_name(key: str, cfg: Config) -> str:
    if key == "partial_reid":
        return f"partial_reid ({cfg.data.partial_reid_query}_body_images query, single-shot, all ranks)"
    if key == "cuhk03":
        return f"cuhk03 new protocol ({cfg.data.cuhk03_variant})"
    return f"{key} (Market rule: same pid and camera removed)"


def load_model(ckpt: dict, cfg: Config) -> nn.Module:
    """Rebuild the model of a checkpoint and load its weights (inference mode)."""
    from occreid.errors import CheckpointError

    method = get_method(cfg.model.name)
    model = method.build_model(cfg, int(ckpt["num_classes"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit model {cfg.model.name!r}: {e}") from None
    return model.eval()
