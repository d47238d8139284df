"""The answer parser against a corpus of malformed model outputs, random garbage and round trips."""

import json
import math
import random
import re

import pytest

from socio_reasoner.parsing import (
    STRICT_FORMAT,
    ObjectPrompt,
    ParsedAnswer,
    answer_json,
    has_strict_format,
    parse_answer,
)

FRAME = (756, 756)  # a 768 tile as the model sees it; valid pixels are 0..755
A = (10, 20, 30, 40)
B = (50, 60, 70, 80)
OBJ_A = '{"bbox_2d": [10, 20, 30, 40]}'
OBJ_B = '{"bbox_2d": [50, 60, 70, 80]}'
PTS_A = '"points": [[15, 25], [20, 30]]'


def tagged(answer, think="t"):
    return f"<think>{think}</think><answer>{answer}</answer>"


def objects(*bodies):
    return "[" + ", ".join(bodies) + "]"


def case(case_id, text, prompts, codes, expect_points=False, max_objects=50):
    """``prompts``: [(box, [points])]; ``codes``: the exact set of problem codes."""
    return pytest.param(text, prompts, set(codes), expect_points, max_objects, id=case_id)


MANY = json.dumps([{"bbox_2d": [i, i, i + 10, i + 10]} for i in range(60)])
FIRST_50 = [((i, i, i + 10, i + 10), []) for i in range(50)]
STAGE2_A = tagged(objects('{"bbox_2d": [10, 20, 30, 40], ' + PTS_A + "}"))

