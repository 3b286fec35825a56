"""The small Python API for using a trained model: load a checkpoint, embed images, compare embeddings.

Example (runnable; see docs/inference.md)::

    import occreid.api as reid

    model = reid.load("runs/bot/last.pt")                   # weights_only-safe; or a package folder
    gallery = model.embed(["a.jpg", "b.jpg", "c.jpg"])      # paths, PIL images or uint8 H x W x 3 arrays
    query = model.embed([pil_image])
    d = model.distance(query, gallery)                      # [1, 3], the method's own distance recipe
    tracks = reid.aggregate_tracks(gallery, track_ids=[0, 0, 1])   # one embedding per track
    unit = model.global_embedding(gallery)                  # [3, D] unit vectors: a tracker ONNX's output
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from occreid.config import Config
from occreid.errors import CheckpointError, ConfigError, DatasetError
from occreid.inference.features_file import FeatureSet

ImageInput = str | Path | Image.Image | np.ndarray

__all__ = ["Embeddings", "ReidModel", "aggregate_tracks", "load"]


@dataclass
class Embeddings:
    """Named embeddings of N images ([N, D] each, `parts` [N, P, D]) and part visibility [N, P] (or None),
    tagged with the method and config hash that made them (distances refuse to mix models).

    `paths` names each row (the file, or `<input i>` for in-memory images); `skipped` lists the inputs
    that could not be read, as (name, reason)."""

    arrays: dict[str, np.ndarray]
    visibility: np.ndarray | None
    method: str
    config_hash: str
    paths: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def features(self) -> dict[str, torch.Tensor]:
        """The flat tensor dict a method distance recipe takes (as `ModelOutput.features()`)."""
        out = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in self.arrays.items()}
        if self.visibility is not None:
            out["visibility"] = torch.from_numpy(np.array(self.visibility, dtype=np.float32))
        return out

    def take(self, rows: Any) -> Embeddings:
        rows = np.asarray(rows)
        return Embeddings(
            {k: np.asarray(v[rows]) for k, v in self.arrays.items()},
            None if self.visibility is None else np.asarray(self.visibility[rows]),
            self.method, self.config_hash, [self.paths[i] for i in rows.reshape(-1).tolist()],
        )

    @classmethod
    def from_feature_set(cls, fs: FeatureSet) -> Embeddings:
        arrays = {k: v for k, v in fs.arrays.items() if k != "visibility"}
        return cls(arrays, fs.arrays.get("visibility"), fs.identity.get("method", "?"),
                   fs.identity.get("config_hash", "?"), list(fs.paths), list(fs.skipped))


class ReidModel:
    """A model in inference mode with its preprocessing (resize to the training size, normalise) and the
    method's distance recipe. Build it with `load`."""

    def __init__(self, model: torch.nn.Module, cfg: Config, *, identity: dict[str, Any],
                 device: str | torch.device = "cpu", flip: bool | None = None) -> None:
        from occreid.data.transforms import build_transforms
        from occreid.inference.identity import visibility_threshold

        self.cfg = cfg
        self.method = cfg.model.name
        self.identity = identity
        self.config_hash = identity["config_hash"]
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.preprocess = build_transforms(cfg.data, train=False)
        self.input_size = (int(cfg.data.height), int(cfg.data.width))
        self.visibility_threshold = visibility_threshold(cfg)
        self.flip = cfg.eval.flip if flip is None else bool(flip)

    @property
    def global_key(self) -> str:
        """The name of the global [N, D] embedding (the search candidates' and the tracker export's)."""
        from occreid.inference.index import candidate_key

        h, w = self.input_size
        with torch.no_grad():
            feats = self.model(torch.zeros(2, 3, h, w, device=self.device)).features()
        return candidate_key(feats, self.cfg)

    def global_embedding(self, embeddings: Embeddings) -> np.ndarray:
        """[N, D] float32 L2-normalised rows of the global embedding: what a tracker export outputs."""
        from occreid.inference.index import candidate_key

        x = np.asarray(embeddings.arrays[candidate_key(embeddings.arrays, self.cfg)], dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    @torch.no_grad()
    def embed_tensor(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        """Features of a preprocessed batch [B, 3, H, W] at the model's input size (flip-averaged when
        `flip`): name -> float32 array, including `visibility` when the method has one."""
        from occreid.engine.extract import flip_merge

        h, w = self.input_size
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (h, w):
            raise ConfigError(
                f"input tensor of shape {tuple(x.shape)} does not match the model input [B, 3, {h}, {w}] "
                f"(data.height={h}, data.width={w}); preprocess images with ReidModel.preprocess or "
                "pass images to embed(), which resizes them"
            )
        x = x.to(self.device, torch.float32)
        feats = self.model(x).features()
        if self.flip:
            mirrored = self.model(torch.flip(x, dims=[3])).features()
            feats = {k: flip_merge(k, v, mirrored[k]) for k, v in feats.items()}
        return {k: v.float().cpu().numpy() for k, v in feats.items()}

    def to_tensor(self, image: ImageInput) -> torch.Tensor:
        """One image (path, PIL or uint8 H x W x 3 RGB array) -> normalised tensor [3, H, W]."""
        from occreid.data.images import read_image

        if isinstance(image, str | Path):
            image = read_image(image)
        elif isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        elif not isinstance(image, np.ndarray):
            raise TypeError(f"expected a path, PIL image or numpy array, got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 H x W x 3 RGB array, got {image.dtype} {image.shape}")
        return self.preprocess(image)[0]

    def embed(self, images: Sequence[ImageInput], batch_size: int = 64) -> Embeddings:
        """Embed images in batches. Unreadable files are skipped and listed in `.skipped` (DatasetError
        when none can be read); rows follow the input order of the readable ones."""
        if len(images) == 0:
            raise DatasetError("embed() got no images")
        tensors, names, skipped = [], [], []
        for i, image in enumerate(images):
            name = str(image) if isinstance(image, str | Path) else f"<input {i}>"
            try:
                tensors.append(self.to_tensor(image))
            except DatasetError as e:
                skipped.append((name, str(e)))
                continue
            names.append(name)
        if not tensors:
            raise DatasetError(f"none of the {len(images)} images could be read; first: {skipped[0][1]}")
        chunks: dict[str, list[np.ndarray]] = {}
        for s in range(0, len(tensors), batch_size):
            for k, v in self.embed_tensor(torch.stack(tensors[s:s + batch_size])).items():
                chunks.setdefault(k, []).append(v)
        arrays = {k: np.concatenate(v) for k, v in chunks.items()}
        vis = arrays.pop("visibility", None)
        return Embeddings(arrays, vis, self.method, self.config_hash, names, skipped)

    def distance(self, a: Embeddings, b: Embeddings) -> np.ndarray:
        """[len(a), len(b)] float32 distances with the method's own recipe (`methods.<name>.distance`)."""
        for e in (a, b):
            if (e.method, e.config_hash) != (self.method, self.config_hash):
                raise ConfigError(
                    f"embeddings made by {e.method} (config {e.config_hash}) cannot be compared with this "
                    f"{self.method} model (config {self.config_hash}); embed both sets with the same model"
                )
        return features_distance(self.cfg, a.features(), b.features())


def features_distance(cfg: Config, qf: dict, gf: dict) -> np.ndarray:
    """The method's distance recipe on two feature dicts, as a float32 numpy array."""
    from occreid.methods import get_method

    d = get_method(cfg.model.name).distance(qf, gf, cfg)
    return np.asarray(d.cpu().numpy() if torch.is_tensor(d) else d, dtype=np.float32)


def load(checkpoint: str | Path, device: str = "cpu", flip: bool | None = None) -> ReidModel:
    """Load a checkpoint (file or run folder) with `torch.load(weights_only=True)`, or a model package
    folder (`occreid export package`: safetensors, no pickle), into a ReidModel.

    `flip` (default: the checkpoint's eval.flip) averages each image's features with its mirror's.
    CheckpointError for a missing / corrupt checkpoint or one of a method this occreid does not have."""
    from occreid.config import from_dict_config
    from occreid.engine.checkpoint import load_checkpoint
    from occreid.engine.evaluate import load_model
    from occreid.inference.identity import file_sha256, model_identity
    from occreid.inference.model_package import package_folder, read_package
    from occreid.methods import METHODS

    path = Path(checkpoint)
    package = package_folder(path)
    if package is not None:
        path = package
        ckpt = read_package(package)
    else:
        path = path / "last.pt" if path.is_dir() else path
        ckpt = load_checkpoint(path)
    name = ckpt["config"].get("model", {}).get("name")
    if name not in METHODS:
        raise CheckpointError(f"{path}: checkpoint of unknown method {name!r}; this occreid has "
                              f"{sorted(METHODS)} (upgrade occreid or use another checkpoint)")
    try:
        cfg = from_dict_config(ckpt["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: its stored config does not validate: {e}") from None
    model = load_model(ckpt, cfg)
    # a package keeps its source checkpoint's fingerprint: features of either are interchangeable
    sha = ckpt["source_checkpoint_sha256"] if package is not None else file_sha256(path)
    identity = model_identity(cfg, path, sha)
    return ReidModel(model, cfg, identity=identity, device=device, flip=flip)


def aggregate_tracks(embeddings: Embeddings, track_ids: Any) -> Embeddings:
    """One Embeddings row per track (sorted track ids; `paths` = "track <id>"): parts averaged with
    visibility weights, visibility = best frame's (see `occreid.inference.tracklets`). Match tracks to
    a gallery with `ReidModel.distance(tracks, gallery)`."""
    from occreid.inference.tracklets import aggregate_arrays

    arrays, vis, tracks = aggregate_arrays(embeddings.arrays, embeddings.visibility, track_ids)
    return Embeddings(arrays, vis, embeddings.method, embeddings.config_hash, [f"track {t}" for t in tracks])
