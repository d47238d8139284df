"""Read any GDAL raster onto a target grid, and write grid images as GeoTIFF.

Satellite and map images of one view are both read with ``read_to_grid`` onto the same
``Grid``, so their pixels line up exactly whatever the sources' CRS and resolution.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioIOError
from rasterio.warp import reproject, transform_bounds

from ..errors import CRSError, NoOverlapError, RasterOpenError
from .image import GeoImage, Grid


def _open(path) -> rasterio.DatasetReader:
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise RasterOpenError(f"Cannot open raster {os.fspath(path)!r}: {exc}") from exc


def _rgb_band_indexes(src) -> list[int]:
    """Band indexes (1-based) giving RGB: colour-interpreted bands first, else the first three."""
    interp = list(src.colorinterp)
    wanted = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    if all(c in interp for c in wanted):
        return [interp.index(c) + 1 for c in wanted]
    if src.count >= 3:
        return [1, 2, 3]
    return [1, 1, 1]


def _to_uint8(bands: np.ndarray) -> np.ndarray:
    """Scale non-byte data to 0–255 by its 2–98 % range (satellite products are often 16-bit)."""
    if bands.dtype == np.uint8:
        return bands
    data = bands.astype(np.float64)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(bands.shape, np.uint8)
    lo, hi = np.percentile(finite, [2, 98])
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((np.nan_to_num(data, nan=lo) - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)


def read_to_grid(path, grid: Grid, resampling: Resampling = Resampling.bilinear) -> GeoImage:
    """Read a raster's window covering ``grid`` and resample it onto ``grid``.

    Parameters
    ----------
    path : str or Path
        Anything GDAL opens (GeoTIFF, VRT, JPEG2000, ``/vsicurl/…``).
    grid : Grid
        Target pixels; its CRS may differ from the raster's.
    resampling : rasterio.enums.Resampling
        Bilinear by default; paletted rasters are always read with nearest.

    Returns
    -------
    GeoImage
        H×W×3 uint8 on ``grid``; pixels outside the raster are black (0).

    Raises
    ------
    RasterOpenError, CRSError, NoOverlapError

    Notes
    -----
    GDAL functions used: GDALWarp (through ``rasterio.warp.reproject``), which reads only
    the source blocks that the window needs, so memory is O(grid), not O(raster).
    """
    with _open(path) as src:
        if src.crs is None:
            raise CRSError(f"Raster {os.fspath(path)!r} has no CRS; georeference it first.")
        if grid.crs is None:
            raise CRSError("The target grid has no CRS; reading a raster onto it needs one.")
        try:
            sb = transform_bounds(grid.crs, src.crs, *grid.bounds, densify_pts=21)
        except Exception as exc:  # PROJ raises several types here
            raise CRSError(f"Cannot transform from {grid.crs} to {src.crs}: {exc}") from exc
        rb = src.bounds
        if sb[0] >= rb.right or sb[2] <= rb.left or sb[1] >= rb.top or sb[3] <= rb.bottom:
            raise NoOverlapError(
                f"The window {tuple(round(v, 6) for v in grid.bounds)} ({grid.crs}) does not "
                f"overlap raster {os.fspath(path)!r} (bounds {tuple(rb)}, {src.crs}).")
        palette = src.count == 1 and src.colorinterp[0] == ColorInterp.palette
        indexes = [1] if palette else _rgb_band_indexes(src)
        out = np.zeros((len(indexes), grid.height, grid.width), dtype=src.dtypes[0])
        for i, band in enumerate(indexes):
            reproject(
                source=rasterio.band(src, band), destination=out[i],
                dst_transform=grid.transform, dst_crs=grid.crs, dst_nodata=0,
                resampling=Resampling.nearest if palette else resampling,
            )
        if palette:
            rgb = _palette_lut(src)[out[0].astype(np.uint8)]
        else:
            rgb = np.moveaxis(_to_uint8(out), 0, -1)
    return GeoImage(np.ascontiguousarray(rgb), grid)


def read_image(path) -> GeoImage:
    """Read a whole image as RGB on its own grid.

    A plain PNG or JPEG (SocioSeg tiles) has no georeference: it gets a pixel grid
    (one map unit per pixel, y up, ``crs=None``) so geometry comes out in pixel units.
    """
    with _open(path) as src:
        grid = grid_of(src)
        palette = src.count == 1 and src.colorinterp[0] == ColorInterp.palette
        data = src.read([1] if palette else _rgb_band_indexes(src))
        if palette:
            rgb = _palette_lut(src)[data[0]]
        else:
            rgb = np.moveaxis(_to_uint8(data), 0, -1)
    return GeoImage(np.ascontiguousarray(rgb), grid)


def _palette_lut(src) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    for k, rgba in src.colormap(1).items():
        lut[k] = rgba[:3]
    return lut


def grid_of(src) -> Grid:
    """The grid of an open dataset (a pixel grid with ``crs=None`` when it has no CRS)."""
    if src.crs is None:
        return Grid(src.width, src.height, Affine(1, 0, 0, 0, -1, src.height), None)
    return Grid(src.width, src.height, src.transform, src.crs)


def is_georeferenced(path) -> bool:
    """Whether the raster carries a CRS (a plain PNG or JPEG does not)."""
    with _open(path) as src:
        return src.crs is not None


def write_geotiff(image: GeoImage, path, overwrite: bool = False) -> Path:
    """Write an RGB GeoImage as a tiled, deflate-compressed GeoTIFF, atomically."""
    from .export import atomic_target

    with atomic_target(path, overwrite=overwrite) as tmp:
        with rasterio.open(
            tmp, "w", driver="GTiff", width=image.grid.width, height=image.grid.height,
            count=3, dtype="uint8", crs=image.crs, transform=image.transform,
            compress="deflate", tiled=True, photometric="RGB",
        ) as dst:
            dst.write(np.moveaxis(image.pixels, -1, 0))
    return Path(path)
