"""Geo core against GDAL itself: grids, warping onto a grid, polygonize, export."""

import json
import os
import subprocess

import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from scipy import ndimage
from shapely.geometry import Polygon, box, shape
from shapely.ops import unary_union

from socio_reasoner.errors import (
    CRSError,
    NoOverlapError,
    OutputExistsError,
    RasterOpenError,
    ShapeMismatchError,
)
from socio_reasoner.geo.export import atomic_target, write_polygons
from socio_reasoner.geo.image import GeoImage, Grid
from socio_reasoner.geo.raster import read_image, read_to_grid, write_geotiff
from socio_reasoner.geo.vectorize import mask_to_polygons, polygons_to_mask

GDAL_POLYGONIZE = "/usr/bin/gdal_polygonize.py"


def write_raster(path, data, transform, crs, **extra):
    data = np.atleast_3d(data) if data.ndim == 2 else data
    bands = data[None] if data.ndim == 2 else np.moveaxis(data, -1, 0)
    with rasterio.open(path, "w", driver="GTiff", width=bands.shape[2], height=bands.shape[1],
                       count=bands.shape[0], dtype=bands.dtype, crs=crs, transform=transform,
                       **extra) as dst:
        dst.write(bands)


# ---------------------------------------------------------------- grids

def test_grid_pixel_map_round_trip_and_bounds():
    grid = Grid.from_bounds(500000, 6670000, 500768, 6670768, 768, 768, "EPSG:32635")
    assert grid.pixel_size == (1.0, 1.0)
    x, y = grid.pixel_to_map([0, 768, 10.5], [0, 768, 20.25])
    assert np.allclose(x, [500000, 500768, 500010.5]) and np.allclose(y, [6670768, 6670000, 6670747.75])
    col, row = grid.map_to_pixel(x, y)
    assert np.allclose(col, [0, 768, 10.5]) and np.allclose(row, [0, 768, 20.25])
    assert grid.bounds == (500000, 6670000, 500768, 6670768)
    assert Grid.from_dict(json.loads(json.dumps(grid.to_dict()))) == grid
    half = grid.resized(384, 384)
    assert half.pixel_size == (2.0, 2.0) and half.bounds == grid.bounds


def test_grid_rejects_unknown_crs_and_bad_sizes():
    with pytest.raises(CRSError, match="Unknown CRS"):
        Grid.from_bounds(0, 0, 1, 1, 10, 10, "EPSG:999999")
    with pytest.raises(ShapeMismatchError):
        Grid(0, 10, Affine.identity(), "EPSG:4326")
    with pytest.raises(ShapeMismatchError, match="grid is 10×10"):
        GeoImage(np.zeros((5, 10, 3), np.uint8), Grid.from_bounds(0, 0, 1, 1, 10, 10, 4326))


# ---------------------------------------------------------------- reading onto a grid

@pytest.fixture
def utm_pattern(tmp_path):
    """A 1 m raster in EPSG:32635 (Helsinki) with a white 100×60 m rectangle."""
    data = np.zeros((400, 400, 3), np.uint8)
    data[100:160, 150:250] = 255          # rows 100–159 (60 m), cols 150–249 (100 m)
    transform = Affine(1, 0, 385000, 0, -1, 6672000)
    path = tmp_path / "pattern_32635.tif"
    write_raster(path, data, transform, "EPSG:32635")
    corners_utm = [(385150, 6671900), (385250, 6671840)]   # top-left, bottom-right
    return path, corners_utm


@pytest.mark.parametrize("dst_crs", ["EPSG:3857", "EPSG:4326"])
def test_read_to_grid_places_pattern_within_one_pixel(utm_pattern, dst_crs):
    path, corners = utm_pattern
    to_dst = Transformer.from_crs("EPSG:32635", dst_crs, always_xy=True)
    xs, ys = to_dst.transform([385000, 385400], [6671600, 6672000])
    grid = Grid.from_bounds(min(xs), min(ys), max(xs), max(ys), 300, 300, dst_crs)
    image = read_to_grid(path, grid)
    assert image.pixels.shape == (300, 300, 3) and image.grid == grid
    white = image.pixels[..., 0] > 127
    rows, cols = np.nonzero(white)
    (x0, y0), (x1, y1) = corners
    cx, cy = to_dst.transform([x0, x1, x1, x0], [y0, y0, y1, y1])
    ccol, crow = grid.map_to_pixel(cx, cy)
    # The warped rectangle is slightly rotated in 3857/4326: compare its bounding extent.
    assert abs(cols.min() - min(ccol)) <= 1 and abs(cols.max() + 1 - max(ccol)) <= 1
    assert abs(rows.min() - min(crow)) <= 1 and abs(rows.max() + 1 - max(crow)) <= 1


