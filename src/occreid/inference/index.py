"""Gallery index and two-stage search: FAISS inner-product candidates on the L2-normalised global
embedding, then an exact re-rank of the top candidates with the method's own distance recipe.

An index is a folder: `faiss.index` (flat, IVF or HNSW over the unit global embedding) and `index.json`
(kind, embedding name, the feature folder it indexes, model identity, and, for a labelled gallery, a
search threshold from TAR at FAR). The gallery's feature folder stays where it is and is memory-mapped
for the re-rank, so part embeddings of a large gallery are read only for the candidates.

Same-camera filtering (on by default): a gallery image taken by the query's camera (camera ids parsed
from Market-style names `PPPP_cC...`, where both are known) or with the query's file name (a query may
itself sit in the gallery) is never returned, as in cross-camera search and the Market evaluation rule.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from occreid.config import Config, from_dict_config
from occreid.errors import ConfigError, DatasetError
from occreid.inference.features_file import FeatureSet, read_features

IndexKind = Literal["auto", "flat", "ivf", "hnsw"]
MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")
INDEX_FORMAT = "occreid-index"
#: Preferred candidate embeddings when the method's Options name none (first present wins).
GLOBAL_NAMES = ("bnneck", "foreground", "final", "global", "stripes")


def require_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ConfigError("gallery search needs FAISS: pip install 'occreid[search]' (faiss-cpu)") from None
    return faiss


def parse_names(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(pids, camids) from Market-style file names; -2 / -1 where a name does not parse (unknown).
    Camera `cC` gives camid C - 1 as the dataset loaders do."""
    pids = np.full(len(paths), -2, dtype=np.int64)
    cams = np.full(len(paths), -1, dtype=np.int64)
    for i, p in enumerate(paths):  # string parsing: once per image when an index is built or searched
        m = MARKET_NAME.match(os.path.basename(p))
        if m:
            pids[i], cams[i] = int(m.group(1)), int(m.group(2)) - 1
    return pids, cams


def candidate_key(arrays: dict[str, Any], cfg: Config) -> str:
    """The global embedding used for candidates: the method's `test_feature` option when it names a
    [N, D] array, else the first [N, D] of its `test_embeddings`, else the first of GLOBAL_NAMES, else the
    first [N, D] array."""
    from occreid.methods import get_method

    flat = [k for k, v in arrays.items() if k != "visibility" and np.ndim(v) == 2]
    opts = get_method(cfg.model.name).Options(**cfg.method)
    wanted = [getattr(opts, "test_feature", None), *getattr(opts, "test_embeddings", []), *GLOBAL_NAMES]
    for name in [*wanted, *flat]:
        if name in flat:
            return name
    raise DatasetError(f"the features have no [N, D] embedding to index (arrays: {sorted(arrays)})")


