"""SAM and SAM2 behind `Segmenter`: encode a view once, then turn box/point prompts into
the best of SAM's three masks. Weights are always read with ``weights_only=True``.

SAM2 uses the ``sam2`` package (Meta's SAM 2 code, ``SAM2ImagePredictor``): it reads the
official ``sam2_hiera_*.pt`` checkpoints as published, with the reference processing.
"""

from __future__ import annotations

import os
import warnings
from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError, ModelNotFoundError
from .hub import HOW_TO_GET, looks_like_hub_id, resolve_file
from .vlm import pick_device, pick_dtype

# SAM (v1) encoder sizes: (embed dim, depth, heads, global-attention blocks, prompt dim,
# decoder MLP dim, decoder heads, IoU-head width). vit_* follow segment_anything.build_sam.
SAM_VARIANTS = {
    "vit_h": (1280, 32, 16, (7, 15, 23, 31), 256, 2048, 8, 256),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23), 256, 2048, 8, 256),
    "vit_b": (768, 12, 12, (2, 5, 8, 11), 256, 2048, 8, 256),
    "tiny": (32, 2, 2, (1,), 32, 64, 4, 32),   # random-init tests only
}

# Hub id -> (config shipped inside the sam2 package, checkpoint file in that repo).
SAM2_HUB = {
    f"facebook/sam2{v}-hiera-{size}": (f"configs/sam2{v}/sam2{v}_hiera_{short}.yaml",
                                       f"sam2{v}_hiera_{size.replace('-', '_')}.pt")
    for v in ("", ".1")
    for size, short in (("tiny", "t"), ("small", "s"), ("base-plus", "b+"), ("large", "l"))
}
DEFAULT_SAM2 = "facebook/sam2-hiera-large"

# A SAM2 model config in the package's own format with small widths (tests): Hiera
# 8/16/32/64 channels, hidden 32, one memory-attention layer. Image size stays 1024 because
# SAM2ImagePredictor assumes 256/128/64 feature maps.
TINY_SAM2_CONFIG = """\
model:
  _target_: sam2.modeling.sam2_base.SAM2Base
  image_encoder:
    _target_: sam2.modeling.backbones.image_encoder.ImageEncoder
    scalp: 1
    trunk: {_target_: sam2.modeling.backbones.hieradet.Hiera, embed_dim: 8, num_heads: 1,
            stages: [1, 1, 2, 1], global_att_blocks: [3], window_pos_embed_bkg_spatial_size: [7, 7]}
    neck:
      _target_: sam2.modeling.backbones.image_encoder.FpnNeck
      position_encoding: {_target_: sam2.modeling.position_encoding.PositionEmbeddingSine,
                          num_pos_feats: 32, normalize: true, scale: null, temperature: 10000}
      d_model: 32
      backbone_channel_list: [64, 32, 16, 8]
      fpn_top_down_levels: [2, 3]
      fpn_interp_model: nearest
  memory_attention:
    _target_: sam2.modeling.memory_attention.MemoryAttention
    d_model: 32
    pos_enc_at_input: true
    num_layers: 1
    layer:
      _target_: sam2.modeling.memory_attention.MemoryAttentionLayer
      activation: relu
      dim_feedforward: 64
      dropout: 0.1
      pos_enc_at_attn: false
      d_model: 32
      pos_enc_at_cross_attn_keys: true
      pos_enc_at_cross_attn_queries: false
      self_attention: {_target_: sam2.modeling.sam.transformer.RoPEAttention, rope_theta: 10000.0,
                       feat_sizes: [64, 64], embedding_dim: 32, num_heads: 1, downsample_rate: 1,
                       dropout: 0.1}
      cross_attention: {_target_: sam2.modeling.sam.transformer.RoPEAttention, rope_theta: 10000.0,
                        feat_sizes: [64, 64], rope_k_repeat: true, embedding_dim: 32, num_heads: 1,
                        downsample_rate: 1, dropout: 0.1, kv_in_dim: 16}
  memory_encoder:
    _target_: sam2.modeling.memory_encoder.MemoryEncoder
    out_dim: 16
    in_dim: 32
    position_encoding: {_target_: sam2.modeling.position_encoding.PositionEmbeddingSine,
                        num_pos_feats: 16, normalize: true, scale: null, temperature: 10000}
    mask_downsampler: {_target_: sam2.modeling.memory_encoder.MaskDownSampler, kernel_size: 3,
                       stride: 2, padding: 1, embed_dim: 32}
    fuser:
      _target_: sam2.modeling.memory_encoder.Fuser
      num_layers: 1
      layer: {_target_: sam2.modeling.memory_encoder.CXBlock, dim: 32, kernel_size: 7, padding: 3,
              layer_scale_init_value: 1.0e-6, use_dwconv: true}
  num_maskmem: 7
  image_size: 1024
  sigmoid_scale_for_mem_enc: 20.0
  sigmoid_bias_for_mem_enc: -10.0
  use_mask_input_as_output_without_sam: true
  directly_add_no_mem_embed: true
  use_high_res_features_in_sam: true
  multimask_output_in_sam: true
  iou_prediction_use_sigmoid: true
  use_obj_ptrs_in_encoder: true
  add_tpos_enc_to_obj_ptrs: false
  only_obj_ptrs_in_the_past_for_eval: true
  pred_obj_scores: true
  pred_obj_scores_mlp: true
  fixed_no_obj_ptr: true
  multimask_output_for_tracking: true
  use_multimask_token_for_obj_ptr: true
  multimask_min_pt_num: 0
  multimask_max_pt_num: 1
  use_mlp_for_obj_ptr_proj: true
  compile_image_encoder: false
"""

