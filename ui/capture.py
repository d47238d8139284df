"""Capture the map view as a satellite image and a map image on one pixel grid.

The engine needs two RGB pictures of the same ground, pixel for pixel: the imagery
("sat") and a cartographic map ("map"), plus the grid that ties their pixels to the
project CRS. This module renders both with QGIS's own map renderer, so whatever the user
sees (on-the-fly reprojection, styles, labels, web tiles) is what the engine gets.

Georeference
    QGIS does not render exactly the extent it is asked for: ``QgsMapSettings`` grows the
    requested extent to the output's aspect ratio and centres it. The grid is therefore
    taken from the settings' ``visibleExtent()`` and ``mapUnitsPerPixel()`` after the
    extent is set, never from the requested rectangle. Pixel (col, row) = (0, 0) is the
    top-left corner of the top-left pixel, as in the engine's ``Grid``.

Threading
    ``capture_tile`` must run on the main (GUI) thread, before the engine request is sent
    to the worker: it reads live project layers (extent, CRS) and creates their renderers,
    which QGIS only allows from the thread that owns the layers. The pixels themselves are
    drawn by ``QgsMapRendererParallelJob``, the job the map canvas uses: it renders the
    layers on QGIS's render thread pool, and ``waitForFinished()`` blocks until done
    without needing an event loop (so no re-entrancy while a capture is half done). Both
    images of a tile are started together and rendered concurrently. A 768 px tile of
    local rasters takes a fraction of a second; web tiles take as long as they download.

Resolution
    SocioSeg, the data the models were trained on, is described as 512 px satellite and
    map tiles at roughly 0.5–1 m ground sample distance (the sample view in ``sample/`` is
    768 px at 1 m). ``plan_capture`` therefore keeps the view in one tile whenever one tile at
    ``tile_px`` shows it at 1 m/px or finer; only a larger view is cut into overlapping
    tiles at exactly that resolution. Ground metres are measured on the ellipsoid, so a
    Web Mercator view of Helsinki (about 2 map units per ground metre) is planned correctly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsCsException,
    QgsDistanceArea,
    QgsMapLayer,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsMessageLog,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
    QgsUnitTypes,
)
from qgis.PyQt.QtCore import QBuffer, QByteArray, QCoreApplication, QIODevice, QSize, QThread
from qgis.PyQt.QtGui import QColor, QImage

DEFAULT_TILE_PX = 768
DEFAULT_GROUND_M_PER_PX = 1.0
DEFAULT_OVERLAP_PX = 64
DEFAULT_MAX_TILES = 64
OUTPUT_DPI = 96.0
SAT_BACKGROUND = QColor(0, 0, 0)
MAP_BACKGROUND = QColor(255, 255, 255)
LOG_TAG = "SocioReasoner"

# Qgis.MapSettingsFlag from 3.22 on; QgsMapSettings.Flag is its deprecated alias.
_FLAG = getattr(Qgis, "MapSettingsFlag", None) or QgsMapSettings.Flag
# Qgis.CrsWktVariant in newer QGIS; the class enum in 3.22.
_WKT = (Qgis.CrsWktVariant.Preferred if hasattr(Qgis, "CrsWktVariant")
        else QgsCoordinateReferenceSystem.WktVariant.WKT_PREFERRED)
_METERS = (Qgis.DistanceUnit.Meters if hasattr(Qgis, "DistanceUnit")
           else QgsUnitTypes.DistanceUnit.DistanceMeters)
_SQUARE_METERS = (Qgis.AreaUnit.SquareMeters if hasattr(Qgis, "AreaUnit")
                  else QgsUnitTypes.AreaUnit.AreaSquareMeters)


class CaptureError(Exception):
    """The view cannot be captured; the message says why in words a user can act on."""


@dataclass
class CaptureTile:
    """One tile: the satellite and map pictures (RGB PNG, ``tile_px`` square) on ``grid``."""

    sat_png: bytes
    map_png: bytes
    grid: dict           # engine Grid: width, height, transform (affine order), crs (WKT)
    extent: QgsRectangle  # the ground the pixels cover, in the project CRS
    warnings: list[str] = field(default_factory=list)  # render errors QGIS reported


@dataclass
class CapturePlan:
    """How a view is cut into square tiles of ``tile_px`` pixels."""

    extent: QgsRectangle
    crs: QgsCoordinateReferenceSystem
    tile_px: int
    ground_px_size: float      # map units per pixel, the same for every tile
    tiles: list[QgsRectangle]  # row by row from the top left; neighbours overlap


# ----------------------------------------------------------------------------- checks

def _check_extent(extent: QgsRectangle) -> None:
    if extent is None or extent.isNull():
        raise CaptureError("The view has no extent: zoom to an area of the map first.")
    coords = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
    if not all(math.isfinite(v) for v in coords):
        raise CaptureError(f"The view extent is not finite: {extent.toString()}.")
    if extent.width() <= 0 or extent.height() <= 0:
        raise CaptureError(
            f"The view extent is empty ({extent.width()} × {extent.height()} map units).")


def _check_crs(crs: QgsCoordinateReferenceSystem) -> None:
    if crs is None or not crs.isValid():
        raise CaptureError("The project has no valid coordinate reference system: set one in "
                           "Project ▸ Properties ▸ CRS.")


def _crs_name(crs: QgsCoordinateReferenceSystem) -> str:
    return crs.authid() or crs.description() or "a custom CRS"


def _finite(rect: QgsRectangle) -> bool:
    return not rect.isNull() and all(math.isfinite(v) for v in (
        rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()))


def _layer_overlaps(layer: QgsMapLayer, extent: QgsRectangle,
                    crs: QgsCoordinateReferenceSystem,
                    context: QgsCoordinateTransformContext) -> bool:
    """Whether ``layer``'s extent meets ``extent`` (in ``crs``); CaptureError if unknowable."""
    name = layer.name()
    if not layer.isValid():
        raise CaptureError(f"Layer '{name}' is not valid (its data source could not be read).")
    layer_crs = layer.crs()
    if not layer_crs.isValid():
        raise CaptureError(f"Layer '{name}' has no coordinate reference system: set one in "
                           "its Layer Properties so it can be placed on the map.")
    layer_extent = layer.extent()
    if layer_extent.isNull():
        return False  # a layer with no data covers nothing
    if layer_crs == crs:
        return layer_extent.intersects(extent)
    transform = QgsCoordinateTransform(crs, layer_crs, context)
    if not transform.isValid():
        raise CaptureError(f"No coordinate transformation from {_crs_name(crs)} to layer "
                           f"'{name}' ({_crs_name(layer_crs)}).")
    # The view is small and well inside the layer's CRS domain more often than the layer
    # (a world-wide web layer) is inside the project CRS's, so try that direction first.
    try:
        in_layer_crs = transform.transformBoundingBox(extent)
        if _finite(in_layer_crs):
            return in_layer_crs.intersects(layer_extent)
    except QgsCsException:
        pass
    try:
        back = QgsCoordinateTransform(layer_crs, crs, context)
        in_project_crs = back.transformBoundingBox(layer_extent)
        if _finite(in_project_crs):
            return in_project_crs.intersects(extent)
    except QgsCsException:
        pass
    raise CaptureError(f"Layer '{name}' ({_crs_name(layer_crs)}) cannot be transformed to the "
                       f"project CRS ({_crs_name(crs)}) around this view.")


