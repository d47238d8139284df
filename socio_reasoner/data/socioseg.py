"""SocioSeg-shaped data from any of its layouts (hub, parquet, arrow, save_to_disk, PNG or
GeoTIFF folders) as uniform samples; bad samples are reported, never silently dropped."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BadSampleError, DatasetFormatError, DatasetNotFoundError
from ..geo.image import Grid
from ..models.hub import hub_offline, looks_like_hub_id

TASKS = ("Socio-name", "Socio-class", "Socio-function")
HUB_ID = "vvangfaye/SocioSeg"
IMAGE_COLUMNS = {"map": "map_image", "sat": "sat_image", "mask": "mask_label"}
_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
_SPLIT_ALIASES = ({"train", "training"}, {"val", "valid", "validation", "dev"}, {"test", "testing"})


@dataclass(eq=False)
class Sample:
    """One query on one tile: ``map``/``sat`` H×W×3 uint8, ``mask`` H×W bool."""

    id: str
    query: str
    map: np.ndarray
    sat: np.ndarray
    mask: np.ndarray
    task: str | None = None
    grid: Grid | None = None


@dataclass(frozen=True)
class SkippedSample:
    """A sample that could not be read, and why (e.g. ``"empty question"``)."""

    id: str
    reason: str


class _Bad(Exception):
    """Why one sample is unusable; becomes a SkippedSample or a BadSampleError."""


def normalize_task(task) -> str | None:
    """``"Socio-name"``, ``"Socio-class"`` or ``"Socio-function"`` from loose spellings
    (``"name"``, ``"socio_class"``); other text is kept, empty or None gives None."""
    text = "" if task is None else str(task).strip()
    key = text.lower().replace("_", "-").replace(" ", "-").removeprefix("socio-")
    return f"Socio-{key}" if key in ("name", "class", "function") else (text or None)


def read_task_map(path: str | os.PathLike) -> dict[str, str]:
    """``{id: task}`` from a CSV with an ``id,task`` header (rows with an empty task ignored)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [[v.strip() for v in row] for row in csv.reader(f)]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetNotFoundError(f"Cannot read task map {os.fspath(path)!r}: {exc}") from exc
    header = [h.lower() for h in rows[0]] if rows else []
    if "id" not in header or "task" not in header:
        raise DatasetFormatError(f"Task map {os.fspath(path)!r} needs an 'id,task' header.")
    i, t = header.index("id"), header.index("task")
    pairs = ((r[i], normalize_task(r[t])) for r in rows[1:] if len(r) > max(i, t))
    return {sid: task for sid, task in pairs if sid and task}


def _binary(a: np.ndarray) -> np.ndarray:
    """Any non-zero colour is foreground; alpha (the 2nd of 2 or 4th of 4 bands) is ignored."""
    if a.ndim == 3:
        a = a[..., : {2: 1, 4: 3}.get(a.shape[2], a.shape[2])]
        return np.ascontiguousarray((a != 0).any(axis=2))
    return np.ascontiguousarray(a != 0)


def _decode(data: bytes | Path, role: str):
    """(pixels, grid or None) of ``role`` from file bytes or a path; raises on bad data."""
    if isinstance(data, Path) and data.suffix.lower() in (".tif", ".tiff"):
        return _read_tiff(data, role)
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
        img.load()
        if role != "mask":
            return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8)), None
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        return _binary(np.asarray(img)), None


def _read_tiff(path: Path, role: str):
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.errors import NotGeoreferencedWarning

    from ..geo.raster import read_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        if role != "mask":
            image = read_image(path)
            return image.pixels, image.grid if image.grid.crs is not None else None
        with rasterio.open(path) as src:
            bands = [i + 1 for i, c in enumerate(src.colorinterp) if c != ColorInterp.alpha]
            return _binary(np.moveaxis(src.read(bands or [1]), 0, -1)), None


