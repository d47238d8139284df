"""Backends that answer from a script: exact, instant, and free of weights.

They let tests (and people debugging a prompt) check everything downstream of the
model — frames, rendering, SAM prompting, polygons — to the pixel, and let a recorded
run be replayed. They are not stand-ins for the real backends' own tests.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from ..errors import CancelledError
from ..frames import ModelFrame
from .base import GenerationConfig, VLMReply


class ScriptedVLM:
    """Returns ``answers`` in order (cycling), recording every call's images and text.

    ``delay_s`` makes each answer take that long, to exercise progress and cancel: it
    passes as 20 steps, each an ``on_step`` call, as if 20 tokens were made.
    """

    name = "scripted"

    def __init__(self, answers: list[str], delay_s: float = 0.0):
        if not answers:
            raise ValueError("ScriptedVLM needs at least one answer.")
        self.answers = list(answers)
        self.delay_s = float(delay_s)
        # the last calls only: a long replay (a benchmark) must not keep every image
        self.calls: deque[tuple[list[np.ndarray], str]] = deque(maxlen=16)
        self._n = 0

    def model_frame(self, width: int, height: int) -> tuple[int, int]:
        return ModelFrame.for_tile(width, height).frame_wh

    def generate(self, images, text, config: GenerationConfig | None = None,
                 on_step=None) -> VLMReply:
        t0 = time.perf_counter()
        self.calls.append(([np.array(i, copy=True) for i in images], text))
        answer = self.answers[self._n % len(self.answers)]
        self._n += 1
        steps = 20 if self.delay_s else 0
        for k in range(steps + 1):
            if k:
                time.sleep(self.delay_s / steps)
            if on_step is not None and on_step(k):
                raise CancelledError("Cancelled by the user.")
        return VLMReply(answer, seconds={"generate": time.perf_counter() - t0})


class BoxSegmenter:
    """Answers each prompt with its box filled: rows ``round(y1):round(y2)`` and columns
    ``round(x1):round(x2)`` (half-open), so every downstream pixel is known exactly.

    Records every ``predict`` call and counts encodings like a real segmenter.
    """

    name = "box"

    def __init__(self):
        self.encode_count = 0
        self.calls: list[tuple[np.ndarray | None, np.ndarray | None]] = []
        self._hw: tuple[int, int] | None = None

    def set_image(self, image: np.ndarray) -> None:
        self.encode_count += 1
        self._hw = image.shape[:2]

    def predict(self, box_xyxy=None, points_xy=None):
        if self._hw is None:
            raise RuntimeError("An image must be set with .set_image(...) before predict.")
        self.calls.append((None if box_xyxy is None else np.asarray(box_xyxy, float),
                           None if points_xy is None else np.asarray(points_xy, float)))
        mask = np.zeros(self._hw, bool)
        if box_xyxy is not None:
            x1, y1, x2, y2 = (int(round(v)) for v in box_xyxy)
            mask[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
        return mask, 1.0

    def get_state(self) -> dict:
        return {"hw": self._hw}

    def set_state(self, state: dict) -> None:
        self._hw = state["hw"]

    def reset_image(self) -> None:
        self._hw = None
