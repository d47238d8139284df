"""Capturing the view: real QGIS renders of a GeoTIFF with a known pattern, checked pixel by
pixel against the returned grid (no mocks).

The pattern raster is in EPSG:32635 (Helsinki, 1 m pixels) and is captured in other
project CRSs, so every capture goes through QGIS's on-the-fly reprojection. The requested
extents are deliberately not square: QGIS then renders more than was asked for, and only
a grid taken from what QGIS really drew (visibleExtent) puts the pattern where it is.
"""

import base64
import json
import math
import os
import shutil
import subprocess
import threading

import numpy as np
import pytest
from osgeo import gdal, osr

ENGINE_PYTHON = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), ".venv", "bin", "python")

UTM = "EPSG:32635"
ORIGIN_X, ORIGIN_Y, SIZE = 385000.0, 6672000.0, 600
RECT_PX = (150, 200, 350, 400)     # white rectangle: col0, row0, col1, row1 (end exclusive)
MARKER_PX = (450, 60, 490, 100)    # red square, top right of the rectangle
RECT_UTM = (ORIGIN_X + 150, ORIGIN_Y - 400, ORIGIN_X + 350, ORIGIN_Y - 200)  # xmin ymin xmax ymax
MARKER_UTM = (ORIGIN_X + 450, ORIGIN_Y - 100, ORIGIN_X + 490, ORIGIN_Y - 60)


def write_geotiff(path, origin_x, origin_y, paint):
    driver = gdal.GetDriverByName("GTiff")
    ds = driver.Create(str(path), SIZE, SIZE, 3, gdal.GDT_Byte)
    ds.SetGeoTransform((origin_x, 1.0, 0.0, origin_y, 0.0, -1.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32635)
    ds.SetProjection(srs.ExportToWkt())
    rgb = np.zeros((3, SIZE, SIZE), np.uint8)
    paint(rgb)
    for band in range(3):
        ds.GetRasterBand(band + 1).WriteArray(rgb[band])
    ds.FlushCache()
    ds = None
    return str(path)


def paint_pattern(rgb):
    c0, r0, c1, r1 = RECT_PX
    rgb[:, r0:r1, c0:c1] = 255
    c0, r0, c1, r1 = MARKER_PX
    rgb[0, r0:r1, c0:c1] = 255


def raster_layer(path, name):
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(path, name, "gdal")
    assert layer.isValid(), path
    return layer


@pytest.fixture(scope="module")
def capture(plugin_package):
    from socioreasoner.ui import capture

    return capture


# Layer fixtures are per test: pytest-qgis adds every "*layer*" fixture to the project
# after a test and removes it again, which deletes the layer.
@pytest.fixture(scope="module")
def pattern_tif(tmp_path_factory):
    return write_geotiff(tmp_path_factory.mktemp("capture") / "pattern.tif",
                         ORIGIN_X, ORIGIN_Y, paint_pattern)


@pytest.fixture()
def pattern_layer(pattern_tif, qgis_app):
    return raster_layer(pattern_tif, "pattern imagery")


@pytest.fixture()
def far_layer(tmp_path, qgis_app):
    path = write_geotiff(tmp_path / "far.tif", 600000.0, 7500000.0, lambda rgb: None)
    return raster_layer(path, "far away imagery")


@pytest.fixture()
def school_layer(qgis_app):
    """The white rectangle again, as a blue polygon labelled 'School' in black."""
    from qgis.core import (
        QgsFeature,
        QgsField,
        QgsFillSymbol,
        QgsGeometry,
        QgsPalLayerSettings,
        QgsRectangle,
        QgsTextFormat,
        QgsVectorLayer,
        QgsVectorLayerSimpleLabeling,
    )
    from qgis.PyQt.QtCore import QVariant
    from qgis.PyQt.QtGui import QColor

    layer = QgsVectorLayer(f"Polygon?crs={UTM}", "schools", "memory")
    layer.dataProvider().addAttributes([QgsField("name", QVariant.String)])
    layer.updateFields()
    feature = QgsFeature(layer.fields())
    feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(*RECT_UTM)))
    feature.setAttribute("name", "School")
    assert layer.dataProvider().addFeatures([feature])[0]
    layer.updateExtents()
    layer.renderer().setSymbol(QgsFillSymbol.createSimple(
        {"color": "0,0,255,255", "outline_style": "no"}))
    text = QgsTextFormat()
    text.setSize(28)
    text.setColor(QColor(0, 0, 0))
    labels = QgsPalLayerSettings()
    labels.fieldName = "name"
    labels.enabled = True
    labels.placement = QgsPalLayerSettings.Placement.OverPoint
    labels.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(labels))
    layer.setLabelsEnabled(True)
    return layer