def _assemble(sid: str, query, task, images: dict) -> Sample:
    """Check the parts fit together and build the Sample (raises ``_Bad``)."""
    (map_, grid), (sat, sat_grid), (mask, _) = images["map"], images["sat"], images["mask"]
    size = f"{map_.shape[1]}x{map_.shape[0]}"
    if sat.shape[:2] != map_.shape[:2]:
        raise _Bad(f"map is {size} but sat is {sat.shape[1]}x{sat.shape[0]}")
    if mask.shape != map_.shape[:2]:
        raise _Bad(f"mask is {mask.shape[1]}x{mask.shape[0]} but the images are {size}")
    if grid is not None and sat_grid is not None and (
            grid.crs != sat_grid.crs or not grid.transform.almost_equals(sat_grid.transform)):
        raise _Bad("map and sat are on different grids")
    return Sample(sid, query, map_, sat, mask, normalize_task(task), grid or sat_grid)


def _read_images(sources: dict) -> dict:
    """role → (pixels, grid) from role → (bytes, Path or None, label); raises ``_Bad``."""
    images = {}
    for role, (value, label) in sources.items():
        if value is None:
            raise _Bad(f"missing {role} image ({label})")
        try:
            images[role] = _decode(value, role)
        except Exception as exc:   # PIL and GDAL raise many types for bad files
            raise _Bad(f"unreadable {role} image ({label}: {type(exc).__name__})") from exc
    return images


def _query(value) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise _Bad("empty question")


class _HFRows:
    """Rows of a ``datasets.Dataset``; images decoded here so a bad one is one bad sample."""

    def __init__(self, ds, where: str):
        missing = [c for c in ("problem", *IMAGE_COLUMNS.values()) if c not in ds.column_names]
        if missing:
            raise DatasetFormatError(f"{where} lacks SocioSeg column(s) {', '.join(missing)}; "
                                     f"its columns are {', '.join(ds.column_names)}.")
        self._rows = ds.with_format("arrow")
        self.ids = ([str(v) for v in self._rows["id"].to_pylist()] if "id" in ds.column_names
                    else [f"{i:06d}" for i in range(len(ds))])

    def load(self, i: int) -> Sample:
        row = self._rows[i].to_pylist()[0]
        query = _query(row.get("problem"))
        sources = {}
        for role, col in IMAGE_COLUMNS.items():
            value = row.get(col)
            value = value.get("bytes") or value.get("path") if isinstance(value, dict) else value
            value = Path(value) if isinstance(value, str) else value
            sources[role] = (None if isinstance(value, Path) and not value.is_file() else value, col)
        return _assemble(self.ids[i], query, row.get("task"), _read_images(sources))


class _RawDirs:
    """``<split>/<id>/`` folders holding map/sat/mask images and ``question.json``."""

    def __init__(self, split_dir: Path):
        self._dirs = _sample_dirs(split_dir)
        self.ids = [d.name for d in self._dirs]

    def load(self, i: int) -> Sample:
        d = self._dirs[i]
        if not (d / "question.json").is_file():
            raise _Bad("missing question.json")
        try:
            meta = json.loads((d / "question.json").read_text(encoding="utf-8"))
            query, task = meta.get("problem"), meta.get("task")
        except (OSError, ValueError, AttributeError) as exc:   # unreadable, not JSON, not {}
            raise _Bad("question.json is not a JSON object") from exc
        query = _query(query)
        sources = {}
        for role in IMAGE_COLUMNS:
            path = next((d / f"{role}{e}" for e in _EXTS if (d / f"{role}{e}").is_file()), None)
            sources[role] = (path, path.name if path else f"{role}.png or {role}.tif")
        return _assemble(d.name, query, task, _read_images(sources))


