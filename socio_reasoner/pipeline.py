"""The two-stage SocioReasoner loop: localize with the VLM, segment with SAM, render the
result back onto both images, refine with points, segment again.

One ``SocioReasoner`` holds one VLM and one segmenter. It encodes each satellite image
with SAM once and reuses the embedding for stage 1, stage 2 and any manual ``refine``
of the same view.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
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
# (inside the VLM: the next layer or token, for backends that can stop midway)
ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]
PROGRESS_EVERY_S = 0.25     # answer-growth progress messages, at most this often


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


@dataclass
class _Item:
    """One view inside a batch, in the model frame."""

    query: str
    frame: ModelFrame
    map_f: np.ndarray
    sat_f: np.ndarray
    stages: list = field(default_factory=list)
    sat_key: str = ""            # _image_key(sat_f), hashed once per run


class SocioReasoner:
    """Text query + (map, satellite) image pair → mask, via a VLM and a segmenter.

    Parameters
    ----------
    vlm : VLMBackend
        When it has ``batch_generate``, the views of ``run_batch`` share one generate
        call per stage.
    segmenter : Segmenter
    generation : GenerationConfig, optional
        Greedy decoding by default.
    max_objects : int
        Parser cap on boxes per answer: a runaway answer cannot cost hundreds of SAM calls.
    embedding_cache : int
        How many views' SAM embeddings are kept (segmenters with ``get_state``), so a
        batch, or refining any of the last views, never encodes an image twice.
    """

    def __init__(self, vlm: VLMBackend, segmenter: Segmenter,
                 generation: GenerationConfig | None = None, max_objects: int = 50,
                 embedding_cache: int = 16):
        self.vlm = vlm
        self.segmenter = segmenter
        self.generation = generation or GenerationConfig()
        self.max_objects = max_objects
        self.embedding_cache = embedding_cache
        self._states: OrderedDict[str, dict | None] = OrderedDict()
        self._current: str | None = None
        self._batch = 0     # views of the running batch: their embeddings all stay kept

    # ------------------------------------------------------------------ SAM
    def set_image(self, sat_frame: np.ndarray, key: str | None = None) -> bool:
        """Make ``sat_frame`` the segmenter's image, encoding it only if no embedding of it
        is kept; returns True when the encoder ran. ``key``: its `_image_key`, if known."""
        key = key or _image_key(sat_frame)
        if key == self._current:
            return False
        state = self._states.get(key)
        if state is not None:
            self.segmenter.set_state(state)
            self._states.move_to_end(key)
            self._current = key
            return False
        self.segmenter.set_image(sat_frame)
        self._current = key
        if hasattr(self.segmenter, "get_state") and self.embedding_cache > 0:
            self._states[key] = self.segmenter.get_state()
            while len(self._states) > max(self.embedding_cache, self._batch):
                self._states.popitem(last=False)
        return True

    def segment(self, object_prompts: list[ObjectPrompt], use_points: bool
                ) -> tuple[list[np.ndarray], list[float]]:
        """One SAM prediction per prompt on the current image (model-frame pixels)."""
        return segment_prompts(self.segmenter, object_prompts, use_points)

    # ------------------------------------------------------------------ stages
    def _generate(self, requests: list[tuple[list[np.ndarray], str]], on_step=None) -> list:
        if len(requests) > 1 and hasattr(self.vlm, "batch_generate"):
            return self.vlm.batch_generate(requests, self.generation, on_step=on_step)
        return [self.vlm.generate(images, text, self.generation, on_step=on_step)
                for images, text in requests]

    def _watch(self, progress: ProgressFn, cancel: CancelFn | None, message: str,
               span: tuple[float, float]):
        """``on_step`` for the VLM: a progress message as the answer grows (it can take
        minutes on a CPU), the fraction moving through ``span`` by tokens out of
        ``max_new_tokens``; and the user's cancel, honoured within a layer or token."""
        lo, hi = span
        limit = max(1, self.generation.max_new_tokens)
        last = [time.monotonic()]

        def on_step(new_tokens: int) -> bool:
            now = time.monotonic()
            if new_tokens and now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                progress(lo + (hi - lo) * min(1.0, new_tokens / limit),
                         f"{message} ({new_tokens} tokens)")
            return cancel is not None and bool(cancel())
        return on_step

    def _stage(self, name, items: list[_Item], requests, use_points, cancel,
               progress: ProgressFn, message: str, span: tuple[float, float]) -> None:
        """One VLM call per item (batched when possible), then SAM per item; progress
        moves through ``span`` as the answer grows."""
        _check(cancel)
        progress(span[0], message)
        t0 = time.perf_counter()
        replies = self._generate(requests, self._watch(progress, cancel, message, span))
        vlm_s = (time.perf_counter() - t0) / max(1, len(items))
        for item, (_, text), reply in zip(items, requests, replies, strict=True):
            _check(cancel)
            t1 = time.perf_counter()
            fw, fh = item.frame.frame_wh
            parsed = parse_answer(reply.text, (fw, fh), expect_points=use_points,
                                  max_objects=self.max_objects)
            self.set_image(item.sat_f, item.sat_key)
            masks, scores = self.segment(parsed.prompts, use_points)
            union = union_of(masks, (fh, fw))
            seconds = {"vlm": vlm_s, "sam_decode": time.perf_counter() - t1,
                       **{f"vlm_{k}": v for k, v in reply.seconds.items()}}
            item.stages.append(StageResult(name, text, reply.text, parsed, masks, scores, union, seconds))

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
        return self.run_batch([(map_image, sat_image, query)], mode, progress, cancel)[0]

    def run_batch(self, views: list[tuple[np.ndarray, np.ndarray, str]], mode: str = "two-stage",
                  progress: ProgressFn | None = None, cancel: CancelFn | None = None
                  ) -> list[RunResult]:
        """Answer several (map, satellite, query) views, one VLM batch per stage.

        Each satellite image is encoded by SAM once for both stages (and kept for a later
        ``refine``). Results are in the order of ``views``.
        """
        if mode not in MODES:
            raise ValueError(f"Unknown mode {mode!r}; choose one of {MODES}.")
        progress = progress or (lambda f, m: None)
        items, seconds = [], {}
        t0 = time.perf_counter()
        for map_image, sat_image, query in views:
            if map_image.shape != sat_image.shape or sat_image.ndim != 3 or sat_image.shape[2] != 3:
                raise ShapeMismatchError(f"Map {map_image.shape} and satellite {sat_image.shape} "
                                         "must both be H×W×3 on one grid.")
            h, w = sat_image.shape[:2]
            frame = ModelFrame.of(self.vlm, w, h)
            fw, fh = frame.frame_wh
            sat_f = resize_rgb(sat_image, fw, fh)
            items.append(_Item(query, frame, resize_rgb(map_image, fw, fh), sat_f,
                               sat_key=_image_key(sat_f)))
        seconds["preprocess"] = (time.perf_counter() - t0) / len(items)
        progress(0.05, "encoding satellite image")
        t0 = time.perf_counter()
        # a batch larger than the cache would evict its first views before their stages
        self._batch = len(items)
        try:
            encoded = sum(self.set_image(item.sat_f, item.sat_key) for item in items)
            seconds["sam_encode"] = (time.perf_counter() - t0) / max(1, encoded)
            if mode == "single":
                self._stage("single", items, [([i.map_f, i.sat_f], prompts.single_stage_prompt(i.query))
                                              for i in items], True, cancel,
                            progress, "localizing with boxes and points", (0.1, 0.9))
            else:
                self._stage("stage1", items, [([i.map_f, i.sat_f], prompts.stage1_prompt(i.query))
                                              for i in items], False, cancel,
                            progress, "stage 1: localizing", (0.1, 0.5))
                todo = [i for i in items if i.stages[0].prompts] if mode == "two-stage" else []
                if todo:
                    t0 = time.perf_counter()
                    requests = [self._stage2_request(i) for i in todo]
                    seconds["render"] = (time.perf_counter() - t0) / len(todo)
                    self._stage("stage2", todo, requests, True, cancel,
                                progress, "stage 2: refining with points", (0.55, 0.95))
            results = []
            for item, (_, sat_image, _) in zip(items, views, strict=True):
                h, w = sat_image.shape[:2]
                final = item.stages[-1]
                per_view = dict(seconds)
                for s in item.stages:
                    per_view.update({f"{s.name}_{k}": v for k, v in s.seconds.items()})
                results.append(RunResult(item.query, mode, item.frame, item.stages,
                                         resize_mask(final.mask, w, h),
                                         [resize_mask(m, w, h) for m in final.object_masks], per_view))
            progress(1.0, "done")
            return results
        finally:
            self._batch = 0

    def _stage2_request(self, item: _Item) -> tuple[list[np.ndarray], str]:
        s1 = item.stages[0]
        return stage2_request(item.query, item.map_f, item.sat_f, s1.parsed, s1.mask)

    def refine(self, sat_image: np.ndarray, object_prompts: list[ObjectPrompt]
               ) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
        """SAM only, from prompts a person edited (model-frame pixels).

        The satellite image's embedding is reused when it is kept from an earlier run.
        Returns (tile-sized mask, tile-sized per-object masks, scores).
        """
        h, w = sat_image.shape[:2]
        frame = ModelFrame.of(self.vlm, w, h)
        self.set_image(resize_rgb(sat_image, *frame.frame_wh))
        masks, scores = self.segment(object_prompts, use_points=True)
        tile_masks = [resize_mask(m, w, h) for m in masks]
        return union_of(tile_masks, (h, w)), tile_masks, scores


