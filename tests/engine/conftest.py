"""Shared fixtures for the engine tests: tiny random models built once per session, so
the real loaders run without downloading anything."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub: no test may reach the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory):
    """Folder with a random tiny Qwen2.5-VL (weights, tokenizer, processor)."""
    from socio_reasoner.models.random_init import save_tiny_qwen2_5_vl

    return save_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_vlm"), seed=0)


@pytest.fixture(scope="session")
def tiny_vlm(tiny_vlm_dir):
    """The tiny VLM loaded on CPU through `TransformersVLM`, shared by tests that only
    generate (loading costs little, but building it once keeps the suite quick)."""
    from socio_reasoner.models.vlm import TransformersVLM

    return TransformersVLM(tiny_vlm_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_sam_checkpoint(tmp_path_factory):
    """State-dict file for ``SamBackend(path, variant="tiny")``."""
    from socio_reasoner.models.random_init import save_tiny_sam

    return save_tiny_sam(tmp_path_factory.mktemp("tiny_sam") / "sam_tiny.pth", seed=0)


@pytest.fixture(scope="session")
def tiny_sam2(tmp_path_factory):
    """Folder (config.yaml + model.pt) for ``Sam2Backend(path)``."""
    from socio_reasoner.models.random_init import save_tiny_sam2

    return save_tiny_sam2(tmp_path_factory.mktemp("tiny_sam2"), seed=0)


TAUGHT_ANSWER = '<think>a school</think><answer>[{"bbox_2d": [40, 40, 200, 200]}]</answer>'


@pytest.fixture(scope="session")
def taught_vlm_dir(tmp_path_factory, tiny_vlm_dir):
    """The tiny VLM overfit on one answer: its samples come near the answer format, so
    rewards vary within a GRPO group and polygons come out of a real model."""
    from socio_reasoner.data.synthetic import make_synthetic_sample
    from socio_reasoner.train.sft import teach_fixed_answer

    out = tmp_path_factory.mktemp("taught_vlm")
    # the train split the GRPO tests use (write_synthetic_socioseg, 128 px, seed 0)
    samples = [make_synthetic_sample("train", k, size=128) for k in range(3)]
    teach_fixed_answer(tiny_vlm_dir, out, TAUGHT_ANSWER, samples, steps=60, lr=5e-3)
    return out
