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
import math
import mmap
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from occreid.config import Config, feature_settings_diff, from_dict_config
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


def drop_mapped_pages(arrays: Iterable[np.ndarray]) -> None:
    """Unmap the resident pages of memory-mapped arrays (madvise MADV_DONTNEED) after a pass over them, so
    reading a gallery larger than RAM does not keep it in the process's RSS; the file stays in the page
    cache and a later read faults it back in. In-memory arrays, and systems without madvise, are left alone."""
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is None:
        return
    for a in arrays:
        while a is not None and not isinstance(getattr(a, "_mmap", None), mmap.mmap):
            a = a.base if isinstance(a, np.ndarray) else None  # a view of a memmap: its base holds the map
        if a is not None:
            try:
                a._mmap.madvise(advice)
            except (OSError, ValueError):  # a closed map, or a kernel that refuses the advice
                pass


def unit_rows(x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Row-wise L2-normalised float32 copy, converted chunk by chunk (inputs may be memory-mapped fp16,
    whose pages are released after each chunk)."""
    out = np.empty(x.shape, dtype=np.float32)
    for s in range(0, x.shape[0], chunk):
        block = np.asarray(x[s:s + chunk], dtype=np.float32)
        out[s:s + chunk] = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
        drop_mapped_pages([x])
    return out


def recall_at_k(found: np.ndarray, reference: np.ndarray) -> float:
    """Mean over queries of |found_q & reference_q| / |reference_q|: the share of each reference list
    (e.g. the exact top-k) that an approximate list retrieved, in any order. Rows are gallery indices,
    -1 = empty slot (ignored on both sides); queries whose reference is empty are left out (nan if all are).
    Each row's entries are assumed distinct, as search results are."""
    if found.shape[0] != reference.shape[0]:
        raise ValueError(f"recall_at_k: {found.shape[0]} found rows for {reference.shape[0]} reference rows")
    span = int(max(found.max(initial=-1), reference.max(initial=-1))) + 2  # one code per (query, index)
    row_f = np.arange(found.shape[0])[:, None] * span
    row_r = np.arange(reference.shape[0])[:, None] * span
    hit = np.isin(reference + 1 + row_r, (found + 1 + row_f)[found >= 0]) & (reference >= 0)
    size = (reference >= 0).sum(1)
    keep = size > 0
    return float(np.mean(hit.sum(1)[keep] / size[keep])) if keep.any() else float("nan")


#: Default share of the IVF lists probed per query (`IndexOptions.nprobe_fraction`), see IndexOptions.
NPROBE_FRACTION = 0.25


@dataclass
class IndexOptions:
    """`kind="auto"`: exact flat up to `flat_max` gallery images, IVF above. IVF uses `nlist` lists (default
    ~sqrt(N)) and probes `nprobe` of them per query, default `ceil(nprobe_fraction * nlist)`; HNSW uses
    `hnsw_m` links and `ef_search` at query time. Both can be overridden per search (`GalleryIndex.search`).

    Why a quarter of the lists: an IVF query scans about nprobe / nlist of the gallery, and with nlist =
    sqrt(N) the candidates' recall at a given fraction hardly moves with N (benchmarks/search_speed.py,
    synthetic PAB-ReID features, 300 queries, top-100 candidates): recall of the flat global top-100 at
    1/32, 1/16, 1/8, 1/4, 1/2 of the lists was 0.18 0.25 0.36 0.53 0.76 at 20,000 images (nlist 141) and
    0.16 0.23 0.34 0.51 0.75 at 50,000 (nlist 223), whereas a fixed nprobe (formerly 32: 3% of the lists
    at 1M) loses recall as the gallery grows. Two-stage recall@10 against the exact part-distance search at
    50,000: 0.54 0.62 0.68 0.76 0.85 (flat 0.88). The curve has no knee on this noise-dominated data (a
    hard case for IVF), so the default trades: 1/4 keeps about half of the flat candidates for a 4x smaller
    scan, while 1/8 lost another 0.08 of recall@10 for about 10% less latency (the exact re-rank, not the
    scan, dominates there). Probe more per search (`nprobe=`) where recall matters, or use `kind="flat"`:
    below ~100,000 images a batched flat search was as fast as any IVF setting."""

    kind: IndexKind = "auto"
    flat_max: int = 100_000
    nlist: int | None = None
    nprobe: int | None = None
    nprobe_fraction: float = NPROBE_FRACTION
    hnsw_m: int = 32
    ef_search: int = 128
    train_sample: int = 100_000
    fars: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    far: float = 1e-3
    threshold_sample: int = 2000
    seed: int = 0


def default_nlist(n: int) -> int:
    """IVF lists for n vectors: ~sqrt(n), at most n / 39 so k-means has its minimum of 39 points per list."""
    return max(1, min(int(np.sqrt(n)), n // 39 or 1))


def _build_faiss(vecs: np.ndarray, opts: IndexOptions) -> tuple[Any, str]:
    faiss = require_faiss()
    n, d = vecs.shape
    kind = opts.kind if opts.kind != "auto" else ("flat" if n <= opts.flat_max else "ivf")
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, opts.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivf":
        nlist = opts.nlist or default_nlist(n)
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
        if (opts.nprobe is not None and opts.nprobe < 1) or not 0 < opts.nprobe_fraction <= 1:
            raise ConfigError(f"nprobe {opts.nprobe} / nprobe_fraction {opts.nprobe_fraction}: expected "
                              "nprobe >= 1 and 0 < nprobe_fraction <= 1")
        index, kind = _build_faiss(unit_rows(gallery.arrays[key]), opts)
        nlist = int(require_faiss().extract_index_ivf(index).nlist) if kind == "ivf" else None
        nprobe = None if nlist is None else min(nlist, opts.nprobe or math.ceil(opts.nprobe_fraction * nlist))
        meta = {
            "format": INDEX_FORMAT, "version": 1, "kind": kind, "key": key, "count": len(gallery),
            "dim": int(gallery.arrays[key].shape[1]), "features": str(Path(features).resolve()),
            "identity": {k: v for k, v in gallery.identity.items() if k != "config"},
            "nlist": nlist, "nprobe": nprobe, "ef_search": opts.ef_search,
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

    def check_queries(self, queries: FeatureSet, allow_other_checkpoint: bool = False,
                      source: str | None = None) -> None:
        """Refuse queries from another model: another method or array layout always (the distance cannot
        compare them), another checkpoint file content unless `allow_other_checkpoint`. With the same
        checkpoint file, only settings that change features (`FEATURE_KEYS`) count, and the message names
        them. `source` names where the queries came from in the message."""
        ours, theirs = self.meta["identity"], queries.identity
        where = f"query features{f' ({source})' if source else ''}"
        if theirs.get("method") != ours["method"]:
            raise ConfigError(
                f"{where} were made by method {theirs.get('method')!r} with {_checkpoint_name(theirs)}, the "
                f"index {self.folder} by {ours['method']!r} with {_checkpoint_name(ours)}; extract the queries "
                "with the gallery's checkpoint"
            )
        layout = {k: tuple(v.shape[1:]) for k, v in queries.arrays.items()}
        wanted = {k: tuple(v.shape[1:]) for k, v in self.gallery.arrays.items()}
        if layout != wanted:
            raise ConfigError(f"{where} have arrays {layout}, the index {self.folder} has {wanted}: not the "
                              "same model; extract the queries with the gallery's checkpoint")
        keys = ("checkpoint_sha256", "config_hash")
        if allow_other_checkpoint or all(theirs.get(k) == ours.get(k) for k in keys):
            return
        same_file = bool(theirs.get("checkpoint_sha256")) and \
            theirs.get("checkpoint_sha256") == ours.get("checkpoint_sha256")  # '' or None: unknown
        gallery_config = self.gallery.identity.get("config")  # index.json keeps the identity without it
        if same_file and isinstance(theirs.get("config"), dict) and isinstance(gallery_config, dict):
            differ = feature_settings_diff(theirs["config"], gallery_config)
            if not differ:  # same weights, only settings that leave features unchanged differ
                return
            raise ConfigError(
                f"{where} and the index {self.folder} come from the same checkpoint "
                f"({_checkpoint_name(ours)}) with other settings that change the features: "
                f"{'; '.join(differ)} (queries vs gallery). Extract the queries with the gallery's settings"
            )
        raise ConfigError(
            f"{where} do not match the index {self.folder}: the queries were extracted with "
            f"{_checkpoint_name(theirs)}, the gallery with {_checkpoint_name(ours)}, and distances between two "
            "models' features are meaningless. Extract the queries with the "
            "gallery's checkpoint, or pass --allow-other-checkpoint (allow_other_checkpoint=True) if the two "
            "checkpoints hold the same model"
        )

    def _excluded(self, rows: np.ndarray, cand: np.ndarray, q_cams: np.ndarray,
                  q_name_ids: np.ndarray) -> np.ndarray:
        """Candidates [len(rows), k] that the same-camera filter removes."""
        safe = np.maximum(cand, 0)
        gc = self.g_cams[safe]
        qc = q_cams[rows][:, None]
        same_cam = (qc >= 0) & (gc >= 0) & (qc == gc)
        return same_cam | (self.g_name_ids[safe] == q_name_ids[rows][:, None])

    @property
    def nlist(self) -> int | None:
        """IVF lists of an IVF index, else None."""
        return int(require_faiss().extract_index_ivf(self.index).nlist) if self.meta["kind"] == "ivf" else None

    def candidates(self, queries: FeatureSet, count: int, same_camera_filter: bool = True,
                   nprobe: int | None = None, ef_search: int | None = None, exact: bool = False) -> np.ndarray:
        """[Nq, count] gallery rows from FAISS (best first, -1 padded), fetching more for queries whose
        first candidates the filter removes. `nprobe` / `ef_search` override the index's settings for this
        call; `exact` searches every gallery vector instead (IVF with all lists probed, HNSW's flat
        storage): the flat global top-`count`, the reference for the candidates' recall."""
        n = len(self.gallery)
        count = min(count, n)
        q = unit_rows(queries.arrays[self.key])
        searcher = self._searcher(nprobe, ef_search, exact)
        _, q_cams = parse_names(queries.paths)
        q_name_ids = np.array([self.name_ids.get(os.path.basename(p), -1) for p in queries.paths], np.int64)
        out = np.full((len(queries), count), -1, dtype=np.int64)
        todo = np.arange(len(queries))
        k = min(n, count * 2 if same_camera_filter else count)
        while todo.size:
            _, found = searcher.search(q[todo], k)
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

    def search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> dict[str, int]:
        """The query-time parameters a search uses: the index's (`index.json`) unless overridden; nprobe
        is capped at nlist. Empty for a flat index (nothing to tune)."""
        for name, v in (("nprobe", nprobe), ("ef_search", ef_search)):
            if v is not None and int(v) < 1:
                raise ConfigError(f"{name} {v}: expected a positive integer")
        if self.meta["kind"] == "ivf":
            nlist = self.nlist
            default = self.meta.get("nprobe") or math.ceil(NPROBE_FRACTION * nlist)
            return {"nprobe": min(nlist, int(nprobe or default))}
        if self.meta["kind"] == "hnsw":
            return {"ef_search": int(ef_search or self.meta["ef_search"])}
        return {}

    def _searcher(self, nprobe: int | None, ef_search: int | None, exact: bool) -> Any:
        """The FAISS index to search, its query-time parameters set (exact: every vector compared)."""
        faiss = require_faiss()
        params = self.search_params(nprobe, ef_search)
        if self.meta["kind"] == "ivf":
            faiss.extract_index_ivf(self.index).nprobe = self.nlist if exact else params["nprobe"]
        elif self.meta["kind"] == "hnsw":
            if exact:
                return faiss.downcast_index(self.index.storage)
            self.index.hnsw.efSearch = params["ef_search"]
        return self.index

    def search(self, queries: FeatureSet, topk: int = 10, rerank: int = 100, same_camera_filter: bool = True,
               nprobe: int | None = None, ef_search: int | None = None,
               allow_other_checkpoint: bool = False) -> SearchResult:
        """Two-stage search: `max(rerank, topk)` FAISS candidates per query, re-ranked exactly. `nprobe`
        (IVF) and `ef_search` (HNSW) override the index's query-time settings for this call, without a
        rebuild; other kinds ignore them. The settings used are in the result's `meta`. Queries from
        another checkpoint are refused unless `allow_other_checkpoint` (see `check_queries`)."""
        self.check_queries(queries, allow_other_checkpoint)
        cand = self.candidates(queries, max(rerank, topk), same_camera_filter, nprobe, ef_search)
        dist = rerank_candidates(self.cfg, queries, self.gallery, cand)
        order = _order(dist, cand)[:, :topk]
        idx = np.take_along_axis(cand, order, 1)
        d = np.take_along_axis(dist, order, 1)
        meta = {"index": str(self.folder), "method": self.meta["identity"]["method"],
                "kind": self.meta["kind"], "topk": topk, "rerank": rerank,
                "same_camera_filter": same_camera_filter, **self.search_params(nprobe, ef_search)}
        return SearchResult(list(queries.paths), list(self.gallery.paths), idx, d, self.threshold, meta)


def _checkpoint_name(identity: dict[str, Any]) -> str:
    """'checkpoint /abs/last.pt (sha256 1a2b..., config 3c4d...)' for messages."""
    path, sha = identity.get("checkpoint"), identity.get("checkpoint_sha256")
    name = f"checkpoint {path}" if path else "an unnamed checkpoint"
    return f"{name} (sha256 {sha or 'unknown'}, config {identity.get('config_hash') or 'unknown'})"


def _order(dist: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Per-row order by distance, ties by gallery index (stable, as the evaluation breaks them)."""
    by_index = np.argsort(np.where(cand < 0, np.iinfo(np.int64).max, cand), axis=1, kind="stable")
    d_sorted = np.take_along_axis(dist, by_index, 1)
    return np.take_along_axis(by_index, np.argsort(d_sorted, axis=1, kind="stable"), 1)


def rerank_candidates(cfg: Config, queries: FeatureSet, gallery: FeatureSet, cand: np.ndarray,
                      pairs_per_chunk: int = 4096) -> np.ndarray:
    """Exact method distances [Nq, K] between each query and its candidate rows `cand` (-1 -> inf).

    Queries go in chunks; each chunk's distance is computed against the union of its candidates (copied
    from the memory-mapped gallery once, its pages then released), then the needed entries are gathered."""
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
        drop_mapped_pages(gallery.arrays.values())  # a long-running search does not accumulate the gallery in RSS
        pos = np.searchsorted(union, np.maximum(c, 0))
        block = np.take_along_axis(d, pos, 1)
        out[s:s + step] = np.where(c >= 0, block, np.inf)
    return out


def exact_search(cfg: Config, queries: FeatureSet, gallery: FeatureSet, topk: int = 10,
                 same_camera_filter: bool = True, gallery_chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Reference search: the method's distance to every gallery image (gallery in chunks), filtered as
    the index filters, top-k by (distance, gallery index). Returns (indices, distances) [Nq, topk].
    Each chunk is copied out of a memory-mapped gallery and its pages released, so the pass does not keep
    the whole gallery resident."""
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
        drop_mapped_pages(gallery.arrays.values())
        if same_camera_filter:
            same = (q_cams[:, None] >= 0) & (q_cams[:, None] == g_cams[None, rows])
            d = np.where(same | (qn[:, None] == gn[None, rows]), np.inf, d)
        cand = np.concatenate([best_i, np.broadcast_to(rows, d.shape)], 1)
        dist = np.concatenate([best_d, d], 1)
        order = _order(dist, cand)[:, :topk]
        best_i, best_d = np.take_along_axis(cand, order, 1), np.take_along_axis(dist, order, 1)
    best_i = np.where(np.isfinite(best_d), best_i, -1)
    return best_i, best_d
