"""Does the GRPO loop learn? Train a tiny random Qwen2.5-VL on a trivially learnable
synthetic task and plot the mean reward per step; it must rise.

    .venv/bin/python bench/grpo_learning.py --steps 30            # ~10 min on 2 CPU cores
    .venv/bin/python bench/grpo_learning.py --device cuda --steps 60

The task: SocioSeg-shaped 128 px tiles whose answer format is the whole difficulty. The
policy starts from a tiny random model nudged briefly towards one answer
(``teach_fixed_answer``), so its samples are near the format and rewards vary within a
group; SAM is the box segmenter (the mask is the box), so the reward is the model's alone.
Writes bench/results/grpo_learning-<machine>.{json,png}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import describe, machine_info, print_table, write_result  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--group", type=int, default=4, help="GRPO group size G.")
    parser.add_argument("--prompts", type=int, default=2, help="Prompts per step.")
    parser.add_argument("--teach-steps", type=int, default=12, help="Nudge towards the format.")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from socio_reasoner.data.socioseg import SocioSegDataset
    from socio_reasoner.data.synthetic import make_synthetic_sample, write_synthetic_socioseg
    from socio_reasoner.models.random_init import save_tiny_qwen2_5_vl
    from socio_reasoner.train.config import TrainConfig
    from socio_reasoner.train.grpo import GRPOTrainer
    from socio_reasoner.train.sft import teach_fixed_answer

    info = machine_info(args.device)
    print(describe(info))
    work = Path(tempfile.mkdtemp(prefix="grpo-learning-"))
    data = write_synthetic_socioseg(work / "data", {"train": 16}, size=128)
    answer = '<think>a school</think><answer>[{"bbox_2d": [40, 40, 200, 200]}]</answer>'
    taught, teach_loss = teach_fixed_answer(save_tiny_qwen2_5_vl(work / "tiny"), work / "taught",
                                            answer, make_synthetic_sample("train", 0, size=128),
                                            steps=args.teach_steps)
    config = TrainConfig(data=str(data), model=str(taught), segmenter="box", device=args.device,
                         out_dir=str(work / "run"), steps=args.steps, prompts_per_step=args.prompts,
                         group_size=args.group, lr=args.lr, weight_decay=0.0,
                         max_new_tokens=48, save_every=0)
    trainer = GRPOTrainer(config)
    t0 = time.perf_counter()
    history = trainer.fit(SocioSegDataset.open(config.data, split="train"))
    seconds = time.perf_counter() - t0
    rewards = [(h["reward_stage1"] + h["reward_stage2"]) / 2 for h in history]
    k = max(1, len(rewards) // 5)
    first, last = sum(rewards[:k]) / k, sum(rewards[-k:]) / k
    rows = [(h["step"], f"{h['reward_stage1']:.3f}", f"{h['reward_stage2']:.3f}",
             f"{h['kl']:.4f}", f"{h['response_tokens']:.1f}") for h in history]
    print_table(rows, ["step", "reward s1", "reward s2", "kl", "tokens/answer"])
    verdict = "rises" if last > first else "does NOT rise"
    print(f"mean reward, first {k} steps {first:.3f} -> last {k} steps {last:.3f}: {verdict} "
          f"({seconds / len(history):.1f} s/step)")
    out = write_result("grpo_learning", {
        "config": config.to_dict(), "teach_loss": teach_loss, "history": history,
        "first_mean": first, "last_mean": last, "rises": last > first,
        "seconds_per_step": seconds / len(history)}, device=args.device)
    _plot(rewards, history, Path(str(out)).with_suffix(".png"))
    return 0 if last > first else 1


def _plot(rewards, history, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(steps, [h["reward_stage1"] for h in history], label="stage 1", alpha=0.6)
    ax.plot(steps, [h["reward_stage2"] for h in history], label="stage 2", alpha=0.6)
    ax.plot(steps, rewards, label="mean of stages", color="black", alpha=0.5)
    w = max(1, len(rewards) // 6)
    smooth = [sum(rewards[max(0, i - w + 1):i + 1]) / len(rewards[max(0, i - w + 1):i + 1])
              for i in range(len(rewards))]
    ax.plot(steps, smooth, label=f"mean, running over {w} steps", color="black", linewidth=2)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("reward")
    ax.set_title("Tiny model, trivially learnable task")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}")


def replot(json_path: str) -> None:
    """Redraw the figure of a finished run: ``python bench/grpo_learning.py --replot FILE``."""
    import json

    history = json.loads(Path(json_path).read_text())["history"]
    rewards = [(h["reward_stage1"] + h["reward_stage2"]) / 2 for h in history]
    _plot(rewards, history, Path(json_path).with_suffix(".png"))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--replot":
        replot(sys.argv[2])
        raise SystemExit(0)
    raise SystemExit(main())