def _check_layers(role: str, layers, extent: QgsRectangle,
                  crs: QgsCoordinateReferenceSystem,
                  context: QgsCoordinateTransformContext) -> list[QgsMapLayer]:
    layers = [layer for layer in (layers or []) if layer is not None]
    if not layers:
        raise CaptureError(f"Choose a {role} layer.")
    if not any(_layer_overlaps(layer, extent, crs, context) for layer in layers):
        names = ", ".join(f"'{layer.name()}'" for layer in layers)
        what = f"The {role} layer {names} does not" if len(layers) == 1 else \
            f"None of the {role} layers ({names})"
        raise CaptureError(f"{what} overlap the view: pan to where it has data or choose "
                           f"another {role} layer.")
    return layers


def _check_main_thread() -> None:
    app = QCoreApplication.instance()
    if app is not None and QThread.currentThread() is not app.thread():
        raise CaptureError("Capturing the view must happen on the main thread, before the "
                           "engine request starts (it reads live project layers).")


# ------------------------------------------------------------------------------ plan

def ground_measure(crs: QgsCoordinateReferenceSystem,
                   transform_context: QgsCoordinateTransformContext | None = None
                   ) -> QgsDistanceArea:
    """Distances and areas on ``crs``'s ellipsoid (WGS 84's when it names none), whatever
    the project's ellipsoid setting: "NONE" would measure planar map units, 4× too large
    in Web Mercator at 60° N."""
    measure = QgsDistanceArea()
    measure.setSourceCrs(crs, transform_context or QgsProject.instance().transformContext())
    if not measure.setEllipsoid(crs.ellipsoidAcronym() or "EPSG:7030"):
        measure.setEllipsoid("EPSG:7030")
    return measure


