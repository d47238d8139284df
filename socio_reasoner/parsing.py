"""Read boxes and points out of the VLM's free-text answers without ever raising.

Model output is untrusted text: keep what is usable and report every repair, so the UI can
warn and training rewards can penalise sloppy formats.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

STRICT_FORMAT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)

BOX_KEYS = ("bbox_2d", "bbox", "box", "box_2d", "bbox2d", "bounding_box")
POINT_KEYS = ("points", "point", "points_2d", "point_2d")
MAX_CANDIDATES = 100  # bracketed regions tried per answer: bounds the work spent on garbage

_TAGS = {name: re.compile(rf"<(/?)\s*{name}\s*>", re.IGNORECASE) for name in ("think", "answer")}
_FENCE = re.compile(r"```[\w-]*[ \t]*\n?(.*?)```", re.DOTALL)
_LONE_FENCE = re.compile(r"```[\w-]*")
_BRACKET_TOKEN = re.compile(r'\\.|["\[\]{}]', re.DOTALL)
_STRING_OR_SINGLE_OR_PAREN = re.compile(r'"(?:\\.|[^"\\])*"|\'((?:\\.|[^\'\\])*)\'|([()])', re.DOTALL)
_PY_LITERAL = re.compile(r"\b(?:True|False|None|nan|inf)\b")
_PY_TO_JSON = {"True": "true", "False": "false", "None": "null", "nan": "NaN", "inf": "Infinity"}
_UNQUOTED_KEY = re.compile(r"([{,]\s*)([A-Za-z_]\w*)(\s*:)")
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
_MISSING_COMMA = re.compile(r"([\]}])\s*([\[{])")
_SPACED_NUMBERS = re.compile(r"(?<=\d)\s+(?=[-+]?\.?\d)")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?)\b",
                     re.IGNORECASE)
_FULLWIDTH = str.maketrans({"，": ",", "：": ":", "［": "[", "］": "]", "｛": "{", "｝": "}",
                            "（": "(", "）": ")", "“": '"', "”": '"', "‘": "'", "’": "'"})
_REPAIRED = "repaired_json: fixed non-standard JSON syntax"
_FAILED = object()


@dataclass
class ObjectPrompt:
    """One object the model pointed at, in model-frame pixels (x right, y down)."""

    box_xyxy: tuple[float, float, float, float]
    points_xy: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class ParsedAnswer:
    """What could be recovered from one answer, and what had to be repaired or dropped."""

    prompts: list[ObjectPrompt]
    think: str | None
    answer_text: str | None
    problems: list[str]

    @property
    def ok(self) -> bool:
        """True when the answer needed no repair at all."""
        return not self.problems

    @property
    def codes(self) -> list[str]:
        """The distinct problem codes, in order of first appearance."""
        return list(dict.fromkeys(p.split(":", 1)[0] for p in self.problems))


def has_strict_format(text: object) -> bool:
    """True when ``text`` is exactly ``<think>…</think><answer>…</answer>`` (a training reward)."""
    return isinstance(text, str) and STRICT_FORMAT.fullmatch(text.strip()) is not None


def parse_answer(text: str, frame_wh: tuple[int, int], expect_points: bool = False,
                 max_objects: int = 50) -> ParsedAnswer:
    """Recover object prompts from a model answer, repairing what can be repaired.

    Parameters
    ----------
    text : str
        The model's raw output; anything is accepted, non-str gives ``not_text``.
    frame_wh : (int, int)
        Width, height in pixels of the image as the model saw it; coordinates are
        clipped to ``[0, width - 1]`` and ``[0, height - 1]``.
    expect_points : bool
        Whether every object should carry points (stage 2); lacking ones are reported.
    max_objects : int
        Objects after the first ``max_objects`` are ignored and reported.

    Returns
    -------
    ParsedAnswer
        Prompts with ``x1 < x2``, ``y1 < y2`` inside the frame and points inside their box;
        ``problems`` holds ``"code: detail"`` strings and is empty for a clean answer.

    Raises
    ------
    ValueError
        If ``frame_wh`` is not two positive sizes (a caller bug, never the model's).
    """
    width, height = (int(v) for v in frame_wh)
    if width < 1 or height < 1:
        raise ValueError(f"frame_wh must be two positive sizes, got {frame_wh!r}")
    if not isinstance(text, str):
        return ParsedAnswer([], None, None, [f"not_text: expected str, got {type(text).__name__}"])
    problems: list[str] = []
    try:
        return _parse(text, (width, height), expect_points, max(0, int(max_objects)), problems)
    except Exception as exc:  # never raise on model text, but make the bug visible
        return ParsedAnswer([], None, None, problems + [f"internal_error: {exc!r}"[:300]])


def answer_json(prompts: list[ObjectPrompt], with_points: bool) -> str:
    """Write prompts the way the model writes its answer, to embed (edited) boxes in stage 2.

    The layout copies the prompt templates, ``[{"bbox_2d": [10,20,30,40]}, ...]``, so
    hand-edited boxes look to the model like its own.

    Parameters
    ----------
    prompts : list of ObjectPrompt
        Boxes ``(x1, y1, x2, y2)`` and points ``(x, y)`` in model-frame pixels.
    with_points : bool
        Also write each object's ``"points": [[x,y],...]`` (the stage-2 layout).

    Returns
    -------
    str
        A JSON list; integral coordinates are ints. Raises ValueError on NaN or infinity.
    """
    def number(value: float) -> str:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"cannot write a non-finite coordinate: {value}")
        return str(int(value)) if value.is_integer() else repr(value)

    objects = []
    for prompt in prompts:
        text = '{"bbox_2d": [' + ",".join(number(v) for v in prompt.box_xyxy) + "]"
        if with_points:
            text += ', "points": [' + ",".join(
                f"[{number(x)},{number(y)}]" for x, y in prompt.points_xy) + "]"
        objects.append(text + "}")
    return "[" + ", ".join(objects) + "]"


def _parse(text, frame_wh, expect_points, max_objects, problems) -> ParsedAnswer:
    """Tags, then JSON, then per-object checks; each step records what it had to repair."""
    think, search_from = _extract_think(text, problems)
    answer_text, payload = _extract_answer(text, search_from, problems)
    items = _as_items(_load_payload(payload, answer_text is not None, problems), problems)
    if len(items) > max_objects:
        problems.append(f"too_many_objects: kept the first {max_objects} of {len(items)}")
        items = items[:max_objects]
    prompts: list[ObjectPrompt] = []
    seen: set[tuple[float, ...]] = set()
    for index, item in enumerate(items, start=1):
        prompt = _to_prompt(item, index, frame_wh, expect_points, problems)
        if prompt is not None and prompt.box_xyxy in seen:
            problems.append(f"duplicate_box: object {index} repeats an earlier box, dropped")
        elif prompt is not None:
            seen.add(prompt.box_xyxy)
            prompts.append(prompt)
    problems[:] = dict.fromkeys(problems)  # repeats add noise, not information
    return ParsedAnswer(prompts, think, answer_text, problems)


def _tag_blocks(text: str, name: str) -> tuple[list[tuple[int, int, int]], int | None, int | None]:
    """Pair ``<name>``/``</name>`` in order: (start, end, after) of each complete block's
    content, the content start of a trailing unclosed tag, the end of a stray closing tag."""
    spans, pending, stray = [], None, None
    for match in _TAGS[name].finditer(text):
        if not match.group(1):
            pending = match.end()  # a re-opened tag restarts the block
        elif pending is not None:
            spans.append((pending, match.start(), match.end()))
            pending = None
        elif stray is None:
            stray = match.end()
    return spans, pending, stray


def _extract_think(text: str, problems: list[str]) -> tuple[str | None, int]:
    """The reasoning text, and where an untagged answer may start."""
    spans, pending, stray = _tag_blocks(text, "think")
    if spans:
        return text[spans[0][0]:spans[0][1]].strip(), spans[-1][2]
    if pending is not None:
        problems.append("unclosed_tag: <think> has no </think>")
        answer_tag = _TAGS["answer"].search(text, pending)
        return text[pending:answer_tag.start() if answer_tag else len(text)].strip(), pending
    if stray is not None:  # the chat template may have opened <think> for the model
        problems.append("stray_tag: </think> has no opening <think>")
        return _TAGS["think"].sub("", text[:stray]).strip(), stray
    problems.append("missing_think_tag: no <think> block")
    return None, 0


def _extract_answer(text: str, search_from: int, problems: list[str]) -> tuple[str | None, str]:
    """The raw answer text (None without an <answer> tag) and the text to search for JSON."""
    spans, pending, _ = _tag_blocks(text, "answer")
    if spans:
        if len(spans) > 1:
            problems.append(f"multiple_answers: {len(spans)} <answer> blocks, used the last")
        if pending is not None:
            problems.append("unclosed_tag: a later <answer> has no </answer>, ignored")
        return text[spans[-1][0]:spans[-1][1]].strip(), text[spans[-1][0]:spans[-1][1]]
    if pending is not None:
        problems.append("unclosed_tag: <answer> has no </answer>")
        return text[pending:].strip(), text[pending:]
    problems.append("missing_answer_tag: no <answer> block, searched the text for JSON")
    return None, text[search_from:]


def _bracket_pairs(text: str) -> tuple[list[tuple[int, int, str, int]], int | None]:
    """Match brackets outside JSON strings: (start, end, opener, depth) of each pair, and
    the start of the outermost opener left unclosed (a truncated answer)."""
    pairs, stack, in_string = [], [], False
    for match in _BRACKET_TOKEN.finditer(text):
        token = match.group()
        if token == '"':
            in_string = bool(stack) and not in_string  # quotes in prose outside brackets don't count
        elif in_string or token[0] == "\\":
            continue
        elif token in "[{":
            stack.append((token, match.start()))
        elif stack and stack[-1][0] == ("[" if token == "]" else "{"):
            opener, start = stack.pop()
            pairs.append((start, match.end(), opener, len(stack)))
    return pairs, (stack[0][1] if stack else None)


def _decode(chunk: str) -> tuple[object, bool]:
    """Decode JSON strictly, else after syntax repair: (data, repaired), data ``_FAILED``."""
    try:
        return json.loads(chunk), False
    except (ValueError, RecursionError):
        pass
    try:
        return json.loads(_repair(chunk)), True
    except (ValueError, RecursionError):
        return _FAILED, True


def _repair(chunk: str) -> str:
    """Rewrite the usual near-JSON slips (Python literals and quotes, commas) into JSON."""
    def requote(match: re.Match) -> str:
        if match.group(1) is not None:
            return json.dumps(match.group(1).replace("\\'", "'"))
        return {"(": "[", ")": "]"}.get(match.group(2), match.group())

    text = _STRING_OR_SINGLE_OR_PAREN.sub(requote, chunk.translate(_FULLWIDTH))
    text = _PY_LITERAL.sub(lambda m: _PY_TO_JSON[m.group()], text)
    text = _UNQUOTED_KEY.sub(r'\1"\2"\3', text)
    text = _MISSING_COMMA.sub(r"\1,\2", _TRAILING_COMMA.sub(r"\1", text))
    return _SPACED_NUMBERS.sub(", ", text)


def _salvage_objects(chunk: str) -> list[dict]:
    """The complete, decodable objects with a box inside broken or truncated JSON; only
    shallow ones, as a box object sits at most in a list in a stray bracket (and the work
    then stays linear)."""
    found, taken_until = [], -1
    for start, end, opener, depth in sorted(_bracket_pairs(chunk)[0]):
        if opener == "{" and depth <= 3 and start >= taken_until:
            data = _decode(chunk[start:end])[0]
            if isinstance(data, dict) and _box_key(data) is not None:
                found.append(data)
                taken_until = end
    return found


def _looks_like_boxes(data: object) -> bool:
    """Whether decoded JSON holds a box, so that prose such as ``[1, 2]`` loses to it."""
    if isinstance(data, dict):
        return _box_key(data) is not None
    return isinstance(data, list) and (_is_flat(data, 4) or any(
        (isinstance(i, dict) and _box_key(i) is not None) or (isinstance(i, list) and len(i) == 4)
        for i in data))


def _load_payload(payload: str, tagged: bool, problems: list[str]) -> object:
    """Decode the JSON in ``payload``, else the first bracketed region holding boxes."""
    if "```" in payload:
        problems.append("code_fence: answer wrapped in a markdown code fence")
        fenced = _FENCE.search(payload)
        payload = fenced.group(1) if fenced else _LONE_FENCE.sub("", payload)
    if not payload.strip():
        problems.append("empty_answer: the answer is empty")
        return _FAILED
    data, repaired = _decode(payload.strip())
    if not isinstance(data, (list, dict)) and payload.lstrip().startswith("{"):
        data, repaired = _decode(f"[{payload.strip()}]")[0], True  # objects one per line
    if isinstance(data, (list, dict)):
        problems.extend([_REPAIRED] if repaired else [])
        return data
    pairs, unclosed = _bracket_pairs(payload)
    regions = [(start, end) for start, end, _, depth in pairs if depth == 0]
    regions += [(unclosed, len(payload))] if unclosed is not None else []
    fallback = None
    for start, end in regions[:MAX_CANDIDATES]:
        data, repaired = _decode(payload[start:end])
        notes = [_REPAIRED] if repaired else []
        if data is _FAILED:
            data = _salvage_objects(payload[start:end])
            notes = [f"partial_json: kept {len(data)} complete object(s) from broken JSON"]
            if not data:
                continue
        elif not isinstance(data, (list, dict)):
            continue
        if tagged and (payload[:start].strip() or payload[end:].strip()):
            notes.append("extra_text: ignored text around the JSON in <answer>")
        if _looks_like_boxes(data):
            problems.extend(notes)
            return data
        fallback = fallback or (data, notes)
    if fallback is None:
        problems.append("invalid_json: no decodable JSON list or object with content found")
        return _FAILED
    problems.extend(fallback[1])
    return fallback[0]


def _as_items(data: object, problems: list[str]) -> list:
    """Normalise decoded JSON to a list of per-object items."""
    if isinstance(data, dict):
        problems.append("single_object: expected a list, got one object")
        return [data]
    if not isinstance(data, list):
        return []
    if not data:
        problems.append("empty_answer: the answer is an empty list")
    return [data] if _is_flat(data, 4) else data  # a bare box is one object


def _is_flat(values: list, length: int | None = None) -> bool:
    """A non-empty list of scalars (numbers or numeric text), optionally of one length."""
    return bool(values) and (length is None or len(values) == length) and all(
        isinstance(v, (int, float, str)) for v in values)


def _box_key(item: dict) -> str | None:
    """The key under which this object stores its box, tolerating case and spacing."""
    return next((k for k in item if isinstance(k, str) and k.strip().lower() in BOX_KEYS), None)


def _to_prompt(item, index, frame_wh, expect_points, problems) -> ObjectPrompt | None:
    """Validate one object; None (with the reason recorded) when it is unusable."""
    raw_points = None
    if isinstance(item, dict):
        key = _box_key(item)
        if key is None:
            problems.append(f"missing_box: object {index} has no bbox_2d, dropped")
            return None
        if key != "bbox_2d":
            problems.append(f"key_variant: box given as {key!r}, not 'bbox_2d'")
        raw_box = item[key]
        raw_points = next((v for k, v in item.items()
                           if isinstance(k, str) and k.strip().lower() in POINT_KEYS), None)
    elif isinstance(item, list):
        problems.append("bare_box: objects given as bare coordinate lists")
        raw_box = item
    else:
        problems.append(f"bad_item: object {index} is a {type(item).__name__}, dropped")
        return None
    box = _to_box(raw_box, index, frame_wh, problems)
    if box is None:
        return None
    points = [] if raw_points is None else _to_points(raw_points, box, index, problems)
    if expect_points and not points:
        problems.append(f"missing_points: object {index} has no usable points")
    return ObjectPrompt(box, points)


def _to_float(value: object) -> float | None:
    """A finite float from a number or numeric text, else None (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _values(raw: object, what: str, problems: list[str]) -> list | None:
    """The raw entries of a coordinate list, splitting text such as ``"10, 20, 30, 40"``."""
    if isinstance(raw, str):
        problems.append("string_numbers: coordinates given as text")
        return _NUMBER.findall(raw)
    if isinstance(raw, (list, tuple)):
        if any(isinstance(v, str) for v in raw):
            problems.append("string_numbers: coordinates given as text")
        return list(raw)
    problems.append(f"bad_length: {what} is a {type(raw).__name__}, not a list")
    return None


def _to_box(raw, index, frame_wh, problems) -> tuple[float, float, float, float] | None:
    """Check, order and clip one box to the frame; None when nothing usable remains."""
    values = _values(raw, f"box of object {index}", problems)
    if values is None:
        return None
    if len(values) != 4:
        problems.append(f"bad_length: box of object {index} has {len(values)} numbers, not 4")
        return None
    numbers = [_to_float(v) for v in values]
    if None in numbers:
        problems.append(f"bad_number: box of object {index} is not 4 finite numbers, dropped")
        return None
    x1, y1, x2, y2 = numbers
    if x1 > x2 or y1 > y2:
        problems.append(f"swapped_coords: box of object {index} had its corners swapped")
        x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
    x_max, y_max = float(frame_wh[0] - 1), float(frame_wh[1] - 1)
    if x2 < 0 or y2 < 0 or x1 > x_max or y1 > y_max:
        problems.append(f"outside_frame: box of object {index} lies outside the image, dropped")
        return None
    box = (max(x1, 0.0), max(y1, 0.0), min(x2, x_max), min(y2, y_max))
    if box != (x1, y1, x2, y2):
        problems.append(f"clipped: box of object {index} clipped to the image")
    if box[0] >= box[2] or box[1] >= box[3]:
        problems.append(f"zero_area: box of object {index} has no area, dropped")
        return None
    return box


def _to_points(raw, box, index, problems) -> list[tuple[float, float]]:
    """Keep the finite points inside their (repaired) box, from pairs, one pair, a flat
    list, objects such as ``{"x": 1, "y": 2}`` or text."""
    values = _values([raw] if isinstance(raw, dict) else raw, f"points of object {index}", problems)
    if values and _is_flat(values):  # [x, y] or [x1, y1, x2, y2, ...]
        if len(values) != 2:
            problems.append(f"point_format: points of object {index} given as a flat list")
        if len(values) % 2:
            problems.append(f"bad_length: points of object {index} have an odd count, last dropped")
        values = [values[i:i + 2] for i in range(0, len(values) - 1, 2)]
    kept = []
    for value in values or []:
        if isinstance(value, dict):
            problems.append(f"point_format: points of object {index} given as objects")
            keyed = {str(k).strip().lower(): v for k, v in value.items()}
            value = [keyed["x"], keyed.get("y")] if "x" in keyed else next(
                (keyed[k] for k in POINT_KEYS if k in keyed), None)
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            problems.append(f"bad_length: a point of object {index} is not an [x, y] pair")
            continue
        if any(isinstance(v, str) for v in value):
            problems.append("string_numbers: coordinates given as text")
        x, y = _to_float(value[0]), _to_float(value[1])
        if x is None or y is None:
            problems.append(f"bad_number: a point of object {index} is not two finite numbers")
        elif not (box[0] <= x <= box[2] and box[1] <= y <= box[3]):
            problems.append(f"point_outside_box: point ({x:g}, {y:g}) of object {index} dropped")
        else:
            kept.append((x, y))
    return kept
