"""Randomly initialised models of any size, saved in the formats the real loaders read.

Tests and benchmarks need models without downloading weights: these builders write a
folder (or checkpoint file) that `TransformersVLM`, `SamBackend` and `Sam2Backend` load
through exactly the code path users hit with the released weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .vlm import MAX_PIXELS, MIN_PIXELS

# The Qwen2.5-VL special tokens, in the order the released tokenizer numbers them.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
    "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)

# Same layout as Qwen's template for images and text (default system turn included), so
# the tiny model sees prompts shaped like the real one's. Written here, not copied.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = (
    "You are given a satellite image and a digital map of the same place. "
    "Find where children study, where people shop, hospitals, parks and universities. "
    "Think first, then answer inside <think></think> and <answer></answer> tags. "
    '[{"bbox_2d": [12, 345, 678, 901], "points": [[23, 45], [67, 89]], "label": "school"}] '
    "0123456789 {}[]():;,.-_\"'?!/ \n\t The quick brown fox jumps over the lazy dog."
)


def build_tiny_tokenizer(vocab_size: int = 512):
    """Byte-level BPE trained in-process on a small corpus, as a Qwen2Tokenizer.

    Parameters
    ----------
    vocab_size : int
        Target size of the BPE vocabulary before the special tokens are appended.

    Returns
    -------
    transformers.Qwen2Tokenizer
        Qwen's pre-tokenizer and special tokens; ``eos`` is ``<|im_end|>``, ``pad`` is
        ``<|endoftext|>`` as in the released Qwen2.5-VL tokenizer.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([_CORPUS] * 8, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    vocab = dict(state["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    for token in QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    extra = [t for t in QWEN_SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")]
    return Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>",
                          pad_token="<|endoftext|>", unk_token=None,
                          extra_special_tokens=extra, model_max_length=32768)


def tiny_qwen2_5_vl_config(tokenizer, hidden: int = 64, layers: int = 2, heads: int = 4,
                           kv_heads: int = 2, vision_depth: int = 2, vision_hidden: int = 32,
                           init_std: float = 0.2):
    """A Qwen2_5_VLConfig with small widths whose token ids match ``tokenizer``.

    Parameters
    ----------
    tokenizer : transformers tokenizer
        Provides the vocabulary size and the ids of the vision/chat special tokens.
    hidden, layers, heads, kv_heads : int
        Text decoder width, depth, query heads and key/value heads.
    vision_depth, vision_hidden : int
        Vision tower depth and width (patch 14, spatial merge 2, as released).
    init_std : float
        Weight init scale; ten times the usual 0.02 so that a random model's greedy output
        depends on its images and text instead of repeating one token.

    Returns
    -------
    transformers.Qwen2_5_VLConfig
    """
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    head_dim = hidden // heads
    half = head_dim // 2                   # mrope splits head_dim/2 into (t, h, w), 16/24/24 in 3B
    mrope = [half // 4, (half - half // 4) // 2, 0]
    mrope[2] = half - mrope[0] - mrope[1]
    vocab = -(-len(tokenizer) // 64) * 64  # padded like the released embedding matrix
    text = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                hidden_act="silu", max_position_embeddings=8192, rms_norm_eps=1e-6,
                use_sliding_window=False, max_window_layers=layers, initializer_range=init_std,
                rope_parameters={"rope_type": "default", "mrope_section": mrope,
                                 "rope_theta": 1_000_000.0},
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    vision = dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                  num_heads=2, hidden_act="silu", patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=112, out_hidden_size=hidden,
                  fullatt_block_indexes=[vision_depth - 1], tokens_per_second=2,
                  initializer_range=init_std)
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                            vision_start_token_id=ids["<|vision_start|>"],
                            vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=True)


def qwen2_5_vl_3b_config():
    """The published Qwen2.5-VL-3B-Instruct architecture, for benchmarks (never built in tests).

    Source: ``config.json`` of huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct, cross-checked
    against transformers 5.24 ``Qwen2_5_VLConfig`` field names (``rope_scaling`` of type
    "mrope" becomes ``rope_parameters`` with ``rope_type`` "default" in transformers 5).

    Returns
    -------
    transformers.Qwen2_5_VLConfig
    """
    from transformers import Qwen2_5_VLConfig

    text = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008,
                num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                hidden_act="silu", max_position_embeddings=128000, rms_norm_eps=1e-6,
                use_sliding_window=False, sliding_window=32768, max_window_layers=70,
                attention_dropout=0.0, initializer_range=0.02,
                rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24],
                                 "rope_theta": 1_000_000.0},
                bos_token_id=151643, eos_token_id=151645, dtype="bfloat16")
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                  hidden_act="silu", in_channels=3, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=112, out_hidden_size=2048,
                  fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2)
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=151655,
                            video_token_id=151656, vision_start_token_id=151652,
                            vision_end_token_id=151653, tie_word_embeddings=True)


