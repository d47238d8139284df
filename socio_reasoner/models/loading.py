"""Build a ``SocioReasoner`` from a plain model spec (what the worker's ``load`` receives).

Spec keys: ``vlm`` (hub id, local folder, or ``"scripted"`` with ``vlm_answers``),
``vlm_backend`` (``"transformers"``, the default, or ``"vllm"``), ``segmenter`` (``"sam2"``, ``"sam"`` or ``"box"``), ``segmenter_checkpoint`` (hub id,
folder or file), ``segmenter_variant``, ``device`` and ``dtype`` (both models' compute precision).
"""

from __future__ import annotations

from ..pipeline import SocioReasoner


def build_vlm(spec: dict):
    name = spec.get("vlm")
    if name == "scripted":
        from .scripted import ScriptedVLM

        return ScriptedVLM(list(spec.get("vlm_answers") or []), float(spec.get("vlm_delay_s", 0)))
    backend = spec.get("vlm_backend", "transformers")
    if backend == "vllm":
        from .vllm_backend import VLLMVLM

        return VLLMVLM(name, dtype=spec.get("dtype", "auto"),
                       gpu_memory_utilization=float(spec.get("gpu_memory_utilization", 0.85)))
    if backend != "transformers":
        raise ValueError(f"Unknown vlm_backend {backend!r}; use transformers or vllm.")
    from .vlm import TransformersVLM

    return TransformersVLM(name, device=spec.get("device", "auto"), dtype=spec.get("dtype", "auto"),
                           compile_decode=bool(spec.get("compile_decode", False)))


def build_segmenter(spec: dict):
    kind = spec.get("segmenter", "sam2")
    if kind == "box":
        from .scripted import BoxSegmenter

        return BoxSegmenter()
    from .segmenter import load_segmenter

    return load_segmenter(kind, spec.get("segmenter_checkpoint"), spec.get("segmenter_variant"),
                          device=spec.get("device", "auto"), dtype=spec.get("dtype", "auto"))


def build_reasoner(spec: dict) -> SocioReasoner:
    """Load both models; the VLM first, since a missing VLM is the likelier error."""
    return SocioReasoner(build_vlm(spec), build_segmenter(spec))
