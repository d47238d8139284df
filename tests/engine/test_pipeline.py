"""The two-stage loop checked to the pixel with scripted answers and box masks.

The real tiny models run the same loop in test_end_to_end.py; here exact values let a
wrong frame, colour or prompt order fail loudly.
"""

import numpy as np
import pytest

from socio_reasoner import prompts
from socio_reasoner.errors import CancelledError, ShapeMismatchError
from socio_reasoner.frames import ModelFrame, frame_to_map, map_to_frame, smart_resize
from socio_reasoner.geo.image import Grid
from socio_reasoner.models.scripted import BoxSegmenter, ScriptedVLM
from socio_reasoner.parsing import ObjectPrompt
from socio_reasoner.pipeline import SocioReasoner
from socio_reasoner.render import draw_feedback, resize_rgb

S1 = '<think>two schools</think><answer>[{"bbox_2d": [100, 100, 200, 150]}, {"bbox_2d": [400, 300, 500, 420]}]</answer>'
S2 = ('<think>points</think><answer>[{"bbox_2d": [100, 100, 200, 150], "points": [[150, 120], [160, 130]]}, '
      '{"bbox_2d": [400, 300, 500, 420], "points": [[450, 350]]}]</answer>')


@pytest.fixture
def tile():
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (768, 768, 3), dtype=np.uint8),
            rng.integers(0, 256, (768, 768, 3), dtype=np.uint8))


def test_smart_resize_matches_transformers():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf

    for h, w in [(768, 768), (1024, 512), (500, 500), (3000, 2000), (300, 900), (28, 56)]:
        assert smart_resize(h, w) == hf(h, w, factor=28, min_pixels=500 * 500, max_pixels=1344 * 1344)
    assert ModelFrame.for_tile(768, 768).frame_wh == (756, 756)


def test_frames_round_trip_through_map():
    frame = ModelFrame.for_tile(768, 768)
    grid = Grid.from_bounds(385000, 6671000, 385768, 6671768, 768, 768, "EPSG:32635")
    xy = np.array([[0, 0], [756, 756], [378, 100.5]])
    m = frame_to_map(frame, grid, xy)
    assert np.allclose(m[0], [385000, 6671768]) and np.allclose(m[1], [385768, 6671000])
    assert np.allclose(m[2], [385000 + 378 * 768 / 756, 6671768 - 100.5 * 768 / 756])
    assert np.allclose(map_to_frame(frame, grid, m), xy)


def test_two_stage_run_feeds_the_model_exactly(tile):
    map_img, sat_img = tile
    vlm, sam = ScriptedVLM([S1, S2]), BoxSegmenter()
    result = SocioReasoner(vlm, sam).run(map_img, sat_img, "school")

    # Stage 1: map first, then satellite, both at 756², with the verbatim prompt.
    (imgs1, text1), (imgs2, text2) = vlm.calls
    map_f, sat_f = resize_rgb(map_img, 756, 756), resize_rgb(sat_img, 756, 756)
    assert [i.shape for i in imgs1] == [(756, 756, 3)] * 2
    assert np.array_equal(imgs1[0], map_f) and np.array_equal(imgs1[1], sat_f)
    assert text1 == prompts.stage1_prompt("school")

    # Stage 2: the stage-1 answer JSON verbatim, and feedback drawn on both images.
    assert text2 == prompts.stage2_prompt(
        "school", '[{"bbox_2d": [100, 100, 200, 150]}, {"bbox_2d": [400, 300, 500, 420]}]')
    inside = (125, 150)                       # row, col inside box 1, away from its outline
    expected = (0.6 * sat_f[inside].astype(np.float32) + 0.4 * np.float32([255, 0, 0])).astype(np.uint8)
    assert tuple(imgs2[1][inside]) == tuple(expected)
    assert tuple(imgs2[0][inside]) == tuple(
        (0.6 * map_f[inside].astype(np.float32) + 0.4 * np.float32([255, 0, 0])).astype(np.uint8))
    for row, col in [(100, 100), (101, 150), (150, 200), (149, 199), (300, 450)]:
        assert tuple(imgs2[1][row, col]) == (0, 0, 255)       # 2-px blue outline, inside the box
    assert tuple(imgs2[1][102, 150]) != (0, 0, 255)
    outside = (600, 600)
    assert np.array_equal(imgs2[1][outside], sat_f[outside])

    # SAM: one encoding; boxes alone in stage 1, boxes with their points in stage 2.
    assert sam.encode_count == 1
    assert [c[1] is None for c in sam.calls] == [True, True, False, False]
    assert np.array_equal(sam.calls[2][1], [[150, 120], [160, 130]])
    assert np.array_equal(sam.calls[3][0], [400, 300, 500, 420])

    # Final mask at tile size: box 1 spans frame rows 100–149 → tile rows ≈ 101.6–152.4.
    assert result.mask.shape == (768, 768) and result.mask.dtype == bool
    rows = np.nonzero(result.mask[:, 160])[0]
    assert abs(rows.min() - 100 * 768 / 756) <= 1 and abs(rows.max() + 1 - 150 * 768 / 756) <= 1
    assert len(result.object_masks) == 2 and [s.name for s in result.stages] == ["stage1", "stage2"]
    assert result.stages[1].prompts[0].points_xy == [(150.0, 120.0), (160.0, 130.0)]