def save_random_qwen2_5_vl(out_dir: str | os.PathLike, config=None, seed: int = 0,
                           dtype=None, device: str = "cpu") -> Path:
    """Write a random Qwen2.5-VL of any size (weights, config, tokenizer, processor).

    The tiny in-process tokenizer is used at every size; the config's special-token ids
    are set to its ids, so e.g. the 3B architecture generates (random text) at full cost.

    Parameters
    ----------
    out_dir : str or PathLike
        Created if missing; loadable afterwards with ``TransformersVLM(out_dir)``.
    config : transformers.Qwen2_5_VLConfig, optional
        Architecture, e.g. `qwen2_5_vl_3b_config()`; default `tiny_qwen2_5_vl_config`.
    seed : int
        Seeds the weight initialisation (on CPU equal seeds give equal weights).
    dtype : torch.dtype, optional
        Dtype of the saved weights (default float32).
    device : str
        Where to initialise; ``"cuda"`` makes billion-parameter models quick to build.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    if config is None:
        config = tiny_qwen2_5_vl_config(tokenizer)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    config.image_token_id, config.video_token_id = ids["<|image_pad|>"], ids["<|video_pad|>"]
    config.vision_start_token_id = ids["<|vision_start|>"]
    config.vision_end_token_id = ids["<|vision_end|>"]
    text = config.get_text_config()
    text.bos_token_id, text.eos_token_id = ids["<|endoftext|>"], ids["<|im_end|>"]
    text.pad_token_id = ids["<|endoftext|>"]
    if text.vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {text.vocab_size} < tokenizer size {len(tokenizer)}")
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    if dtype is not None:
        model = model.to(dtype)
    pad = ids["<|endoftext|>"]
    model.generation_config = GenerationConfig(bos_token_id=pad, pad_token_id=pad,
                                               eos_token_id=[ids["<|im_end|>"], pad])
    model.save_pretrained(out)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS),
        tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(),
        chat_template=TINY_CHAT_TEMPLATE)
    processor.save_pretrained(out)
    return out


def save_tiny_qwen2_5_vl(out_dir: str | os.PathLike, seed: int = 0, **sizes) -> Path:
    """The tiny test VLM (CPU-fast); ``sizes`` go to `tiny_qwen2_5_vl_config`.

    Returns
    -------
    pathlib.Path
        ``out_dir``, loadable with ``TransformersVLM(out_dir)``.
    """
    config = tiny_qwen2_5_vl_config(build_tiny_tokenizer(), **sizes) if sizes else None
    return save_random_qwen2_5_vl(out_dir, config=config, seed=seed)


def save_tiny_sam(path: str | os.PathLike, seed: int = 0) -> Path:
    """Checkpoint file for ``SamBackend(path, variant="tiny")``: a plain state dict.

    Parameters
    ----------
    path : str or PathLike
        Output ``.pth`` file (same format as the official ``sam_vit_*.pth``).
    seed : int
        Seeds the weight initialisation.

    Returns
    -------
    pathlib.Path
    """
    import torch

    from .segmenter import build_sam_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sam_model("tiny")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    return out


def save_tiny_sam2(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Folder for ``Sam2Backend(out_dir)``: ``config.yaml`` plus ``model.pt``.

    The config is a SAM2 model config with small widths in the package's own format; the
    checkpoint is ``{"model": state_dict}`` like the official ``sam2_hiera_*.pt``.

    Parameters
    ----------
    out_dir : str or PathLike
        Created if missing.
    seed : int
        Seeds the weight initialisation.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    import torch

    from .segmenter import TINY_SAM2_CONFIG, build_sam2_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(TINY_SAM2_CONFIG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sam2_model(out / "config.yaml")
    torch.save({"model": model.state_dict()}, out / "model.pt")
    return out