def test_read_to_grid_sixteen_bit_and_palette(tmp_path):
    transform = Affine(1, 0, 0, 0, -1, 100)
    grey = np.tile(np.arange(100, dtype=np.uint16) * 40, (100, 1))
    write_raster(tmp_path / "u16.tif", grey, transform, "EPSG:32635")
    grid = Grid(100, 100, transform, "EPSG:32635")
    img = read_to_grid(tmp_path / "u16.tif", grid)
    assert img.pixels.dtype == np.uint8 and img.pixels[0, 0, 0] == 0 and img.pixels[0, 99, 0] == 255
    assert (img.pixels[..., 0] == img.pixels[..., 2]).all()    # one band → grey RGB

    idx = np.zeros((100, 100), np.uint8)
    idx[:, 50:] = 1
    with rasterio.open(tmp_path / "pal.tif", "w", driver="GTiff", width=100, height=100, count=1,
                       dtype="uint8", crs="EPSG:32635", transform=transform) as dst:
        dst.write(idx, 1)
        dst.write_colormap(1, {0: (0, 0, 0, 255), 1: (10, 200, 30, 255)})
    pal = read_to_grid(tmp_path / "pal.tif", grid)
    assert tuple(pal.pixels[0, 99]) == (10, 200, 30) and tuple(pal.pixels[0, 0]) == (0, 0, 0)


def test_read_errors_are_specific(tmp_path, utm_pattern):
    path, _ = utm_pattern
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    grid = Grid.from_bounds(385000, 6671600, 385400, 6672000, 50, 50, "EPSG:32635")
    with pytest.raises(RasterOpenError, match="junk.tif"):
        read_to_grid(tmp_path / "junk.tif", grid)
    with pytest.raises(RasterOpenError):
        read_to_grid(tmp_path / "missing.tif", grid)
    far = Grid.from_bounds(0, 0, 100, 100, 50, 50, "EPSG:32635")
    with pytest.raises(NoOverlapError, match="does not overlap"):
        read_to_grid(path, far)
    write_raster(tmp_path / "nocrs.tif", np.zeros((10, 10), np.uint8), Affine.identity(), None)
    with pytest.raises(CRSError, match="no CRS"):
        read_to_grid(tmp_path / "nocrs.tif", grid)


def test_geotiff_round_trip_and_plain_png(tmp_path):
    grid = Grid.from_bounds(385000, 6671600, 385400, 6672000, 40, 20, "EPSG:32635")
    pixels = np.random.default_rng(0).integers(0, 255, (20, 40, 3), dtype=np.uint8)
    write_geotiff(GeoImage(pixels, grid), tmp_path / "a.tif")
    back = read_image(tmp_path / "a.tif")
    assert back.grid == grid and np.array_equal(back.pixels, pixels)
    with pytest.raises(OutputExistsError):
        write_geotiff(GeoImage(pixels, grid), tmp_path / "a.tif")
    from PIL import Image
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    png = read_image(tmp_path / "plain.png")
    assert png.crs is None and np.array_equal(png.pixels, pixels)


# ---------------------------------------------------------------- polygonize vs GDAL

def realistic_masks():
    """Shapes like rasterised AOIs: blobs with holes, thin parts, diagonal contacts."""
    rng = np.random.default_rng(42)
    noise = ndimage.gaussian_filter(rng.standard_normal((256, 256)), 6)
    blobs = noise > 0.05
    yy, xx = np.mgrid[:256, :256]
    ring = ((yy - 128) ** 2 + (xx - 128) ** 2 < 90 ** 2) & ((yy - 128) ** 2 + (xx - 128) ** 2 > 40 ** 2)
    ring[120:136, 20:236] = True                        # a bar through the hole
    checker = np.zeros((256, 256), bool)
    checker[10:20, 10:20] = True
    checker[20:30, 20:30] = True                        # touches only at a corner
    checker[100:101, 5:200] = True                      # one pixel thin line
    return {"blobs": blobs, "ring": ring, "diagonal": checker}


