"""Qwen2.5-VL through transformers, behind `VLMBackend`: one user turn of images then text.

torch and transformers are imported when a model is built, never at module import, so the
pipeline can import this module cheaply.
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np

from ..errors import CancelledError, ModelLoadError
from ..frames import QWEN_FACTOR as FACTOR
from ..frames import QWEN_MAX_PIXELS as MAX_PIXELS
from ..frames import QWEN_MIN_PIXELS as MIN_PIXELS
from ..frames import smart_resize
from .base import GenerationConfig, VLMReply
from .hub import resolve_model_dir

PATCH = 14   # Qwen2.5-VL vision patch side in pixels; FACTOR = PATCH × 2 (spatial merge)
STATIC_CACHE_STEP = 4096   # compile_decode: static KV cache lengths are multiples of this



def pick_device(device: str = "auto") -> str:
    """``"auto"`` means cuda, then mps, then cpu; anything else is returned unchanged."""
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); there bf16 was
    1.5× (prefill) to 2× (decode) faster than fp32 for the 3B, elsewhere it is slower."""
    try:
        with open(cpuinfo) as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(dtype, device: str):
    """``"auto"``: bfloat16 on GPUs (cuda, mps) and on CPUs with native bf16, else float32;
    strings name torch dtypes."""
    import torch

    if dtype in (None, "auto"):
        if device.startswith("cpu"):
            return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
        return torch.bfloat16
    if isinstance(dtype, str):
        name = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, dtype)
        if not isinstance(getattr(torch, name, None), torch.dtype):
            raise ValueError(f"Unknown dtype {dtype!r}; use auto, bf16, fp16 or fp32.")
        return getattr(torch, name)
    return dtype


def end_token_ids(generation_config, tokenizer) -> list[int]:
    """The tokens an answer ends at: the model's generation config's, else the
    tokenizer's end token (both backends stop at the same ones)."""
    eos = generation_config.eos_token_id
    eos = tokenizer.eos_token_id if eos is None else eos
    return [eos] if isinstance(eos, int) else list(eos)


def chat_prompt(processor, n_images: int, text: str) -> str:
    """One user turn of ``n_images`` images, then ``text``, in the model's chat template."""
    content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
    return processor.apply_chat_template([{"role": "user", "content": content}],
                                         tokenize=False, add_generation_prompt=True)


def frame_image(img, model_frame):
    """``img`` as a PIL image, refused unless H×W×3 uint8 already at its model frame (the
    model's coordinates are pixels of that frame, so nothing may resize it again)."""
    from PIL import Image

    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"images must be H×W×3 uint8, got {arr.shape} {arr.dtype}")
    h, w = arr.shape[:2]
    if model_frame(w, h) != (w, h):
        raise ValueError(f"image {w}x{h} is not at model frame {model_frame(w, h)}")
    return Image.fromarray(arr)


