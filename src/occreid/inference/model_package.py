"""A shareable model package: a folder holding the weights as safetensors (no pickle anywhere), the resolved
config, the metrics of the checkpoint's evaluations and a model card. `occreid.api.load(folder)` and
`occreid eval --checkpoint folder` read it; the optimiser, loss and RNG states of the checkpoint stay out.

Files: `package.json` (format, method, sizes, fingerprints, file list), `model.safetensors` (the model's
state dict), `config.json` (the checkpoint's resolved config), `metrics/<report>.json` (each
`eval/<report>/metrics.json` of the checkpoint), `README.md` (the model card).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from occreid.errors import CheckpointError, ConfigError

PACKAGE_FORMAT = "occreid-model-package"
PACKAGE_VERSION = 1
MANIFEST, WEIGHTS, CONFIG, CARD, METRICS = "package.json", "model.safetensors", "config.json", "README.md", "metrics"


def require_safetensors() -> Any:
    try:
        import safetensors.torch
    except ImportError:
        raise ConfigError("model packages need safetensors: pip install 'occreid[package]'") from None
    return safetensors.torch


def package_folder(path: str | Path) -> Path | None:
    """The package folder that `path` names (the folder, or FOLDER/last.pt as run-folder code spells it),
    else None."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    if path.name == "last.pt" and not path.exists() and (path.parent / MANIFEST).is_file():
        return path.parent
    return None


def read_package(folder: str | Path, *, method: str | None = None) -> dict[str, Any]:
    """The package as a checkpoint-like dict (`model`, `config`, `num_classes`, `method`,
    `source_checkpoint_sha256`), read without unpickling; CheckpointError naming the file at fault."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder}: not a readable model package ({type(e).__name__}: {e}); "
                              "write it again with `occreid export package`") from None
    if manifest.get("format") != PACKAGE_FORMAT or manifest.get("version", 0) > PACKAGE_VERSION:
        raise CheckpointError(f"{folder / MANIFEST}: format {manifest.get('format')!r} version "
                              f"{manifest.get('version')} is not one this occreid reads (upgrade occreid)")
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing; copy the whole package folder")
    if manifest.get("weights_sha256") and file_digest(weights) != manifest["weights_sha256"]:
        raise CheckpointError(f"{weights}: its sha256 differs from {MANIFEST}'s; the copy is damaged, "
                              "copy the package again")
    found = config.get("model", {}).get("name")
    if method is not None and found != method:
        raise CheckpointError(f"{folder}: package of method {found!r}, but method {method!r} was asked for")
    state = require_safetensors().load_file(str(weights), device="cpu")
    return {"format": 1, "method": found, "config": config, "model": state,
            "num_classes": int(manifest["num_classes"]), "iteration": int(manifest.get("iteration", 0)),
            "source_checkpoint_sha256": manifest.get("source_checkpoint_sha256", "")}


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def evaluation_metrics(checkpoint: Path) -> dict[str, dict[str, Any]]:
    """report folder name -> metrics of `checkpoint` found in `<its folder>/eval/*/metrics.json` (reports
    of other checkpoints in the same folder are left out)."""
    found = {}
    for f in sorted((checkpoint.parent / "eval").glob("*/metrics.json")):
        try:
            m = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        own = m.get("checkpoint_path")
        if (own and own == str(checkpoint.resolve())) or (not own and Path(m.get("checkpoint", "")).name
                                                           == checkpoint.name):
            found[f.parent.name] = m
    return found


def write_package(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the package of `checkpoint` (file or run folder) to the new folder `out`, atomically (a
    temporary folder renamed at the end); ConfigError when `out` exists."""
    from occreid.config import config_hash, from_dict_config
    from occreid.engine.checkpoint import load_checkpoint
    from occreid.inference.identity import file_sha256

    st = require_safetensors()
    src = Path(checkpoint)
    if package_folder(src) is not None:
        raise ConfigError(f"{src} is already a model package; copy the folder to share it")
    src = src / "last.pt" if src.is_dir() else src
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} exists; give --out a new folder name (or delete {out})")
    ckpt = load_checkpoint(src)
    cfg = from_dict_config(ckpt["config"])
    bad = [k for k, v in ckpt["model"].items() if not hasattr(v, "contiguous")]
    if bad:
        raise CheckpointError(f"{src}: model state entries {bad[:5]} are not tensors; cannot store them as safetensors")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / METRICS).mkdir(parents=True)
    try:
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in ckpt["model"].items()}
        st.save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt", "occreid_method": cfg.model.name})
        (tmp / CONFIG).write_text(json.dumps(ckpt["config"], indent=1, default=str))
        metrics = evaluation_metrics(src)
        for name, m in metrics.items():
            (tmp / METRICS / f"{name}.json").write_text(json.dumps(m, indent=1))
        manifest = {
            "format": PACKAGE_FORMAT, "version": PACKAGE_VERSION, "method": cfg.model.name,
            "backbone": cfg.model.backbone, "num_classes": int(ckpt["num_classes"]),
            "input_size": [cfg.data.height, cfg.data.width], "config_hash": config_hash(cfg),
            "iteration": int(ckpt.get("iteration", 0)), "source_checkpoint": src.name,
            "source_checkpoint_sha256": file_sha256(src), "weights_sha256": file_digest(tmp / WEIGHTS),
            "occreid_version": occreid_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "metrics": sorted(metrics),
        }
        (tmp / CARD).write_text(model_card(cfg, manifest, metrics))
        manifest["files"] = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file()) + [MANIFEST]
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def occreid_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("occreid")
    except PackageNotFoundError:
        return "unknown"