@pytest.fixture()
def project_crs(qgis_app):
    """Sets the project CRS for a test and puts the previous one back."""
    from qgis.core import QgsCoordinateReferenceSystem, QgsProject

    project = QgsProject.instance()
    before = project.crs()

    def set_crs(authid):
        crs = QgsCoordinateReferenceSystem(authid)
        assert crs.isValid()
        project.setCrs(crs)
        return project.crs()

    yield set_crs
    project.setCrs(before)


# ----------------------------------------------------------------------------- helpers

def to_project(points, crs):
    """UTM (x, y) points → the project CRS."""
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsCoordinateTransform,
        QgsPointXY,
        QgsProject,
    )

    tr = QgsCoordinateTransform(QgsCoordinateReferenceSystem(UTM), crs,
                                QgsProject.instance().transformContext())
    out = []
    for x, y in points:
        p = tr.transform(QgsPointXY(x, y))
        out.append((p.x(), p.y()))
    return out


def to_pixel(grid, x, y):
    """Map → (col, row) through the engine grid (affine order a b c d e f, no rotation)."""
    a, b, c, d, e, f = grid["transform"]
    assert b == 0 and d == 0
    return (x - c) / a, (y - f) / e


def project_extent(utm_rect, crs, grow_x, grow_y):
    """The project-CRS bounding box of a UTM rectangle, grown by factors (non-square)."""
    from qgis.core import QgsRectangle

    xmin, ymin, xmax, ymax = utm_rect
    pts = to_project([(xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax)], crs)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    hw, hh = (max(xs) - min(xs)) / 2 * grow_x, (max(ys) - min(ys)) / 2 * grow_y
    return QgsRectangle(cx - hw, cy - hh, cx + hw, cy + hh)


def decode(png):
    """PNG bytes → H×W×3 uint8, checking that the PNG itself is opaque RGB."""
    from qgis.PyQt.QtGui import QImage

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = QImage.fromData(png, "PNG")
    assert not image.isNull() and not image.hasAlphaChannel()
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    h, w, stride = image.height(), image.width(), image.bytesPerLine()
    ptr = image.constBits()
    ptr.setsize(h * stride)
    return np.frombuffer(bytes(ptr), np.uint8).reshape(h, stride)[:, :w * 3].reshape(h, w, 3)


