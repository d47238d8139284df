"""The two-stage SocioReasoner loop: localize with the VLM, segment with SAM, render the
result back onto both images, refine with points, segment again.

One ``SocioReasoner`` holds one VLM and one segmenter. It encodes each satellite image
with SAM once and reuses the embedding for stage 1, stage 2 and any manual ``refine``
of the same view.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import prompts
from .errors import CancelledError, ShapeMismatchError
from .frames import ModelFrame
from .models.base import GenerationConfig, Segmenter, VLMBackend
from .parsing import ObjectPrompt, ParsedAnswer, answer_json, parse_answer
from .render import draw_feedback, resize_mask, resize_rgb

MODES = ("two-stage", "stage1", "single")

# progress(fraction 0..1, message); cancel() -> True to stop at the next step boundary
ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


@dataclass
class StageResult:
    """What one VLM + SAM pass produced, in model-frame pixels."""

    name: str                       # "stage1", "stage2" or "single"
    prompt: str
    raw_text: str
    parsed: ParsedAnswer
    object_masks: list[np.ndarray]  # one frame-sized bool mask per prompt
    scores: list[float]
    mask: np.ndarray                # frame-sized OR of object_masks
    seconds: dict = field(default_factory=dict)

    @property
    def prompts(self) -> list[ObjectPrompt]:
        return self.parsed.prompts


@dataclass
class RunResult:
    """The answer to one query on one view, with every intermediate."""

    query: str
    mode: str
    frame: ModelFrame
    stages: list[StageResult]
    mask: np.ndarray                # tile-sized bool (the final stage's mask)
    object_masks: list[np.ndarray]  # tile-sized bool, one per final prompt
    seconds: dict

    @property
    def final(self) -> StageResult:
        return self.stages[-1]


def _image_key(image: np.ndarray) -> str:
    return hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest() + str(image.shape)


class SocioReasoner:
    """Text query + (map, satellite) image pair → mask, via a VLM and a segmenter.

    Parameters
    ----------
    vlm : VLMBackend
    segmenter : Segmenter
    generation : GenerationConfig, optional
        Greedy decoding by default.
    max_objects : int
        Parser cap on boxes per answer: a runaway answer cannot cost hundreds of SAM calls.
    """

    def __init__(self, vlm: VLMBackend, segmenter: Segmenter,
                 generation: GenerationConfig | None = None, max_objects: int = 50):
        self.vlm = vlm
        self.segmenter = segmenter
        self.generation = generation or GenerationConfig()
        self.max_objects = max_objects
        self._encoded_key: str | None = None

    # ------------------------------------------------------------------ SAM
    def set_image(self, sat_frame: np.ndarray) -> bool:
        """Encode the satellite image unless it is the one already encoded; True if encoded."""
        key = _image_key(sat_frame)
        if key == self._encoded_key:
            return False
        self.segmenter.set_image(sat_frame)
        self._encoded_key = key
        return True

    def segment(self, object_prompts: list[ObjectPrompt], use_points: bool
                ) -> tuple[list[np.ndarray], list[float]]:
        """One SAM prediction per prompt on the encoded image (model-frame pixels)."""
        masks, scores = [], []
        for p in object_prompts:
            pts = np.asarray(p.points_xy, float).reshape(-1, 2) if use_points and p.points_xy else None
            m, s = self.segmenter.predict(box_xyxy=np.asarray(p.box_xyxy, float), points_xy=pts)
            masks.append(m.astype(bool))
            scores.append(float(s))
        return masks, scores

    # ------------------------------------------------------------------ stages
    def _stage(self, name, images, text, frame_wh, use_points, cancel) -> StageResult:
        _check(cancel)
        t0 = time.perf_counter()
        reply = self.vlm.generate(images, text, self.generation)
        t1 = time.perf_counter()
        parsed = parse_answer(reply.text, frame_wh, expect_points=use_points,
                              max_objects=self.max_objects)
        _check(cancel)
        masks, scores = self.segment(parsed.prompts, use_points)
        t2 = time.perf_counter()
        union = np.zeros((frame_wh[1], frame_wh[0]), bool)
        for m in masks:
            union |= m
        seconds = {"vlm": t1 - t0, "sam_decode": t2 - t1, **{f"vlm_{k}": v for k, v in reply.seconds.items()}}
        return StageResult(name, text, reply.text, parsed, masks, scores, union, seconds)

    def run(self, map_image: np.ndarray, sat_image: np.ndarray, query: str,
            mode: str = "two-stage", progress: ProgressFn | None = None,
            cancel: CancelFn | None = None) -> RunResult:
        """Answer ``query`` on one tile.

        Parameters
        ----------
        map_image, sat_image : ndarray, H×W×3 uint8, the same size (one grid)
        query : str
        mode : {"two-stage", "stage1", "single"}
            The paper's method, and its two ablations.

        Returns
        -------
        RunResult with the final mask at tile size (H×W bool).
        """
        if mode not in MODES:
            raise ValueError(f"Unknown mode {mode!r}; choose one of {MODES}.")
        if map_image.shape != sat_image.shape or sat_image.ndim != 3 or sat_image.shape[2] != 3:
            raise ShapeMismatchError(
                f"Map {map_image.shape} and satellite {sat_image.shape} must both be H×W×3 on one grid.")
        progress = progress or (lambda f, m: None)
        h, w = sat_image.shape[:2]
        frame = ModelFrame.for_tile(w, h)
        fw, fh = frame.frame_wh
        t0 = time.perf_counter()
        map_f, sat_f = resize_rgb(map_image, fw, fh), resize_rgb(sat_image, fw, fh)
        seconds = {"preprocess": time.perf_counter() - t0}
        progress(0.05, "encoding satellite image")
        t0 = time.perf_counter()
        self.set_image(sat_f)
        seconds["sam_encode"] = time.perf_counter() - t0

        stages = []
        if mode == "single":
            progress(0.1, "localizing with boxes and points")
            stages.append(self._stage("single", [map_f, sat_f], prompts.single_stage_prompt(query),
                                      frame.frame_wh, True, cancel))
        else:
            progress(0.1, "stage 1: localizing")
            s1 = self._stage("stage1", [map_f, sat_f], prompts.stage1_prompt(query),
                             frame.frame_wh, False, cancel)
            stages.append(s1)
            if mode == "two-stage" and s1.prompts:
                progress(0.55, "stage 2: refining with points")
                t0 = time.perf_counter()
                boxes = [p.box_xyxy for p in s1.prompts]
                map_fb = draw_feedback(map_f, s1.mask, boxes)
                sat_fb = draw_feedback(sat_f, s1.mask, boxes)
                seconds["render"] = time.perf_counter() - t0
                boxes_json = s1.parsed.answer_text or answer_json(s1.prompts, with_points=False)
                stages.append(self._stage("stage2", [map_fb, sat_fb],
                                          prompts.stage2_prompt(query, boxes_json),
                                          frame.frame_wh, True, cancel))
        final = stages[-1]
        tile_masks = [resize_mask(m, w, h) for m in final.object_masks]
        mask = resize_mask(final.mask, w, h)
        for s in stages:
            for k, v in s.seconds.items():
                seconds[f"{s.name}_{k}"] = v
        progress(1.0, "done")
        return RunResult(query, mode, frame, stages, mask, tile_masks, seconds)

    def refine(self, sat_image: np.ndarray, object_prompts: list[ObjectPrompt]
               ) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
        """SAM only, from prompts a person edited (model-frame pixels).

        The satellite image's embedding is reused when it is the one last encoded.
        Returns (tile-sized mask, tile-sized per-object masks, scores).
        """
        h, w = sat_image.shape[:2]
        frame = ModelFrame.for_tile(w, h)
        self.set_image(resize_rgb(sat_image, *frame.frame_wh))
        masks, scores = self.segment(object_prompts, use_points=True)
        tile_masks = [resize_mask(m, w, h) for m in masks]
        union = np.zeros((h, w), bool)
        for m in tile_masks:
            union |= m
        return union, tile_masks, scores


def _check(cancel: CancelFn | None) -> None:
    if cancel is not None and cancel():
        raise CancelledError("Cancelled by the user.")
