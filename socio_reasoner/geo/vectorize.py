"""Mask → polygons in map coordinates, holes kept.

Notes
-----
GDAL functions used: GDALPolygonize (through ``rasterio.features.shapes``). Pixel edges
become polygon edges exactly, so the footprint equals the mask's; simplification, when
asked for, is the only step that moves an edge.
"""

from __future__ import annotations

import numpy as np
import rasterio.features
from affine import Affine
from shapely.geometry import Polygon, shape

from ..errors import ShapeMismatchError
from .image import Grid


def mask_to_polygons(
    mask: np.ndarray,
    transform: Affine | Grid,
    min_area: float = 0.0,
    simplify_tolerance: float = 0.0,
    connectivity: int = 4,
) -> list[Polygon]:
    """Polygons covering the true pixels of ``mask``.

    Parameters
    ----------
    mask : ndarray, H×W, bool or 0/1
        True (non-zero) where the object is; the same sense as numpy boolean indexing.
    transform : Affine or Grid
        Pixel → map transform of the mask's grid; given a Grid, the mask's shape is
        checked against it.
    min_area : float
        Drop polygons whose area (map units², holes subtracted) is smaller. In a
        geographic CRS this is square degrees: convert before calling.
    simplify_tolerance : float
        Douglas–Peucker tolerance in map units; 0 keeps every pixel corner.
    connectivity : {4, 8}
        Pixel connectivity that joins pixels into one polygon (GDAL's default is 4).

    Returns
    -------
    list of shapely Polygon, in the mask's CRS, largest first.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ShapeMismatchError(f"Mask must be 2-D (H×W), got shape {mask.shape}.")
    if isinstance(transform, Grid):
        if mask.shape != transform.shape:
            raise ShapeMismatchError(
                f"Mask is {mask.shape[1]}×{mask.shape[0]} but its grid is "
                f"{transform.width}×{transform.height}.")
        transform = transform.transform
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}.")
    binary = (mask != 0).astype(np.uint8)
    pairs = labels_to_polygons(binary, transform, min_area, simplify_tolerance, connectivity)
    return [poly for poly, _ in pairs]


def labels_to_polygons(
    labels: np.ndarray,
    transform: Affine,
    min_area: float = 0.0,
    simplify_tolerance: float = 0.0,
    connectivity: int = 4,
) -> list[tuple[Polygon, int]]:
    """Polygons of every non-zero label of an H×W integer array, as (polygon, label).

    Lets a caller keep which object each polygon came from (label = object id + 1).
    Same parameters as ``mask_to_polygons``; largest polygon first.
    """
    labels = np.asarray(labels)
    if not labels.any():
        return []
    if labels.dtype not in (np.uint8, np.uint16, np.int16, np.int32):
        labels = labels.astype(np.int32)
    pairs = []
    for geom, value in rasterio.features.shapes(
        labels, mask=labels != 0, connectivity=connectivity, transform=transform
    ):
        poly = shape(geom)
        if simplify_tolerance > 0:
            poly = poly.simplify(simplify_tolerance, preserve_topology=True)
        if poly.is_empty or poly.area < min_area:
            continue
        pairs.append((poly, int(value)))
    pairs.sort(key=lambda pair: pair[0].area, reverse=True)
    return pairs


def polygons_to_mask(polygons, transform: Affine, shape_hw: tuple[int, int]) -> np.ndarray:
    """Rasterise polygons onto a grid (pixel centres inside → True); H×W bool."""
    if not polygons:
        return np.zeros(shape_hw, bool)
    return rasterio.features.rasterize(
        [(p, 1) for p in polygons], out_shape=shape_hw, transform=transform, dtype="uint8"
    ).astype(bool)