CORPUS = [
    # -- well formed
    case("clean_stage1", tagged(objects(OBJ_A, OBJ_B)), [(A, []), (B, [])], []),
    case("clean_stage2", STAGE2_A, [(A, [(15, 25), (20, 30)])], [], expect_points=True),
    case("clean_floats", tagged('[{"bbox_2d": [10.5, 20.25, 30.75, 40]}]'),
         [((10.5, 20.25, 30.75, 40), [])], []),
    case("extra_label_key", tagged('[{"bbox_2d": [10, 20, 30, 40], "label": "school"}]'),
         [(A, [])], []),
    case("crlf_whitespace", f"<think>\r\n t \r\n</think>\r\n<answer>\r\n[{OBJ_A}]\r\n</answer>\r\n",
         [(A, [])], []),
    case("uppercase_tags", f"<THINK>t</THINK><ANSWER>[{OBJ_A}]</ANSWER>", [(A, [])], []),
    case("spaced_tags", f"<think>t</think>< answer >[{OBJ_A}]</ answer >", [(A, [])], []),
    case("points_when_not_expected", STAGE2_A, [(A, [(15, 25), (20, 30)])], []),
    case("points_on_box_edges",
         tagged('[{"bbox_2d": [10, 20, 30, 40], "points": [[10, 20], [30, 40]]}]'),
         [(A, [(10, 20), (30, 40)])], [], expect_points=True),
    # -- tags
    case("missing_answer_tag", f"<think>t</think>[{OBJ_A}]", [(A, [])], ["missing_answer_tag"]),
    case("missing_think_tag", f"<answer>[{OBJ_A}]</answer>", [(A, [])], ["missing_think_tag"]),
    case("no_tags", f"[{OBJ_A}]", [(A, [])], ["missing_think_tag", "missing_answer_tag"]),
    case("prose_around_untagged_json", f"Sure! The parks are [{OBJ_A}].", [(A, [])],
         ["missing_think_tag", "missing_answer_tag"]),
    case("prose_bracket_before_json", f"<think>t</think>I looked [carefully] and found [{OBJ_A}]",
         [(A, [])], ["missing_answer_tag"]),
    case("number_list_before_json", f"<think>t</think>Image is [756, 756]. [{OBJ_A}]",
         [(A, [])], ["missing_answer_tag"]),
    case("json_in_think_ignored", f"<think>maybe [{OBJ_B}]</think>[{OBJ_A}]", [(A, [])],
         ["missing_answer_tag"]),
    case("unclosed_think", f"<think>reasoning<answer>[{OBJ_A}]</answer>", [(A, [])],
         ["unclosed_tag"]),
    case("unclosed_answer", f"<think>t</think><answer>[{OBJ_A}]", [(A, [])], ["unclosed_tag"]),
    case("stray_think_close", f"reasoning</think><answer>[{OBJ_A}]</answer>", [(A, [])],
         ["stray_tag"]),
    case("truncated_answer", f'<think>t</think><answer>[{OBJ_A}, {{"bbox_2d": [50, 60,',
         [(A, [])], ["unclosed_tag", "partial_json"]),
    case("truncated_inside_first_object",
         '<think>t</think><answer>[{"bbox_2d": [10, 20, 30, 40], "points": [[15, 25], [2',
         [], ["unclosed_tag", "invalid_json"], expect_points=True),
    case("multiple_answers", f"<think>t</think><answer>[{OBJ_B}]</answer><answer>[{OBJ_A}]</answer>",
         [(A, [])], ["multiple_answers"]),
    case("later_answer_unclosed", f"<think>t</think><answer>[{OBJ_A}]</answer><answer>[{OBJ_B}",
         [(A, [])], ["unclosed_tag"]),
    case("extra_text_in_answer", tagged(f"Here they are: [{OBJ_A}] done"), [(A, [])],
         ["extra_text"]),
    case("json_word_prefix", tagged(f"json\n[{OBJ_A}]"), [(A, [])], ["extra_text"]),
    # -- code fences
    case("code_fence", tagged(f"```json\n[{OBJ_A}]\n```"), [(A, [])], ["code_fence"]),
    case("code_fence_untagged", f"<think>t</think>```json\n[{OBJ_A}]\n```", [(A, [])],
         ["missing_answer_tag", "code_fence"]),
    case("code_fence_unclosed", tagged(f"```json\n[{OBJ_A}]"), [(A, [])], ["code_fence"]),
    # -- JSON repairs
    case("single_quotes", tagged("[{'bbox_2d': [10, 20, 30, 40]}]"), [(A, [])],
         ["repaired_json"]),
    case("trailing_commas", tagged('[{"bbox_2d": [10, 20, 30, 40,],},]'), [(A, [])],
         ["repaired_json"]),
    case("python_literals", tagged('[{"bbox_2d": [10, 20, 30, 40], "ok": True, "label": None}]'),
         [(A, [])], ["repaired_json"]),
    case("unquoted_keys", tagged("[{bbox_2d: [10, 20, 30, 40]}]"), [(A, [])], ["repaired_json"]),
    case("tuple_box", tagged('[{"bbox_2d": (10, 20, 30, 40)}]'), [(A, [])], ["repaired_json"]),
    case("missing_comma_between_objects", tagged(f"[{OBJ_A} {OBJ_B}]"), [(A, []), (B, [])],
         ["repaired_json"]),
    case("space_separated_numbers", tagged('[{"bbox_2d": [10 20 30 40]}]'), [(A, [])],
         ["repaired_json"]),
    case("fullwidth_punctuation", tagged('[{"bbox_2d"：[10，20，30，40]}]'), [(A, [])],
         ["repaired_json"]),
    case("curly_quotes", tagged("[{“bbox_2d”: [10, 20, 30, 40]}]"), [(A, [])],
         ["repaired_json"]),
    case("apostrophe_in_label", tagged("[{'bbox_2d': [10, 20, 30, 40], 'label': \"kid's park\"}]"),
         [(A, [])], ["repaired_json"]),
    # -- shapes of the answer
    case("single_object", tagged(OBJ_A), [(A, [])], ["single_object"]),
    case("objects_one_per_line", tagged(f"{OBJ_A}\n{OBJ_B}\n"), [(A, []), (B, [])],
         ["repaired_json"]),
    case("objects_comma_separated", tagged(f"{OBJ_A}, {OBJ_B}"), [(A, []), (B, [])],
         ["repaired_json"]),
    case("bare_box", tagged("[10, 20, 30, 40]"), [(A, [])], ["bare_box"]),
    case("bare_boxes", tagged("[[10, 20, 30, 40], [50, 60, 70, 80]]"), [(A, []), (B, [])],
         ["bare_box"]),
    case("key_bbox", tagged('[{"bbox": [10, 20, 30, 40]}]'), [(A, [])], ["key_variant"]),
    case("key_box", tagged('[{"box": [10, 20, 30, 40]}]'), [(A, [])], ["key_variant"]),
    case("key_uppercase", tagged('[{"BBOX_2D": [10, 20, 30, 40]}]'), [(A, [])], ["key_variant"]),
    case("box_as_text", tagged('[{"bbox_2d": "10, 20, 30, 40"}]'), [(A, [])], ["string_numbers"]),
    case("box_numbers_as_text", tagged('[{"bbox_2d": ["10", "20", "30", "40"]}]'), [(A, [])],
         ["string_numbers"]),
    case("non_object_items", tagged(f'[1, "a", {OBJ_A}]'), [(A, [])], ["bad_item"]),
    case("object_without_box", tagged(f'[{{"label": "park"}}, {OBJ_A}]'), [(A, [])],
         ["missing_box"]),
    case("empty_list", tagged("[]"), [], ["empty_answer"]),
    case("empty_answer_text", tagged(""), [], ["empty_answer"]),
    case("json_null", tagged("null"), [], ["invalid_json"]),
    case("json_number", tagged("42"), [], ["invalid_json"]),
    case("prose_only", "I cannot find any school.", [],
         ["missing_think_tag", "missing_answer_tag", "invalid_json"]),
    case("garbage_unicode", tagged("没有 ¯\\_(ツ)_/¯ 🚀", think="日本語"), [], ["invalid_json"]),
    case("deep_unclosed_brackets", "[" * 5000, [],
         ["missing_think_tag", "missing_answer_tag", "invalid_json"]),
    case("deep_closed_brackets", tagged("[" * 100_000 + "]" * 100_000), [], ["invalid_json"]),
    case("too_many_objects", tagged(MANY), FIRST_50, ["too_many_objects"]),
    case("max_objects_two", tagged(objects(OBJ_A, OBJ_B, '{"bbox_2d": [1, 2, 3, 4]}')),
         [(A, []), (B, [])], ["too_many_objects"], max_objects=2),
    case("duplicate_box", tagged(objects(OBJ_A, OBJ_B, OBJ_A)), [(A, []), (B, [])],
         ["duplicate_box"]),
    # -- coordinates
    case("swapped_x", tagged('[{"bbox_2d": [30, 20, 10, 40]}]'), [(A, [])], ["swapped_coords"]),
    case("swapped_both", tagged('[{"bbox_2d": [30, 40, 10, 20]}]'), [(A, [])],
         ["swapped_coords"]),
    case("clipped_negative", tagged('[{"bbox_2d": [-5, 20, 30, 40]}]'), [((0, 20, 30, 40), [])],
         ["clipped"]),
    case("clipped_beyond", tagged('[{"bbox_2d": [700, 700, 900, 800]}]'),
         [((700, 700, 755, 755), [])], ["clipped"]),
    case("duplicate_after_clip", tagged('[{"bbox_2d": [-5, 20, 30, 40]}, '
                                        '{"bbox_2d": [0, 20, 30, 40]}]'),
         [((0, 20, 30, 40), [])], ["clipped", "duplicate_box"]),
    case("outside_frame", tagged(objects('{"bbox_2d": [800, 800, 900, 900]}', OBJ_A)), [(A, [])],
         ["outside_frame"]),
    case("outside_frame_negative", tagged('[{"bbox_2d": [-50, -50, -10, -10]}]'), [],
         ["outside_frame"]),
    case("nan", tagged(objects('{"bbox_2d": [NaN, 20, 30, 40]}', OBJ_A)), [(A, [])],
         ["bad_number"]),
    case("infinity", tagged('[{"bbox_2d": [10, 20, Infinity, 40]}]'), [], ["bad_number"]),
    case("python_nan", tagged('[{"bbox_2d": [nan, 20, 30, 40]}]'), [],
         ["repaired_json", "bad_number"]),
    case("overflowing_number", tagged('[{"bbox_2d": [1e400, 20, 30, 40]}]'), [], ["bad_number"]),
    case("non_numeric", tagged('[{"bbox_2d": ["a", 20, 30, 40]}]'), [],
         ["string_numbers", "bad_number"]),
    case("null_coordinate", tagged('[{"bbox_2d": [null, 20, 30, 40]}]'), [], ["bad_number"]),
    case("bool_coordinate", tagged('[{"bbox_2d": [true, 20, 30, 40]}]'), [], ["bad_number"]),
    case("three_coords", tagged('[{"bbox_2d": [10, 20, 30]}]'), [], ["bad_length"]),
    case("five_coords", tagged('[{"bbox_2d": [10, 20, 30, 40, 50]}]'), [], ["bad_length"]),
    case("box_is_a_number", tagged('[{"bbox_2d": 5}]'), [], ["bad_length"]),
    case("zero_area", tagged('[{"bbox_2d": [10, 20, 10, 40]}]'), [], ["zero_area"]),
    case("zero_area_after_clip", tagged('[{"bbox_2d": [-20, 20, 0, 40]}]'), [],
         ["clipped", "zero_area"]),
    # -- points
    case("point_outside_box",
         tagged('[{"bbox_2d": [10, 20, 30, 40], "points": [[15, 25], [200, 300]]}]'),
         [(A, [(15, 25)])], ["point_outside_box"], expect_points=True),
    case("all_points_outside",
         tagged('[{"bbox_2d": [10, 20, 30, 40], "points": [[0, 0], [200, 300]]}]'),
         [(A, [])], ["point_outside_box", "missing_points"], expect_points=True),
    case("points_as_objects",
         tagged('[{"bbox_2d": [10, 20, 30, 40], "points": [{"x": 15, "y": 25}, {"X": 20, "y": 30}]}]'),
         [(A, [(15, 25), (20, 30)])], ["point_format"], expect_points=True),
    case("points_as_point_2d_objects",
         tagged('[{"bbox_2d": [10, 20, 30, 40], "points": [{"point_2d": [15, 25]}]}]'),
         [(A, [(15, 25)])], ["point_format"], expect_points=True),
    case("points_single_object",
         tagged('[{"bbox_2d": [10, 20, 30, 40], "points": {"x": 15, "y": 25}}]'),
         [(A, [(15, 25)])], ["point_format"], expect_points=True),
    case("points_flat", tagged('[{"bbox_2d": [10, 20, 30, 40], "points": [15, 25, 20, 30]}]'),
         [(A, [(15, 25), (20, 30)])], ["point_format"], expect_points=True),
    case("points_one_pair", tagged('[{"bbox_2d": [10, 20, 30, 40], "points": [15, 25]}]'),
         [(A, [(15, 25)])], [], expect_points=True),
    case("points_flat_odd", tagged('[{"bbox_2d": [10, 20, 30, 40], "points": [15, 25, 20]}]'),
         [(A, [(15, 25)])], ["point_format", "bad_length"], expect_points=True),
    case("points_as_text",
         tagged('[{"bbox_2d": [10, 20, 30, 40], "points": "[[15, 25], [20, 30]]"}]'),
         [(A, [(15, 25), (20, 30)])], ["string_numbers", "point_format"], expect_points=True),
    case("point_key_variant", tagged('[{"bbox_2d": [10, 20, 30, 40], "point_2d": [[15, 25]]}]'),
         [(A, [(15, 25)])], [], expect_points=True),
    case("point_bad_number",
         tagged('[{"bbox_2d": [10, 20, 30, 40], "points": [[15, "x"], [20, 30]]}]'),
         [(A, [(20, 30)])], ["string_numbers", "bad_number"], expect_points=True),
    case("point_three_values",
         tagged('[{"bbox_2d": [10, 20, 30, 40], "points": [[15, 25, 1], [20, 30]]}]'),
         [(A, [(20, 30)])], ["bad_length"], expect_points=True),
    case("points_null", tagged('[{"bbox_2d": [10, 20, 30, 40], "points": null}]'),
         [(A, [])], ["missing_points"], expect_points=True),  # null is as good as absent
    case("points_empty", tagged('[{"bbox_2d": [10, 20, 30, 40], "points": []}]'),
         [(A, [])], ["missing_points"], expect_points=True),
    case("missing_points", tagged(objects(OBJ_A, OBJ_B)), [(A, []), (B, [])], ["missing_points"],
         expect_points=True),
    case("points_follow_swapped_box",
         tagged('[{"bbox_2d": [30, 40, 10, 20], "points": [[15, 25]]}]'),
         [(A, [(15, 25)])], ["swapped_coords"], expect_points=True),
]


