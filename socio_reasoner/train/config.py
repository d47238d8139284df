"""Training configuration: one dataclass, defaults in one place, loaded from YAML.

The defaults are the paper's recipe (``configs/grpo_socioseg.yaml`` spells them out);
``configs/grpo_tiny.yaml`` shrinks everything for a CPU test step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class TrainConfig:
    # data and models
    data: str = "vvangfaye/SocioSeg"          # hub id or local copy (any SocioSegDataset layout)
    split: str = "train"
    model: str = "Qwen/Qwen2.5-VL-3B-Instruct"  # the policy's starting weights
    segmenter: str = "sam2"                    # frozen in the loop
    segmenter_checkpoint: str = "facebook/sam2-hiera-large"
    segmenter_variant: str | None = None
    segmenter_dtype: str = "fp32"              # SAM's image encoder: the reward masks; bf16 is faster
    device: str = "auto"
    mixed_precision: str = "auto"              # auto: bf16 on CUDA unless `accelerate launch` set it
    dtype: str = "auto"                        # weights trained: auto = fp32 (see weights_dtype)
    out_dir: str = "runs/grpo"
    # GRPO (the paper's values)
    steps: int = 250
    prompts_per_step: int = 128                # summed over all processes
    group_size: int = 8                        # G samples per prompt
    lr: float = 1e-6
    weight_decay: float = 0.01
    kl_coef: float = 5e-3                      # KL to the frozen reference (k3 estimator)
    clip_eps: float = 0.2
    adv_eps: float = 1e-6                      # (R - mean) / (std + adv_eps)
    temperature: float = 0.99
    top_p: float = 0.99
    top_k: int = 100
    max_new_tokens: int = 2048
    stage2_sampling: str = "per_sample"        # per_sample (released code) | best_of_stage1 (Alg. 1)
    reward_variant: str = "released"           # released | paper
    grad_clip: float = 1.0
    micro_batch_size: int = 1                  # trajectories per forward pass of the loss pass
    # bookkeeping
    seed: int = 0
    save_every: int = 25
    lora_rank: int = 0                         # > 0 trains LoRA adapters (peft) instead of all weights
    lora_alpha: int = 32
    sft_points_per_box: int = 2                # SFT baseline: random points inside the truth mask
    sft_lr: float = 1e-5
    notes: dict = field(default_factory=dict)  # free-form, copied into the run folder

    @classmethod
    def from_yaml(cls, path, **overrides) -> TrainConfig:
        import yaml

        raw = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"Unknown keys in {path}: {', '.join(unknown)}.")
        config = cls(**{**raw, **overrides})
        if config.stage2_sampling not in ("per_sample", "best_of_stage1"):
            raise ValueError(f"stage2_sampling must be per_sample or best_of_stage1, "
                             f"got {config.stage2_sampling!r}.")
        return config

    @property
    def weights_dtype(self) -> str:
        """The trained weights' dtype. ``auto`` is float32 on every device: at the recipe's
        lr of 1e-6 an AdamW step is far below bf16's resolution (2⁻⁸ relative), so bf16
        weights would barely move. For bf16 speed use accelerate's ``mixed_precision:
        bf16`` (autocast over fp32 master weights), as the accelerate configs do."""
        return "float32" if self.dtype == "auto" else self.dtype

    def make_accelerator(self):
        """The run's ``Accelerator``. Without a setting from ``accelerate launch``, CUDA runs
        compute in bf16 (autocast over the fp32 weights): fp32 throughout would hold a 3B
        policy, its gradients, AdamW's moments and the reference in ~75 GB."""
        import os

        from accelerate import Accelerator

        precision = self.mixed_precision
        if precision == "auto":
            import torch

            if os.environ.get("ACCELERATE_MIXED_PRECISION"):
                precision = None                   # the launcher's choice
            elif self.device != "cpu" and torch.cuda.is_available() \
                    and torch.cuda.is_bf16_supported(including_emulation=False):
                precision = "bf16"                 # Ampere and later
            else:
                precision = "no"
        return Accelerator(cpu=self.device == "cpu", mixed_precision=precision)

    def to_dict(self) -> dict:
        return asdict(self)
