"""GRPO training of the SocioReasoner VLM: rollout → advantages → clipped, KL-regularised
token-level policy loss, with checkpoints, resume and logs.

    socio-reasoner train --config configs/grpo_socioseg.yaml
    accelerate launch --config_file configs/accelerate_fsdp.yaml \\
        -m socio_reasoner.cli train --config configs/grpo_socioseg.yaml

The loop runs under ``accelerate`` (one CPU, DDP, FSDP or DeepSpeed from its config).
Rewards live in ``rewards.py`` and the rollout in ``rollout.py``; this file is the loop.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import random
import time
from pathlib import Path

from .config import TrainConfig
from .rollout import Trajectory, group_advantages, pixel_digest, rollout_sample


def completion_logprobs(model, traj: Trajectory, device, temperature: float = 1.0):
    """Log-probabilities (float32) of ``traj``'s sampled tokens under ``model``."""
    return batch_logprobs(model, [traj], device, temperature)[0]


def batch_logprobs(model, trajs: list[Trajectory], device, temperature: float = 1.0,
                   check: bool = True):
    """Log-probabilities (float32) of each trajectory's sampled tokens, several
    trajectories in one right-padded forward pass.

    The prompts' own tensors from the rollout are fed back — for stage 2 the rendered
    images — and `check_pixels` refuses anything else; so are the image-token marks that
    give image tokens their 3-D (M-RoPE) positions as in generation. Padding sits after each
    sequence, so a causal model scores every real token exactly as alone (up to float
    rounding). ``check=False`` skips the guard for tensors already checked this step.
    """
    import torch

    seqs, pixels, grids = [], [], []
    for traj in trajs:
        if check:
            check_pixels(traj)
        seqs.append(torch.cat([traj.inputs["input_ids"][0], traj.completion_ids]))
        if "pixel_values" in traj.inputs:
            pixels.append(traj.inputs["pixel_values"])
            grids.append(traj.inputs["image_grid_thw"])
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    kinds = torch.zeros(len(seqs), width, dtype=torch.long)    # answer and padding: text
    for i, (seq, traj) in enumerate(zip(seqs, trajs, strict=True)):
        ids[i, :len(seq)] = seq
        mask[i, :len(seq)] = 1
        if "mm_token_type_ids" in traj.inputs:
            marks = traj.inputs["mm_token_type_ids"][0]
            kinds[i, :len(marks)] = marks
    kwargs = {}
    if pixels:
        kwargs = {"pixel_values": torch.cat(pixels).to(device),
                  "image_grid_thw": torch.cat(grids).to(device)}
    if pixels and not all("mm_token_type_ids" in t.inputs for t in trajs):
        raise ValueError("Trajectories with images need the processor's mm_token_type_ids, "
                         "or image tokens would be scored at other positions than sampled.")
    if pixels:
        kwargs["mm_token_type_ids"] = kinds.to(device)
    ids = ids.to(device)
    logits = model(input_ids=ids, attention_mask=mask.to(device), **kwargs).logits
    out = []
    for i, traj in enumerate(trajs):
        start = traj.inputs["input_ids"].shape[1]
        stop = start + len(traj.completion_ids)
        row = logits[i, start - 1:stop - 1].float() / temperature
        out.append(torch.log_softmax(row, dim=-1).gather(1, ids[i, start:stop, None])[:, 0])
    return out


def check_pixels(traj: Trajectory) -> None:
    """Guard against the silent bug of VLM RL code: a loss pass whose images differ from
    the ones the tokens were sampled from (e.g. the originals instead of stage 2's
    rendered feedback)."""
    if traj.digest and pixel_digest(traj.inputs) != traj.digest:
        raise RuntimeError(f"{traj.stage} trajectory: the loss pass would see other images "
                           "than the rollout did.")


def policy_loss(new_lp, old_lp, ref_lp, advantage: float, clip_eps: float, kl_coef: float):
    """Per-token GRPO loss (to be summed and divided by the step's token count).

    Clipped surrogate −min(ρA, clip(ρ, 1±ε)A) plus β·KL with the k3 estimator
    exp(ref − new) − (ref − new) − 1 (unbiased, always ≥ 0).
    """
    import torch

    ratio = torch.exp(new_lp - old_lp)
    surrogate = torch.minimum(ratio * advantage,
                              torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantage)
    diff = ref_lp - new_lp
    kl = torch.exp(diff) - diff - 1
    return -surrogate + kl_coef * kl, kl