def area_m2(measure: QgsDistanceArea, geometry) -> float:
    """Ground area of ``geometry`` in m² with a measure from `ground_measure`."""
    return measure.measureArea(geometry) * QgsUnitTypes.fromUnitToUnitFactor(
        measure.areaUnits(), _SQUARE_METERS)


def ground_m_per_map_unit(extent: QgsRectangle, crs: QgsCoordinateReferenceSystem,
                          transform_context: QgsCoordinateTransformContext | None = None
                          ) -> float:
    """Ground metres per map unit across ``extent`` (the larger of x and y).

    Measured on the CRS's ellipsoid along the lines through the extent's centre, so it is
    right for projected CRSs with scale distortion (Web Mercator) and for degrees alike.
    """
    _check_extent(extent)
    _check_crs(crs)
    measure = ground_measure(crs, transform_context)
    c = extent.center()
    w, h = extent.width(), extent.height()
    try:
        across = measure.measureLine(QgsPointXY(c.x() - w / 2, c.y()),
                                     QgsPointXY(c.x() + w / 2, c.y()))
        down = measure.measureLine(QgsPointXY(c.x(), c.y() - h / 2),
                                   QgsPointXY(c.x(), c.y() + h / 2))
    except QgsCsException as exc:
        raise CaptureError(f"Cannot measure ground distances in {_crs_name(crs)}: {exc}") from exc
    if measure.willUseEllipsoid():
        factor = QgsUnitTypes.fromUnitToUnitFactor(measure.lengthUnits(), _METERS)
        per_unit = max(across / w, down / h) * factor
    else:  # no ellipsoid: trust the CRS's linear unit
        per_unit = QgsUnitTypes.fromUnitToUnitFactor(crs.mapUnits(), _METERS)
    if not (math.isfinite(per_unit) and per_unit > 0):
        raise CaptureError(f"Cannot measure ground distances in {_crs_name(crs)} here.")
    return per_unit


def _starts(lo: float, length: float, tile: float, step: float) -> list[float]:
    """Lower edges of tiles of size ``tile`` covering [lo, lo + length], evenly spread."""
    if length <= tile:
        return [lo + (length - tile) / 2]          # one tile, centred on the view
    n = math.ceil((length - tile) / step - 1e-9) + 1
    spacing = (length - tile) / (n - 1)           # ≤ step, so overlaps ≥ overlap_px
    return [lo + i * spacing for i in range(n)]


def plan_capture(extent: QgsRectangle, crs: QgsCoordinateReferenceSystem,
                 tile_px: int = DEFAULT_TILE_PX,
                 max_ground_m_per_px: float = DEFAULT_GROUND_M_PER_PX,
                 overlap_px: int = DEFAULT_OVERLAP_PX,
                 transform_context: QgsCoordinateTransformContext | None = None,
                 max_tiles: int = DEFAULT_MAX_TILES) -> CapturePlan:
    """Cut the view ``extent`` (in ``crs``) into square tiles of ``tile_px`` pixels.

    * If one tile at ``tile_px`` shows the whole view at ``max_ground_m_per_px`` or finer,
      the plan is one square tile centred on the view, as fine as the view allows
      (``ground_px_size`` = the view's longer side / ``tile_px``).
    * Otherwise the view is cut into tiles at exactly ``max_ground_m_per_px``, spread
      evenly so that the first and last tiles of each row and column sit on the view's
      edges and neighbours overlap by at least ``overlap_px`` pixels. Along a side that
      one tile spans, the tiles are centred on the view.

    More than ``max_tiles`` tiles raises CaptureError (zoom in, or allow more).
    """
    _check_extent(extent)
    _check_crs(crs)
    if tile_px < 32:
        raise CaptureError(f"Tiles must be at least 32 px, got {tile_px}.")
    if not 0 <= overlap_px < tile_px // 2:
        raise CaptureError(f"Overlap must be 0 to {tile_px // 2 - 1} px, got {overlap_px}.")
    if not max_ground_m_per_px > 0:
        raise CaptureError(f"The target resolution must be positive, got {max_ground_m_per_px}.")
    target = max_ground_m_per_px / ground_m_per_map_unit(extent, crs, transform_context)
    w, h = extent.width(), extent.height()
    if max(w, h) <= tile_px * target:
        size = max(w, h)
        c = extent.center()
        tile = QgsRectangle(c.x() - size / 2, c.y() - size / 2, c.x() + size / 2, c.y() + size / 2)
        return CapturePlan(QgsRectangle(extent), crs, tile_px, size / tile_px, [tile])
    side = tile_px * target
    step = (tile_px - overlap_px) * target
    xs = _starts(extent.xMinimum(), w, side, step)
    # rows from the top: lower edges counted down from yMaximum
    ys = [extent.yMaximum() - (y - extent.yMinimum()) - side
          for y in _starts(extent.yMinimum(), h, side, step)]
    count = len(xs) * len(ys)
    if count > max_tiles:
        raise CaptureError(
            f"The view needs {count} tiles at {max_ground_m_per_px:g} m/px (at most {max_tiles}): "
            "zoom in to a smaller area.")
    tiles = [QgsRectangle(x, y, x + side, y + side) for y in ys for x in xs]
    return CapturePlan(QgsRectangle(extent), crs, tile_px, target, tiles)