@pytest.mark.parametrize("text, prompts, codes, expect_points, max_objects", CORPUS)
def test_corpus(text, prompts, codes, expect_points, max_objects):
    parsed = parse_answer(text, FRAME, expect_points=expect_points, max_objects=max_objects)
    got = [(p.box_xyxy, p.points_xy) for p in parsed.prompts]
    want = [(tuple(float(v) for v in box), [(float(x), float(y)) for x, y in points])
            for box, points in prompts]
    assert got == want
    assert set(parsed.codes) == codes, parsed.problems
    assert parsed.ok == (not codes)
    assert all(re.fullmatch(r"[a-z_]+: .+", p, re.DOTALL) for p in parsed.problems)
    assert all(type(v) is float for p in parsed.prompts for v in p.box_xyxy)


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 60


def test_well_formed_answers_have_no_problems_and_keep_their_text():
    stage1 = "<think>The map shows two parks.</think>\n<answer>" + objects(OBJ_A, OBJ_B) + "</answer>"
    parsed = parse_answer(stage1, FRAME)
    assert parsed.ok and parsed.problems == []
    assert parsed.think == "The map shows two parks."
    assert parsed.answer_text == objects(OBJ_A, OBJ_B)
    assert [p.box_xyxy for p in parsed.prompts] == [A, B]
    stage2 = parse_answer(STAGE2_A, FRAME, expect_points=True)
    assert stage2.ok
    assert stage2.prompts == [ObjectPrompt((10.0, 20.0, 30.0, 40.0), [(15.0, 25.0), (20.0, 30.0)])]
    assert has_strict_format(stage1) and has_strict_format(STAGE2_A)