def corner_pixels(mask):
    """Corners (TL, TR, BR, BL; pixel coordinates, corner origin) of the one rectangle in
    ``mask``, to a fraction of a pixel.

    Each edge is located row by row (or column by column) over the middle 80 % of the
    rectangle and fitted with a straight line, so a rectangle slightly rotated by the
    reprojection is handled and the one-pixel steps of its outline average out; the
    corners are where the fitted edges meet.
    """
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    assert len(rows) > 20 and len(cols) > 20, "pattern not found in the capture"
    r0, r1, c0, c1 = rows[0], rows[-1], cols[0], cols[-1]
    rr = np.arange(r0 + (r1 - r0) // 10, r1 - (r1 - r0) // 10)
    cc = np.arange(c0 + (c1 - c0) // 10, c1 - (c1 - c0) // 10)
    h, w = mask.shape
    # A pixel is in the mask when its centre is inside: the first one's left side (and the
    # last one's right side) is the edge to within half a pixel.
    left = [np.argmax(mask[r]) for r in rr]
    right = [w - np.argmax(mask[r][::-1]) for r in rr]
    top = [np.argmax(mask[:, c]) for c in cc]
    bottom = [h - np.argmax(mask[:, c][::-1]) for c in cc]
    fit_l, fit_r = np.polyfit(rr + 0.5, left, 1), np.polyfit(rr + 0.5, right, 1)  # x(y)
    fit_t, fit_b = np.polyfit(cc + 0.5, top, 1), np.polyfit(cc + 0.5, bottom, 1)  # y(x)

    def meet(vertical, horizontal):
        x = (vertical[1] + vertical[0] * horizontal[1]) / (1 - vertical[0] * horizontal[0])
        return x, horizontal[0] * x + horizontal[1]

    return [meet(fit_l, fit_t), meet(fit_r, fit_t), meet(fit_r, fit_b), meet(fit_l, fit_b)]


def rect_corners_utm(rect):
    xmin, ymin, xmax, ymax = rect
    return [(xmin, ymax), (xmax, ymax), (xmax, ymin), (xmin, ymin)]  # TL, TR, BR, BL


def white(rgb):
    return np.all(rgb > 200, axis=2)


def red(rgb):
    return (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)


def drawn(rgb):
    """Pixels of the map image at least half covered by the blue polygon or its label."""
    return rgb[..., 0] < 128


def pixel_errors(found, tile, crs, utm_points):
    expected = [to_pixel(tile.grid, x, y) for x, y in to_project(utm_points, crs)]
    return [max(abs(fc - ec), abs(fr - er)) for (fc, fr), (ec, er) in zip(found, expected, strict=True)]


def marker_error(rgb, tile, crs):
    rows, cols = np.nonzero(red(rgb))
    assert len(rows) > 20, "marker not found"
    centre = ((MARKER_UTM[0] + MARKER_UTM[2]) / 2, (MARKER_UTM[1] + MARKER_UTM[3]) / 2)
    (err,) = pixel_errors([(cols.mean() + 0.5, rows.mean() + 0.5)], tile, crs, [centre])
    return err


def source_px_in_tile_px(tile, crs):
    """How many tile pixels one 1 m pixel of the pattern raster spans (the larger axis)."""
    (x0, y0), (x1, y1), (x2, y2) = to_project(
        [(ORIGIN_X, ORIGIN_Y), (ORIGIN_X + 1, ORIGIN_Y), (ORIGIN_X, ORIGIN_Y - 1)], crs)
    mupp = tile.grid["transform"][0]
    return max(math.hypot(x1 - x0, y1 - y0), math.hypot(x2 - x0, y2 - y0)) / mupp


# ------------------------------------------------------------------------ accuracy

@pytest.mark.parametrize("authid", [UTM, "EPSG:3857", "EPSG:4326"])
def test_capture_places_the_pattern_within_a_pixel(capture, pattern_layer, school_layer,
                                                   project_crs, authid):
    crs = project_crs(authid)
    # The pattern spans the rectangle and the marker; ask for a wide, flat extent around it.
    pattern = (RECT_UTM[0], RECT_UTM[1], MARKER_UTM[2], MARKER_UTM[3])
    requested = project_extent(pattern, crs, grow_x=1.15, grow_y=0.7)
    tile = capture.capture_tile(requested, crs, [pattern_layer], [school_layer], tile_px=768)

    assert tile.grid["width"] == tile.grid["height"] == 768
    a, b, c, d, e, f = tile.grid["transform"]
    assert a > 0 and e == -a and b == d == 0
    # QGIS drew more than was asked for (a square around the flat request) ...
    assert tile.extent.height() > 1.5 * requested.height()
    assert tile.extent.width() == pytest.approx(requested.width(), rel=1e-9)
    assert tile.extent.center().y() == pytest.approx(requested.center().y(), abs=1e-6 * a)
    assert (c, f) == (tile.extent.xMinimum(), tile.extent.yMaximum())

    # ... and the grid describes what was drawn. Vector geometry is reprojected exactly,
    # so the polygon (the rectangle again) lands within half a pixel in every CRS.
    corners = rect_corners_utm(RECT_UTM)
    polygon = pixel_errors(corner_pixels(drawn(decode(tile.map_png))), tile, crs, corners)
    assert max(polygon) <= 0.5, polygon

    # The raster's white rectangle and red marker: within a pixel where QGIS draws the
    # raster without reprojecting it. Reprojected rasters go through QGIS's own
    # nearest-neighbour resampling onto an intermediate grid, which moves an edge by up to
    # about half a source pixel more (measured 1.3 px here with 1.9 tile px per source px).
    sat = decode(tile.sat_png)
    tol = 1.0 if authid == UTM else 1.0 + 0.5 * source_px_in_tile_px(tile, crs)
    raster = pixel_errors(corner_pixels(white(sat)), tile, crs, corners)
    assert max(raster) <= tol, (raster, tol)
    assert marker_error(sat, tile, crs) <= tol

    from qgis.core import QgsCoordinateReferenceSystem

    assert QgsCoordinateReferenceSystem.fromWkt(tile.grid["crs"]) == crs
    assert tile.warnings == []


def test_map_and_satellite_share_one_grid(capture, pattern_layer, school_layer, project_crs,
                                          output_dir):
    crs = project_crs("EPSG:3857")
    requested = project_extent((RECT_UTM[0], RECT_UTM[1], MARKER_UTM[2], MARKER_UTM[3]),
                               crs, grow_x=1.2, grow_y=0.8)
    tile = capture.capture_tile(requested, crs, [pattern_layer], [school_layer], tile_px=768)
    sat, map_ = decode(tile.sat_png), decode(tile.map_png)
    assert sat.shape == map_.shape == (768, 768, 3)

    # The same view gives the same grid whatever the layers.
    raster_only = capture.capture_tile(requested, crs, [pattern_layer], [pattern_layer],
                                       tile_px=768)
    assert raster_only.grid == tile.grid

    # The polygon (the rectangle as a vector) covers the raster's white rectangle, corner
    # for corner, in the two images.
    polygon, rect = drawn(map_), white(sat)
    iou = (polygon & rect).sum() / (polygon | rect).sum()
    assert iou > 0.98, iou
    tol = 1.0 + 0.5 * source_px_in_tile_px(tile, crs)  # the raster's, see the test above
    for (pc, pr), (rc, rr) in zip(corner_pixels(polygon), corner_pixels(rect),
                                          strict=True):
        assert max(abs(pc - rc), abs(pr - rr)) <= tol

    # The label is drawn (black text on the blue fill) in the map image only.
    dark = np.all(map_ < 80, axis=2)
    assert dark[polygon].sum() > 200
    assert not (np.all(sat < 80, axis=2) & rect).any()
    background = ~np.any(map_ < 250, axis=2)
    assert background.sum() > 0.5 * background.size, "map background is white"
    assert (sat[~(rect | red(sat))] < 60).all(), "satellite background is black"

    with open(os.path.join(output_dir, "capture_sat.png"), "wb") as fh:
        fh.write(tile.sat_png)
    with open(os.path.join(output_dir, "capture_map.png"), "wb") as fh:
        fh.write(tile.map_png)


SAMPLE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "sample")


@pytest.mark.skipif(not os.path.exists(os.path.join(SAMPLE_DIR, "helsinki_sat.tif")),
                    reason="sample/ not present")
def test_capture_the_sample_view(capture, project_crs, output_dir, tmp_path):
    """The shipped Helsinki sample (EPSG:3067) captured in Web Mercator, for people to see."""
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject

    # Copies, so the statistics GDAL saves next to a raster (.aux.xml) stay out of sample/.
    for name in ("helsinki_sat.tif", "helsinki_map.tif"):
        shutil.copy(os.path.join(SAMPLE_DIR, name), tmp_path / name)
    sat_layer = raster_layer(str(tmp_path / "helsinki_sat.tif"), "sample imagery")
    map_layer = raster_layer(str(tmp_path / "helsinki_map.tif"), "sample map")
    crs = project_crs("EPSG:3857")
    tr = QgsCoordinateTransform(sat_layer.crs(), crs, QgsProject.instance().transformContext())
    view = tr.transformBoundingBox(sat_layer.extent())
    view.scale(0.9)
    plan = capture.plan_capture(view, crs)
    assert len(plan.tiles) == 1 and 0.9 < plan.ground_px_size / 2 < 1.0  # ~1 m/px on the ground
    (tile,) = capture.capture_view(plan, [sat_layer], [map_layer])
    sat, map_ = decode(tile.sat_png), decode(tile.map_png)
    assert sat.std() > 20 and map_.std() > 20
    assert QgsCoordinateReferenceSystem.fromWkt(tile.grid["crs"]) == crs
    for name, png in (("capture_sample_sat.png", tile.sat_png),
                      ("capture_sample_map.png", tile.map_png)):
        with open(os.path.join(output_dir, name), "wb") as fh:
            fh.write(png)


@pytest.mark.skipif(not os.path.exists(ENGINE_PYTHON), reason="engine env not built (make setup)")
def test_engine_reads_the_captured_view(capture, pattern_layer, school_layer, project_crs,
                                        tmp_path, repo_root):
    """The grid dict and PNGs go through the engine's own load_view unchanged."""
    crs = project_crs("EPSG:3857")
    requested = project_extent(RECT_UTM, crs, grow_x=1.3, grow_y=1.0)
    tile = capture.capture_tile(requested, crs, [pattern_layer], [school_layer], tile_px=512)
    request = {"grid": tile.grid,
               "sat": {"png_base64": base64.b64encode(tile.sat_png).decode()},
               "map": {"png_base64": base64.b64encode(tile.map_png).decode()}}
    (tmp_path / "request.json").write_text(json.dumps(request))
    script = (
        "import json, sys\n"
        "from socio_reasoner.worker.views import load_view\n"
        "view = load_view(json.load(open(sys.argv[1])))\n"
        "g = view.grid\n"
        "print(json.dumps({'bounds': g.bounds, 'epsg': g.crs.to_epsg(), 'size': [g.width, g.height],"
        " 'sat': list(view.sat.pixels.shape), 'map': list(view.map.pixels.shape),"
        " 'white': int((view.sat.pixels > 200).all(axis=2).sum())}))\n")
    out = subprocess.run([ENGINE_PYTHON, "-c", script, str(tmp_path / "request.json")],
                         cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    view = json.loads(out.stdout.strip().splitlines()[-1])
    assert view["epsg"] == 3857 and view["size"] == [512, 512]
    assert view["sat"] == view["map"] == [512, 512, 3]
    ext = tile.extent
    assert view["bounds"] == pytest.approx(
        [ext.xMinimum(), ext.yMinimum(), ext.xMaximum(), ext.yMaximum()], abs=1e-6)
    assert view["white"] == white(decode(tile.sat_png)).sum()


# ----------------------------------------------------------------------------- plans

def test_plan_cuts_a_view_three_tiles_wide(capture, qgis_app):
    from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle

    crs = QgsCoordinateReferenceSystem(UTM)
    # UTM map units are ground metres to within 0.03 % here.
    extent = QgsRectangle(385000, 6670000, 387000, 6670500)    # 2000 m × 500 m
    plan = capture.plan_capture(extent, crs, tile_px=768, max_ground_m_per_px=1.0,
                                overlap_px=64)
    gps = plan.ground_px_size
    assert gps == pytest.approx(1.0, rel=1e-3)
    side, step = 768 * gps, (768 - 64) * gps
    assert len(plan.tiles) == math.ceil((2000 - side) / step) + 1 == 3
    check_tiles(plan, extent, overlap_px=64)

    tall = QgsRectangle(385000, 6670000, 387000, 6671300)       # 2000 m × 1300 m
    plan = capture.plan_capture(tall, crs)
    assert len(plan.tiles) == 3 * (math.ceil((1300 - side) / step) + 1) == 3 * 2
    check_tiles(plan, tall, overlap_px=64)


def check_tiles(plan, extent, overlap_px):
    side = plan.tile_px * plan.ground_px_size
    xs = sorted({round(t.xMinimum(), 6) for t in plan.tiles})
    ys = sorted({round(t.yMaximum(), 6) for t in plan.tiles}, reverse=True)
    assert len(plan.tiles) == len(xs) * len(ys)
    for t in plan.tiles:
        assert t.width() == pytest.approx(side) and t.height() == pytest.approx(side)
    # Tiles run row by row from the top left.
    assert plan.tiles[0].xMinimum() == pytest.approx(min(xs))
    assert plan.tiles[0].yMaximum() == pytest.approx(max(ys))
    # Covering: first and last tiles of a long axis reach the view's edges ...
    if len(xs) > 1:
        assert xs[0] == pytest.approx(extent.xMinimum())
        assert xs[-1] + side == pytest.approx(extent.xMaximum())
    if len(ys) > 1:
        assert ys[0] == pytest.approx(extent.yMaximum())
        assert ys[-1] - side == pytest.approx(extent.yMinimum())
    # ... and neighbours overlap by at least overlap_px pixels, with no gaps.
    for lo, hi in zip(xs, xs[1:], strict=False):
        assert lo + side - hi >= overlap_px * plan.ground_px_size - 1e-6
    for upper, lower in zip(ys, ys[1:], strict=False):  # tops of consecutive rows
        assert lower - (upper - side) >= overlap_px * plan.ground_px_size - 1e-6
    from qgis.core import QgsRectangle

    union = QgsRectangle(plan.tiles[0])
    for t in plan.tiles[1:]:
        union.combineExtentWith(t)
    assert union.contains(extent)


def test_plan_keeps_a_small_view_in_one_tile(capture, qgis_app):
    from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle

    crs = QgsCoordinateReferenceSystem(UTM)
    extent = QgsRectangle(385000, 6670000, 385300, 6670200)
    plan = capture.plan_capture(extent, crs)
    (tile,) = plan.tiles
    assert plan.ground_px_size == pytest.approx(300 / 768)
    assert tile.width() == tile.height() == pytest.approx(300)
    assert tile.contains(extent) and tile.center() == extent.center()

    # Web Mercator at 60° N: two map units per ground metre, so 768 px at 1 m/px
    # holds about 1536 map units.
    merc = QgsCoordinateReferenceSystem("EPSG:3857")
    c = to_project([(385500, 6671500)], merc)[0]
    for half, count in ((700, 1), (1000, 2)):
        view = QgsRectangle(c[0] - half, c[1] - 100, c[0] + half, c[1] + 100)
        plan = capture.plan_capture(view, merc)
        assert len(plan.tiles) == count
    assert plan.ground_px_size == pytest.approx(2.0, rel=0.02)


def test_plan_refuses_a_view_that_needs_too_many_tiles(capture, qgis_app):
    from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle

    crs = QgsCoordinateReferenceSystem(UTM)
    with pytest.raises(capture.CaptureError, match=r"needs \d+ tiles .*zoom in"):
        capture.plan_capture(QgsRectangle(300000, 6600000, 400000, 6700000), crs)


def test_capture_view_follows_the_plan(capture, pattern_layer, school_layer, qgis_app):
    from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle

    crs = QgsCoordinateReferenceSystem(UTM)
    # 500 m × 400 m over the pattern at 1 m/px in 256 px tiles: 3 × 2 tiles.
    extent = QgsRectangle(385100, 6671550, 385600, 6671950)
    plan = capture.plan_capture(extent, crs, tile_px=256, overlap_px=32)
    assert len(plan.tiles) == 6
    tiles = list(capture.capture_view(plan, [pattern_layer], [school_layer]))
    assert len(tiles) == 6
    for planned, tile in zip(plan.tiles, tiles, strict=True):
        assert tile.grid["width"] == tile.grid["height"] == 256
        assert tile.grid["transform"][0] == pytest.approx(plan.ground_px_size, rel=1e-9)
        for got, want in ((tile.extent.xMinimum(), planned.xMinimum()),
                          (tile.extent.yMaximum(), planned.yMaximum()),
                          (tile.extent.xMaximum(), planned.xMaximum())):
            assert got == pytest.approx(want, abs=1e-6)
        assert decode(tile.sat_png).shape == (256, 256, 3)

    # A view reaching past the raster: tiles with no imagery are left out.
    wide = QgsRectangle(385300, 6671500, 386300, 6671700)
    plan = capture.plan_capture(wide, crs, tile_px=256, overlap_px=32)
    covered = [t for t in plan.tiles if t.xMinimum() < ORIGIN_X + SIZE]
    assert 1 <= len(covered) < len(plan.tiles)
    assert len(list(capture.capture_view(plan, [pattern_layer], [school_layer]))) == len(covered)
    assert len(list(capture.capture_view(plan, [pattern_layer], [school_layer],
                                         skip_uncovered=False))) == len(plan.tiles)


# ----------------------------------------------------------------------------- errors

def pattern_extent():
    from qgis.core import QgsRectangle

    return QgsRectangle(*RECT_UTM)


def test_capture_needs_layers(capture, pattern_layer, school_layer, qgis_app):
    from qgis.core import QgsCoordinateReferenceSystem

    crs = QgsCoordinateReferenceSystem(UTM)
    with pytest.raises(capture.CaptureError, match="Choose a satellite layer"):
        capture.capture_tile(pattern_extent(), crs, [], [school_layer])
    with pytest.raises(capture.CaptureError, match="Choose a map layer"):
        capture.capture_tile(pattern_extent(), crs, [pattern_layer], [])


def test_capture_names_a_layer_that_misses_the_view(capture, pattern_layer, far_layer,
                                                    school_layer, project_crs):
    crs = project_crs("EPSG:3857")
    extent = project_extent(RECT_UTM, crs, 1.0, 1.0)
    with pytest.raises(capture.CaptureError, match="'far away imagery' does not overlap"):
        capture.capture_tile(extent, crs, [far_layer], [school_layer])
    # Among several, one layer that covers the view is enough.
    tile = capture.capture_tile(extent, crs, [far_layer, pattern_layer], [school_layer],
                                tile_px=128)
    assert white(decode(tile.sat_png)).any()
    plan = capture.plan_capture(extent, crs)
    with pytest.raises(capture.CaptureError, match="far away imagery"):
        capture.capture_view(plan, [far_layer], [school_layer])   # fails at once


def test_capture_rejects_bad_extents_and_crs(capture, pattern_layer, school_layer, qgis_app):
    from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle, QgsVectorLayer

    crs = QgsCoordinateReferenceSystem(UTM)
    for extent in (QgsRectangle(), QgsRectangle(385000, 6671000, 385000, 6671500),
                   QgsRectangle(float("nan"), 0, 1, 1)):
        with pytest.raises(capture.CaptureError, match="extent"):
            capture.capture_tile(extent, crs, [pattern_layer], [school_layer])
        with pytest.raises(capture.CaptureError, match="extent"):
            capture.plan_capture(extent, crs)
    with pytest.raises(capture.CaptureError, match="valid coordinate reference system"):
        capture.capture_tile(pattern_extent(), QgsCoordinateReferenceSystem(),
                             [pattern_layer], [school_layer])
    no_crs = QgsVectorLayer("Polygon?crs=", "unplaced sketch", "memory")
    assert not no_crs.crs().isValid()
    with pytest.raises(capture.CaptureError, match="'unplaced sketch' has no coordinate"):
        capture.capture_tile(pattern_extent(), crs, [pattern_layer], [no_crs])


def test_capture_refuses_to_run_off_the_main_thread(capture, pattern_layer, school_layer,
                                                    qgis_app):
    from qgis.core import QgsCoordinateReferenceSystem

    crs = QgsCoordinateReferenceSystem(UTM)
    raised = []

    def run():
        try:
            capture.capture_tile(pattern_extent(), crs, [pattern_layer], [school_layer])
        except capture.CaptureError as exc:
            raised.append(str(exc))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert raised and "main thread" in raised[0]