def unit_rows(x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Row-wise L2-normalised float32 copy, converted chunk by chunk (inputs may be memory-mapped fp16)."""
    out = np.empty(x.shape, dtype=np.float32)
    for s in range(0, x.shape[0], chunk):
        block = np.asarray(x[s:s + chunk], dtype=np.float32)
        out[s:s + chunk] = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
    return out


@dataclass
class IndexOptions:
    """`kind="auto"`: exact flat below `flat_max` gallery images, IVF above. IVF uses `nlist` lists
    (default ~sqrt(N)) probed `nprobe` at a time; HNSW `hnsw_m` links, `ef_search` at query time."""

    kind: IndexKind = "auto"
    flat_max: int = 100_000
    nlist: int | None = None
    nprobe: int = 32
    hnsw_m: int = 32
    ef_search: int = 128
    train_sample: int = 100_000
    fars: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    far: float = 1e-3
    threshold_sample: int = 2000
    seed: int = 0


def _build_faiss(vecs: np.ndarray, opts: IndexOptions) -> tuple[Any, str]:
    faiss = require_faiss()
    n, d = vecs.shape
    kind = opts.kind if opts.kind != "auto" else ("flat" if n <= opts.flat_max else "ivf")
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, opts.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivf":
        nlist = opts.nlist or max(1, min(int(np.sqrt(n)), n // 39 or 1))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(opts.seed)
        sample = np.sort(rng.choice(n, size=min(n, opts.train_sample), replace=False))
        index.train(vecs[sample])
    else:
        raise ConfigError(f"--kind {opts.kind!r}: expected auto, flat, ivf or hnsw")
    for s in range(0, n, 65536):
        index.add(vecs[s:s + 65536])
    return index, kind


def search_threshold(gallery: FeatureSet, cfg: Config, opts: IndexOptions) -> dict[str, Any] | None:
    """Distance thresholds at each FAR from verification rates (TAR at FAR) between two disjoint random
    halves of the labelled gallery images (pid > 0), same-camera pairs excluded when cameras are known.
    None when the gallery names carry no identities (or no genuine / impostor pairs)."""
    from occreid.api import features_distance
    from occreid.evaluation import verification_rates

    pids, cams = parse_names(gallery.paths)
    labelled = np.flatnonzero(pids > 0)
    if labelled.size < 4:
        return None
    rng = np.random.default_rng(opts.seed)
    pick = rng.permutation(labelled)[: opts.threshold_sample]
    a, b = np.sort(pick[: pick.size // 2]), np.sort(pick[pick.size // 2:])
    dist = features_distance(cfg, gallery.tensors(a), gallery.tensors(b))
    by_cam = bool((cams[pick] >= 0).all())
    try:
        v = verification_rates(dist, pids[a], pids[b], fars=opts.fars, exclude_same_camera=by_cam,
                               q_camids=cams[a], g_camids=cams[b])
    except ValueError:
        return None
    chosen = int(np.argmin(np.abs(np.asarray(opts.fars) - opts.far)))
    return {
        "far": v["far"].tolist(), "tar": v["tar"].tolist(), "threshold": v["threshold"].tolist(),
        "achieved_far": v["achieved_far"].tolist(), "num_genuine": v["num_genuine"],
        "num_impostor": v["num_impostor"], "images_sampled": int(pick.size), "cross_camera": by_cam,
        "chosen_far": float(v["far"][chosen]), "value": float(v["threshold"][chosen]),
    }


@dataclass
class SearchResult:
    """Top-k gallery rows per query (-1 = fewer than k allowed candidates), their exact distances (inf
    when absent) and, when the index has a threshold, whether each distance is accepted as a match."""

    query_paths: list[str]
    gallery_paths: list[str]
    indices: np.ndarray
    distances: np.ndarray
    threshold: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> np.ndarray | None:
        return None if self.threshold is None else (self.indices >= 0) & (self.distances <= self.threshold)

    def to_json(self) -> dict[str, Any]:
        acc = self.accepted
        queries = []
        for i, q in enumerate(self.query_paths):  # output formatting, one entry per query
            keep = self.indices[i] >= 0
            hits = [
                {"rank": r + 1, "path": self.gallery_paths[j], "gallery_index": int(j), "distance": float(d),
                 **({} if acc is None else {"match": bool(acc[i, r])})}
                for r, (j, d) in enumerate(zip(self.indices[i][keep], self.distances[i][keep]))
            ]
            queries.append({"query": q, "results": hits})
        return {**self.meta, "threshold": self.threshold, "queries": queries}


class GalleryIndex:
    """A persistent FAISS index over a gallery feature folder, searched in two stages."""

    def __init__(self, folder: Path, meta: dict[str, Any], index: Any, gallery: FeatureSet) -> None:
        self.folder, self.meta, self.index, self.gallery = folder, meta, index, gallery
        self.cfg = from_dict_config(gallery.identity["config"])
        self.key = meta["key"]
        self.g_pids, self.g_cams = parse_names(gallery.paths)
        names = [os.path.basename(p) for p in gallery.paths]
        self.name_ids = {n: i for i, n in enumerate(dict.fromkeys(names))}
        self.g_name_ids = np.array([self.name_ids[n] for n in names], dtype=np.int64)

    @property
    def threshold(self) -> float | None:
        t = self.meta.get("threshold")
        return None if t is None else t["value"]

    @classmethod
    def build(cls, features: str | Path, out: str | Path, opts: IndexOptions | None = None,
              key: str | None = None, labelled: bool = True) -> GalleryIndex:
        """Index the feature folder `features` into the folder `out` (written atomically)."""
        opts = opts or IndexOptions()
        gallery = read_features(features)
        if len(gallery) == 0:
            raise DatasetError(f"{features}: no features to index")
        if "config" not in gallery.identity:
            raise DatasetError(f"{features}: no model identity in the manifest; extract with occreid")
        cfg = from_dict_config(gallery.identity["config"])
        key = key or candidate_key(gallery.arrays, cfg)
        if key not in gallery.arrays or np.ndim(gallery.arrays[key]) != 2:
            raise ConfigError(f"--embedding {key!r}: not an [N, D] array of {features} "
                              f"({sorted(gallery.arrays)})")
        index, kind = _build_faiss(unit_rows(gallery.arrays[key]), opts)
        meta = {
            "format": INDEX_FORMAT, "version": 1, "kind": kind, "key": key, "count": len(gallery),
            "dim": int(gallery.arrays[key].shape[1]), "features": str(Path(features).resolve()),
            "identity": {k: v for k, v in gallery.identity.items() if k != "config"},
            "nprobe": opts.nprobe, "ef_search": opts.ef_search,
            "threshold": search_threshold(gallery, cfg, opts) if labelled else None,
        }
        out = Path(out)
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        require_faiss().write_index(index, str(tmp / "faiss.index"))
        (tmp / "index.json").write_text(json.dumps(meta, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        return cls(out, meta, index, gallery)

    @classmethod
    def open(cls, folder: str | Path) -> GalleryIndex:
        folder = Path(folder)
        if not (folder / "index.json").is_file():
            raise DatasetError(f"{folder}: not an occreid index (no index.json); build one with "
                               "`occreid index build --features FEATS --out INDEX`")
        meta = json.loads((folder / "index.json").read_text())
        gallery = read_features(meta["features"])
        if len(gallery) != meta["count"]:
            raise DatasetError(f"{meta['features']} changed since the index was built ({len(gallery)} rows, "
                               f"index has {meta['count']}); rebuild the index")
        return cls(folder, meta, require_faiss().read_index(str(folder / "faiss.index")), gallery)

    def _check_queries(self, queries: FeatureSet) -> None:
        ours = self.meta["identity"]
        theirs = queries.identity
        if (theirs.get("method"), theirs.get("config_hash")) != (ours["method"], ours["config_hash"]):
            raise ConfigError(
                f"query features of {theirs.get('method')} (config {theirs.get('config_hash')}) do not match "
                f"the index's {ours['method']} (config {ours['config_hash']}); extract queries with the "
                "gallery's checkpoint"
            )

    def _excluded(self, rows: np.ndarray, cand: np.ndarray, q_cams: np.ndarray,
                  q_name_ids: np.ndarray) -> np.ndarray:
        """Candidates [len(rows), k] that the same-camera filter removes."""
        safe = np.maximum(cand, 0)
        gc = self.g_cams[safe]
        qc = q_cams[rows][:, None]
        same_cam = (qc >= 0) & (gc >= 0) & (qc == gc)
        return same_cam | (self.g_name_ids[safe] == q_name_ids[rows][:, None])

    def candidates(self, queries: FeatureSet, count: int, same_camera_filter: bool = True) -> np.ndarray:
        """[Nq, count] gallery rows from FAISS (best first, -1 padded), fetching more for queries whose
        first candidates the filter removes."""
        n = len(self.gallery)
        count = min(count, n)
        q = unit_rows(queries.arrays[self.key])
        self._set_search_params()
        _, q_cams = parse_names(queries.paths)
        q_name_ids = np.array([self.name_ids.get(os.path.basename(p), -1) for p in queries.paths], np.int64)
        out = np.full((len(queries), count), -1, dtype=np.int64)
        todo = np.arange(len(queries))
        k = min(n, count * 2 if same_camera_filter else count)
        while todo.size:
            _, found = self.index.search(q[todo], k)
            valid = found >= 0
            if same_camera_filter:
                valid &= ~self._excluded(todo, found, q_cams, q_name_ids)
            done = (valid.sum(1) >= count) | (k >= n)
            order = np.argsort(~valid, axis=1, kind="stable")[:, :count]  # valid ones first, in rank order
            picked = np.take_along_axis(found, order, 1)
            picked[~np.take_along_axis(valid, order, 1)] = -1
            out[todo[done], : picked.shape[1]] = picked[done]
            todo, k = todo[~done], min(n, k * 4)
        return out

    def _set_search_params(self) -> None:
        faiss = require_faiss()
        if self.meta["kind"] == "ivf":
            faiss.extract_index_ivf(self.index).nprobe = int(self.meta["nprobe"])
        elif self.meta["kind"] == "hnsw":
            self.index.hnsw.efSearch = max(int(self.meta["ef_search"]), 1)

    def search(self, queries: FeatureSet, topk: int = 10, rerank: int = 100,
               same_camera_filter: bool = True) -> SearchResult:
        """Two-stage search: `max(rerank, topk)` FAISS candidates per query, re-ranked exactly."""
        self._check_queries(queries)
        cand = self.candidates(queries, max(rerank, topk), same_camera_filter)
        dist = rerank_candidates(self.cfg, queries, self.gallery, cand)
        order = _order(dist, cand)[:, :topk]
        idx = np.take_along_axis(cand, order, 1)
        d = np.take_along_axis(dist, order, 1)
        meta = {"index": str(self.folder), "method": self.meta["identity"]["method"],
                "kind": self.meta["kind"], "topk": topk, "rerank": rerank,
                "same_camera_filter": same_camera_filter}
        return SearchResult(list(queries.paths), list(self.gallery.paths), idx, d, self.threshold, meta)


def _order(dist: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Per-row order by distance, ties by gallery index (stable, as the evaluation breaks them)."""
    by_index = np.argsort(np.where(cand < 0, np.iinfo(np.int64).max, cand), axis=1, kind="stable")
    d_sorted = np.take_along_axis(dist, by_index, 1)
    return np.take_along_axis(by_index, np.argsort(d_sorted, axis=1, kind="stable"), 1)


def rerank_candidates(cfg: Config, queries: FeatureSet, gallery: FeatureSet, cand: np.ndarray,
                      pairs_per_chunk: int = 4096) -> np.ndarray:
    """Exact method distances [Nq, K] between each query and its candidate rows `cand` (-1 -> inf).

    Queries go in chunks; each chunk's distance is computed against the union of its candidates (read
    from the memory-mapped gallery once), then the needed entries are gathered."""
    from occreid.api import features_distance

    nq, k = cand.shape
    out = np.full((nq, k), np.inf, dtype=np.float32)
    step = max(1, pairs_per_chunk // max(k, 1))
    for s in range(0, nq, step):
        c = cand[s:s + step]
        union = np.unique(c[c >= 0])
        if union.size == 0:
            continue
        d = features_distance(cfg, queries.tensors(np.arange(s, s + c.shape[0])), gallery.tensors(union))
        pos = np.searchsorted(union, np.maximum(c, 0))
        block = np.take_along_axis(d, pos, 1)
        out[s:s + step] = np.where(c >= 0, block, np.inf)
    return out


def exact_search(cfg: Config, queries: FeatureSet, gallery: FeatureSet, topk: int = 10,
                 same_camera_filter: bool = True, gallery_chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Reference search: the method's distance to every gallery image (gallery in chunks), filtered as
    the index filters, top-k by (distance, gallery index). Returns (indices, distances) [Nq, topk]."""
    from occreid.api import features_distance

    n = len(gallery)
    _, q_cams = parse_names(queries.paths)
    _, g_cams = parse_names(gallery.paths)
    qn = np.array([os.path.basename(p) for p in queries.paths])
    gn = np.array([os.path.basename(p) for p in gallery.paths])
    qf = queries.tensors()
    best_i = np.full((len(queries), 0), -1, dtype=np.int64)
    best_d = np.zeros((len(queries), 0), dtype=np.float32)
    for s in range(0, n, gallery_chunk):
        rows = np.arange(s, min(n, s + gallery_chunk))
        d = features_distance(cfg, qf, gallery.tensors(rows))
        if same_camera_filter:
            same = (q_cams[:, None] >= 0) & (q_cams[:, None] == g_cams[None, rows])
            d = np.where(same | (qn[:, None] == gn[None, rows]), np.inf, d)
        cand = np.concatenate([best_i, np.broadcast_to(rows, d.shape)], 1)
        dist = np.concatenate([best_d, d], 1)
        order = _order(dist, cand)[:, :topk]
        best_i, best_d = np.take_along_axis(cand, order, 1), np.take_along_axis(dist, order, 1)
    best_i = np.where(np.isfinite(best_d), best_i, -1)
    return best_i, best_d
