"""The two-stage rollout: stage 1 sampled G times → SAM → feedback render → stage 2.

It reuses the inference code (prompts, parser, renderer, SAM calls) rather than copies,
so training optimises exactly what the plugin runs. Each trajectory keeps the processor
inputs its tokens were sampled from — for stage 2 those of the *rendered* images — and
the loss pass feeds those very tensors back (``check_pixels`` guards it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .. import prompts
from ..frames import ModelFrame
from ..models.base import GenerationConfig
from ..parsing import parse_answer
from ..pipeline import segment_prompts, stage2_request, union_of
from ..render import resize_mask, resize_rgb
from .rewards import stage1_reward, stage2_reward, truth_boxes


def pixel_digest(inputs: dict) -> str:
    """Fingerprint of the image tensor a trajectory was generated from."""
    pv = inputs.get("pixel_values")
    if pv is None:
        return ""
    return hashlib.blake2b(pv.detach().float().cpu().numpy().tobytes(), digest_size=16).hexdigest()


@dataclass
class Trajectory:
    """One sampled answer with everything the loss pass needs."""

    inputs: dict                 # single-row processor outputs of the prompt (CPU tensors)
    completion_ids: object       # 1-D LongTensor of the sampled tokens (ending at EOS if any)
    text: str
    reward: float
    breakdown: object            # RewardBreakdown
    stage: str                   # "stage1" | "stage2"
    group: int                   # trajectories of one group share the advantage baseline
    digest: str = ""             # pixel_digest(inputs) when the tokens were sampled
    advantage: float = 0.0
    ref_logprobs: object = None


def _row(inputs: dict, i: int, n_images_per_row: int) -> dict:
    """Row ``i`` of a left-padded batch, padding removed, with its own image patches."""
    keep = inputs["attention_mask"][i].bool()
    row = {"input_ids": inputs["input_ids"][i][keep][None].cpu(),
           "attention_mask": inputs["attention_mask"][i][keep][None].cpu()}
    if "mm_token_type_ids" in inputs:   # marks image tokens: Qwen2.5-VL's 3-D positions need it
        row["mm_token_type_ids"] = inputs["mm_token_type_ids"][i][keep][None].cpu()
    if "pixel_values" in inputs:
        grid = inputs["image_grid_thw"]
        counts = grid.prod(dim=1).tolist()
        start = sum(counts[: i * n_images_per_row])
        stop = start + sum(counts[i * n_images_per_row:(i + 1) * n_images_per_row])
        row["pixel_values"] = inputs["pixel_values"][start:stop].cpu()
        row["image_grid_thw"] = grid[i * n_images_per_row:(i + 1) * n_images_per_row].cpu()
    return row


def sample_answers(policy, requests: list[tuple[list[np.ndarray], str]],
                   config: GenerationConfig) -> list[tuple[dict, object, str]]:
    """Sample one answer per request in one (seeded) batch through the inference path:
    (row inputs, token ids, text) each."""
    replies, inputs = policy.batch_generate(requests, config, return_inputs=True)
    return [(_row(inputs, i, len(images)), reply.token_ids, reply.text)
            for i, ((images, _), reply) in enumerate(zip(requests, replies, strict=True))]


def _segment(segmenter, parsed, use_points: bool, frame_hw) -> np.ndarray:
    return union_of(segment_prompts(segmenter, parsed.prompts, use_points)[0], frame_hw)


def rollout_sample(policy, segmenter, sample, group_size: int, config: GenerationConfig,
                   stage2_sampling: str = "per_sample", reward_variant: str = "released",
                   group_base: int = 0) -> list[Trajectory]:
    """All trajectories of one training sample (two advantage groups: stage 1, stage 2).

    ``per_sample``: each stage-1 answer gets one stage-2 continuation (the released
    code). ``best_of_stage1``: G stage-2 answers continue the best stage-1 answer (the
    paper's Algorithm 1).
    """
    h, w = sample.mask.shape
    frame = ModelFrame.of(policy, w, h)
    fw, fh = frame.frame_wh
    map_f, sat_f = resize_rgb(sample.map, fw, fh), resize_rgb(sample.sat, fw, fh)
    truth_f = resize_mask(sample.mask, fw, fh)
    t_boxes = truth_boxes(sample.mask, frame.frame_wh)
    segmenter.set_image(sat_f)                     # one encoding for both stages

    text1 = prompts.stage1_prompt(sample.query)
    out = []
    stage1 = []
    for inputs, ids, text in sample_answers(policy, [([map_f, sat_f], text1)] * group_size,
                                            _seeded(config, 0)):
        parsed = parse_answer(text, frame.frame_wh)
        breakdown = stage1_reward(text, t_boxes, variant=reward_variant)
        traj = Trajectory(inputs, ids, text, breakdown.total, breakdown, "stage1", group_base,
                          pixel_digest(inputs))
        stage1.append((traj, parsed))
        out.append(traj)

    def request(parsed):
        mask1 = _segment(segmenter, parsed, False, (fh, fw))
        return stage2_request(sample.query, map_f, sat_f, parsed, mask1)

    if stage2_sampling == "best_of_stage1":   # G continuations of one answer: render it once
        best = max(stage1, key=lambda tp: tp[0].reward)[1]
        requests = [request(best)] * group_size
        kept = [[p.box_xyxy for p in best.prompts]] * group_size
    else:
        requests = [request(parsed) for _, parsed in stage1]
        kept = [[p.box_xyxy for p in parsed.prompts] for _, parsed in stage1]
    for (inputs, ids, text), boxes in zip(
            sample_answers(policy, requests, _seeded(config, 1)), kept, strict=True):
        parsed2 = parse_answer(text, frame.frame_wh, expect_points=True)
        final = _segment(segmenter, parsed2, True, (fh, fw))
        breakdown = stage2_reward(text, boxes, final, truth_f, variant=reward_variant)
        out.append(Trajectory(inputs, ids, text, breakdown.total, breakdown, "stage2",
                              group_base + 1, pixel_digest(inputs)))
    return out


def _seeded(config: GenerationConfig, offset: int) -> GenerationConfig:
    from dataclasses import replace

    return replace(config, seed=config.seed * 2 + offset)


def group_advantages(trajectories: list[Trajectory], eps: float = 1e-6) -> None:
    """GRPO advantages in place: (R − group mean) / (group std + eps)."""
    groups: dict[int, list[Trajectory]] = {}
    for t in trajectories:
        groups.setdefault(t.group, []).append(t)
    for members in groups.values():
        r = np.array([t.reward for t in members], dtype=np.float64)
        std = r.std(ddof=1) if len(r) > 1 else 0.0
        for t, a in zip(members, (r - r.mean()) / (std + eps), strict=True):
            t.advantage = float(a)
