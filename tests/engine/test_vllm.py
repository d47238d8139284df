"""The vLLM backend: what can run without vLLM (sampling translation, prompts, the error
when it is missing), and its answers against the transformers backend where vLLM and a
GPU are present (skipped otherwise: vLLM is not installable on this project's machines)."""

import importlib.util

import numpy as np
import pytest

from socio_reasoner import prompts
from socio_reasoner.errors import ModelLoadError
from socio_reasoner.models.base import GenerationConfig
from socio_reasoner.models.loading import build_vlm
from socio_reasoner.models.vllm_backend import VLLMVLM, sampling_kwargs, vllm_prompt

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_sampling_translation():
    greedy = sampling_kwargs(GenerationConfig(max_new_tokens=64))
    assert greedy == {"max_tokens": 64, "min_tokens": 0, "repetition_penalty": 1.0,
                      "skip_special_tokens": True, "temperature": 0.0}
    paper = GenerationConfig.paper_sampling(seed=7)
    a, b = sampling_kwargs(paper, 0), sampling_kwargs(paper, 1)
    assert (a["temperature"], a["top_p"], a["top_k"], a["max_tokens"]) == (0.99, 0.99, 100, 2048)
    assert (a["seed"], b["seed"]) == (7, 8)      # a group's identical requests differ
    assert sampling_kwargs(paper, 0, [151645, 151643])["stop_token_ids"] == [151645, 151643]


def test_prompt_has_one_placeholder_per_image_and_frame_images(tiny_vlm):
    frame = tiny_vlm.model_frame(768, 768)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (frame[1], frame[0], 3), dtype=np.uint8) for _ in range(2)]
    req = vllm_prompt(tiny_vlm.processor, images, prompts.stage1_prompt("school"),
                      tiny_vlm.model_frame)
    text = req["prompt"]
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    assert text.index("<|image_pad|>") < text.index("school")      # images first, map first
    assert [np.array_equal(np.asarray(p), i) for p, i in
            zip(req["multi_modal_data"]["image"], images, strict=True)] == [True, True]
    with pytest.raises(ValueError, match="not at model frame"):
        vllm_prompt(tiny_vlm.processor, [np.zeros((768, 768, 3), np.uint8)], "x",
                    tiny_vlm.model_frame)


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed")
def test_missing_vllm_is_a_clear_load_error(tiny_vlm_dir):
    with pytest.raises(ModelLoadError, match="pip install vllm"):
        VLLMVLM(tiny_vlm_dir)
    with pytest.raises(ModelLoadError, match="pip install vllm"):
        build_vlm({"vlm": str(tiny_vlm_dir), "vlm_backend": "vllm"})
    with pytest.raises(ValueError, match="Unknown vlm_backend"):
        build_vlm({"vlm": str(tiny_vlm_dir), "vlm_backend": "onnx"})


@pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed")
def test_vllm_answers_as_transformers_does(tiny_vlm_dir):
    import torch

    from socio_reasoner.models.vlm import TransformersVLM

    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU")
    hf = TransformersVLM(tiny_vlm_dir, device="cuda", dtype="bfloat16")
    fast = VLLMVLM(tiny_vlm_dir, gpu_memory_utilization=0.3)
    w, h = hf.model_frame(768, 768)
    rng = np.random.default_rng(1)
    requests = [([rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2)],
                 prompts.stage1_prompt(q)) for q in ("school", "park", "hospital")]
    config = GenerationConfig(max_new_tokens=16)
    got = [r.token_ids for r in fast.batch_generate(requests, config)]
    want = [r.token_ids.tolist() for r in hf.batch_generate(requests, config)]
    assert [g[:4] for g in got] == [x[:4] for x in want]    # bf16 kernels differ later on
