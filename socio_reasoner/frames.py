"""Three coordinate frames and the conversions between them.

* model frame: the image as the VLM sees it after Qwen's ``smart_resize`` (a 768² tile
  is seen as 756²); the VLM's boxes and points, and SAM's prompts, are pixels here.
* tile: the captured image (768² for SocioSeg); masks are returned at this size.
* map: the tile's ``Grid`` places tile pixels in the view's CRS.

Pixel coordinates are continuous with the origin at the top-left corner of the
top-left pixel (x right, y down), the convention of SAM, PIL and GDAL alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The released model's processor settings (Qwen2.5-VL patch 14 × merge 2 = 28).
QWEN_FACTOR = 28
QWEN_MIN_PIXELS = 500 * 500
QWEN_MAX_PIXELS = 1344 * 1344


def smart_resize(height: int, width: int, factor: int = QWEN_FACTOR,
                 min_pixels: int = QWEN_MIN_PIXELS, max_pixels: int = QWEN_MAX_PIXELS
                 ) -> tuple[int, int]:
    """(height, width) at which Qwen2-VL-family processors feed an image to the model.

    Both sides become multiples of ``factor`` close to the original, keeping the aspect
    ratio, with the pixel count brought into [min_pixels, max_pixels].
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"Image size must be positive, got {width}×{height}.")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"Aspect ratio of {width}×{height} exceeds 200, which Qwen rejects.")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


@dataclass(frozen=True)
class ModelFrame:
    """Scales between a tile (``tile_wh``) and the model's view of it (``frame_wh``)."""

    tile_wh: tuple[int, int]
    frame_wh: tuple[int, int]

    @classmethod
    def for_tile(cls, width: int, height: int, **resize_kwargs) -> ModelFrame:
        """The frame of Qwen2.5-VL's default processor bounds."""
        fh, fw = smart_resize(height, width, **resize_kwargs)
        return cls((width, height), (fw, fh))

    @classmethod
    def of(cls, vlm, width: int, height: int) -> ModelFrame:
        """The frame ``vlm`` sees a tile in (its processor may have other pixel bounds)."""
        return cls((width, height), tuple(int(v) for v in vlm.model_frame(width, height)))

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Tile pixels per model-frame pixel, along x and y."""
        return self.tile_wh[0] / self.frame_wh[0], self.tile_wh[1] / self.frame_wh[1]

    def frame_to_tile(self, xy) -> np.ndarray:
        """N×2 (x, y) frame pixels → tile pixels (float)."""
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        return xy * np.asarray(self.scale_xy)

    def tile_to_frame(self, xy) -> np.ndarray:
        """N×2 (x, y) tile pixels → frame pixels (float)."""
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        return xy / np.asarray(self.scale_xy)

    def box_frame_to_tile(self, box_xyxy) -> np.ndarray:
        return self.frame_to_tile(np.asarray(box_xyxy, float).reshape(2, 2)).reshape(4)

    def box_tile_to_frame(self, box_xyxy) -> np.ndarray:
        return self.tile_to_frame(np.asarray(box_xyxy, float).reshape(2, 2)).reshape(4)


def frame_to_map(frame: ModelFrame, grid, xy) -> np.ndarray:
    """N×2 frame pixels → N×2 map coordinates of ``grid`` (the tile's grid)."""
    tile_xy = frame.frame_to_tile(xy)
    x, y = grid.pixel_to_map(tile_xy[:, 0], tile_xy[:, 1])
    return np.stack([x, y], axis=1)


def map_to_frame(frame: ModelFrame, grid, xy) -> np.ndarray:
    """N×2 map coordinates → N×2 frame pixels (for prompts a user edited on the map)."""
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    col, row = grid.map_to_pixel(xy[:, 0], xy[:, 1])
    return frame.tile_to_frame(np.stack([col, row], axis=1))
