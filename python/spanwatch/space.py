"""The map of the input space: FAISS k-means quantizers at several
resolutions, with the population's frequency of each cell."""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import numpy.typing as npt

from spanwatch._core import CellSearch
from spanwatch.errors import SpaceError
from spanwatch.ivf import InvertedFile

if TYPE_CHECKING:
    from spanwatch.config import SpaceSettings

__all__ = ["FORMAT_VERSION", "Space"]

log = logging.getLogger("spanwatch.space")

FORMAT_VERSION = 1


class Space:
    """Cells of the embedding space at several levels, coarse to fine."""

    def __init__(
        self,
        centroids: Sequence[npt.NDArray[np.float32]],
        counts: Sequence[npt.NDArray[np.int64]],
        *,
        model_id: str = "",
        requested_levels: Sequence[int] | None = None,
    ) -> None:
        if not centroids or len(centroids) != len(counts):
            raise SpaceError("a space needs one centroid matrix and one count vector per level")
        dims = {c.shape[1] for c in centroids}
        if len(dims) != 1:
            raise SpaceError(f"levels disagree on the embedding dimension: {sorted(dims)}")
        self.centroids = [np.ascontiguousarray(c, dtype=np.float32) for c in centroids]
        self.counts = [np.asarray(c, dtype=np.int64) for c in counts]
        for c, n in zip(self.centroids, self.counts, strict=True):
            if len(c) != len(n):
                raise SpaceError("a level's counts do not match its centroids")
        self.dim = int(dims.pop())
        self.model_id = model_id
        self.levels = [len(c) for c in self.centroids]
        self.requested_levels = list(requested_levels or self.levels)
        # Add-one smoothing: a cell never seen in fitting still has some mass.
        self.freqs = [(n + 1) / (n + 1).sum() for n in self.counts]
        self.search = "exact"
        self._expected: dict[float, npt.NDArray[np.float64]] = {}
        # threads faiss searches with in `assign`; 0 leaves its default (all cores)
        self.threads = 0
        self._indexes: list[Any] = []
        self._ivf: dict[int, InvertedFile] = {}
        self._descent: CellSearch | None = None
        for c in self.centroids:
            index = faiss.IndexFlatIP(self.dim)
            index.add(c)
            self._indexes.append(index)

    @classmethod
    def fit(
        cls,
        embeddings: npt.NDArray[np.float32],
        levels: Sequence[int] = (16, 256, 4096),
        *,
        seed: int = 0,
        niter: int = 20,
        min_points_per_cell: int = 4,
        model_id: str = "",
    ) -> Space:
        """Fits one spherical k-means per level. A level asks for more cells
        than the data supports (`min_points_per_cell` each) is shrunk, with a
        warning, and `requested_levels` keeps what was asked."""
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or len(x) < 2:
            raise SpaceError(f"need an (n, dim) matrix with n >= 2, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise SpaceError("embeddings hold NaN or infinite values")
        n, dim = x.shape
        cap = max(2, n // min_points_per_cell)
        centroids, counts = [], []
        last = 1
        for want in levels:
            k = min(int(want), cap)
            if k <= last:
                raise SpaceError(
                    f"{n} points support at most {cap} cells; level {want} would not be finer "
                    f"than the level before it. Fit on more events or ask for fewer levels."
                )
            if k < want:
                log.warning("level %d shrunk to %d cells: only %d points to fit on", want, k, n)
            km = faiss.Kmeans(
                dim,
                k,
                niter=niter,
                seed=seed,
                spherical=True,
                verbose=False,
                min_points_per_centroid=min_points_per_cell,
            )
            km.train(x)
            c = np.ascontiguousarray(km.centroids, dtype=np.float32)
            _, assign = km.index.search(x, 1)
            centroids.append(c)
            counts.append(np.bincount(assign[:, 0], minlength=k).astype(np.int64))
            last = k
        return cls(centroids, counts, model_id=model_id, requested_levels=list(levels))

    def assign(self, embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
        """Cell ids, one column per level: an (n, levels) int64 matrix."""
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise SpaceError(f"embeddings must be (n, {self.dim}), got shape {x.shape}")
        if not np.isfinite(x).all():
            bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise SpaceError(f"embedding row {bad} holds NaN or infinite values")
        out = np.empty((len(x), len(self.levels)), dtype=np.int64)
        if len(x) == 0:
            return out
        if self._descent is not None:
            return self._descent.assign(x)
        before = faiss.omp_get_max_threads()
        if self.threads:
            faiss.omp_set_num_threads(self.threads)
        try:
            for j, index in enumerate(self._indexes):
                if j in self._ivf:
                    out[:, j] = self._ivf[j].search(x)
                else:
                    _, ids = index.search(x, 1)
                    out[:, j] = ids[:, 0]
        finally:
            faiss.omp_set_num_threads(before)
        return out

    def use_ivf(self, nprobe: int = 8, min_cells: int = 1024) -> None:
        """Assigns levels of at least `min_cells` cells with an inverted file
        (sqrt(cells) lists, `nprobe` of them searched) instead of exact
        search: several times faster, and a few percent of events get a
        near cell instead of the nearest (see bench/README.md)."""
        if nprobe < 1:
            raise SpaceError(f"nprobe must be at least 1, got {nprobe}")
        if self.search == f"ivf:{nprobe}:{min_cells}":
            return
        self.search = f"ivf:{nprobe}:{min_cells}"
        self._descent = None
        self._ivf = {
            j: InvertedFile(c, max(1, round(len(c) ** 0.5)), nprobe)
            for j, c in enumerate(self.centroids)
            if len(c) >= min_cells
        }

    def configure(self, settings: SpaceSettings) -> None:
        """Searches cells as the `[space]` settings say (`assign`, `nprobe`,
        `widen`, `threads`), so every user of a space assigns alike."""
        if settings.assign == "ivf":
            self.use_ivf(settings.nprobe)
        elif settings.assign == "descent":
            self.use_descent(settings.widen)
        elif self.search != "exact":
            self.search, self._ivf, self._descent = "exact", {}, None
        self.threads = settings.threads

    def use_descent(self, widen: int = 16) -> None:
        """Assigns every level but the finest exactly, and the finest among
        the children of the query's `widen` best cells of the level above (a
        fine centroid's parent is its nearest coarse centroid), in the Rust
        core on one core. At 16/256/4096 cells and widen 16: 4.9x exact search
        on one core, 98.5% of events get the same cell (bench/README.md)."""
        if widen < 1:
            raise SpaceError(f"widen must be at least 1, got {widen}")
        if self.search == f"descent:{widen}":
            return
        self.search = f"descent:{widen}"
        self._ivf = {}
        self._descent = CellSearch(self.centroids, widen=widen)  # one level: exact

    def expected_cells(self, n: float) -> npt.NDArray[np.float64]:
        """Distinct cells per level that n draws from the population would hit
        (read-only; remembered per n, since checkpoints ask for the same
        counts over and over)."""
        got = self._expected.get(n)
        if got is None:
            if len(self._expected) >= 65_536:
                self._expected.clear()
            got = np.array([float(np.sum(1.0 - np.power(1.0 - p, n))) for p in self.freqs])
            got.flags.writeable = False
            self._expected[n] = got
        return got

    def save(self, path: str | Path) -> None:
        """One file (a zip of .npy arrays and a JSON header), written atomically."""
        path = Path(path)
        meta = {
            "format": "spanwatch-space",
            "version": FORMAT_VERSION,
            "levels": self.levels,
            "requested_levels": self.requested_levels,
            "dim": self.dim,
            "model_id": self.model_id,
        }
        tmp = path.with_name(path.name + ".tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr("meta.json", json.dumps(meta))
            for i, (c, n) in enumerate(zip(self.centroids, self.counts, strict=True)):
                for name, arr in ((f"centroids_{i}.npy", c), (f"counts_{i}.npy", n)):
                    buf = io.BytesIO()
                    np.save(buf, arr, allow_pickle=False)
                    z.writestr(name, buf.getvalue())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> Space:
        """Reads a file written by `save`. Anything else, or a damaged file,
        raises SpaceError saying what is wrong."""
        path = Path(path)
        try:
            with zipfile.ZipFile(path) as z:
                meta = json.loads(z.read("meta.json"))
                if not isinstance(meta, dict) or meta.get("format") != "spanwatch-space":
                    raise SpaceError(f"{path} is not a spanwatch space file")
                if meta.get("version") != FORMAT_VERSION:
                    raise SpaceError(
                        f"{path}: space format version {meta.get('version')} is not supported "
                        f"(this build reads {FORMAT_VERSION})"
                    )
                levels, dim = meta["levels"], meta["dim"]
                if not isinstance(levels, list) or not levels:
                    raise SpaceError(f"{path}: header has no list of levels")

                def arr(name: str) -> Any:
                    return np.load(io.BytesIO(z.read(name)), allow_pickle=False)

                centroids = [arr(f"centroids_{i}.npy") for i in range(len(levels))]
                counts = [arr(f"counts_{i}.npy") for i in range(len(levels))]
                if any(c.ndim != 2 for c in centroids) or any(n.ndim != 1 for n in counts):
                    raise SpaceError(f"{path}: arrays have the wrong number of dimensions")
                space = cls(
                    centroids,
                    counts,
                    model_id=str(meta.get("model_id", "")),
                    requested_levels=meta.get("requested_levels"),
                )
        except SpaceError:
            raise
        except FileNotFoundError:
            raise SpaceError(f"space file not found: {path}") from None
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError) as e:
            raise SpaceError(f"{path} is not a readable space file: {e}") from None
        if space.levels != levels or space.dim != dim:
            raise SpaceError(f"{path}: header does not match the arrays it holds")
        return space

    def __repr__(self) -> str:
        return f"Space(levels={self.levels}, dim={self.dim}, model_id={self.model_id!r})"
