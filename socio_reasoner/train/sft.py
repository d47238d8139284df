"""The paper's SFT baseline: teach the answers directly, with the same data code.

Targets are built from the truth mask: stage 1 answers the truth boxes; stage 2 answers
the same boxes plus random points inside the mask, on the feedback-rendered images.
"""

from __future__ import annotations

import json
import random

import numpy as np

from .. import prompts
from ..frames import ModelFrame
from ..parsing import ObjectPrompt, answer_json
from ..render import draw_feedback, resize_mask, resize_rgb
from .config import TrainConfig
from .rewards import truth_boxes
from .rollout import Trajectory, pixel_digest


def target_answers(sample, rng: random.Random, points_per_box: int = 2, vlm=None):
    """(frame, mask in frame, truth boxes, stage-1 answer, stage-2 answer) for one sample,
    in ``vlm``'s frame (the default processor's without one)."""
    h, w = sample.mask.shape
    frame = ModelFrame.of(vlm, w, h) if vlm is not None else ModelFrame.for_tile(w, h)
    fw, fh = frame.frame_wh
    mask_f = resize_mask(sample.mask, fw, fh)
    boxes = truth_boxes(sample.mask, frame.frame_wh)
    objects = []
    for x1, y1, x2, y2 in boxes:
        ys, xs = np.nonzero(mask_f[y1:y2 + 1, x1:x2 + 1])
        picks = [rng.randrange(len(xs)) for _ in range(points_per_box)] if len(xs) else []
        objects.append(ObjectPrompt((x1, y1, x2, y2), [(int(xs[k] + x1), int(ys[k] + y1)) for k in picks]))
    think = "<think>The map labels and the imagery agree on these places.</think>"
    s1 = f"{think}<answer>{answer_json(objects, with_points=False)}</answer>"
    s2 = f"{think}<answer>{answer_json(objects, with_points=True)}</answer>"
    return frame, mask_f, boxes, s1, s2


def sft_examples(policy, sample, rng: random.Random, points_per_box: int = 2) -> list[Trajectory]:
    """Two teacher-forced examples (stage 1 and stage 2) as Trajectory objects."""
    frame, mask_f, boxes, s1, s2 = target_answers(sample, rng, points_per_box, policy)
    fw, fh = frame.frame_wh
    map_f, sat_f = resize_rgb(sample.map, fw, fh), resize_rgb(sample.sat, fw, fh)
    fb = [draw_feedback(map_f, mask_f, boxes), draw_feedback(sat_f, mask_f, boxes)]
    boxes_json = answer_json([ObjectPrompt(b) for b in boxes], with_points=False)
    out = []
    for stage, images, text, answer in (
            ("stage1", [map_f, sat_f], prompts.stage1_prompt(sample.query), s1),
            ("stage2", fb, prompts.stage2_prompt(sample.query, boxes_json), s2)):
        inputs = {k: v.cpu() for k, v in policy.prepare([(images, text)]).items()}
        tok = policy.processor.tokenizer
        ids = tok(answer, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        eos = tok.convert_tokens_to_ids("<|im_end|>")
        import torch

        ids = torch.cat([ids, torch.tensor([eos])])
        out.append(Trajectory(inputs, ids, answer, 0.0, None, stage, 0, pixel_digest(inputs)))
    return out


def train_sft(config: TrainConfig, dataset, steps: int | None = None,
              accelerator=None) -> list[dict]:
    """Cross-entropy on the target answers; same checkpoints and logs as GRPO."""
    from pathlib import Path

    from tqdm import tqdm

    from ..models.vlm import TransformersVLM
    from .grpo import (
        _Logger,
        backward_micro_batches,
        batch_logprobs,
        micro_batches,
        optimizer_step,
        prepare_for_training,
        save_weights,
    )

    acc = accelerator or config.make_accelerator()
    policy = TransformersVLM(config.model, device=str(acc.device), dtype=config.weights_dtype)
    model, opt = prepare_for_training(acc, config, policy.model.train(), config.sft_lr)
    policy.model = acc.unwrap_model(model)
    rng = random.Random(config.seed + acc.process_index)
    steps = config.steps if steps is None else steps
    per_rank = max(1, config.prompts_per_step // acc.num_processes)
    logger = _Logger(Path(config.out_dir), acc.is_main_process)
    history = []
    for step in tqdm(range(steps), desc="sft", disable=not acc.is_main_process):
        idx = [(step * per_rank * acc.num_processes + acc.process_index * per_rank + j) % len(dataset)
               for j in range(per_rank)]
        examples = [e for i in idx for e in sft_examples(policy, dataset.get(i), rng,
                                                         config.sft_points_per_box)]
        n_tokens = max(1, sum(len(e.completion_ids) for e in examples))
        total = backward_micro_batches(
            acc, model, micro_batches(examples, config.micro_batch_size),
            lambda batch, n=n_tokens: -sum(lp.sum() for lp in batch_logprobs(model, batch, acc.device)) / n)
        optimizer_step(acc, model, opt, config.grad_clip)
        metrics = {"step": step + 1, "loss": total, "tokens": n_tokens}
        history.append(metrics)
        logger.log(metrics)
    logger.close()
    out = Path(config.out_dir) / "final"
    save_weights(acc, model, policy.processor, out)
    if acc.is_main_process:
        (out / "config.json.train").write_text(json.dumps(config.to_dict(), indent=2))
    acc.wait_for_everyone()
    return history


def teach_fixed_answer(model_dir, out_dir, answer: str, samples, steps: int = 40, lr: float = 1e-2,
                       seed: int = 0):
    """Overfit a (tiny) model on one answer to the stage-1 prompts of ``samples``, and save it.

    Gives a random model a policy whose samples are near the answer format, so rewards
    vary within a group and a GRPO step has a real gradient: for tests and smoke runs.
    ``samples`` is one Sample or a list (the prompts cycle through them).
    """
    import torch

    from ..models.vlm import TransformersVLM
    from .grpo import completion_logprobs

    torch.manual_seed(seed)
    samples = samples if isinstance(samples, (list, tuple)) else [samples]
    policy = TransformersVLM(model_dir, device="cpu", dtype="float32")
    tok = policy.processor.tokenizer
    ids = tok(answer + "<|im_end|>", add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    examples = []
    for sample in samples:
        h, w = sample.mask.shape
        fw, fh = ModelFrame.of(policy, w, h).frame_wh
        images = [resize_rgb(sample.map, fw, fh), resize_rgb(sample.sat, fw, fh)]
        inputs = {k: v.cpu() for k, v in policy.prepare(
            [(images, prompts.stage1_prompt(sample.query))]).items()}
        examples.append(Trajectory(inputs, ids, answer, 0.0, None, "stage1", 0))
    model = policy.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for step in range(steps):
        loss = -completion_logprobs(model, examples[step % len(examples)], "cpu").mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval().save_pretrained(out_dir)
    policy.processor.save_pretrained(out_dir)
    return out_dir, float(loss.detach())