def gdal_polygons(tif, workdir, connectivity):
    out = workdir / f"gdal_{connectivity}.geojson"
    cmd = ["/usr/bin/python3", GDAL_POLYGONIZE, str(tif), "-f", "GeoJSON", str(out)]
    if connectivity == 8:
        cmd.insert(3, "-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    feats = json.loads(out.read_text())["features"]
    return [shape(f["geometry"]) for f in feats if f["properties"]["DN"] == 1]


@pytest.mark.skipif(not os.path.exists(GDAL_POLYGONIZE), reason="Debian gdal-bin not installed")
@pytest.mark.parametrize("crs,transform", [
    ("EPSG:32635", Affine(0.5, 0, 385000, 0, -0.5, 6672000)),
    ("EPSG:4326", Affine(1e-5, 0, 24.93, 0, -1e-5, 60.17)),
])
@pytest.mark.parametrize("name", ["blobs", "ring", "diagonal"])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_mask_to_polygons_matches_gdal_polygonize(tmp_path, crs, transform, name, connectivity):
    mask = realistic_masks()[name]
    tif = tmp_path / "mask.tif"
    write_raster(tif, mask.astype(np.uint8), transform, crs)
    ours = mask_to_polygons(mask, transform, connectivity=connectivity)
    theirs = gdal_polygons(tif, tmp_path, connectivity)
    assert len(ours) == len(theirs)
    a, b = unary_union(ours), unary_union(theirs)
    assert a.area == pytest.approx(b.area, rel=1e-9)
    assert a.symmetric_difference(b).area <= 1e-9 * b.area
    assert a.area == pytest.approx(mask.sum() * abs(transform.a * transform.e), rel=1e-9)
    if name == "ring":
        assert any(len(p.interiors) > 0 for p in ours)     # holes kept


def test_mask_to_polygons_filters_simplifies_and_checks_shape():
    transform = Affine(2, 0, 1000, 0, -2, 2000)
    mask = np.zeros((50, 50), bool)
    mask[5:25, 5:25] = True          # 400 px = 1600 m²
    mask[40, 40] = True              # 1 px = 4 m²
    polys = mask_to_polygons(mask, transform)
    assert [p.area for p in polys] == [1600.0, 4.0]
    assert [p.area for p in mask_to_polygons(mask, transform, min_area=10)] == [1600.0]
    assert mask_to_polygons(np.zeros((5, 5)), transform) == []
    staircase = np.tril(np.ones((40, 40), bool))
    raw = mask_to_polygons(staircase, transform)[0]
    simple = mask_to_polygons(staircase, transform, simplify_tolerance=3)[0]
    assert len(simple.exterior.coords) < len(raw.exterior.coords) / 5
    assert simple.symmetric_difference(raw).area < 0.1 * raw.area
    grid = Grid(50, 50, transform, "EPSG:32635")
    assert len(mask_to_polygons(mask, grid)) == 2
    with pytest.raises(ShapeMismatchError, match="Mask is 40×50"):
        mask_to_polygons(np.zeros((50, 40), bool), grid)
    back = polygons_to_mask(polys, transform, (50, 50))
    assert np.array_equal(back, mask)


# ---------------------------------------------------------------- export

@pytest.mark.parametrize("ext", [".gpkg", ".shp", ".geojson"])
def test_write_polygons_round_trip_and_never_overwrites(tmp_path, ext):
    polys = [box(385000, 6671000, 385100, 6671050),
             Polygon([(385200, 6671000), (385300, 6671000), (385250, 6671080)])]
    attrs = [{"query": "school", "box_id": 0, "area_m2": 5000.0},
             {"query": "école ñ", "box_id": 1, "area_m2": 4000.0}]
    path = tmp_path / f"result{ext}"
    write_polygons(path, polys, attrs, crs="EPSG:32635")
    meta, _, geoms, fields = pyogrio.raw.read(path)
    assert pyogrio.read_info(path)["crs"] == "EPSG:32635"
    assert list(meta["fields"]) == ["query", "box_id", "area_m2"]
    assert list(fields[0]) == ["school", "école ñ"] and list(fields[1]) == [0, 1]
    import shapely
    back = [shapely.from_wkb(g) for g in geoms]
    assert all(b.equals(p) for b, p in zip(back, polys, strict=True))

    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(OutputExistsError, match="exists"):
        write_polygons(path, polys[:1], attrs[:1], crs="EPSG:32635")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    write_polygons(path, polys[:1], attrs[:1], crs="EPSG:4326", overwrite=True)
    assert len(pyogrio.raw.read(path)[2]) == 1 and pyogrio.read_info(path)["crs"] == "EPSG:4326"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_atomic_target_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.gpkg"
    target.write_bytes(b"precious")
    with pytest.raises(RuntimeError):
        with atomic_target(target, overwrite=True) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["out.gpkg"]
    with pytest.raises(ValueError, match="Unknown vector format"):
        write_polygons(tmp_path / "x.kmz", [box(0, 0, 1, 1)], crs="EPSG:4326")