# What sam2.build_sam.build_sam2 adds with apply_postprocessing=True (reference behaviour).
_SAM2_POSTPROCESSING = {"dynamic_multimask_via_stability": True,
                        "dynamic_multimask_stability_delta": 0.05,
                        "dynamic_multimask_stability_thresh": 0.98}


def _load_weights(path: Path, key: str | None = None) -> dict:
    """State dict from a checkpoint, never unpickling arbitrary objects."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state[key] if key is not None else state
    except Exception as exc:
        raise ModelLoadError(f"Could not read weights from '{path}': {exc}") from exc


def build_sam_model(variant: str = "vit_h"):
    """An untrained SAM of one size, from segment_anything's modeling classes.

    Parameters
    ----------
    variant : str
        A key of `SAM_VARIANTS`: ``vit_b``, ``vit_l``, ``vit_h`` or ``tiny``.

    Returns
    -------
    segment_anything.modeling.Sam
        In eval mode, on CPU, image size 1024 and patch 16 as released.
    """
    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    if variant not in SAM_VARIANTS:
        raise ValueError(f"unknown SAM variant '{variant}'; choose from {sorted(SAM_VARIANTS)}")
    dim, depth, heads, global_attn, prompt_dim, mlp, dec_heads, iou_dim = SAM_VARIANTS[variant]
    size, patch = 1024, 16
    encoder = ImageEncoderViT(
        depth=depth, embed_dim=dim, img_size=size, mlp_ratio=4, num_heads=heads,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), patch_size=patch, qkv_bias=True,
        use_rel_pos=True, global_attn_indexes=global_attn, window_size=14, out_chans=prompt_dim)
    prompt = PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(size // patch, size // patch),
                           input_image_size=(size, size), mask_in_chans=16)
    decoder = MaskDecoder(
        num_multimask_outputs=3, transformer_dim=prompt_dim, iou_head_depth=3,
        iou_head_hidden_dim=iou_dim,
        transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=mlp,
                                      num_heads=dec_heads))
    return Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder,
               pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


def build_sam2_model(config: str | os.PathLike):
    """An untrained SAM2 from a model config (a yaml file path, or a config path inside the
    sam2 package such as ``configs/sam2/sam2_hiera_l.yaml``), with the reference
    post-processing switches of ``build_sam2(apply_postprocessing=True)``."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    path = Path(os.fspath(config))
    if not path.is_file():
        path = Path(str(resources.files("sam2").joinpath(str(config))))
    if not path.is_file():
        raise ModelNotFoundError(f"No SAM2 config '{config}'. {HOW_TO_GET}")
    cfg = OmegaConf.load(path)
    extra = OmegaConf.create({"model": {"sam_mask_decoder_extra_args": _SAM2_POSTPROCESSING}})
    cfg = OmegaConf.merge(cfg, extra)
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True).eval()


def encoder_dtype(dtype, device: str):
    """The image encoder's compute precision. ``"auto"`` follows the VLM's rule (bf16 on
    CUDA and on CPUs with native bf16, where SAM2-L encoded a 756² view 1.7× faster: 7.45 s
    instead of 12.8 s); other devices (mps), and fp16 on a CPU, stay float32: autocast is
    not tested there."""
    import torch

    if not str(device).startswith(("cuda", "cpu")):
        return torch.float32
    picked = pick_dtype(dtype, device)
    # fp16 autocast on a CPU is slow and untested; bf16 / fp16 / fp32 on CUDA
    return torch.float32 if picked == torch.float16 and str(device).startswith("cpu") else picked