def segment_prompts(segmenter, object_prompts: list[ObjectPrompt], use_points: bool
                    ) -> tuple[list[np.ndarray], list[float]]:
    """One SAM prediction per prompt on the segmenter's current image (frame pixels);
    the pipeline and the training rollout both go through here."""
    masks, scores = [], []
    for p in object_prompts:
        pts = np.asarray(p.points_xy, float).reshape(-1, 2) if use_points and p.points_xy else None
        m, s = segmenter.predict(box_xyxy=np.asarray(p.box_xyxy, float), points_xy=pts)
        masks.append(m.astype(bool))
        scores.append(float(s))
    return masks, scores


def union_of(masks: list[np.ndarray], shape_hw: tuple[int, int]) -> np.ndarray:
    """The OR of object masks (H×W bool; all False when there are none)."""
    union = np.zeros(shape_hw, bool)
    for m in masks:
        union |= m
    return union


def stage2_request(query: str, map_f: np.ndarray, sat_f: np.ndarray, parsed: ParsedAnswer,
                   mask: np.ndarray) -> tuple[list[np.ndarray], str]:
    """Stage 1's mask and boxes drawn on both images, and its raw answer in the text."""
    boxes = [p.box_xyxy for p in parsed.prompts]
    images = [draw_feedback(map_f, mask, boxes), draw_feedback(sat_f, mask, boxes)]
    boxes_json = parsed.answer_text if parsed.answer_text is not None else answer_json(
        parsed.prompts, with_points=False)
    return images, prompts.stage2_prompt(query, boxes_json)


def _check(cancel: CancelFn | None) -> None:
    if cancel is not None and cancel():
        raise CancelledError("Cancelled by the user.")