def _sample_dirs(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_raw_split(d: Path) -> bool:
    return any((s / "question.json").is_file() for s in _sample_dirs(d))


def _pick_split(split: str, available: list[str], where: str) -> str:
    """``split`` or its alias among ``available`` (``val`` ↔ ``validation``), else raise."""
    group = next((g for g in _SPLIT_ALIASES if split in g), {split})
    hit = split if split in available else next((s for s in available if s in group), None)
    if hit is not None:
        return hit
    raise DatasetNotFoundError(
        f"No split {split!r} in {where}; splits found: {', '.join(available) or 'none'}.")


def _split_of(rel: Path) -> str:
    """Split of a data file from its path under the root: ``data/test-00000-of-00001.parquet``
    (+ ``-<hash>``), ``default/test/0000.parquet``, ``test.parquet``, ``parquet-test.arrow``."""
    stem = rel.name.split(".")[0]
    sharded = re.match(r"^(?:.*-)?(\w+?)-\d{5}-of-\d{5}(?:-.*)?$", stem)
    parts = [p for p in rel.parts[:-1] if p != "data"]
    return sharded[1] if sharded else parts[-1] if parts else stem.rsplit("-", 1)[-1]


def _datasets_cache_dir() -> str | None:
    """``datasets``' cache folder read at call time (its own is fixed at import)."""
    home = os.environ.get("HF_HOME")
    return os.environ.get("HF_DATASETS_CACHE") or (os.path.join(home, "datasets") if home else None)


def _open_files(root: Path, split: str, ext: str):
    import datasets

    by_split: dict[str, list[str]] = {split: [str(root)]} if root.is_file() else {}
    for f in [] if root.is_file() else sorted(root.rglob(f"*.{ext}")):
        by_split.setdefault(_split_of(f.relative_to(root)), []).append(str(f))
    name = _pick_split(split, list(by_split), os.fspath(root))
    try:   # converted once into datasets' arrow cache, memory-mapped from there
        ds = datasets.load_dataset(ext, data_files={name: by_split[name]}, split=name,
                                   cache_dir=_datasets_cache_dir())
    except Exception as exc:   # pyarrow and datasets raise many types for broken files
        raise DatasetFormatError(f"Cannot read the {ext} files of split {name!r} in "
                                 f"{os.fspath(root)!r}: {type(exc).__name__}: {exc}") from exc
    return _HFRows(ds, os.fspath(root)), ext


def _open_saved(root: Path, split: str):
    import datasets

    obj = datasets.load_from_disk(os.fspath(root))
    if isinstance(obj, datasets.DatasetDict):
        obj = obj[_pick_split(split, list(obj), os.fspath(root))]
    else:   # a lone Dataset: its recorded split, else a folder named like one, else any
        known = obj.split or (root.name if any(root.name in g for g in _SPLIT_ALIASES) else None)
        if known is not None:
            _pick_split(split, [str(known)], os.fspath(root))
    return _HFRows(obj, os.fspath(root)), "saved"


def _open_hub(repo_id: str, split: str):
    """A hub dataset through ``datasets``' cache (all its splits are prepared at once)."""
    import datasets

    how = (f"Run once online: python -c \"import datasets; datasets.load_dataset('{repo_id}')\" "
           f"(or unset HF_HUB_OFFLINE), or download its parquet files and pass their folder.")
    state = "offline and not in the local cache" if hub_offline() else "not reachable"
    try:   # load_dataset(split=...) would prepare every split too; splits checked first
        builder = datasets.load_dataset_builder(repo_id, cache_dir=_datasets_cache_dir())
        available = list(builder.config.data_files or {}) or list(builder.info.splits or {})
        name = _pick_split(split, available, repo_id)
        builder.download_and_prepare()
        ds = builder.as_dataset(split=name)
    except DatasetNotFoundError:
        raise
    except Exception as exc:   # offline miss, unknown repo, gated repo, network error
        raise DatasetNotFoundError(f"Dataset '{repo_id}' is {state} ({type(exc).__name__}: "
                                   f"{str(exc)[:200]}). {how}") from exc
    return _HFRows(ds, repo_id), "hub"


def _open_source(source, split: str):
    path = Path(os.fspath(source)).expanduser()
    if not path.exists():
        if looks_like_hub_id(str(source)):
            return _open_hub(str(source), split)
        raise DatasetNotFoundError(f"No dataset at {os.fspath(source)!r} (no such file or folder).")
    if path.is_file() and path.suffix in (".parquet", ".arrow"):
        return _open_files(path, split, path.suffix[1:])
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return _open_saved(path, split)
    if path.is_dir():
        raw = sorted(d.name for d in path.iterdir() if d.is_dir() and _is_raw_split(d))
        if raw:
            d = path / _pick_split(split, raw, os.fspath(path))
            sample = next(iter(_sample_dirs(d)))
            return _RawDirs(d), "geotiff" if (sample / "map.tif").is_file() else "raw"
        if any(path.rglob("*.parquet")):
            return _open_files(path, split, "parquet")
        saved = sorted(d.name for d in path.iterdir() if (d / "state.json").is_file())
        if saved:
            return _open_saved(path / _pick_split(split, saved, os.fspath(path)), split)
        if any(path.rglob("*.arrow")):
            return _open_files(path, split, "arrow")
    raise DatasetNotFoundError(f"No SocioSeg data at {os.fspath(path)!r}: expected parquet or arrow "
                               "files, a save_to_disk folder, or <split>/<id>/question.json folders.")


class SocioSegDataset:
    """One split of a SocioSeg-shaped dataset, read lazily sample by sample.

    Iterating yields ``Sample`` or, for a sample that cannot be used, ``SkippedSample``
    (also collected in ``skipped``); ``get`` raises ``BadSampleError`` for such a sample.
    """

    def __init__(self, rows, source: str, split: str, layout: str, task_map: dict | None = None):
        self._rows, self.source, self.split, self.layout = rows, source, split, layout
        self.task_map: dict[str, str] = dict(task_map or {})
        self._skipped: dict[int, SkippedSample] = {}

    @classmethod
    def open(cls, source: str | os.PathLike = HUB_ID, split: str = "test",
             task_map: str | os.PathLike | None = None) -> SocioSegDataset:
        """Detect the layout of ``source`` and open one split.

        Parameters
        ----------
        source : str or PathLike
            A hub id (through the ``datasets`` cache), a parquet or arrow file or folder, a
            ``save_to_disk`` folder, or ``<split>/<id>/{map,sat,mask}.(png|tif)`` +
            ``question.json`` folders.
        split : str
            Any split present; ``val`` and ``validation`` stand for each other.
        task_map : str or PathLike, optional
            CSV with an ``id,task`` header; its tasks override the data's own.

        Raises
        ------
        DatasetNotFoundError
            No such source or split (the message lists those found), or an uncached hub id.
        DatasetFormatError
            Data without SocioSeg's columns, or a task map without an ``id,task`` header.
        """
        tasks = read_task_map(task_map) if task_map is not None else None
        rows, layout = _open_source(source, split)
        return cls(rows, os.fspath(source), split, layout, tasks)

    def __len__(self) -> int:
        return len(self._rows.ids)

    def ids(self) -> list[str]:
        """Sample ids in dataset order (read without decoding any image)."""
        return list(self._rows.ids)

    @property
    def skipped(self) -> list[SkippedSample]:
        """Bad samples met so far while iterating, in dataset order."""
        return [self._skipped[i] for i in sorted(self._skipped)]

    def _load(self, index: int) -> Sample:
        sample = self._rows.load(index)
        sample.task = self.task_map.get(sample.id, sample.task)
        return sample

    def get(self, index: int) -> Sample:
        """The sample at ``index`` (negative counts from the end): ``map``/``sat`` H×W×3
        uint8, ``mask`` H×W bool; raises ``BadSampleError`` (with the reason) or IndexError."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"Sample index {index} out of range for {len(self)} samples.")
        index %= len(self)
        try:
            return self._load(index)
        except _Bad as exc:
            raise BadSampleError(f"Sample {self._rows.ids[index]!r} of {self.source} "
                                 f"[{self.split}]: {exc}") from exc

    __getitem__ = get

    def __iter__(self) -> Iterator[Sample | SkippedSample]:
        for i, sid in enumerate(self._rows.ids):
            try:
                yield self._load(i)
            except _Bad as exc:
                self._skipped[i] = SkippedSample(sid, str(exc))
                yield self._skipped[i]

    def __repr__(self) -> str:
        return f"SocioSegDataset({self.source!r}, {self.split!r}, {self.layout}, n={len(self)})"
