"""How long does the GRPO loss pass take, by micro-batch size? One rollout (one prompt,
G answers per stage) of the tiny model on SocioSeg-sized 768 px tiles, then the step's
reference + policy forwards and backward (`GRPOTrainer.accumulate_gradients`) with 1, 4
and 16 trajectories per forward pass; gradients are compared with those of batch 1.

    .venv/bin/python bench/grpo_update.py                     # ~2 min on 2 CPU cores
    .venv/bin/python bench/grpo_update.py --device cuda --group 8

Writes bench/results/grpo_update-<machine>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import describe, fmt_s, machine_info, print_table, timeit, write_result  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--group", type=int, default=8, help="GRPO group size G.")
    parser.add_argument("--micro", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--size", type=int, default=768, help="Tile side in pixels.")
    parser.add_argument("--tokens", type=int, default=48, help="max_new_tokens of the rollout.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from socio_reasoner.data.socioseg import SocioSegDataset
    from socio_reasoner.data.synthetic import write_synthetic_socioseg
    from socio_reasoner.models.random_init import save_tiny_qwen2_5_vl
    from socio_reasoner.train.config import TrainConfig
    from socio_reasoner.train.grpo import GRPOTrainer

    info = machine_info(args.device)
    print(describe(info))
    work = Path(tempfile.mkdtemp(prefix="grpo-update-"))
    data = write_synthetic_socioseg(work / "data", {"train": 1}, size=args.size)
    config = TrainConfig(data=str(data), model=str(save_tiny_qwen2_5_vl(work / "tiny")),
                         segmenter="box", device=args.device, out_dir=str(work / "run"),
                         group_size=args.group, max_new_tokens=args.tokens, save_every=0)
    trainer = GRPOTrainer(config)
    trajectories = trainer.rollout([SocioSegDataset.open(config.data, split="train").get(0)])
    n_tokens = sum(len(t.completion_ids) for t in trajectories)
    for k, traj in enumerate(trajectories):   # a random model earns no reward: give the
        traj.advantage = (-1.0) ** k           # loss a gradient to compare across batch sizes

    def run(micro):
        trainer.config.micro_batch_size = micro
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.accumulate_gradients(trajectories)

    rows, samples, reference = [], {}, None
    for micro in args.micro:
        timing, _ = timeit(lambda micro=micro: run(micro), repeats=args.repeats, warmup=1,
                           device=args.device)
        grads = torch.cat([p.grad.flatten().float() for p in trainer.model.parameters()
                           if p.grad is not None])
        reference = grads if reference is None else reference
        diff = float((grads - reference).abs().max() / reference.abs().max())
        samples[micro] = {**timing.to_dict(), "max_rel_grad_diff": diff}
        rows.append((micro, fmt_s(timing.median), f"{diff:.1e}"))
    print(f"{len(trajectories)} trajectories, {n_tokens} answer tokens, "
          f"{trajectories[0].inputs['input_ids'].shape[1]} prompt tokens (stage 1)")
    print_table(rows, ["micro-batch", "loss pass (median)", "max grad diff vs 1"])
    write_result("grpo_update", {"args": vars(args), "trajectories": len(trajectories),
                                 "answer_tokens": n_tokens, "samples": samples},
                 device=args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