class GRPOTrainer:
    """Holds the policy, the frozen reference, the segmenter and the optimiser."""

    def __init__(self, config: TrainConfig, accelerator=None):
        import torch

        from ..models.loading import build_segmenter
        from ..models.vlm import TransformersVLM

        self.config = config
        self.acc = accelerator or config.make_accelerator()
        self.sharding = sharding_of(self.acc)
        self.out = Path(config.out_dir)
        resume = latest_checkpoint(self.out)
        lora = config.lora_rank > 0
        start_from = resume if resume and not lora else config.model
        self.policy = TransformersVLM(start_from, device=str(self.acc.device), dtype=config.weights_dtype)
        model = self.policy.model
        if lora:
            from peft import LoraConfig, PeftModel, get_peft_model

            if resume:
                model = PeftModel.from_pretrained(model, resume, is_trainable=True)
            else:
                model = get_peft_model(model, LoraConfig(
                    r=config.lora_rank, lora_alpha=config.lora_alpha,
                    target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
            self.reference = None       # the adapters disabled are the reference
        elif resume or self.sharding == "zero3":
            # the starting weights; under ZeRO-3 transformers loads them partitioned, and a
            # copy of partitioned parameters is no model
            self.reference = TransformersVLM(config.model, device=str(self.acc.device),
                                             dtype=config.weights_dtype).model.eval().requires_grad_(False)
        else:
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        if self.reference is not None and self.acc.mixed_precision == "bf16" \
                and self.sharding in ("fsdp1", "fsdp2"):
            # FSDP computes the policy with bf16 weights: a bf16 reference matches it and
            # halves the copy each GPU holds (elsewhere the policy's norms and residuals
            # stay fp32 under autocast, and so does the reference, so KL starts at 0)
            self.reference.to(torch.bfloat16)
        self.model, self.optimizer = prepare_for_training(self.acc, config, model.train(), config.lr)
        self.policy.model = self.acc.unwrap_model(self.model)
        self._prepare_sharded()
        self.segmenter = build_segmenter({
            "segmenter": config.segmenter, "segmenter_checkpoint": config.segmenter_checkpoint,
            "segmenter_variant": config.segmenter_variant, "device": str(self.acc.device),
            "dtype": config.segmenter_dtype})
        self.step = 0
        # checkpoints hold the weights once, in save_pretrained's format (below); accelerate's
        # state folder adds the optimiser and RNG states (and FSDP/DeepSpeed's own shards)
        self.acc.register_save_state_pre_hook(_weights_saved_elsewhere)
        self.acc.register_load_state_pre_hook(_weights_loaded_elsewhere)
        if resume:
            self.acc.load_state(str(resume / "state"))
            self.step = int(json.loads((resume / "trainer_state.json").read_text())["step"])

    def _prepare_sharded(self) -> None:
        """What sharded weights need beyond ``accelerator.prepare``."""
        import torch

        kind = self.sharding
        if kind is None:
            return
        self.policy.inference_mode = False
        # answers of different lengths on each process: all step until all are done
        self.policy.synced_gpus = self.acc.num_processes > 1
        if kind == "fsdp2":
            # FSDP2 sets itself up in the first forward, which must be the root's, while
            # generate runs the vision tower alone first: make one tiny root forward now
            with torch.no_grad():
                ids = torch.tensor([[self.policy.processor.tokenizer.eos_token_id]],
                                   device=self.acc.device)
                self.model(input_ids=ids, attention_mask=torch.ones_like(ids))
            self.model.reshard()        # the root keeps its weights gathered after a forward
        if kind == "zero3" and self.reference is not None:
            # the partitioned reference runs in an inference engine, which gathers each
            # layer's weights for its forward (the settings are the training engine's)
            import deepspeed

            ds_config = copy.deepcopy(self.acc.state.deepspeed_plugin.deepspeed_config)
            for key in ("optimizer", "scheduler"):
                ds_config.pop(key, None)
            self.reference, *_ = deepspeed.initialize(model=self.reference, config=ds_config)
            self.reference.eval()

    # ------------------------------------------------------------------ one step
    def generation_config(self):
        from ..models.base import GenerationConfig

        c = self.config
        return GenerationConfig(max_new_tokens=c.max_new_tokens, do_sample=True,
                                temperature=c.temperature, top_p=c.top_p, top_k=c.top_k,
                                seed=c.seed * 100_003 + self.step * 1_009 + self.acc.process_index)

    def _full_params(self):
        """Context for the rollout's generation with sharded weights. FSDP gathers each
        wrapped layer in its own forward, but the root's own parameters (embeddings, the
        vision patch embedding, the head) only in the root's forward, and generate runs
        the vision tower before that: gather them here. ZeRO-3 would gather every module's
        weights in its own forward at every token; DeepSpeed's own context gathers the
        whole model once and lifts those hooks while generating. FSDP2 and ZeRO-3 run in the
        tests (two CPU processes); FSDP1 has not run here."""
        kind = self.sharding
        if kind == "fsdp2":
            return _unsharded_root(self.model)
        if kind == "zero3":
            from deepspeed.runtime.zero import unwrap_model_for_generation

            return unwrap_model_for_generation(self.model)
        if kind == "fsdp1":
            from torch.distributed.fsdp import FullyShardedDataParallel

            return FullyShardedDataParallel.summon_full_params(self.model, recurse=False,
                                                                writeback=False)
        return contextlib.nullcontext()

    def rollout(self, samples) -> list[Trajectory]:
        self.model.eval()
        trajectories = []
        gen = self.generation_config()
        with self._full_params():
            for k, sample in enumerate(samples):
                trajectories += rollout_sample(
                    self.policy, self.segmenter, sample, self.config.group_size, gen,
                    self.config.stage2_sampling, self.config.reward_variant, group_base=2 * k)
        group_advantages(trajectories, self.config.adv_eps)
        return trajectories

    def _reference_logprobs(self, trajs: list[Trajectory]):
        import torch

        with torch.no_grad(), self.acc.autocast():
            if self.reference is not None:
                return batch_logprobs(self.reference, trajs, self.acc.device, self.config.temperature)
            with self.policy.model.disable_adapter():
                return batch_logprobs(self.policy.model, trajs, self.acc.device, self.config.temperature)

    def train_step(self, samples) -> dict:
        """Rollout, then one clipped policy update on the whole batch of trajectories."""
        t0 = time.perf_counter()
        trajectories = self.rollout(samples)
        t1 = time.perf_counter()
        loss_sum, kl_sum, n_tokens = self.update(trajectories)
        self.step += 1
        s1 = [t for t in trajectories if t.stage == "stage1"]
        s2 = [t for t in trajectories if t.stage == "stage2"]
        return {
            "step": self.step, "loss": loss_sum, "kl": kl_sum / n_tokens,
            "reward_stage1": _mean(t.reward for t in s1), "reward_stage2": _mean(t.reward for t in s2),
            "format_stage1": _mean(t.breakdown.format for t in s1),
            "accuracy_stage2": _mean(t.breakdown.accuracy for t in s2),
            "response_tokens": n_tokens / max(1, len(trajectories)),
            "trajectories": len(trajectories),
            "seconds_rollout": t1 - t0, "seconds_update": time.perf_counter() - t1,
        }

    def accumulate_gradients(self, trajectories: list[Trajectory]) -> tuple[float, float, int]:
        """Backward of the step's token-level mean loss, `micro_batch_size` trajectories
        per forward pass; returns (loss, summed KL, token count).

        One update per rollout (the recipe's), so the sampling policy's log-probs are the
        current ones detached: the ratio is 1 in value and the clip never binds, but its
        gradient is the policy gradient; no separate "old" forward pass is needed.

        The micro-batches run inside ``accelerator.accumulate``, so gradients are reduced
        across processes once, on the last one, under DDP, FSDP and DeepSpeed alike.
        """
        c = self.config
        scored = [t for t in trajectories if len(t.completion_ids)]
        batches = micro_batches(scored, c.micro_batch_size)
        for batch in batches:
            for traj, ref in zip(batch, self._reference_logprobs(batch), strict=True):
                traj.ref_logprobs = ref
        n_tokens = max(1, sum(len(t.completion_ids) for t in scored))
        kl_sum = 0.0

        def batch_loss(batch):
            nonlocal kl_sum
            loss = 0.0
            # the reference pass just checked these very tensors
            new_lps = batch_logprobs(self.model, batch, self.acc.device, c.temperature, check=False)
            for traj, new_lp in zip(batch, new_lps, strict=True):
                per_token, kl = policy_loss(new_lp, new_lp.detach(), traj.ref_logprobs,
                                            traj.advantage, c.clip_eps, c.kl_coef)
                loss = loss + per_token.sum() / n_tokens   # token-level mean over the step
                kl_sum += float(kl.detach().sum())
            return loss

        self.model.train()
        loss_sum = backward_micro_batches(self.acc, self.model, batches, batch_loss)
        return loss_sum, kl_sum, n_tokens

    def update(self, trajectories: list[Trajectory]) -> tuple[float, float, int]:
        result = self.accumulate_gradients(trajectories)
        optimizer_step(self.acc, self.model, self.optimizer, self.config.grad_clip)
        return result

    # ------------------------------------------------------------------ loop
    def fit(self, dataset, steps: int | None = None) -> list[dict]:
        from tqdm import tqdm

        c = self.config
        steps = c.steps if steps is None else steps
        per_rank = max(1, c.prompts_per_step // self.acc.num_processes)
        order = list(range(len(dataset)))
        random.Random(c.seed).shuffle(order)    # the same order on every process
        logger = _Logger(self.out, enabled=self.acc.is_main_process)
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(c.to_dict(), indent=2))
        history = []
        bar = tqdm(total=steps, initial=self.step, desc="grpo", disable=not self.acc.is_main_process)
        while self.step < steps:
            base = self.step * per_rank * self.acc.num_processes + self.acc.process_index * per_rank
            batch = [dataset.get(order[(base + j) % len(order)]) for j in range(per_rank)]
            metrics = self.train_step(batch)
            history.append(metrics)
            logger.log(metrics)
            bar.update(1)
            bar.set_postfix(r1=f"{metrics['reward_stage1']:.2f}", r2=f"{metrics['reward_stage2']:.2f}")
            if c.save_every and (self.step % c.save_every == 0 or self.step == steps):
                self.save()
        bar.close()
        logger.close()
        return history

    def save(self) -> Path:
        """``checkpoint-<step>/``: the weights as save_pretrained writes them (loadable for
        inference; LoRA: the adapters), ``state/`` with accelerate's optimiser, RNG and,
        under FSDP or DeepSpeed, sharded model states, and ``trainer_state.json``."""
        path = self.out / f"checkpoint-{self.step:06d}"
        self.acc.wait_for_everyone()
        self.acc.save_state(str(path / "state"))
        save_weights(self.acc, self.model, self.policy.processor, path)
        if self.acc.is_main_process:
            # written last: its presence marks a complete checkpoint
            (path / "trainer_state.json").write_text(json.dumps({"step": self.step}))
        self.acc.wait_for_everyone()
        return path


def save_weights(acc, model, processor, path: Path) -> None:
    """The weights as ``save_pretrained`` writes them (LoRA: the adapters) and the
    processor, gathered from every process's shard; call it on every process."""
    weights = acc.get_state_dict(model)
    if acc.is_main_process:
        acc.unwrap_model(model).save_pretrained(path, state_dict=weights, safe_serialization=True)
        processor.save_pretrained(path)


def sharding_of(acc) -> str | None:
    """"fsdp1", "fsdp2" or "zero3" when each process holds a shard of the weights."""
    from accelerate import DistributedType

    if acc.distributed_type == DistributedType.FSDP:
        return f"fsdp{acc.state.fsdp_plugin.fsdp_version}"
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if acc.distributed_type == DistributedType.DEEPSPEED and plugin.zero_stage == 3:
        return "zero3"
    return None


def prepare_for_training(acc, config: TrainConfig, model, lr: float):
    """(prepared model, optimiser): AdamW on the trainable parameters, through
    ``accelerator.prepare`` with the DeepSpeed settings a config needs and the ZeRO-3 saving
    check; GRPO and SFT share it so that both train under the same wrappers."""
    import torch

    configure_deepspeed(acc, config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=lr, weight_decay=config.weight_decay)
    model, optimizer = acc.prepare(model, optimizer)
    check_deepspeed_saving(acc, model)
    return model, optimizer


def micro_batches(trajectories: list[Trajectory], size: int) -> list[list[Trajectory]]:
    """Groups of ``size`` for one forward each, similar lengths together so that little of
    a forward pass is padding."""
    n = max(1, size)
    ordered = sorted(trajectories, key=lambda t: t.inputs["input_ids"].shape[1]
                     + len(t.completion_ids))
    return [ordered[i:i + n] for i in range(0, len(ordered), n)]


def backward_micro_batches(acc, model, batches: list, batch_loss) -> float:
    """Gradients of one optimiser step from several micro-batches; ``batch_loss(batch)``
    returns the batch's share of the step's mean loss. Each backward runs inside
    ``acc.accumulate``, so gradients are reduced across processes once, on the last one,
    under DDP, FSDP and DeepSpeed alike. Returns the summed loss."""
    from accelerate import DistributedType

    acc.gradient_accumulation_steps = max(1, len(batches))
    acc.step = 0
    total = 0.0
    for batch in batches:
        with acc.accumulate(model):
            loss = batch_loss(batch)
            # accelerator.backward divides by the accumulation steps (DeepSpeed by its
            # engine's own setting); a share of the step's mean must not be divided again
            if acc.distributed_type == DistributedType.DEEPSPEED:
                factor = model.gradient_accumulation_steps()
            else:
                factor = acc.gradient_accumulation_steps
            acc.backward(loss * factor)
        total += float(loss.detach())
    return total


def optimizer_step(acc, model, optimizer, grad_clip: float) -> None:
    """Clip, step and clear the gradients. DeepSpeed clips by its config's
    gradient_clipping (set from the same ``grad_clip``) and its engine already stepped in
    the last backward; these calls then do nothing twice."""
    if grad_clip:
        acc.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def check_deepspeed_saving(acc, model) -> None:
    """After ``prepare``: under ZeRO-3 a checkpoint needs the gathered 16-bit weights;
    refuse a config without them now rather than at the first save, hours later."""
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if plugin is not None and plugin.zero_stage == 3 \
            and not model.zero_gather_16bit_weights_on_model_save():
        raise ValueError("DeepSpeed ZeRO-3 needs zero3_save_16bit_model: true in the accelerate "
                         "config (stage3_gather_16bit_weights_on_model_save) to save weights.")


def configure_deepspeed(acc, config: TrainConfig) -> None:
    """Before ``prepare``: DeepSpeed wants a batch size it cannot infer without a
    DataLoader (it only logs with it: the loop sets each step's accumulation), and clips
    gradients itself: at the training config's ``grad_clip``."""
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    if plugin.deepspeed_config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.micro_batch_size
    plugin.deepspeed_config["gradient_clipping"] = config.grad_clip or 0.0


@contextlib.contextmanager
def _unsharded_root(model):
    model.unshard()         # FSDP2: the root module's own parameters, whole on every process
    try:
        yield
    finally:
        model.reshard()


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = sorted(Path(out_dir).glob("checkpoint-*/trainer_state.json"))
    return found[-1].parent if found else None


def _weights_saved_elsewhere(models, weights, output_dir) -> None:
    weights.clear()     # plain and DDP models: save() writes them with save_pretrained


def _weights_loaded_elsewhere(models, input_dir) -> None:
    models.clear()      # ... and the trainer starts from those weights


def _mean(values) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else math.nan


class _Logger:
    """metrics.csv plus TensorBoard, main process only."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "metrics.csv"
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            pass

    def log(self, metrics: dict) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(metrics))
            if new:
                w.writeheader()
            w.writerow(metrics)
        if self.writer is not None:
            for k, v in metrics.items():
                if k != "step" and isinstance(v, (int, float)) and not math.isnan(v):
                    self.writer.add_scalar(k, v, metrics["step"])

    def close(self) -> None:
        if self.enabled and self.writer is not None:
            self.writer.close()
