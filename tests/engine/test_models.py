"""Model backends on tiny random weights: the real loaders, decoding controls, SAM/SAM2
prompting, and proof that weights come from the files given (nothing downloaded)."""

from __future__ import annotations

import numpy as np
import pytest

from socio_reasoner.errors import ModelLoadError, ModelNotFoundError
from socio_reasoner.models.base import GenerationConfig, Segmenter, VLMBackend

PROMPT = 'Find where children study. Answer with [{"bbox_2d": [x1, y1, x2, y2]}].'


def _pair(seed: int = 0, size: int = 756) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(2)]


# --- VLM -------------------------------------------------------------------------------

def test_model_frame_matches_qwen_rule(tiny_vlm):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as ref

    from socio_reasoner.models.vlm import MAX_PIXELS, MIN_PIXELS

    assert isinstance(tiny_vlm, VLMBackend)
    assert tiny_vlm.model_frame(768, 768) == (756, 756)
    for w, h in [(768, 768), (1000, 600), (3000, 3000), (100, 100), (513, 1999), (1344, 1344)]:
        rh, rw = ref(h, w, factor=28, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
        assert tiny_vlm.model_frame(w, h) == (rw, rh)


def test_tiny_config_token_ids_match_tokenizer(tiny_vlm):
    cfg, tok = tiny_vlm.model.config, tiny_vlm.processor.tokenizer
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert tok.eos_token == "<|im_end|>" and cfg.get_text_config().vocab_size >= len(tok)


def test_greedy_is_repeatable_and_input_dependent(tiny_vlm):
    cfg = GenerationConfig(max_new_tokens=16)
    a = tiny_vlm.generate(_pair(0), PROMPT, cfg)
    b = tiny_vlm.generate(_pair(0), PROMPT, cfg)
    assert a.text == b.text and a.new_tokens == b.new_tokens > 0
    # two 756² images are 2 × 27² merged tokens, plus the chat text
    assert a.prompt_tokens > 2 * 27 * 27
    assert set(a.seconds) == {"preprocess", "generate"}
    assert tiny_vlm.generate(_pair(1), PROMPT, cfg).text != a.text


def test_seeded_sampling_is_reproducible(tiny_vlm):
    cfg = GenerationConfig(do_sample=True, temperature=0.99, top_p=0.99, top_k=100,
                           max_new_tokens=16, seed=7)
    first = tiny_vlm.generate(_pair(0), PROMPT, cfg).text
    assert tiny_vlm.generate(_pair(0), PROMPT, cfg).text == first
    cfg.seed = 8
    assert tiny_vlm.generate(_pair(0), PROMPT, cfg).text != first


def test_min_new_tokens_forces_length(tiny_vlm):
    reply = tiny_vlm.generate(_pair(0), PROMPT, GenerationConfig(min_new_tokens=24,
                                                                max_new_tokens=24))
    assert reply.new_tokens == 24


def test_batch_matches_single(tiny_vlm):
    cfg = GenerationConfig(max_new_tokens=12)
    small = [np.full((504, 672, 3), 90, np.uint8)]
    singles = [tiny_vlm.generate(_pair(0), PROMPT, cfg), tiny_vlm.generate(small, "hi", cfg)]
    batch = tiny_vlm.batch_generate([(_pair(0), PROMPT), (small, "hi")], cfg)
    assert [r.text for r in batch] == [r.text for r in singles]
    assert [r.prompt_tokens for r in batch] == [r.prompt_tokens for r in singles]


def test_watching_an_answer_changes_nothing_in_it(tiny_vlm):
    """on_step sees every token of a batch's answers and leaves them as they were; after
    a cancel the model answers again as before."""
    from socio_reasoner.errors import CancelledError

    cfg = GenerationConfig(max_new_tokens=10, min_new_tokens=10)
    small = [np.full((504, 672, 3), 90, np.uint8)]
    requests = [(_pair(0), PROMPT), (small, "hi")]
    plain = tiny_vlm.batch_generate(requests, cfg)
    steps = []
    watched = tiny_vlm.batch_generate(requests, cfg, on_step=lambda n: steps.append(n) or False)
    assert [r.token_ids.tolist() for r in watched] == [r.token_ids.tolist() for r in plain]
    assert [n for n in steps if n] == list(range(1, 11)) and steps[0] == 0   # prefill first
    for stop in (lambda n: n >= 3, lambda n: True):        # while decoding; in the prompt's pass
        with pytest.raises(CancelledError):
            tiny_vlm.batch_generate(requests, cfg, on_step=stop)
        again = tiny_vlm.batch_generate(requests, cfg)
        assert [r.token_ids.tolist() for r in again] == [r.token_ids.tolist() for r in plain]


def test_images_must_already_be_in_model_frame(tiny_vlm):
    with pytest.raises(ValueError, match="model frame"):
        tiny_vlm.generate(_pair(0, size=768), PROMPT)


def test_offline_unknown_model_says_how_to_get_it(tmp_path):
    from socio_reasoner.models.vlm import TransformersVLM

    with pytest.raises(ModelNotFoundError, match="socio-reasoner download"):
        TransformersVLM("nobody-here/no-such-model-xyz")
    with pytest.raises(ModelNotFoundError, match="local copy"):
        TransformersVLM(tmp_path / "missing" / "folder")
    with pytest.raises(ModelLoadError):
        TransformersVLM(tmp_path)                     # a folder without a model in it


def test_3b_config_has_published_values():
    from socio_reasoner.models.random_init import qwen2_5_vl_3b_config

    cfg = qwen2_5_vl_3b_config()
    text, vision = cfg.get_text_config(), cfg.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads,
            text.num_key_value_heads, text.intermediate_size, text.vocab_size) == \
        (2048, 36, 16, 2, 11008, 151936)
    assert (vision.depth, vision.hidden_size, vision.out_hidden_size, vision.num_heads) == \
        (32, 1280, 2048, 16)
    assert cfg.image_token_id == 151655 and cfg.tie_word_embeddings


