"""A pixel grid tied to map coordinates, and an RGB image on such a grid.

The satellite and map images of one view share one ``Grid`` exactly, so a pixel
coordinate means the same ground point in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError as _RioCRSError

from ..errors import CRSError, ShapeMismatchError


def parse_crs(crs: CRS | str | int | None) -> CRS | None:
    """Return a rasterio CRS from an EPSG code, WKT, PROJ string or CRS, or raise CRSError.

    ``None`` stays ``None``: a pixel grid of an image that has no georeference.
    """
    if crs is None:
        return None
    if crs == "":
        raise CRSError("Empty CRS string: give one such as 'EPSG:3857', or None for pixels.")
    if isinstance(crs, CRS):
        return crs
    try:
        if isinstance(crs, int):
            return CRS.from_epsg(crs)
        return CRS.from_user_input(crs)
    except (_RioCRSError, ValueError) as exc:
        raise CRSError(f"Unknown CRS {str(crs)[:80]!r}: {exc}") from exc


@dataclass(frozen=True)
class Grid:
    """``width`` × ``height`` pixels placed by ``transform`` (pixel → map) in ``crs``.

    ``crs`` is None for an image with no georeference (map units are then pixels).

    Pixel (col, row) = (0, 0) is the top-left corner of the top-left pixel; pixel
    centres sit at half-integers, as in GDAL and rasterio.
    """

    width: int
    height: int
    transform: Affine
    crs: CRS | None

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0:
            raise ShapeMismatchError(f"Grid size must be positive, got {self.width}×{self.height}.")
        object.__setattr__(self, "crs", parse_crs(self.crs))

    @classmethod
    def from_bounds(cls, xmin: float, ymin: float, xmax: float, ymax: float,
                    width: int, height: int, crs) -> Grid:
        """A north-up grid covering the extent (map units of ``crs``) with the given size."""
        if not (xmax > xmin and ymax > ymin):
            raise ValueError(f"Empty extent: ({xmin}, {ymin}, {xmax}, {ymax}).")
        transform = Affine((xmax - xmin) / width, 0.0, xmin, 0.0, -(ymax - ymin) / height, ymax)
        return cls(width, height, transform, crs)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width), the numpy shape of a single band on this grid."""
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in map units, whatever the rotation."""
        xs, ys = self.pixel_to_map([0, self.width, self.width, 0], [0, 0, self.height, self.height])
        return float(np.min(xs)), float(np.min(ys)), float(np.max(xs)), float(np.max(ys))

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Ground size of one pixel (x, y) in map units, positive."""
        return abs(self.transform.a), abs(self.transform.e)

    def pixel_to_map(self, cols, rows):
        """Map coordinates of pixel coordinates (col = x, row = y; floats, corner origin)."""
        cols = np.asarray(cols, dtype=float)
        rows = np.asarray(rows, dtype=float)
        t = self.transform
        return t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f

    def map_to_pixel(self, xs, ys):
        """Pixel coordinates (col, row) of map coordinates; the inverse of ``pixel_to_map``."""
        inv = ~self.transform
        xs = np.asarray(xs, dtype=float)
        ys = np.asarray(ys, dtype=float)
        return inv.a * xs + inv.b * ys + inv.c, inv.d * xs + inv.e * ys + inv.f

    def resized(self, width: int, height: int) -> Grid:
        """The same extent sampled with another number of pixels."""
        scale = Affine.scale(self.width / width, self.height / height)
        return Grid(width, height, self.transform @ scale, self.crs)

    def to_dict(self) -> dict:
        """JSON-ready form: size, GDAL-order geotransform coefficients and WKT."""
        return {"width": self.width, "height": self.height,
                "transform": list(self.transform)[:6],
                "crs": self.crs.to_wkt() if self.crs is not None else None}

    @classmethod
    def from_dict(cls, d: dict) -> Grid:
        return cls(int(d["width"]), int(d["height"]), Affine(*d["transform"][:6]), d["crs"])


@dataclass(frozen=True)
class GeoImage:
    """An RGB image (H×W×3 uint8) on a ``Grid``."""

    pixels: np.ndarray
    grid: Grid

    def __post_init__(self):
        p = self.pixels
        if p.dtype != np.uint8 or p.ndim != 3 or p.shape[2] != 3:
            raise ShapeMismatchError(f"Pixels must be H×W×3 uint8, got {p.shape} {p.dtype}.")
        if p.shape[:2] != self.grid.shape:
            raise ShapeMismatchError(
                f"Pixels are {p.shape[1]}×{p.shape[0]} but the grid is "
                f"{self.grid.width}×{self.grid.height}.")

    @property
    def transform(self) -> Affine:
        return self.grid.transform

    @property
    def crs(self) -> CRS | None:
        return self.grid.crs