def test_missing_parts_are_none():
    parsed = parse_answer(f"[{OBJ_A}]", FRAME)
    assert parsed.think is None and parsed.answer_text is None
    unclosed = parse_answer("<think> half a thought", FRAME)
    assert unclosed.think == "half a thought" and unclosed.answer_text is None
    assert unclosed.codes == ["unclosed_tag", "missing_answer_tag", "invalid_json"]


def test_answer_text_is_the_last_complete_answer_stripped():
    parsed = parse_answer(f"<think>t</think><answer>[]</answer><answer>  [{OBJ_A}] \n</answer>", FRAME)
    assert parsed.answer_text == f"[{OBJ_A}]"


@pytest.mark.parametrize("value", [None, b"<answer>[]</answer>", 42, ["text"]])
def test_non_text_input(value):
    parsed = parse_answer(value, FRAME)
    assert parsed.prompts == [] and parsed.think is None and parsed.answer_text is None
    assert parsed.codes == ["not_text"]


@pytest.mark.parametrize("frame", [(0, 756), (756, -1)])
def test_bad_frame_is_a_caller_error(frame):
    with pytest.raises(ValueError, match="frame_wh"):
        parse_answer(tagged(f"[{OBJ_A}]"), frame)


def test_frame_is_width_then_height():
    parsed = parse_answer(tagged('[{"bbox_2d": [10, 10, 500, 500]}]'), (300, 100))
    assert parsed.prompts[0].box_xyxy == (10.0, 10.0, 299.0, 99.0)
    assert parsed.codes == ["clipped"]


