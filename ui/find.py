"""Find in a view, the part the dock and the Processing algorithm share: plan and check
the capture, send captured tiles to the engine worker in batches, merge the replies.

Tiles are rendered lazily, on the main thread, one batch at a time, so memory stays flat
however large the view; each caller decides how it reaches the main thread (the dock's
task asks it through a blocking signal, Processing runs there) and how it waits.
"""

import base64
import json
import os
import time
from dataclasses import dataclass
from itertools import islice

from qgis.core import QgsCoordinateReferenceSystem, QgsGeometry, QgsRasterLayer
from qgis.PyQt.QtCore import QCoreApplication

from .capture import area_m2, capture_view, ground_measure, plan_capture
from .layers import geometry_from_geojson


@dataclass
class ViewCapture:
    """A checked capture plan whose tiles are rendered when `tile_batches` asks."""

    plan: object            # CapturePlan
    tiles: object           # iterator of CaptureTile (renders on the main thread)
    sat_file: dict | None   # {"path": ...} when the engine reads the satellite file itself

    @property
    def count(self) -> int:
        return len(self.plan.tiles)


def start_capture(extent, crs, sat, map_, settings, transform_context, project) -> ViewCapture:
    """Plan the tiles of ``extent`` and check the layers (CaptureError if they cannot be
    captured); nothing is rendered yet. Main thread."""
    plan = plan_capture(extent, crs, tile_px=settings.tile_px, transform_context=transform_context,
                        max_tiles=settings.max_tiles)
    # A local GDAL raster is read by the engine itself (GDAL warp onto the tile's grid),
    # which places pixels more exactly than QGIS's on-the-fly raster reprojection; then
    # QGIS renders only the map.
    sat_file = local_raster_spec(sat)
    tiles = capture_view(plan, [sat], [map_], transform_context=transform_context,
                         project=project, render_sat=sat_file is None)
    return ViewCapture(plan, tiles, sat_file)


@dataclass
class TileBatch:
    """Tiles rendered for one request, and where the view stands."""

    done: int                 # tiles answered before this batch
    tiles: list               # CaptureTile
    left_s: float | None      # the rest of the view at the pace so far (None at first)


def tile_batches(capture: ViewCapture, size: int, on_main=None, is_cancelled=None):
    """Yield `TileBatch` es until the view is done or ``is_cancelled()``, rendering each
    batch of up to ``size`` tiles on the main thread: through ``on_main(fn)`` from another
    thread, or right here when called on the main thread. One batch is held at a time."""
    done, start = 0, time.monotonic()
    while is_cancelled is None or not is_cancelled():
        def render():
            return list(islice(capture.tiles, max(1, size)))

        tiles = on_main(render) if on_main is not None else render()
        if not tiles:
            return
        pace = (time.monotonic() - start) / done if done else None
        yield TileBatch(done, tiles, pace * (capture.count - done) if pace else None)
        done += len(tiles)


def batch_progress(report, batch: TileBatch, count: int, span=(0.0, 1.0)):
    """``report(value, message)`` for the view, as a batch's ``(fraction, message)``
    progress: the value runs over ``span`` as the view's tiles are done, and the message
    says which tiles and, from the second batch, about how long the rest will take (on a
    CPU a tile takes minutes)."""
    lo, hi = span
    size = len(batch.tiles)
    where = tiles_label(batch.done, size, count)
    if batch.left_s is not None:
        where += f", {_tr('about')} {duration(batch.left_s)} {_tr('left')}"

    def progress(fraction, message):
        report(lo + (hi - lo) * (batch.done + fraction * size) / count,
               f"{where}: {message}" if count > 1 else message)
    return progress


def duration(seconds: float) -> str:
    """"40 s", "12 min", "2 h 05 min": whole units, as an estimate deserves."""
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def run_tiles(session, tiles: list, sat_file, query: str, mode: str, on_progress=None,
              is_cancelled=None, extra: dict | None = None) -> list[dict]:
    """One ``run`` request for a batch of tiles (one VLM batch per stage in the worker);
    returns one reply per tile, in order. Any thread but the main one, as it blocks."""
    views = [tile_view(t, sat_file) for t in tiles]
    params = {"query": query, "mode": mode, **(extra or {})}
    # one tile: the single-view form; several: the batch form
    params.update(views[0] if len(views) == 1 else {"views": views})
    reply = session.request("run", params, on_progress=on_progress, is_cancelled=is_cancelled)
    return reply["results"] if len(views) > 1 else [reply]


def tiles_label(done: int, size: int, count: int) -> str:
    """Which tiles a progress message is about: "tile 3/9", or "tiles 3–6/9" for a batch."""
    if size > 1:
        return f"{_tr('tiles')} {done + 1}–{done + size}/{count}"
    return f"{_tr('tile')} {done + 1}/{count}"


def local_raster_spec(layer) -> dict | None:
    """``{"path": file}`` when ``layer`` is a single-file GDAL raster on this machine."""
    if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
        return None
    path = layer.source().split("|")[0]
    if not os.path.isfile(path) or not layer.crs().isValid():
        return None
    return {"path": path}


def tile_view(tile, sat_file: dict | None = None) -> dict:
    """A captured tile as the worker's view parameters: grid, map image, and the satellite
    image, or the file the engine reads itself."""
    return {"grid": tile.grid, "sat": sat_file or {"png_base64": _b64(tile.sat_png)},
            "map": {"png_base64": _b64(tile.map_png)}}


def merge_replies(replies: list[dict], transform_context=None) -> dict:
    """One reply from the replies of overlapping tiles: prompts are concatenated (box ids
    renumbered), and result polygons that overlap across tiles are dissolved into one,
    whose ``area_m2`` is measured again on the ellipsoid."""
    if len(replies) == 1:
        return replies[0]
    merged = {**replies[0], "boxes": {"type": "FeatureCollection", "features": []},
              "points": {"type": "FeatureCollection", "features": []}}
    offset = 0
    for reply in replies:
        ids = set()
        for key in ("boxes", "points"):
            for f in reply.get(key, {}).get("features", []):
                props = {**f["properties"], "box_id": f["properties"]["box_id"] + offset}
                ids.add(f["properties"]["box_id"])
                merged[key]["features"].append({**f, "properties": props})
        offset += (max(ids) + 1) if ids else 0
    feats = [f for r in replies for f in r["result"]["features"]]
    geoms = [geometry_from_geojson(f["geometry"]) for f in feats]
    out = []
    if geoms:
        measure = ground_measure(QgsCoordinateReferenceSystem.fromWkt(replies[0]["crs"]),
                                 transform_context)
        union = QgsGeometry.unaryUnion(geoms)
        for part in union.asGeometryCollection() if union.isMultipart() else [union]:
            # attributes of the largest source polygon inside this dissolved part
            src = max((i for i, g in enumerate(geoms) if g.intersects(part)),
                      key=lambda i: geoms[i].area(), default=0)
            props = {**feats[src]["properties"],
                     "area_m2": round(area_m2(measure, part), 2)}
            out.append({"type": "Feature", "geometry": json.loads(part.asJson(17)),
                        "properties": props})
    merged["result"] = {"type": "FeatureCollection", "features": out}
    return merged


def _tr(text):
    return QCoreApplication.translate("SocioReasoner", text)


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")