def model_card(cfg: Any, manifest: dict[str, Any], metrics: dict[str, dict[str, Any]]) -> str:
    """A short Markdown model card: method, backbone and pretraining, training data, protocol, results."""
    from occreid.methods import get_method

    doc = (get_method(cfg.model.name).__doc__ or cfg.model.name).strip().split("\n\n")[0].replace("\n", " ")
    t, d = cfg.train, cfg.data
    length = f"{t.max_iters} iterations" if t.max_iters else f"{t.epochs} epochs"
    nan = float("nan")
    rows = [f"| {m.get('dataset')} | {m.get('protocol', '')} | {100 * m['rank1']:.1f} | "
            f"{100 * m.get('rank5', nan):.1f} | {100 * m['mAP']:.1f} | {100 * m.get('mINP', nan):.1f} "
            f"| {m.get('rerank')} | {m.get('flip')} |" for m in metrics.values() if "rank1" in m and "mAP" in m]
    results = ("| dataset | protocol | R1 | R5 | mAP | mINP | rerank | flip |\n|---|---|---|---|---|---|---|---|\n"
               + "\n".join(rows)) if rows else "No evaluation was found next to the checkpoint (eval/*/metrics.json)."
    return f"""# {cfg.model.name} ({cfg.model.backbone}) — occreid model package

- **Method**: {doc}
- **Backbone and pretraining**: {cfg.model.backbone}, initialised from `{cfg.model.pretrained_path or 'random'}`
  (`model.pretrained_path`), last stride {cfg.model.last_stride}.
- **Training data**: `{d.dataset}` ({manifest['num_classes']} training identities), {length}, optimiser
  {t.optimizer} at lr {t.lr:g}, seed {t.seed}; trained for {manifest['iteration']} iterations.
- **Protocol**: input {d.height} x {d.width} RGB, x / 255 then (x - mean) / std with mean {list(d.mean)}
  and std {list(d.std)}; distance `methods.{cfg.model.name}.distance` (eval.distance={cfg.eval.distance}),
  flip {cfg.eval.flip}, re-ranking {cfg.eval.rerank}. Config hash {manifest['config_hash']}; full config in
  `{CONFIG}`.

## Results

{results}

## Use

```python
import occreid.api as reid
model = reid.load("path/to/this/folder")          # safetensors + JSON: nothing is unpickled
emb = model.embed(["crop.jpg"])
```

`occreid eval --checkpoint path/to/this/folder --root DATA` evaluates it again. Weights sha256
{manifest['weights_sha256'][:16]}..., from checkpoint `{manifest['source_checkpoint']}` (sha256
{manifest['source_checkpoint_sha256']}), occreid {manifest['occreid_version']}.
"""