# --- segmenters ------------------------------------------------------------------------

@pytest.fixture(params=["sam", "sam2"])
def seg_source(request, tiny_sam_checkpoint, tiny_sam2):
    """(kind, checkpoint, variant) for each backend's tiny weights."""
    if request.param == "sam":
        return "sam", tiny_sam_checkpoint, "tiny"
    return "sam2", tiny_sam2, None


def _view(h: int = 300, w: int = 400) -> np.ndarray:
    img = np.full((h, w, 3), 40, np.uint8)
    img[80:220, 120:300] = (200, 180, 60)
    return img


def test_segmenter_encodes_once_and_predicts(seg_source):
    from socio_reasoner.models.segmenter import load_segmenter

    seg = load_segmenter(*seg_source, device="cpu")
    assert isinstance(seg, Segmenter)
    seg.set_image(_view())
    box = np.array([120, 80, 300, 220])
    for kwargs in ({"box_xyxy": box}, {"box_xyxy": box, "points_xy": np.array([[200, 150]])},
                   {"points_xy": np.array([[150, 100], [250, 200]])}):
        mask, score = seg.predict(**kwargs)
        assert mask.shape == (300, 400) and mask.dtype == bool
        assert isinstance(score, float)
    assert seg.encode_count == 1
    seg.reset_image()
    with pytest.raises(RuntimeError):
        seg.predict(box_xyxy=box)
    seg.set_image(_view(200, 250))
    assert seg.predict(box_xyxy=box / 2)[0].shape == (200, 250) and seg.encode_count == 2


def _float_tensors(value):
    import torch

    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _float_tensors(v)]
    return []


def test_segmenter_encoder_precision(seg_source):
    """bf16 runs the image encoder under autocast and keeps float32 features for the
    decoder: features near fp32's but not equal (the encoder really ran in bf16), masks
    nearly the same; `auto` is bf16 exactly where the VLM's rule says so."""
    import torch

    from socio_reasoner.models.segmenter import encoder_dtype, load_segmenter
    from socio_reasoner.models.vlm import cpu_has_native_bf16

    out = {}
    for dtype in ("fp32", "bf16"):
        seg = load_segmenter(*seg_source, device="cpu", dtype=dtype)
        seg.set_image(_view())
        mask, _ = seg.predict(box_xyxy=np.array([120, 80, 300, 220]), points_xy=np.array([[200, 150]]))
        out[dtype] = (_float_tensors(seg.get_state()["predictor"]), mask)
    (f32, m32), (f16, m16) = out["fp32"], out["bf16"]
    assert f32 and len(f16) == len(f32) and all(t.dtype == torch.float32 for t in f16)
    diffs = [float((a - b).abs().max() / a.abs().max()) for a, b in zip(f32, f16, strict=True)]
    assert max(diffs) > 1e-4 and max(diffs) < 0.05, diffs
    assert (m32 & m16).sum() / (m32 | m16).sum() > 0.98
    native = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert encoder_dtype("auto", "cpu") == native and encoder_dtype("auto", "cuda") == torch.bfloat16
    assert encoder_dtype("auto", "mps") == torch.float32 and encoder_dtype("fp32", "cuda") == torch.float32


def _run(kind, source, variant):
    from socio_reasoner.models.segmenter import load_segmenter

    seg = load_segmenter(kind, source, variant, device="cpu")
    seg.set_image(_view())
    return seg.predict(box_xyxy=np.array([120, 80, 300, 220]), points_xy=np.array([[200, 150]]))


def test_segmenter_weights_come_from_checkpoint(seg_source, tmp_path):
    import torch

    kind, source, variant = seg_source
    mask_a, score_a = _run(kind, source, variant)
    mask_b, score_b = _run(kind, source, variant)
    assert score_a == score_b and np.array_equal(mask_a, mask_b)

    if kind == "sam":
        state = torch.load(source, weights_only=True)
        perturbed = tmp_path / "perturbed.pth"
    else:
        state = torch.load(source / "model.pt", weights_only=True)["model"]
        perturbed = tmp_path / "perturbed"
        perturbed.mkdir()
        (perturbed / "config.yaml").write_text((source / "config.yaml").read_text())
    gen = torch.Generator().manual_seed(0)
    state = {k: v + 0.5 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
             for k, v in state.items()}
    torch.save(state if kind == "sam" else {"model": state},
               perturbed if kind == "sam" else perturbed / "model.pt")
    mask_c, score_c = _run(kind, perturbed, variant)
    assert score_c != score_a or not np.array_equal(mask_c, mask_a)