def test_stage1_and_single_modes(tile):
    map_img, sat_img = tile
    vlm, sam = ScriptedVLM([S1]), BoxSegmenter()
    r = SocioReasoner(vlm, sam).run(map_img, sat_img, "school", mode="stage1")
    assert len(vlm.calls) == 1 and [s.name for s in r.stages] == ["stage1"]
    vlm, sam = ScriptedVLM([S2]), BoxSegmenter()
    r = SocioReasoner(vlm, sam).run(map_img, sat_img, "school", mode="single")
    assert vlm.calls[0][1] == prompts.single_stage_prompt("school")
    assert sam.calls[0][1] is not None and r.final.name == "single"
    with pytest.raises(ValueError, match="Unknown mode"):
        SocioReasoner(vlm, sam).run(map_img, sat_img, "school", mode="three-stage")
    with pytest.raises(ShapeMismatchError):
        SocioReasoner(vlm, sam).run(map_img[:700], sat_img, "school")


def test_empty_answer_skips_stage2_and_yields_empty_mask(tile):
    vlm = ScriptedVLM(["<think>nothing here</think><answer>[]</answer>"])
    r = SocioReasoner(vlm, BoxSegmenter()).run(*tile, "zoo")
    assert len(vlm.calls) == 1 and not r.mask.any()
    assert any(p.startswith("empty_answer") for p in r.final.parsed.problems)


def test_refine_reuses_the_embedding_and_uses_edited_prompts(tile):
    map_img, sat_img = tile
    sam = BoxSegmenter()
    reasoner = SocioReasoner(ScriptedVLM([S1, S2]), sam)
    reasoner.run(map_img, sat_img, "school")
    mask, objects, scores = reasoner.refine(sat_img, [ObjectPrompt((10, 10, 60, 40), [(30, 20)])])
    assert sam.encode_count == 1 and len(objects) == 1 and scores == [1.0]
    cols = np.nonzero(mask[25])[0]
    assert abs(cols.min() - 10 * 768 / 756) <= 1 and abs(cols.max() + 1 - 60 * 768 / 756) <= 1
    other = np.roll(sat_img, 1, axis=0)
    reasoner.refine(other, [ObjectPrompt((10, 10, 60, 40))])
    assert sam.encode_count == 2


def test_cancel_stops_between_steps(tile):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 1        # let stage 1's VLM call start; it stops inside the answer
    vlm = ScriptedVLM([S1, S2])
    with pytest.raises(CancelledError):
        SocioReasoner(vlm, BoxSegmenter()).run(*tile, "school", cancel=cancel)
    assert len(vlm.calls) == 1


