"""Draw stage-1 feedback on both images before stage 2, as the released model expects.

The model was trained on exactly this rendering: the stage-1 mask in red (255, 0, 0) at
alpha 0.4 and each stage-1 box as a 2-pixel blue outline, in the model frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

MASK_RGB = (255, 0, 0)
MASK_ALPHA = 0.4
BOX_RGB = (0, 0, 255)
BOX_WIDTH_PX = 2


def resize_rgb(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """H×W×3 uint8 → height×width×3 uint8, bicubic like Qwen's processor."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """H×W bool → height×width bool, nearest neighbour (no new edge pixels)."""
    if mask.shape == (height, width):
        return mask.astype(bool)
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(img.resize((width, height), Image.NEAREST)) > 127


def draw_feedback(image: np.ndarray, mask: np.ndarray | None,
                  boxes_xyxy: Sequence[Sequence[float]]) -> np.ndarray:
    """Composite ``mask`` and outline ``boxes_xyxy`` on a copy of ``image``.

    Parameters
    ----------
    image : ndarray, H×W×3 uint8 (model frame)
    mask : ndarray, H×W bool, or None
        Blended as ``(1 - 0.4) * pixel + 0.4 * red``, truncated to uint8.
    boxes_xyxy : sequence of (x1, y1, x2, y2) in pixels of ``image``
        Rounded to whole pixels; the 2-pixel outline lies inside the box.

    Returns
    -------
    ndarray, H×W×3 uint8, a new array.
    """
    out = image.copy()
    if mask is not None and mask.any():
        m = mask.astype(bool)
        blended = (1 - MASK_ALPHA) * out[m].astype(np.float32) + MASK_ALPHA * np.float32(MASK_RGB)
        out[m] = blended.astype(np.uint8)
    if len(boxes_xyxy):
        pil = Image.fromarray(out)
        draw = ImageDraw.Draw(pil)
        for box in boxes_xyxy:
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            draw.rectangle([x1, y1, x2, y2], outline=BOX_RGB, width=BOX_WIDTH_PX)
        out = np.asarray(pil).copy()
    return out


def draw_points(image: np.ndarray, points_xy: Sequence[Sequence[float]],
                rgb=(0, 255, 0), radius_px: int = 4) -> np.ndarray:
    """Mark points (for overlays shown to people, never fed to the model)."""
    pil = Image.fromarray(image.copy())
    draw = ImageDraw.Draw(pil)
    for x, y in points_xy:
        draw.ellipse([x - radius_px, y - radius_px, x + radius_px, y + radius_px],
                     fill=rgb, outline=(0, 0, 0))
    return np.asarray(pil).copy()