class TransformersVLM:
    """Qwen2.5-VL (or a same-format model) loaded from a folder or a hub id.

    Parameters
    ----------
    model : str or PathLike
        Local folder or hub id (``"vvangfaye/SocioReasoner-3B"``); hub ids use the cache
        and download with a progress bar unless ``HF_HUB_OFFLINE=1``.
    device : str
        ``"auto"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"cpu"``.
    dtype : str or torch.dtype
        ``"auto"`` (bf16 on GPUs and on CPUs with native bf16, else fp32) or e.g.
        ``"float16"``.
    min_pixels, max_pixels : int
        Processor area bounds; they define `model_frame`.
    attn_implementation : str
        Passed to transformers (``"sdpa"``; ``"flash_attention_2"`` where installed).
    revision : str, optional
        Hub revision.
    compile_decode : bool
        CUDA or CPU, off by default: decode with a static KV cache and a ``torch.compile``'d forward,
        which removes the per-token Python/launch overhead (on CUDA with CUDA graphs,
        transformers' ``reduce-overhead`` mode; elsewhere inductor's default mode). The
        prefill stays eager. The cache is sized in steps of `STATIC_CACHE_STEP` tokens so
        that prompts of different lengths reuse one compiled graph; the first call of each
        size and batch size pays the compilation. On an H100 decode went from 26.6 to
        9.0 ms/token; on a 2-core CPU it was slower (89 vs 73 ms/token, the mid-size bench
        model in bf16: attention spans the whole static cache), so it stays opt-in.
    """

    def __init__(self, model: str | os.PathLike, device: str = "auto", dtype="auto",
                 min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS,
                 attn_implementation: str = "sdpa", revision: str | None = None,
                 compile_decode: bool = False):
        path = resolve_model_dir(model, revision=revision)
        self.name = f"transformers:{model}"
        self.min_pixels, self.max_pixels = int(min_pixels), int(max_pixels)
        self.device = pick_device(device)
        if compile_decode and not self.device.startswith(("cuda", "cpu")):
            raise ValueError(f"compile_decode runs on CUDA and CPU only, not on {self.device}.")
        try:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self._torch = torch
            self.dtype = pick_dtype(dtype, self.device)
            self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=False)
            self.processor.image_processor.size = {"shortest_edge": self.min_pixels,
                                                   "longest_edge": self.max_pixels}
            self.model = AutoModelForImageTextToText.from_pretrained(
                path, dtype=self.dtype, trust_remote_code=False,
                attn_implementation=attn_implementation).to(self.device).eval()
        except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
            raise ModelLoadError(f"Could not load the VLM from '{path}': {exc}") from exc
        tok = self.processor.tokenizer
        self._eos = end_token_ids(self.model.generation_config, tok)
        self._pad = tok.pad_token_id if tok.pad_token_id is not None else self._eos[0]
        # tokens that stand for images: an answer containing one could not be scored again
        # (the model would look for image features for it), so they are never sampled
        cfg = self.model.config
        self._vision_tokens = sorted({t for t in (getattr(cfg, k, None) for k in (
            "image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"))
            if t is not None})
        self.compile_decode = bool(compile_decode)
        # training with sharded weights (FSDP, ZeRO-3) sets it: every process then keeps
        # stepping until all have finished, since each step gathers shards collectively
        self.synced_gpus: bool | None = None
        # ... and turns this off: FSDP keeps its gathered buffers, and tensors made under
        # inference mode could not be updated by the training pass afterwards
        self.inference_mode = True

    def model_frame(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the model sees; a 768×768 tile becomes 756×756."""
        h, w = smart_resize(height, width, FACTOR, self.min_pixels, self.max_pixels)
        return w, h

    def _gen_kwargs(self, config: GenerationConfig, prompt_len: int = 0) -> dict:
        """A complete transformers generation config, so hub defaults (e.g. repetition
        penalty, sampling) never leak into what the caller asked for."""
        from transformers import GenerationConfig as HFGenerationConfig

        args = dict(max_new_tokens=config.max_new_tokens, min_new_tokens=config.min_new_tokens,
                    do_sample=config.do_sample, eos_token_id=self._eos, pad_token_id=self._pad,
                    repetition_penalty=1.0, num_beams=1, use_cache=True,
                    suppress_tokens=self._vision_tokens or None)
        if config.do_sample:
            args.update(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k)
        if self.compile_decode:
            need = prompt_len + config.max_new_tokens
            step = STATIC_CACHE_STEP
            args.update(cache_implementation="static", max_cache_len=-(-need // step) * step)
        gen = HFGenerationConfig(**args)
        if self.compile_decode and not self.device.startswith("cuda"):
            from transformers import CompileConfig

            # transformers compiles by itself only on accelerators; this flag (private, but
            # the one its own CPU tests use) asks for it elsewhere. CUDA graphs are CUDA-only.
            gen.compile_config = CompileConfig(mode="default")
            gen.compile_config._compile_all_devices = True
        return {"generation_config": gen}

    def prepare(self, requests: list[tuple[list[np.ndarray], str]]):
        """Chat template + processor for a batch; checks every image is already in frame."""
        prompts, flat, grids = [], [], []
        for images, text in requests:
            pil = [frame_image(img, self.model_frame) for img in images]
            flat += pil
            grids += [[1, im.height // PATCH, im.width // PATCH] for im in pil]
            prompts.append(chat_prompt(self.processor, len(pil), text))
        inputs = self.processor(text=prompts, images=flat or None, do_resize=False, padding=True,
                                padding_side="left", return_tensors="pt")
        if flat:
            got = inputs["image_grid_thw"].tolist()
            if got != grids:
                raise RuntimeError(f"processor resized the images: grids {got}, expected {grids}")
        return inputs.to(self.device)

    def _count_new(self, row) -> int:
        """New tokens up to and including the first end token (padding after it is not
        generated text)."""
        ends = [i for i, t in enumerate(row.tolist()) if t in self._eos]
        return ends[0] + 1 if ends else len(row)

    def batch_generate(self, requests: list[tuple[list[np.ndarray], str]],
                       config: GenerationConfig | None = None, return_inputs: bool = False,
                       on_step=None):
        """Answer several independent turns in one left-padded batch.

        Parameters
        ----------
        requests : list of (images, text)
            Each ``images`` is a list of H×W×3 uint8 arrays at `model_frame` size.
        config : GenerationConfig, optional
            Greedy by default; sampling is seeded with ``config.seed``.
        return_inputs : bool
            Also return the processor's batch (training scores the sampled tokens
            against exactly these tensors).
        on_step : callable, optional
            ``on_step(new_tokens) -> bool``, called before each layer of the prompt's
            forward pass (with 0) and after each new token; True cancels: the call raises
            CancelledError within one layer or token (a CPU prefill takes a minute).

        Returns
        -------
        list of VLMReply
            One per request; ``seconds`` holds the batch's wall times, ``token_ids`` the
            new tokens. With ``return_inputs``: (replies, inputs).
        """
        torch = self._torch
        config = config or GenerationConfig()
        t0 = time.perf_counter()
        inputs = self.prepare(requests)
        t1 = time.perf_counter()
        no_grad = torch.inference_mode() if self.inference_mode else torch.no_grad()
        prompt_len = inputs["input_ids"].shape[1]
        watch = _Watch(self.model, on_step, prompt_len) if on_step is not None else None
        with torch.random.fork_rng(devices=self._rng_devices()), no_grad, self._attention_kernels():
            torch.manual_seed(config.seed)
            try:
                out = self.model.generate(
                    **inputs, synced_gpus=self.synced_gpus,
                    stopping_criteria=[watch] if watch is not None else None,
                    **self._gen_kwargs(config, prompt_len=prompt_len))
            finally:
                if watch is not None:
                    watch.remove_hooks()
        if watch is not None and watch.cancelled:
            raise CancelledError("Cancelled by the user.")
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        replies = []
        for i in range(out.shape[0]):
            new = out[i, prompt_len:]
            n = self._count_new(new)
            ids = new[:n].detach().cpu()
            text = self.processor.tokenizer.decode(ids, skip_special_tokens=True)
            replies.append(VLMReply(text=text, new_tokens=n,
                                    prompt_tokens=int(inputs["attention_mask"][i].sum()),
                                    seconds={"preprocess": t1 - t0, "generate": t2 - t1},
                                    token_ids=ids))
        return (replies, inputs) if return_inputs else replies

    def generate(self, images: list[np.ndarray], text: str,
                 config: GenerationConfig | None = None, on_step=None) -> VLMReply:
        """One user turn: ``images`` (H×W×3 uint8, already at `model_frame` size) in order,
        then ``text``. Returns the decoded new text without special tokens. ``on_step``:
        see `batch_generate`."""
        return self.batch_generate([(list(images), text)], config, on_step=on_step)[0]

    def _attention_kernels(self):
        """On CUDA, SDPA without its cuDNN kernel: cuDNN builds a plan per new sequence
        length, which made the first 256-token answer ~3x slower on an H100 (every decode
        step is a new length); flash / memory-efficient kernels have no such warm-up."""
        if not self.device.startswith("cuda"):
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                            SDPBackend.MATH])

    def _rng_devices(self) -> list:
        """Devices whose RNG a seeded call forks, so seeding never disturbs the caller."""
        if self.device.startswith("cuda"):
            idx = self._torch.device(self.device).index
            return [idx if idx is not None else self._torch.cuda.current_device()]
        return []


class _Watch:
    """Progress and cancel inside one ``generate``: a stopping criterion counts the new
    tokens after each step, and until the first step, pre-hooks on every layer of the
    model's layer lists (vision blocks, decoder layers) let a long prompt pass stop
    between layers. The hooks go once decoding starts, so a compiled decode step never
    sees them."""

    def __init__(self, model, on_step, prompt_len: int):
        import torch

        self.on_step, self.prompt_len, self.cancelled = on_step, prompt_len, False
        self._hooks = [layer.register_forward_pre_hook(self._before_layer)
                       for module in model.modules() if isinstance(module, torch.nn.ModuleList)
                       for layer in module]

    def _before_layer(self, module, args):
        if self.on_step(0):
            raise CancelledError("Cancelled by the user.")

    def remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        self.remove_hooks()
        stop = self.cancelled = bool(self.on_step(input_ids.shape[1] - self.prompt_len))
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)
