"""The released model's prompt texts, verbatim: the weights were trained on exactly these.

The sentences are concatenated with no space between them on purpose; "fixing" that
changes the tokens the model sees and lowers its accuracy.
"""

from __future__ import annotations

_INTRO = ("You will be given two images. The first is a map and the second is a "
          "corresponding satellite image.")

STAGE1_TEMPLATE = (
    _INTRO
    + "Please find '{query}' with bboxs."
    + "Compare the difference between object(s) and find the most closely matched object(s)."
    + "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    + " Please use English."
    + "Output the bbox(es) in JSON format."
    + 'i.e., <think>thinking process here </think><answer>[{{"bbox_2d": [bx1,by1,bx2,by2]}}, '
    + '{{"bbox_2d": [bx3,by3,bx4,by4]}}]</answer>'
)

STAGE2_TEMPLATE = (
    _INTRO
    + 'Now some bbox(s) and the results after SAM segmentation for "{query}" have been rendered '
    + "on these two images."
    + "The found bbox(s) are: {boxes}."
    + "Please add some points appropriately to each bbox to better represent the area of interest."
    + "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    + 'i.e., <think> thinking process here </think><answer>[{{"bbox_2d": [bx1,by1,bx2,by2], '
    + '"points": [[px1,py1],[px2,py2],[px3,py3]]}}, {{"bbox_2d": [bx3,by3,bx4,by4], '
    + '"points": [[px4,py4],[px5,py5],[px6,py6]}}]</answer>'
)

# Single-stage ablation: boxes and points in one answer, no feedback rendering. The paper
# does not print this prompt; this wording joins the two stages' instructions.
SINGLE_TEMPLATE = (
    _INTRO
    + "Please find '{query}' with bboxs and points."
    + "Compare the difference between object(s) and find the most closely matched object(s)."
    + "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    + " Please use English."
    + "Output the bbox(es) and points in JSON format."
    + 'i.e., <think>thinking process here </think><answer>[{{"bbox_2d": [bx1,by1,bx2,by2], '
    + '"points": [[px1,py1],[px2,py2]]}}, {{"bbox_2d": [bx3,by3,bx4,by4], '
    + '"points": [[px3,py3],[px4,py4]]}}]</answer>'
)


def _clean_query(query: str) -> str:
    query = " ".join(str(query).split())
    if not query:
        raise ValueError("The query is empty: say what to find, for example 'school'.")
    return query


def stage1_prompt(query: str) -> str:
    """Localization: boxes only."""
    return STAGE1_TEMPLATE.format(query=_clean_query(query))


def stage2_prompt(query: str, boxes_json: str) -> str:
    """Refinement: ``boxes_json`` is stage 1's raw answer JSON (or the edited boxes)."""
    return STAGE2_TEMPLATE.format(query=_clean_query(query), boxes=boxes_json)


def single_stage_prompt(query: str) -> str:
    """Boxes and points in one pass (the paper's single-stage ablation)."""
    return SINGLE_TEMPLATE.format(query=_clean_query(query))