def _as_float32(value):
    """Tensors in a predictor's cached state back in float32 (dicts and lists walked)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() and value.dtype != torch.float32 else value
    if isinstance(value, dict):
        return {k: _as_float32(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_float32(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_as_float32(v) for v in value)
    return value


class _PromptSegmenter:
    """Shared bookkeeping: encode counting, prompt conversion, best-mask choice."""

    name = "segmenter"

    def __init__(self, predictor, device: str, dtype="auto"):
        self.predictor = predictor
        self.device = device
        self.dtype = encoder_dtype(dtype, device)
        self.encode_count = 0
        self._hw: tuple[int, int] | None = None

    def set_image(self, image: np.ndarray) -> None:
        """Run the image encoder on an H×W×3 uint8 RGB image (the expensive step).

        The encoder runs under autocast at `dtype` (the weights stay float32); its features
        are kept in float32, so the prompt decoder, ~50 ms a prompt, runs as published.
        """
        import torch

        image = np.ascontiguousarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be H×W×3 uint8, got {image.shape} {image.dtype}")
        low = self.dtype != torch.float32
        autocast = torch.autocast(str(self.device).split(":")[0], dtype=self.dtype, enabled=low)
        with torch.inference_mode():
            with autocast:
                self.predictor.set_image(image)
            if low:
                for key, value in list(vars(self.predictor).items()):
                    if key != "model":
                        setattr(self.predictor, key, _as_float32(value))
        if str(self.device).startswith("cuda"):
            torch.cuda.synchronize()   # so timings charge the encoder, not the next step
        self._hw = image.shape[:2]
        self.encode_count += 1

    def predict(self, box_xyxy: np.ndarray | None = None,
                points_xy: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """Best of three masks for one object.

        Parameters
        ----------
        box_xyxy : ndarray, shape (4,), optional
            Box in pixels of the image given to `set_image`.
        points_xy : ndarray, shape (N, 2), optional
            Points in the same pixels, all positive.

        Returns
        -------
        mask : ndarray of bool, shape (H, W)
            At the size of the image given to `set_image`.
        score : float
            SAM's predicted IoU of that mask.
        """
        import torch

        if self._hw is None:
            raise RuntimeError("set_image must be called before predict")
        box = None if box_xyxy is None else np.asarray(box_xyxy, np.float32).reshape(4)
        coords = labels = None
        if points_xy is not None and len(points_xy):
            coords = np.asarray(points_xy, np.float32).reshape(-1, 2)
            labels = np.ones(len(coords), np.int32)
        if box is None and coords is None:
            raise ValueError("predict needs a box, points, or both")
        with torch.inference_mode():
            masks, scores, _ = self.predictor.predict(point_coords=coords, point_labels=labels,
                                                      box=box, multimask_output=True)
        best = int(np.argmax(scores))
        return np.asarray(masks[best]).astype(bool), float(scores[best])

    def get_state(self) -> dict:
        """The current image's embedding and sizes, to bring back later with `set_state`
        instead of encoding the image again (batches of views keep one state each)."""
        if self._hw is None:
            raise RuntimeError("set_image must be called before get_state")
        return {"hw": self._hw, "predictor": {k: v for k, v in vars(self.predictor).items()
                                              if k != "model"}}

    def set_state(self, state: dict) -> None:
        """Make a state from `get_state` current again; costs no encoding."""
        vars(self.predictor).update(state["predictor"])
        self._hw = state["hw"]

    def reset_image(self) -> None:
        """Forget the current embedding (frees its memory)."""
        if hasattr(self.predictor, "reset_image"):     # segment_anything
            self.predictor.reset_image()
        else:                                           # sam2
            self.predictor.reset_predictor()
        self._hw = None


class SamBackend(_PromptSegmenter):
    """SAM (segment-anything) from an official ``sam_vit_*.pth`` or a tiny test checkpoint.

    Parameters
    ----------
    checkpoint : str or PathLike
        A state-dict file.
    variant : str
        ``vit_h``, ``vit_l``, ``vit_b`` or ``tiny``; must match the checkpoint.
    device : str
        ``"auto"`` (cuda, mps, cpu) or a torch device string.
    dtype : str
        Image-encoder precision (`encoder_dtype`): ``"auto"``, ``"bf16"`` or ``"fp32"``.
    """

    name = "sam"

    def __init__(self, checkpoint: str | os.PathLike, variant: str = "vit_h", device: str = "auto",
                 dtype="auto"):
        from segment_anything import SamPredictor

        path = Path(os.fspath(checkpoint)).expanduser()
        if not path.is_file() and looks_like_hub_id(str(checkpoint)):
            # e.g. the SAM2 default left in place after switching the segmenter to sam
            raise ModelNotFoundError(
                f"SAM (segment-anything) reads a checkpoint file such as sam_vit_h_4b8939.pth, "
                f"not a hub id ('{checkpoint}'); give that file, or choose the sam2 segmenter "
                "for SAM2 hub ids.")
        if not path.is_file():
            raise ModelNotFoundError(f"No SAM checkpoint at '{checkpoint}'. {HOW_TO_GET}")
        model = build_sam_model(variant)
        try:
            model.load_state_dict(_load_weights(path))
        except RuntimeError as exc:
            raise ModelLoadError(f"'{path}' is not a SAM {variant} checkpoint: {exc}") from exc
        device = pick_device(device)
        super().__init__(SamPredictor(model.to(device)), device, dtype)
        self.name = f"sam:{variant}"


class Sam2Backend(_PromptSegmenter):
    """SAM2 through the ``sam2`` package's ``SAM2ImagePredictor``.

    Parameters
    ----------
    checkpoint_or_id : str or PathLike
        A hub id of `SAM2_HUB` (``facebook/sam2-hiera-large``), an official ``.pt`` file, or a
        folder with ``config.yaml`` and ``model.pt`` (as `save_tiny_sam2` writes).
    variant : str, optional
        For a bare ``.pt`` file: the hub id or config it belongs to (e.g.
        ``"facebook/sam2-hiera-large"`` or ``"configs/sam2/sam2_hiera_l.yaml"``); guessed
        from official file names when omitted.
    device : str
        ``"auto"`` (cuda, mps, cpu) or a torch device string.
    dtype : str
        Image-encoder precision (`encoder_dtype`): ``"auto"``, ``"bf16"`` or ``"fp32"``.
    """

    name = "sam2"

    def __init__(self, checkpoint_or_id: str | os.PathLike = DEFAULT_SAM2,
                 variant: str | None = None, device: str = "auto", dtype="auto"):
        config, weights = self._locate(checkpoint_or_id, variant)
        try:
            from sam2.sam2_image_predictor import SAM2ImagePredictor
        except ImportError as exc:
            raise ModelLoadError(f"The sam2 package is not installed: {exc}") from exc
        try:
            model = build_sam2_model(config)
            model.load_state_dict(_load_weights(weights, key="model"))
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ModelLoadError(f"Could not load SAM2 from '{weights}': {exc}") from exc
        device = pick_device(device)
        with warnings.catch_warnings():   # SAM2Transforms still calls torch.jit.script
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            predictor = SAM2ImagePredictor(model.to(device))
        super().__init__(predictor, device, dtype)
        self.name = f"sam2:{checkpoint_or_id if variant is None else variant}"

    @staticmethod
    def _locate(source, variant: str | None) -> tuple[str | Path, Path]:
        """(config, checkpoint file) for a folder, a ``.pt`` file or a hub id."""
        path = Path(os.fspath(source)).expanduser()
        if path.is_dir():
            cfg, pts = path / "config.yaml", sorted(path.glob("*.pt"), key=lambda p: p.name != "model.pt")
            if not cfg.is_file() or not pts:
                raise ModelNotFoundError(f"'{path}' needs config.yaml and a .pt file. {HOW_TO_GET}")
            return cfg, pts[0]
        if path.is_file():
            if variant is None:
                variant = next((k for k, (_, f) in SAM2_HUB.items() if f == path.name), None)
            if variant is None:
                raise ModelLoadError(f"Cannot tell which SAM2 config '{path.name}' needs; "
                                     "pass variant (e.g. 'facebook/sam2-hiera-large').")
            return SAM2_HUB[variant][0] if variant in SAM2_HUB else variant, path
        name = str(source)
        if name not in SAM2_HUB:
            hint = "Known: " + ", ".join(SAM2_HUB) if looks_like_hub_id(name) else HOW_TO_GET
            raise ModelNotFoundError(f"No SAM2 weights at '{name}'. {hint}")
        config, filename = SAM2_HUB[name]
        return config, resolve_file(name, repo_id=name, filename=filename)


SEGMENTERS = {"sam2": Sam2Backend, "sam": SamBackend}


def load_segmenter(kind: str = "sam2", checkpoint_or_id: str | os.PathLike | None = None,
                   variant: str | None = None, device: str = "auto", dtype="auto"):
    """Build a segmenter by kind.

    Parameters
    ----------
    kind : str
        ``"sam2"`` or ``"sam"``.
    checkpoint_or_id : str or PathLike, optional
        See `Sam2Backend` / `SamBackend`; SAM2 defaults to ``facebook/sam2-hiera-large``.
    variant : str, optional
        SAM size (default ``vit_h``) or SAM2 config for a bare ``.pt`` file.
    device : str
        ``"auto"`` or a torch device string.
    dtype : str
        Image-encoder precision (`encoder_dtype`).

    Returns
    -------
    Segmenter
    """
    if kind not in SEGMENTERS:
        raise ValueError(f"unknown segmenter '{kind}'; choose from {sorted(SEGMENTERS)}")
    if kind == "sam":
        if checkpoint_or_id is None:
            raise ModelNotFoundError(f"SAM needs a checkpoint file. {HOW_TO_GET}")
        return SamBackend(checkpoint_or_id, variant or "vit_h", device, dtype)
    return Sam2Backend(checkpoint_or_id or DEFAULT_SAM2, variant, device, dtype)
