"""A small SocioSeg-shaped dataset drawn from a seed, in every layout the loader reads,
so evaluation, training and loader tests run without downloading SocioSeg."""

from __future__ import annotations

import io
import json
import os
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .socioseg import TASKS, Sample

LAYOUTS = ("raw", "parquet", "saved", "geotiff")
DEFAULT_SPLITS = {"train": 4, "val": 2, "test": 6}

# (class, map colour, sat roof colour, proper name, function phrase)
PLACES = (
    ("school", (255, 170, 60), (170, 90, 70), "Greenfield Primary School", "where children study"),
    ("park", (120, 200, 120), (40, 95, 45), "Riverside Park", "where people walk and relax outdoors"),
    ("hospital", (230, 90, 100), (205, 205, 210), "City General Hospital", "where sick people are treated"),
    ("market", (110, 140, 230), (150, 120, 90), "Central Food Market", "where people buy fresh food"),
    ("stadium", (180, 110, 210), (120, 125, 130), "Olympic Stadium", "where crowds watch sports games"),
)
_BACKGROUND = (242, 239, 233)
_ROAD_MAP = (190, 190, 190)
_ROAD_SAT = (72, 72, 76)
_GROUND_SAT = (96, 108, 82)


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def _shape(size: int, box: tuple[int, int, int, int], ellipse: bool) -> np.ndarray:
    """Boolean H×W mask of a rectangle or of the ellipse inscribed in it (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    out = np.zeros((size, size), bool)
    if not ellipse:
        out[y0:y1, x0:x1] = True
        return out
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def make_synthetic_sample(split: str, index: int, size: int = 768, seed: int = 0,
                          georeferenced: bool = False) -> Sample:
    """Draw one sample: the same arguments always give the same pixels.

    Parameters
    ----------
    split, index : str, int
        Where the sample sits; they seed its content and give its id ``"{split}-{index:04d}"``.
    size : int
        Tile side in pixels (SocioSeg tiles are 768).
    seed : int
        Dataset-wide seed.
    georeferenced : bool
        Give the sample a 1 m EPSG:3857 ``Grid`` (the GeoTIFF layout writes it).

    Returns
    -------
    Sample
        ``map``, ``sat``: size×size×3 uint8; ``mask``: size×size bool, one or two places of
        the queried class; ``task`` cycles through ``TASKS`` with ``index``.
    """
    rng = _rng(seed, split, index)
    task = TASKS[index % len(TASKS)]
    map_ = np.empty((size, size, 3), np.uint8)
    map_[:] = _BACKGROUND
    sat = np.clip(np.asarray(_GROUND_SAT) + rng.normal(0, 18, (size, size, 3)), 0, 255)
    width = max(2, size // 48)
    for axis in (0, 1):   # two or three roads each way
        for pos in rng.choice(np.arange(width, size - width), rng.integers(2, 4), replace=False):
            sl = (slice(pos - width // 2, pos + (width + 1) // 2), slice(None))[:: 1 if axis == 0 else -1]
            map_[sl] = _ROAD_MAP
            sat[sl] = np.asarray(_ROAD_SAT) + rng.normal(0, 6, sat[sl].shape)
    target = int(rng.integers(len(PLACES)))
    others = [k for k in range(len(PLACES)) if k != target]
    n_target = int(rng.integers(1, 3))
    kinds = [target] * n_target + list(rng.choice(others, 4 - n_target, replace=False))
    cells = rng.choice(9, len(kinds), replace=False)   # one place per cell of a 3×3 grid
    cell = size // 3
    mask = np.zeros((size, size), bool)
    for kind, c in zip(kinds, cells, strict=True):
        cx0, cy0 = (c % 3) * cell, (c // 3) * cell
        w, h = rng.integers(cell // 3, cell - cell // 5, size=2)
        x0 = cx0 + int(rng.integers(cell // 10, cell - w + 1))
        y0 = cy0 + int(rng.integers(cell // 10, cell - h + 1))
        place = _shape(size, (x0, y0, min(x0 + w, size), min(y0 + h, size)), bool(rng.integers(2)))
        _, colour, roof, _, _ = PLACES[kind]
        map_[place] = colour
        sat[place] = np.asarray(roof) + rng.normal(0, 12, (int(place.sum()), 3))
        if kind == target:
            mask |= place
    name, _, _, proper, function = PLACES[target]
    query = {"Socio-name": proper, "Socio-class": name, "Socio-function": function}[task]
    grid = None
    if georeferenced:
        from ..geo.image import Grid

        x0, y0 = 12_950_000.0 + index * size, 4_850_000.0 + zlib.crc32(split.encode()) % 97 * size
        grid = Grid.from_bounds(x0, y0, x0 + size, y0 + size, size, size, "EPSG:3857")
    return Sample(f"{split}-{index:04d}", query, map_, sat.round().astype(np.uint8), mask, task, grid)


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _mask_pixels(sample: Sample, index: int) -> np.ndarray:
    """0/255 L for even samples, white-on-black RGB for odd ones (both occur in the wild)."""
    gray = sample.mask.astype(np.uint8) * 255
    return gray if index % 2 == 0 else np.repeat(gray[..., None], 3, axis=2)


def _records(n_per_split: dict[str, int], size: int, seed: int, geo: bool, bad: bool):
    """Per split, a list of (sample, mask pixels, corruption or None)."""
    out = {}
    for split, n in n_per_split.items():
        out[split] = [(s, _mask_pixels(s, i), None) for i in range(n)
                      for s in [make_synthetic_sample(split, i, size, seed, geo)]]
    if bad:
        tests = out.setdefault("test", [])
        for k, kind in enumerate(("empty-question", "mask-size", "unreadable")):
            s = make_synthetic_sample("test", 1000 + k, size, seed, geo)
            s.id = f"test-bad-{kind}"
            if kind == "empty-question":
                s.query = ""
            tests.append((s, _mask_pixels(s, 0), kind))
    return out


def _half_mask(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pixels[: pixels.shape[0] // 2, : pixels.shape[1] // 2])


def _write_folder(root: Path, records, geotiff: bool) -> None:
    from ..geo.image import GeoImage
    from ..geo.raster import write_geotiff

    for split, rows in records.items():
        for s, mask, bad in rows:
            d = root / split / s.id
            d.mkdir(parents=True, exist_ok=True)
            (d / "question.json").write_text(json.dumps({"problem": s.query, "task": s.task}))
            if bad == "mask-size":
                mask = _half_mask(mask)
            if not geotiff:
                for name, px in (("map", s.map), ("sat", s.sat), ("mask", mask)):
                    (d / f"{name}.png").write_bytes(_png(px))
            else:
                import rasterio

                write_geotiff(GeoImage(s.map, s.grid), d / "map.tif", overwrite=True)
                write_geotiff(GeoImage(s.sat, s.grid), d / "sat.tif", overwrite=True)
                grid = s.grid if bad != "mask-size" else s.grid.resized(mask.shape[1], mask.shape[0])
                band = mask if mask.ndim == 2 else mask[..., 0]
                with rasterio.open(d / "mask.tif", "w", driver="GTiff", width=grid.width,
                                   height=grid.height, count=1, dtype="uint8", crs=grid.crs,
                                   transform=grid.transform) as dst:
                    dst.write(band, 1)
            if bad == "unreadable":
                (d / ("map.tif" if geotiff else "map.png")).write_bytes(b"this is not an image")


@contextmanager
def _quiet_datasets():
    from datasets.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was:
            enable_progress_bars()


def _hf_split(rows):
    """A ``datasets.Dataset`` with SocioSeg's columns (+ ``task``), images as PNG bytes."""
    from datasets import Dataset, Features, Image, Value

    features = Features({"id": Value("string"), "problem": Value("string"),
                         "map_image": Image(), "sat_image": Image(), "mask_label": Image(),
                         "task": Value("string")})
    cols = {k: [] for k in features}
    for s, mask, bad in rows:
        if bad == "mask-size":
            mask = _half_mask(mask)
        map_bytes = b"this is not an image" if bad == "unreadable" else _png(s.map)
        cols["id"].append(s.id)
        cols["problem"].append(s.query)
        cols["map_image"].append({"bytes": map_bytes, "path": None})
        cols["sat_image"].append({"bytes": _png(s.sat), "path": None})
        cols["mask_label"].append({"bytes": _png(mask), "path": None})
        cols["task"].append(s.task)
    return Dataset.from_dict(cols, features=features)