def test_segmenter_load_errors(tiny_sam_checkpoint, tmp_path):
    from socio_reasoner.models.segmenter import Sam2Backend, SamBackend, load_segmenter

    with pytest.raises(ModelLoadError):
        SamBackend(tiny_sam_checkpoint, variant="vit_b")          # wrong size for the file
    with pytest.raises(ModelNotFoundError, match="socio-reasoner download"):
        SamBackend(tmp_path / "missing.pth", variant="vit_h")
    with pytest.raises(ModelNotFoundError, match="not a hub id .*choose the sam2 segmenter"):
        SamBackend("facebook/sam2-hiera-large")                   # sam2's default, kept
    with pytest.raises(ModelNotFoundError, match="socio-reasoner download"):
        Sam2Backend("facebook/sam2-hiera-large")                  # offline and not cached
    with pytest.raises(ModelNotFoundError, match="Known"):
        Sam2Backend("someone/not-a-sam2")
    with pytest.raises(ModelLoadError, match="variant"):
        Sam2Backend(tiny_sam_checkpoint)                          # bare file of unknown kind
    with pytest.raises(ValueError):
        load_segmenter("mobile-sam", tiny_sam_checkpoint)


def test_dtype_names(tmp_path):
    import torch

    from socio_reasoner.models.vlm import cpu_has_native_bf16, pick_dtype

    assert pick_dtype("auto", "cuda") == torch.bfloat16
    native = cpu_has_native_bf16()
    assert pick_dtype("auto", "cpu") == (torch.bfloat16 if native else torch.float32)
    # the flags of an AVX2-only CPU, and of a Zen 4 / Sapphire Rapids one
    plain, zen4 = tmp_path / "plain", tmp_path / "zen4"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw\n")
    zen4.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert not cpu_has_native_bf16(str(plain)) and cpu_has_native_bf16(str(zen4))
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))
    assert pick_dtype("bf16", "cpu") == torch.bfloat16 and pick_dtype("fp32", "cuda") == torch.float32
    with pytest.raises(ValueError, match="Unknown dtype"):
        pick_dtype("float99", "cpu")


def test_answers_never_contain_image_tokens(tiny_vlm_dir):
    """A sampled image placeholder would make the answer unscorable (the loss pass's model
    looks for image features for it): even a model that prefers it never emits it."""
    import torch

    from socio_reasoner.models.base import GenerationConfig
    from socio_reasoner.models.vlm import TransformersVLM

    vlm = TransformersVLM(tiny_vlm_dir, device="cpu", dtype="float32")
    image_token = vlm.model.config.image_token_id

    def prefer_image_token(module, args, logits):
        logits = logits.clone()
        logits[..., image_token] += 1e4
        return logits

    w, h = vlm.model_frame(128, 128)
    images = [np.zeros((h, w, 3), np.uint8)] * 2
    handle = vlm.model.lm_head.register_forward_hook(prefer_image_token)
    try:
        for config in (GenerationConfig(max_new_tokens=5, min_new_tokens=5),
                       GenerationConfig.paper_sampling(max_new_tokens=5, min_new_tokens=5)):
            ids = vlm.generate(images, "where is the school?", config).token_ids
            assert len(ids) == 5 and image_token not in ids.tolist()
        with torch.no_grad():                      # the hook does make it the favourite
            out = vlm.model(**vlm.prepare([(images, "x")]))
        assert int(out.logits[0, -1].argmax()) == image_token
    finally:
        handle.remove()


def test_compiled_decode_answers_as_the_default_path(tiny_vlm_dir):
    """compile_decode (static KV cache + a torch.compile'd decode step) is a speed option
    only: on a left-padded batch its greedy tokens equal the default path's, in fp32 where
    both run the same arithmetic. (On GPUs in bf16 kernels differ, so answers may too.)"""
    import torch
    from torch._dynamo.utils import counters

    from socio_reasoner.models.vlm import TransformersVLM

    eager = TransformersVLM(tiny_vlm_dir, device="cpu", dtype="float32")
    compiled = TransformersVLM(tiny_vlm_dir, device="cpu", dtype="float32", compile_decode=True)
    small = [np.full((504, 672, 3), 90, np.uint8)]
    requests = [(_pair(0), PROMPT), (small, "hi")]       # different prompt lengths: padding
    config = GenerationConfig(max_new_tokens=16, min_new_tokens=16)
    torch._dynamo.reset()
    counters.clear()
    expected = eager.batch_generate(requests, config)
    assert counters["stats"]["unique_graphs"] == 0
    got = compiled.batch_generate(requests, config)
    assert counters["stats"]["unique_graphs"] >= 1       # the decode step really was compiled
    assert [r.token_ids.tolist() for r in got] == [r.token_ids.tolist() for r in expected]
    assert len(set(expected[0].token_ids.tolist())) > 3   # a varied answer, not one token
    torch._dynamo.reset()