def test_extremely_long_text():
    think = "The park lies north of the river. " * 60_000  # about 2 MB
    parsed = parse_answer(f"<think>{think}</think><answer>[{OBJ_A}]</answer>", FRAME)
    assert parsed.ok and [p.box_xyxy for p in parsed.prompts] == [A]
    assert len(parsed.think) == len(think.strip())
    junk = "ab[c]{d} \"e' " * 200_000 + f"[{OBJ_B}]"  # untagged, after 400k bracketed regions
    parsed = parse_answer(junk, FRAME)  # only the first MAX_CANDIDATES regions are tried
    assert parsed.prompts == []
    assert parsed.codes == ["missing_think_tag", "missing_answer_tag", "invalid_json"]
    nested = parse_answer(tagged('{"a": ' * 50_000 + "1" + "}" * 50_000), FRAME)
    assert nested.codes == ["invalid_json"]  # too deep for json; salvage stays shallow
    hundreds = tagged(json.dumps([{"bbox_2d": [i % 700, 0, i % 700 + 5, 9]} for i in range(5000)]))
    parsed = parse_answer(hundreds, FRAME, max_objects=50)
    assert len(parsed.prompts) == 50
    assert parsed.problems == ["too_many_objects: kept the first 50 of 5000"]


def test_has_strict_format():
    assert STRICT_FORMAT.pattern == r"<think>.*?</think>\s*<answer>.*?</answer>"
    assert has_strict_format(f"  <think>a\nb</think>\n<answer>[{OBJ_A}]</answer>\n")
    assert not has_strict_format(f"<answer>[{OBJ_A}]</answer>")
    assert not has_strict_format(f"<think>a</think><answer>[{OBJ_A}]")
    assert not has_strict_format(f"Sure. <think>a</think><answer>[{OBJ_A}]</answer>")
    assert not has_strict_format(f"<think>a</think><answer>[{OBJ_A}]</answer> more")
    assert not has_strict_format(None)