def write_synthetic_socioseg(root: str | os.PathLike, n_per_split: dict[str, int] | None = None,
                             size: int = 768, layout: str = "raw", seed: int = 0,
                             bad_samples: bool = False) -> Path:
    """Write a SocioSeg-shaped dataset that ``SocioSegDataset.open(root, split)`` reads.

    Parameters
    ----------
    root : str or PathLike
        Output folder (created; existing files of the same names are replaced).
    n_per_split : dict of str to int, optional
        Samples per split, default ``{"train": 4, "val": 2, "test": 6}``.
    size : int
        Tile side in pixels; 128 keeps tests fast.
    layout : {"raw", "parquet", "saved", "geotiff"}
        ``raw``: ``<split>/<id>/{map,sat,mask}.png + question.json``; ``geotiff``: the same
        with georeferenced ``.tif``; ``parquet``: ``data/<split>-00000-of-00001.parquet``
        as on the hub; ``saved``: a ``DatasetDict.save_to_disk`` folder.
    seed : int
        Content seed; sample ``i`` of a split equals
        ``make_synthetic_sample(split, i, size, seed)``.
    bad_samples : bool
        Append to ``test`` three bad samples: ``test-bad-unreadable`` (map image is not an
        image), ``test-bad-mask-size`` (mask half the size), ``test-bad-empty-question``.

    Returns
    -------
    pathlib.Path
        ``root``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}.")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n_per_split = DEFAULT_SPLITS if n_per_split is None else n_per_split
    records = _records(n_per_split, size, seed, layout == "geotiff", bad_samples)
    if layout in ("raw", "geotiff"):
        _write_folder(root, records, geotiff=layout == "geotiff")
        return root
    with _quiet_datasets():
        splits = {split: _hf_split(rows) for split, rows in records.items()}
        if layout == "parquet":
            (root / "data").mkdir(exist_ok=True)
            for split, ds in splits.items():
                ds.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
        else:
            from datasets import DatasetDict

            DatasetDict(splits).save_to_disk(str(root))
    return root