# --------------------------------------------------------------------------- capture

def _map_settings(layers, extent: QgsRectangle, crs: QgsCoordinateReferenceSystem,
                  tile_px: int, context: QgsCoordinateTransformContext,
                  background: QColor, labels: bool, project: QgsProject) -> QgsMapSettings:
    settings = QgsMapSettings()
    settings.setLayers(layers)            # first = top, as in the Layers panel
    settings.setDestinationCrs(crs)
    settings.setTransformContext(context)
    settings.setEllipsoid(project.ellipsoid() or crs.ellipsoidAcronym())
    settings.setLabelingEngineSettings(project.labelingEngineSettings())
    settings.setOutputDpi(OUTPUT_DPI)
    settings.setDevicePixelRatio(1.0)
    settings.setOutputSize(QSize(tile_px, tile_px))
    settings.setRotation(0.0)
    settings.setBackgroundColor(background)
    settings.setExtent(extent)            # QGIS grows it to the output's aspect ratio
    settings.setFlag(_FLAG.Antialiasing, True)
    settings.setFlag(_FLAG.UseAdvancedEffects, True)
    settings.setFlag(_FLAG.DrawLabeling, labels)
    # Labels and symbols that straddle the tile edge are drawn as in a seamless map.
    settings.setFlag(_FLAG.RenderMapTile, True)
    # Wait for remote SVGs/images instead of drawing placeholders.
    settings.setFlag(_FLAG.RenderBlocking, True)
    return settings


def grid_of(settings: QgsMapSettings) -> tuple[dict, QgsRectangle]:
    """The engine grid and the ground extent of what ``settings`` renders."""
    if settings.rotation() != 0:
        raise CaptureError("The map is rotated: set the map rotation to 0° to capture it.")
    visible = settings.visibleExtent()
    mupp = settings.mapUnitsPerPixel()
    size = settings.outputSize()
    for span, px in ((visible.width(), size.width()), (visible.height(), size.height())):
        if not math.isclose(span, mupp * px, rel_tol=1e-9):
            raise CaptureError(f"Map pixels are not square ({span} map units over {px} px at "
                               f"{mupp} per pixel).")
    wkt = settings.destinationCrs().toWkt(_WKT)
    grid = {"width": size.width(), "height": size.height(),
            "transform": [mupp, 0.0, visible.xMinimum(), 0.0, -mupp, visible.yMaximum()],
            "crs": wkt}
    return grid, QgsRectangle(visible)


def _png_rgb(image: QImage) -> bytes:
    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not rgb.save(buffer, "PNG"):
        raise CaptureError("Could not encode the captured image as PNG.")
    buffer.close()
    return bytes(data)


def _errors(job: QgsMapRendererParallelJob, role: str, project: QgsProject) -> list[str]:
    out = []
    for error in job.errors():
        layer = project.mapLayer(error.layerID)
        name = layer.name() if layer is not None else error.layerID
        out.append(f"{role} layer '{name}': {error.message}")
    return out


