"""The two interfaces the pipeline depends on; backends implement them.

Keeping them this small lets the pipeline, training and tests swap a real transformers
model, a scripted answer list, or a remote server without touching the reasoning code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class GenerationConfig:
    """Decoding settings. Greedy by default; the paper's rollout sampling is
    ``do_sample=True, temperature=0.99, top_p=0.99, top_k=100``."""

    max_new_tokens: int = 1024   # the answers of the released model are far shorter
    min_new_tokens: int = 0      # benchmarks force a length with min = max
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    seed: int = 0                # used only when sampling

    @classmethod
    def paper_sampling(cls, **overrides) -> GenerationConfig:
        return cls(**{"do_sample": True, "temperature": 0.99, "top_p": 0.99, "top_k": 100,
                      "max_new_tokens": 2048, **overrides})


@dataclass
class VLMReply:
    """One answer with what the caller needs to log and time it."""

    text: str
    prompt_tokens: int = 0
    new_tokens: int = 0
    seconds: dict = field(default_factory=dict)   # e.g. {"preprocess": .., "generate": ..}
    token_ids: object = None     # the new tokens (1-D, up to the end token), when available


@runtime_checkable
class VLMBackend(Protocol):
    """Answers one user turn made of images (in order) followed by text."""

    name: str

    def model_frame(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) at which the model sees an image of this size; the model's
        coordinates are absolute pixels of this frame."""

    def generate(self, images: list[np.ndarray], text: str,
                 config: GenerationConfig | None = None, on_step=None) -> VLMReply:
        """``images``: H×W×3 uint8 arrays already at ``model_frame`` size.

        ``on_step(new_tokens) -> bool``, if given, is called while the answer is made (as
        often as the backend can); returning True cancels it with CancelledError. A
        backend that cannot stop midway calls it once, after answering."""


@runtime_checkable
class Segmenter(Protocol):
    """SAM-style promptable segmentation: encode once, predict many times.

    ``set_image`` is the expensive step (the image encoder); ``predict`` reuses its
    embedding, so stage 1, stage 2 and a manual refine of one view encode once.
    """

    name: str
    encode_count: int   # how many times the image encoder has run (tests assert on it)

    def set_image(self, image: np.ndarray) -> None:
        """``image``: H×W×3 uint8 RGB."""

    def predict(self, box_xyxy: np.ndarray | None = None,
                points_xy: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """Mask for one object: ``box_xyxy`` (4,) and ``points_xy`` (N, 2) in pixels of
        the image given to ``set_image``, all points positive. Returns (H×W bool mask,
        score) keeping the best-scoring of the multimask outputs."""

    def reset_image(self) -> None:
        """Forget the current embedding."""

    # Optional: ``get_state() -> dict`` and ``set_state(dict)`` save and restore the
    # current embedding, so a batch of views is encoded once each (SocioReasoner uses
    # them when present).
