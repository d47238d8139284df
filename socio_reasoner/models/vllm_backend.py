"""Qwen2.5-VL through vLLM, behind `VLMBackend`: for evaluations and large batch runs on
CUDA machines where vLLM is installed (``pip install vllm``; its wheels pin their own
torch, so give it its own environment).

Requests are built exactly as `TransformersVLM` builds them: the same chat template and
the images already at the model frame, so vLLM's processor (the same Hugging Face one,
with the same pixel bounds) leaves them as they are and the answers' pixel coordinates
mean the same. Experimental: vLLM could not be installed on any machine this project is
tested on (the development VM has no GPU; the lent GPU machine has no network and vLLM's
wheels are larger than what a call may carry), so the request and sampling translation
are tested, and the generation itself only where vLLM is installed
(``tests/engine/test_vllm.py``).
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..errors import CancelledError, ModelLoadError
from ..frames import QWEN_MAX_PIXELS as MAX_PIXELS
from ..frames import QWEN_MIN_PIXELS as MIN_PIXELS
from .base import GenerationConfig, VLMReply
from .hub import resolve_model_dir
from .vlm import TransformersVLM, chat_prompt, end_token_ids, frame_image, pick_dtype

IMAGES_PER_PROMPT = 2   # map and satellite


def sampling_kwargs(config: GenerationConfig, index: int = 0,
                    stop_token_ids: list[int] | None = None) -> dict:
    """``vllm.SamplingParams`` arguments for one request of a batch. Greedy is
    temperature 0; sampled requests get seeds ``seed + index``, so identical requests of
    a batch (a GRPO group) differ, and a batch is reproducible. ``stop_token_ids``: the
    end tokens the transformers backend stops at (the model's generation config)."""
    kwargs = {"max_tokens": config.max_new_tokens, "min_tokens": config.min_new_tokens,
              "repetition_penalty": 1.0, "skip_special_tokens": True}
    if stop_token_ids:
        kwargs["stop_token_ids"] = list(stop_token_ids)
    if config.do_sample:
        kwargs.update(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
                      seed=config.seed + index)
    else:
        kwargs.update(temperature=0.0)
    return kwargs


def vllm_prompt(processor, images: list[np.ndarray], text: str, model_frame) -> dict:
    """One vLLM prompt: the chat template's text (one image placeholder per image, which
    vLLM expands itself) and the images, checked to be at the model frame."""
    pil = [frame_image(img, model_frame) for img in images]
    return {"prompt": chat_prompt(processor, len(pil), text), "multi_modal_data": {"image": pil}}


class VLLMVLM:
    """Parameters as `TransformersVLM` (no ``device``: vLLM takes the visible GPU), plus
    vLLM's ``gpu_memory_utilization`` and ``max_model_len``."""

    def __init__(self, model: str | os.PathLike, dtype: str = "bfloat16",
                 min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS,
                 revision: str | None = None, gpu_memory_utilization: float = 0.85,
                 max_model_len: int = 8192, seed: int = 0):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ModelLoadError(
                "The vLLM backend needs vLLM in the engine environment: `pip install vllm` "
                "on a CUDA machine (its wheels pin their own torch: use a separate "
                "environment), or use the transformers backend.") from exc
        path = resolve_model_dir(model, revision=revision)
        self.name = f"vllm:{model}"
        self.device = "cuda"        # vLLM takes the visible GPU
        self.min_pixels, self.max_pixels = int(min_pixels), int(max_pixels)
        # the names TransformersVLM takes; vLLM runs on CUDA, where auto is bf16
        dtype = str(pick_dtype(dtype, "cuda")).removeprefix("torch.")
        if dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"Unknown dtype {dtype!r} for vLLM; use auto, bf16, fp16 or fp32.")
        try:
            from transformers import AutoProcessor
            from transformers import GenerationConfig as HFGenerationConfig

            self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=False)
            self.stop_token_ids = end_token_ids(HFGenerationConfig.from_pretrained(path),
                                                self.processor.tokenizer)
            self.llm = LLM(
                model=str(path), dtype=dtype,
                trust_remote_code=False, seed=seed, max_model_len=max_model_len,
                gpu_memory_utilization=gpu_memory_utilization,
                limit_mm_per_prompt={"image": IMAGES_PER_PROMPT, "video": 0},
                mm_processor_kwargs={"min_pixels": self.min_pixels, "max_pixels": self.max_pixels},
                generation_config="vllm")
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"vLLM could not load '{path}': {exc}") from exc

    model_frame = TransformersVLM.model_frame    # the same processor bounds, the same frame

    def request(self, images: list[np.ndarray], text: str) -> dict:
        return vllm_prompt(self.processor, images, text, self.model_frame)

    def batch_generate(self, requests: list[tuple[list[np.ndarray], str]],
                       config: GenerationConfig | None = None, on_step=None) -> list[VLMReply]:
        """All requests in one call; vLLM schedules them in continuous batches. It cannot
        be stopped midway: ``on_step`` is asked once, after the answers."""
        from vllm import SamplingParams

        config = config or GenerationConfig()
        t0 = time.perf_counter()
        prompts = [self.request(images, text) for images, text in requests]
        params = [SamplingParams(**sampling_kwargs(config, i, self.stop_token_ids))
                  for i in range(len(prompts))]
        t1 = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        t2 = time.perf_counter()
        if on_step is not None and on_step(max(len(o.outputs[0].token_ids) for o in outputs)):
            raise CancelledError("Cancelled by the user.")
        seconds = {"preprocess": t1 - t0, "generate": t2 - t1}
        return [VLMReply(text=o.outputs[0].text, prompt_tokens=len(o.prompt_token_ids or ()),
                         new_tokens=len(o.outputs[0].token_ids), seconds=seconds,
                         token_ids=list(o.outputs[0].token_ids)) for o in outputs]

    def generate(self, images: list[np.ndarray], text: str,
                 config: GenerationConfig | None = None, on_step=None) -> VLMReply:
        return self.batch_generate([(list(images), text)], config, on_step)[0]