def capture_tile(extent: QgsRectangle, crs: QgsCoordinateReferenceSystem,
                 sat_layers: list[QgsMapLayer], map_layers: list[QgsMapLayer],
                 tile_px: int = DEFAULT_TILE_PX,
                 transform_context: QgsCoordinateTransformContext | None = None,
                 project: QgsProject | None = None,
                 check_overlap: bool = True, render_sat: bool = True) -> CaptureTile:
    """Render ``extent`` of the satellite and map layers onto one ``tile_px`` square grid.

    With ``render_sat=False`` only the map is drawn (``sat_png`` is empty): for imagery the
    engine reads from its file onto ``grid`` itself.

    Layers are listed top first. Map layers are drawn with labels on white, satellite
    layers without labels on black. At least one layer of each list must overlap the
    extent (unless ``check_overlap`` is False). Call on the main thread (module docs).
    """
    _check_main_thread()
    _check_extent(extent)
    _check_crs(crs)
    if tile_px < 32:
        raise CaptureError(f"Tiles must be at least 32 px, got {tile_px}.")
    project = project or QgsProject.instance()
    context = transform_context or project.transformContext()
    sat_layers = [layer for layer in (sat_layers or []) if layer is not None]
    map_layers = [layer for layer in (map_layers or []) if layer is not None]
    if check_overlap:
        sat_layers = _check_layers("satellite", sat_layers, extent, crs, context)
        map_layers = _check_layers("map", map_layers, extent, crs, context)
    elif not sat_layers:
        raise CaptureError("Choose a satellite layer.")
    elif not map_layers:
        raise CaptureError("Choose a map layer.")

    sat_settings = _map_settings(sat_layers, extent, crs, tile_px, context,
                                 SAT_BACKGROUND, False, project)
    map_settings = _map_settings(map_layers, extent, crs, tile_px, context,
                                 MAP_BACKGROUND, True, project)
    grid, visible = grid_of(sat_settings)
    if grid_of(map_settings)[0] != grid:  # same inputs, so this would be a QGIS bug
        raise CaptureError("The map and satellite renders disagree on the grid.")

    roles = ([("satellite", sat_settings)] if render_sat else []) + [("map", map_settings)]
    jobs = [QgsMapRendererParallelJob(settings) for _, settings in roles]
    for job in jobs:
        job.start()
    for job in jobs:
        job.waitForFinished()
    pngs, warnings = {}, []
    for (role, _), job in zip(roles, jobs, strict=True):
        image = job.renderedImage()
        if image.isNull() or image.width() != tile_px or image.height() != tile_px:
            raise CaptureError(f"QGIS rendered a {image.width()}×{image.height()} image, "
                               f"expected {tile_px}×{tile_px}.")
        pngs[role] = _png_rgb(image)
        warnings += _errors(job, role, project)
    for message in warnings:
        QgsMessageLog.logMessage(message, LOG_TAG, Qgis.MessageLevel.Warning)
    return CaptureTile(pngs.get("satellite", b""), pngs["map"], grid, visible, warnings)


def capture_view(plan: CapturePlan, sat_layers: list[QgsMapLayer],
                 map_layers: list[QgsMapLayer],
                 transform_context: QgsCoordinateTransformContext | None = None,
                 project: QgsProject | None = None,
                 skip_uncovered: bool = True, render_sat: bool = True) -> Iterator[CaptureTile]:
    """Capture every tile of ``plan``, top-left first.

    The layers are checked against the whole view before the first tile (so a wrong
    layer choice fails at once). With ``skip_uncovered``, tiles that no satellite layer
    reaches are left out: they would only show the black background.
    """
    _check_main_thread()
    project = project or QgsProject.instance()
    context = transform_context or project.transformContext()
    # Checked now, not at the first next(): a wrong choice fails where the call is made.
    sat_layers = _check_layers("satellite", sat_layers, plan.extent, plan.crs, context)
    map_layers = _check_layers("map", map_layers, plan.extent, plan.crs, context)

    def tiles() -> Iterator[CaptureTile]:
        for tile in plan.tiles:
            if skip_uncovered and len(plan.tiles) > 1 and not any(
                    _layer_overlaps(layer, tile, plan.crs, context) for layer in sat_layers):
                continue
            yield capture_tile(tile, plan.crs, sat_layers, map_layers, plan.tile_px, context,
                               project, check_overlap=False, render_sat=render_sat)

    return tiles()