def test_a_growing_answer_reports_its_tokens_and_stops_midway(tile, tiny_vlm, monkeypatch):
    """A real VLM reports its answer's length as it grows (a CPU answer takes minutes)
    and honours cancel at the next token, not after the answer."""
    from socio_reasoner import pipeline
    from socio_reasoner.models.base import GenerationConfig

    monkeypatch.setattr(pipeline, "PROGRESS_EVERY_S", 0.0)
    reasoner = SocioReasoner(tiny_vlm, BoxSegmenter(),
                             GenerationConfig(max_new_tokens=12, min_new_tokens=12))
    seen = []
    reasoner.run(*tile, "school", mode="stage1", progress=lambda f, m: seen.append((f, m)))
    grown = [(f, m) for f, m in seen if m.startswith("stage 1: localizing (")]
    assert [m for _, m in grown] == [f"stage 1: localizing ({n} tokens)" for n in range(1, 13)]
    fractions = [f for f, _ in grown]
    assert fractions == sorted(fractions) and 0.1 < fractions[0] and fractions[-1] == pytest.approx(0.5)

    seen.clear()
    with pytest.raises(CancelledError):
        reasoner.run(*tile, "school", mode="stage1", progress=lambda f, m: seen.append((f, m)),
                     cancel=lambda: any("(5 tokens)" in m for _, m in seen))
    assert seen[-1][1] == "stage 1: localizing (5 tokens)"     # nothing after the cancel
    cancelled_in_prefill = []
    with pytest.raises(CancelledError):
        reasoner.run(*tile, "school", mode="stage1",
                     cancel=lambda: cancelled_in_prefill.append(1) or len(cancelled_in_prefill) > 2)
    assert len(cancelled_in_prefill) == 3       # before the third layer of the prompt's pass


def test_feedback_rendering_is_pixel_exact():
    img = np.full((20, 30, 3), 100, np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[5:10, 5:10] = True
    out = draw_feedback(img, mask, [(2, 3, 12, 15)])
    assert tuple(out[7, 7]) == (162, 60, 60)          # 0.6·100 + 0.4·(255, 0, 0)
    assert tuple(out[3, 2]) == (0, 0, 255) and tuple(out[4, 3]) == (0, 0, 255)
    assert tuple(out[5, 4]) == (100, 100, 100)        # just inside the 2-px outline
    assert tuple(out[0, 0]) == (100, 100, 100) and img[7, 7, 0] == 100   # input untouched


def test_the_frame_is_the_vlms_own(tile, tiny_vlm_dir):
    """A VLM loaded with other processor bounds sees tiles in its own frame: the pipeline
    resizes to it, and prompts map back through it."""
    from socio_reasoner.models.base import GenerationConfig
    from socio_reasoner.models.vlm import TransformersVLM

    vlm = TransformersVLM(tiny_vlm_dir, device="cpu", dtype="float32", min_pixels=256 * 256,
                          max_pixels=448 * 448)
    assert vlm.model_frame(768, 768) == (420, 420) != ModelFrame.for_tile(768, 768).frame_wh
    reasoner = SocioReasoner(vlm, BoxSegmenter(), GenerationConfig(max_new_tokens=4))
    result = reasoner.run(*tile, "school", mode="stage1")
    assert result.frame == ModelFrame((768, 768), (420, 420))
    assert result.mask.shape == (768, 768)
    mask, _, _ = reasoner.refine(tile[1], [ObjectPrompt((0, 0, 210, 210))])
    assert mask[:380, :380].all() and not mask[390:].any()    # 210 frame px = 384 tile px


def test_a_batch_larger_than_the_cache_encodes_each_view_once():
    """The embedding cache is sized for refines; a batch keeps all its views' embeddings
    for both stages, however many."""
    rng = np.random.default_rng(5)
    views = [(rng.integers(0, 256, (768, 768, 3), dtype=np.uint8),
              rng.integers(0, 256, (768, 768, 3), dtype=np.uint8), "school") for _ in range(3)]
    sam = BoxSegmenter()
    reasoner = SocioReasoner(ScriptedVLM([S1, S2]), sam, embedding_cache=1)
    results = reasoner.run_batch(views)
    assert [len(r.stages) for r in results] == [2, 2, 2] and sam.encode_count == 3
