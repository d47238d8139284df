"""Write polygons with attributes to GeoPackage, Shapefile or GeoJSON, atomically.

Every writer goes through ``atomic_target``: data is written to a hidden temporary
folder beside the target, then moved into place, so a crash never leaves half a file
and an existing file is never replaced unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import shapely

from ..errors import OutputExistsError

DRIVERS = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".json": "GeoJSON"}
_SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx")


def _parts(path: Path) -> list[Path]:
    """Every file a dataset at ``path`` consists of (a shapefile is several)."""
    if path.suffix.lower() == ".shp":
        return [path.with_suffix(ext) for ext in _SHAPEFILE_PARTS]
    return [path]


@contextlib.contextmanager
def atomic_target(path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success move the result(s) onto ``path``.

    Raises OutputExistsError before anything is written when ``path`` (or, for a
    shapefile, any of its sidecar files) exists and ``overwrite`` is False.
    """
    path = Path(path)
    targets = _parts(path)
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{existing[0]} exists; choose another name or pass overwrite=True.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
    try:
        yield tmpdir / path.name
        written = {p.name: p for p in tmpdir.iterdir()}
        for old in existing:  # a shapefile may lose a sidecar it no longer needs
            if old.name not in written:
                old.unlink()
        for name, tmp in written.items():
            os.replace(tmp, path.parent / name)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


_DTYPES = {bool: bool, int: np.int64, float: np.float64, str: object}


def _field_array(values: list, kind: type | None = None):
    """A numpy column for pyogrio: of ``kind`` when given, else the narrowest faithful type."""
    if kind is not None:
        if kind is str:
            return np.asarray([None if v is None else str(v) for v in values], dtype=object)
        return np.asarray(values, dtype=_DTYPES[kind])
    if all(isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=bool)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.int64)
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in values):
        return np.asarray(values, dtype=np.float64)
    return np.asarray([None if v is None else str(v) for v in values], dtype=object)


def write_polygons(
    path,
    polygons: Sequence,
    attributes: Sequence[dict] | None = None,
    crs=None,
    driver: str | None = None,
    layer: str | None = None,
    overwrite: bool = False,
    schema: dict[str, type] | None = None,
) -> Path:
    """Write polygons (shapely) with one attribute dict each.

    Parameters
    ----------
    path : str or Path
        ``.gpkg``, ``.shp``, ``.geojson`` or ``.json`` (or pass ``driver``).
    polygons : sequence of shapely (Multi)Polygon, in ``crs``.
    attributes : sequence of dict, optional
        Same length as ``polygons``; all dicts share the same keys.
    crs : rasterio CRS, WKT, ``"EPSG:n"`` or None (no CRS written).
    overwrite : bool
        Replace an existing dataset; otherwise OutputExistsError and nothing changes.
    schema : dict of field name → type (bool, int, float, str), optional
        Fixes the fields and their types, so an empty result still has its columns.

    Returns
    -------
    Path of the written dataset.
    """
    from pyogrio.raw import write

    path = Path(path)
    driver = driver or DRIVERS.get(path.suffix.lower())
    if driver is None:
        raise ValueError(f"Unknown vector format {path.suffix!r}; use one of {sorted(DRIVERS)}.")
    attributes = list(attributes) if attributes is not None else [{} for _ in polygons]
    if len(attributes) != len(polygons):
        raise ValueError(f"{len(polygons)} polygons but {len(attributes)} attribute rows.")
    if schema is not None:
        fields = list(schema)
        data = [_field_array([row.get(k) for row in attributes], schema[k]) for k in fields]
    else:
        fields = list(attributes[0]) if attributes else []
        data = [_field_array([row.get(k) for row in attributes]) for k in fields]
    geoms = [shapely.geometry.MultiPolygon([g]) if g.geom_type == "Polygon" else g for g in polygons]
    wkb = np.array([shapely.to_wkb(g) for g in geoms], dtype=object)
    crs_text = None if crs is None else (crs if isinstance(crs, str) else crs.to_wkt())
    with atomic_target(path, overwrite=overwrite) as tmp:
        write(str(tmp), wkb, data, fields, driver=driver, geometry_type="MultiPolygon",
              crs=crs_text, layer=layer or path.stem, encoding="UTF-8" if driver == "ESRI Shapefile" else None)
    return path