def test_answer_json_layout_matches_the_prompt_templates():
    prompts = [ObjectPrompt((10.0, 20.0, 30.0, 40.0), [(15.0, 25.0)]),
               ObjectPrompt((1.5, 2.0, 3.25, 4.0))]
    assert answer_json(prompts, with_points=False) == (
        '[{"bbox_2d": [10,20,30,40]}, {"bbox_2d": [1.5,2,3.25,4]}]')
    assert answer_json(prompts, with_points=True) == (
        '[{"bbox_2d": [10,20,30,40], "points": [[15,25]]}, {"bbox_2d": [1.5,2,3.25,4], "points": []}]')
    assert answer_json([], with_points=False) == "[]"
    with pytest.raises(ValueError, match="non-finite"):
        answer_json([ObjectPrompt((0.0, 0.0, math.nan, 1.0))], with_points=False)


@pytest.mark.parametrize("with_points", [False, True])
def test_answer_json_round_trips(with_points):
    rng = random.Random(7)
    prompts = []
    for _ in range(20):
        x1, y1 = rng.randint(0, 700), rng.randint(0, 700)
        x2, y2 = x1 + rng.choice([1, 0.5, 17, 55.25]), y1 + rng.randint(1, 55)
        points = [(rng.uniform(x1, x2), rng.uniform(y1, y2)) for _ in range(rng.randint(1, 3))]
        prompts.append(ObjectPrompt((float(x1), float(y1), float(x2), float(y2)),
                                    points if with_points else []))
    text = tagged(answer_json(prompts, with_points))
    parsed = parse_answer(text, FRAME, expect_points=with_points)
    assert parsed.ok, parsed.problems
    assert parsed.prompts == prompts
    assert answer_json(parsed.prompts, with_points) == parsed.answer_text


FRAGMENTS = [
    "<think>", "</think>", "<answer>", "</answer>", "[", "]", "{", "}", ",", ":", "'", '"',
    '"bbox_2d"', '"bbox"', "'box'", '"points"', "```json\n", "```", "True", "None", "NaN",
    "Infinity", "-inf", "1e400", "-12", "0", "755", "756", "10.5", "99999", "\\", "\n", " ",
    "日本", "🚀", "\u0000", "（", "，", "“", OBJ_A, OBJ_B, PTS_A, STAGE2_A, "[10, 20, 30, 40]",
    "null", "[[1, 2], [3, 4]]", '{"x": 1, "y": 2}', "(", ")",
]


def random_text(rng):
    kind = rng.random()
    if kind < 0.15:
        return "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 200)))
    if kind < 0.35:  # a slice of a valid answer
        full = tagged(answer_json(
            [ObjectPrompt((rng.uniform(-100, 400), rng.uniform(-100, 400), rng.uniform(-100, 900),
                           rng.uniform(-100, 900)), [(rng.uniform(-50, 800), rng.uniform(-50, 800))])
             for _ in range(rng.randint(1, 5))], with_points=True))
        start = rng.randint(0, len(full))
        return full[start:rng.randint(start, len(full))]
    return "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 60)))


def test_random_garbage_never_raises_and_stays_in_frame():
    rng = random.Random(20240611)
    seen_codes, recovered = set(), 0
    for _ in range(500):
        text = random_text(rng)
        frame = rng.choice([FRAME, (100, 60), (1, 1), (2, 3)])
        parsed = parse_answer(text, frame, expect_points=rng.random() < 0.5,
                              max_objects=rng.choice([0, 1, 3, 50]))
        assert isinstance(parsed, ParsedAnswer)
        assert "internal_error" not in parsed.codes, (text, parsed.problems)
        for prompt in parsed.prompts:
            x1, y1, x2, y2 = prompt.box_xyxy
            assert 0 <= x1 < x2 <= frame[0] - 1 and 0 <= y1 < y2 <= frame[1] - 1, text
            assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in prompt.points_xy), text
            assert all(math.isfinite(v) for v in prompt.box_xyxy)
        assert len({p.box_xyxy for p in parsed.prompts}) == len(parsed.prompts)
        seen_codes.update(parsed.codes)
        recovered += bool(parsed.prompts)
    assert recovered > 50  # the fragments of valid answers do yield boxes
    assert {"invalid_json", "clipped", "missing_answer_tag"} <= seen_codes
