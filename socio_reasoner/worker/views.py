"""Images of a request → a view (map + satellite on one grid), and results → GeoJSON.

Images travel as file paths or base64 PNG with an explicit grid; results travel as
GeoJSON in the view's CRS, so the QGIS side needs no raster or geometry library.
"""

from __future__ import annotations

import base64
import io
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from shapely.geometry import box as shapely_box
from shapely.geometry import mapping

from ..errors import ShapeMismatchError
from ..frames import ModelFrame, frame_to_map, map_to_frame
from ..geo.image import GeoImage, Grid
from ..geo.measure import area_m2
from ..geo.raster import is_georeferenced, read_image, read_to_grid
from ..geo.vectorize import labels_to_polygons
from ..parsing import ObjectPrompt
from ..pipeline import union_of

# The attributes of every result polygon, in order (the plugin's result layer has the same).
RESULT_SCHEMA = {"query": str, "box_id": int, "area_m2": float, "model": str, "stage": str,
                 "created": str}


@dataclass
class View:
    """A map and a satellite image sharing ``grid``."""

    map: GeoImage
    sat: GeoImage
    frame_wh: tuple[int, int] | None = None   # the VLM's frame; the server sets it

    @property
    def grid(self) -> Grid:
        return self.sat.grid

    @property
    def frame(self) -> ModelFrame:
        w, h = self.grid.width, self.grid.height
        return ModelFrame((w, h), self.frame_wh) if self.frame_wh else ModelFrame.for_tile(w, h)


class ViewCache(OrderedDict):
    """The last few views by id, so ``refine`` reuses a run's images (LRU)."""

    def __init__(self, size: int = 4):
        super().__init__()
        self.size = size

    def put(self, view_id: str, view: View) -> None:
        self[view_id] = view
        self.move_to_end(view_id)
        while len(self) > self.size:
            self.popitem(last=False)


def _decode(spec: dict, grid: Grid | None, role: str) -> GeoImage:
    if not isinstance(spec, dict) or not ({"path", "png_base64"} & spec.keys()):
        raise ValueError(f"'{role}' must be an object with 'path' or 'png_base64'.")
    if "png_base64" in spec:
        with Image.open(io.BytesIO(base64.b64decode(spec["png_base64"]))) as im:
            pixels = np.asarray(im.convert("RGB"))
        if grid is None:
            raise ValueError(f"'{role}' was sent as PNG bytes: the request needs a 'grid'.")
        return GeoImage(pixels, grid)
    path = spec["path"]
    if grid is not None and is_georeferenced(path):
        return read_to_grid(path, grid)
    image = read_image(path)
    if grid is not None:
        if image.grid.shape != grid.shape:
            raise ShapeMismatchError(
                f"'{role}' image {path!r} is {image.grid.width}×{image.grid.height} but the grid "
                f"is {grid.width}×{grid.height}; send a georeferenced raster or a matching image.")
        return GeoImage(image.pixels, grid)
    return image


def load_view(params: dict) -> View:
    """Read ``params['sat']`` and ``params['map']`` onto one grid.

    The grid is ``params['grid']`` when given, else the satellite raster's own.
    """
    grid = Grid.from_dict(params["grid"]) if params.get("grid") else None
    sat = _decode(params.get("sat"), grid, "sat")
    map_ = _decode(params.get("map"), sat.grid, "map")
    return View(map_, sat)


def encode_png(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def result_features(view: View, object_masks: list[np.ndarray], query: str, stage: str,
                    model: str, min_area_m2: float = 0.0, simplify: float = 0.0) -> dict:
    """A GeoJSON FeatureCollection of the OR of ``object_masks`` (tile size), one feature
    per connected polygon, tagged with the prompt (``box_id``) that covers most of it."""
    grid = view.grid
    components, n = ndimage.label(union_of(object_masks, grid.shape))     # 4-connected, as GDAL polygonizes
    box_of = np.zeros(n + 1, np.int32)
    if n:
        overlap = np.stack([ndimage.sum_labels(m, components, np.arange(1, n + 1))
                            for m in object_masks])
        box_of[1:] = overlap.argmax(axis=0)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    features = []
    for poly, label in labels_to_polygons(components, grid.transform, 0.0, simplify):
        area = area_m2(poly, grid.crs)
        if area < min_area_m2:
            continue
        features.append({"type": "Feature", "geometry": mapping(poly), "properties": {
            "query": query, "box_id": int(box_of[label]), "area_m2": round(area, 2),
            "model": model, "stage": stage, "created": created}})
    return {"type": "FeatureCollection", "features": features}


def prompt_features(view: View, prompts_by_stage: dict[str, list[ObjectPrompt]]) -> dict:
    """Boxes as polygons and points as points in map coordinates, for editing layers."""
    frame, grid = view.frame, view.grid
    boxes, points = [], []
    for stage, prompts in prompts_by_stage.items():
        for box_id, p in enumerate(prompts):
            x1, y1, x2, y2 = p.box_xyxy
            corners = frame_to_map(frame, grid, [(x1, y1), (x2, y2)])
            geom = shapely_box(*corners.min(axis=0), *corners.max(axis=0))
            boxes.append({"type": "Feature", "geometry": mapping(geom), "properties": {
                "stage": stage, "box_id": box_id, "box_xyxy_frame": list(p.box_xyxy)}})
            if p.points_xy:
                for k, xy in enumerate(frame_to_map(frame, grid, p.points_xy)):
                    points.append({"type": "Feature", "geometry": {
                        "type": "Point", "coordinates": [float(xy[0]), float(xy[1])]},
                        "properties": {"stage": stage, "box_id": box_id, "point_id": k}})
    return {"boxes": {"type": "FeatureCollection", "features": boxes},
            "points": {"type": "FeatureCollection", "features": points}}


def prompts_from_map(view: View, items: list[dict]) -> list[ObjectPrompt]:
    """Prompts a person edited in map coordinates → model-frame prompts for SAM.

    Each item: ``{"box": [xmin, ymin, xmax, ymax], "points": [[x, y], ...]}`` in the
    view's CRS. A missing box becomes the points' bounding box padded by 5 % of the view.
    """
    frame, grid = view.frame, view.grid
    fw, fh = frame.frame_wh
    out = []
    for i, item in enumerate(items):
        pts_map = np.asarray(item.get("points") or [], float).reshape(-1, 2)
        pts = map_to_frame(frame, grid, pts_map) if len(pts_map) else np.zeros((0, 2))
        if item.get("box") is not None:
            xmin, ymin, xmax, ymax = item["box"]
            c = map_to_frame(frame, grid, [(xmin, ymin), (xmax, ymax)])
            x1, y1 = c.min(axis=0)
            x2, y2 = c.max(axis=0)
        elif len(pts):
            pad = 0.05 * max(fw, fh)
            (x1, y1), (x2, y2) = pts.min(axis=0) - pad, pts.max(axis=0) + pad
        else:
            raise ValueError(f"Prompt {i} has neither a box nor points.")
        x1, x2 = np.clip([x1, x2], 0, fw - 1)
        y1, y2 = np.clip([y1, y2], 0, fh - 1)
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"Prompt {i}'s box lies outside the view.")
        inside = [(float(x), float(y)) for x, y in pts if 0 <= x < fw and 0 <= y < fh]
        out.append(ObjectPrompt((float(x1), float(y1), float(x2), float(y2)), inside))
    return out
