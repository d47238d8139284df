"""GRPO and SFT on tiny random models and a generated SocioSeg-shaped set: real steps,
resume, the image guard, the loss maths, and two processes ending with equal weights."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from socio_reasoner.data.socioseg import SocioSegDataset
from socio_reasoner.data.synthetic import write_synthetic_socioseg
from socio_reasoner.render import resize_rgb
from socio_reasoner.train.config import TrainConfig
from socio_reasoner.train.grpo import GRPOTrainer, check_pixels, policy_loss
from socio_reasoner.train.rollout import Trajectory, group_advantages, pixel_digest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_synthetic_socioseg(tmp_path_factory.mktemp("socioseg"), {"train": 3}, size=128)


def tiny_config(tmp_path, data_dir, vlm_dir, tiny_sam2, **kw):
    base = TrainConfig.from_yaml(REPO / "configs" / "grpo_tiny.yaml")
    values = {**base.to_dict(), "data": str(data_dir), "model": str(vlm_dir),
              "segmenter_checkpoint": str(tiny_sam2), "out_dir": str(tmp_path / "run"), **kw}
    return TrainConfig(**values)


def test_paper_config_holds_the_recipe():
    c = TrainConfig.from_yaml(REPO / "configs" / "grpo_socioseg.yaml")
    assert (c.prompts_per_step, c.group_size, c.lr, c.weight_decay, c.kl_coef, c.clip_eps) == (
        128, 8, 1e-6, 0.01, 5e-3, 0.2)
    assert (c.temperature, c.top_p, c.top_k, c.max_new_tokens, c.steps) == (0.99, 0.99, 100, 2048, 250)
    with pytest.raises(ValueError, match="Unknown keys"):
        TrainConfig.from_yaml(_write(REPO, {"learning_rate": 1}))


def _write(repo, d):
    import tempfile

    import yaml
    path = Path(tempfile.mkdtemp()) / "c.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def test_policy_loss_by_hand():
    lp = torch.tensor([-1.0, -2.0])
    loss, kl = policy_loss(lp, lp, lp, advantage=2.0, clip_eps=0.2, kl_coef=0.1)
    assert torch.allclose(loss, torch.tensor([-2.0, -2.0])) and torch.allclose(kl, torch.zeros(2))
    # ratio e^0.5 ≈ 1.6487 is clipped to 1.2 for a positive advantage: −1.2·1
    new, old = torch.tensor([-0.5]), torch.tensor([-1.0])
    loss, _ = policy_loss(new, old, new, advantage=1.0, clip_eps=0.2, kl_coef=0.0)
    assert loss.item() == pytest.approx(-1.2)
    # negative advantage: min(1.6487·−1, 1.2·−1) = −1.6487 → loss +1.6487 (no clipping benefit)
    loss, _ = policy_loss(new, old, new, advantage=-1.0, clip_eps=0.2, kl_coef=0.0)
    assert loss.item() == pytest.approx(math.exp(0.5))
    # k3 KL: ref − new = 0.5 → e^0.5 − 0.5 − 1 ≈ 0.148721
    _, kl = policy_loss(new, new, torch.tensor([0.0]), advantage=0.0, clip_eps=0.2, kl_coef=1.0)
    assert kl.item() == pytest.approx(math.exp(0.5) - 1.5)


def test_group_advantages_normalise_within_groups():
    trajs = [Trajectory({}, None, "", r, None, "stage1", g) for r, g in
             [(1.0, 0), (3.0, 0), (5.0, 1), (5.0, 1)]]
    group_advantages(trajs, eps=1e-6)
    # group 0: mean 2, std (ddof 1) √2 → ±1/√2; group 1: all equal → 0
    assert [round(t.advantage, 5) for t in trajs] == [round(-1 / math.sqrt(2), 5),
                                                      round(1 / math.sqrt(2), 5), 0.0, 0.0]


def test_one_grpo_step_changes_weights_and_logs(tmp_path, data_dir, taught_vlm_dir, tiny_sam2):
    # no weight decay: any change in the weights comes from the policy gradient
    config = tiny_config(tmp_path, data_dir, taught_vlm_dir, tiny_sam2, weight_decay=0.0)
    trainer = GRPOTrainer(config)
    before = {n: p.detach().clone() for n, p in trainer.policy.model.named_parameters()}
    (metrics,) = trainer.fit(SocioSegDataset.open(config.data, split="train"))
    assert metrics["trajectories"] == 8                   # G=4 stage-1 + 4 stage-2
    assert metrics["loss"] != 0.0                         # rewards differed within a group
    for key in ("loss", "kl", "reward_stage1", "reward_stage2"):
        assert math.isfinite(metrics[key]), key
    changed = sum(not torch.equal(before[n], p) for n, p in trainer.policy.model.named_parameters())
    assert changed > 0
    rows = (Path(config.out_dir) / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,kl") and len(rows) == 2
    assert list((Path(config.out_dir) / "tensorboard").glob("events.*"))
    ckpt = Path(config.out_dir) / "checkpoint-000001"
    assert (ckpt / "model.safetensors").exists() and (ckpt / "trainer_state.json").exists()
    assert list((ckpt / "state").glob("optimizer*.bin")) and list((ckpt / "state").glob("random_states_*.pkl"))
    assert not list((ckpt / "state").glob("model*"))      # the weights are stored once

    # resume: a new trainer on the same folder continues the step count
    resumed = GRPOTrainer(config)
    assert resumed.step == 1
    for n, p in resumed.policy.model.named_parameters():
        assert torch.equal(p, trainer.policy.model.state_dict()[n]), n
    moments = [s["exp_avg"] for s in trainer.optimizer.state_dict()["state"].values()]
    restored = [s["exp_avg"] for s in resumed.optimizer.state_dict()["state"].values()]
    assert moments and all(torch.equal(a, b) for a, b in zip(moments, restored, strict=True))
    history = resumed.fit(SocioSegDataset.open(config.data, split="train"), steps=2)
    assert [m["step"] for m in history] == [2] and (Path(config.out_dir) / "checkpoint-000002").exists()


def test_micro_batched_loss_pass_gives_the_same_gradients(tmp_path, data_dir, taught_vlm_dir,
                                                          tiny_sam2):
    """Right-padded micro-batches of trajectories score each token as a lone forward does,
    so the step's gradient does not depend on micro_batch_size."""
    config = tiny_config(tmp_path, data_dir, taught_vlm_dir, tiny_sam2, micro_batch_size=1)
    trainer = GRPOTrainer(config)
    trajectories = trainer.rollout([SocioSegDataset.open(config.data, split="train").get(0)])
    lengths = {len(t.completion_ids) for t in trajectories}
    assert len(trajectories) == 2 * config.group_size and len(lengths) > 1   # padding is exercised
    grads = []
    for micro in (1, 3, len(trajectories)):
        trainer.config.micro_batch_size = micro
        trainer.optimizer.zero_grad(set_to_none=True)
        loss, kl, n_tokens = trainer.accumulate_gradients(trajectories)
        grads.append((loss, kl, {n: p.grad.clone() for n, p in trainer.model.named_parameters()
                                 if p.grad is not None}))
    (loss1, kl1, g1) = grads[0]
    assert g1 and any(float(g.abs().max()) > 0 for g in g1.values())
    for loss, kl, g in grads[1:]:
        assert loss == pytest.approx(loss1, abs=1e-5) and kl == pytest.approx(kl1, rel=1e-4, abs=1e-6)
        assert g.keys() == g1.keys()
        for name in g1:
            torch.testing.assert_close(g[name], g1[name], rtol=1e-3, atol=1e-6, msg=name)


def test_the_loss_pass_scores_tokens_as_generation_did(tiny_vlm_dir):
    """The loss pass must give each sampled token the log-probability generation gave it:
    the same images, and the same (3-D, image-aware) positions, from a left-padded batch."""
    from socio_reasoner import prompts
    from socio_reasoner.models.base import GenerationConfig
    from socio_reasoner.models.vlm import TransformersVLM
    from socio_reasoner.train.grpo import completion_logprobs
    from socio_reasoner.train.rollout import _row

    policy = TransformersVLM(tiny_vlm_dir, device="cpu", dtype="float32")
    w, h = policy.model_frame(128, 128)
    rng = np.random.default_rng(3)
    requests = [([rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2)],
                 prompts.stage1_prompt(q)) for q in ("school", "where children study")]
    inputs = policy.prepare(requests)
    config = GenerationConfig(max_new_tokens=6, min_new_tokens=6)
    with torch.no_grad():
        out = policy.model.generate(**inputs, **policy._gen_kwargs(config), output_logits=True,
                                    return_dict_in_generate=True)
    prompt_len = inputs["input_ids"].shape[1]
    assert len(set(inputs["attention_mask"].sum(1).tolist())) == 2        # padding is exercised
    for i in range(len(requests)):
        ids = out.sequences[i, prompt_len:]
        generated = torch.stack([torch.log_softmax(step[i].float(), -1)[t]
                                 for step, t in zip(out.logits, ids, strict=True)])
        traj = Trajectory(_row(inputs, i, 2), ids, "", 0.0, None, "stage1", 0)
        with torch.no_grad():
            scored = completion_logprobs(policy.model, traj, "cpu")
        torch.testing.assert_close(scored, generated, atol=2e-4, rtol=1e-4)


def test_stage2_trajectories_carry_the_rendered_images(tmp_path, data_dir, tiny_vlm_dir, tiny_sam2):
    import random

    from socio_reasoner.train.sft import sft_examples

    config = tiny_config(tmp_path, data_dir, tiny_vlm_dir, tiny_sam2, stage2_sampling="best_of_stage1")
    trainer = GRPOTrainer(config)
    sample = SocioSegDataset.open(config.data, split="train").get(0)
    trajs = trainer.rollout([sample])
    s1 = [t for t in trajs if t.stage == "stage1"]
    s2 = [t for t in trajs if t.stage == "stage2"]
    assert len(s2) == 4 and {t.group for t in s2} == {1} and {t.group for t in s1} == {0}
    fw = 504                                              # 128² tiles are seen at 504²
    map_f, sat_f = resize_rgb(sample.map, fw, fw), resize_rgb(sample.sat, fw, fw)
    plain = trainer.policy.prepare([([map_f, sat_f], "x")])["pixel_values"].cpu()
    assert torch.equal(s1[0].inputs["pixel_values"], plain)
    for t in trajs:
        check_pixels(t)                                   # what was sampled is what is scored

    # With a non-empty stage-1 mask (the SFT targets draw the truth), stage 2's images
    # differ from the originals, and feeding the originals is caught.
    _, fb = sft_examples(trainer.policy, sample, random.Random(0))
    assert not torch.equal(fb.inputs["pixel_values"], plain)
    check_pixels(fb)
    tampered = Trajectory({**fb.inputs, "pixel_values": plain}, fb.completion_ids, "", 0, None,
                          "stage2", 1, fb.digest)
    with pytest.raises(RuntimeError, match="other images"):
        check_pixels(tampered)
    assert fb.digest == pixel_digest(fb.inputs)


def test_sft_step(tmp_path, data_dir, tiny_vlm_dir, tiny_sam2):
    import random

    from socio_reasoner.train.sft import target_answers, train_sft

    config = tiny_config(tmp_path, data_dir, tiny_vlm_dir, tiny_sam2, sft_lr=1e-3)
    ds = SocioSegDataset.open(config.data, split="train")
    _, mask_f, boxes, s1, s2 = target_answers(ds.get(0), random.Random(0))
    assert s1.startswith("<think>") and '"bbox_2d"' in s1 and '"points"' in s2 and boxes
    history = train_sft(config, ds, steps=2)
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    assert history[1]["loss"] < history[0]["loss"]       # the same targets get likelier
    assert (Path(config.out_dir) / "final" / "model.safetensors").exists()
    # the same through the command line, which owns (and ends) its accelerator
    from socio_reasoner.cli import main as cli_main

    cli_out = tmp_path / "cli"
    assert cli_main(["sft", "--config", str(_write(REPO, config.to_dict())), "--steps", "1",
                     "--out-dir", str(cli_out)]) == 0
    assert (cli_out / "final" / "model.safetensors").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(tmp_path, config, mode: str, mixed_precision: str = "no",
                   task: str = "grpo") -> list[dict]:
    out = tmp_path / "reports"
    out.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "ACCELERATE_MIXED_PRECISION": mixed_precision}     # as `accelerate launch` sets it
    if mode == "zero3":
        env.update(ACCELERATE_USE_DEEPSPEED="true", DS_ACCELERATOR="cpu")
    # torchrun sets RANK/WORLD_SIZE; Accelerator(cpu=True) then runs over gloo.
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", str(_free_port()), str(REPO / "tests" / "engine" / "dist_step.py"),
                    json.dumps(config.to_dict()), str(out), mode, task],
                   check=True, env=env, cwd=tmp_path, timeout=600)
    reports = sorted(out.glob("rank*.json" if task == "grpo" else f"{task}-rank*.json"))
    return [json.loads(p.read_text()) for p in reports]


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_two_processes_end_with_identical_weights(tmp_path, data_dir, taught_vlm_dir, tiny_sam2,
                                                  precision):
    """DDP, in fp32 and in the shipped configs' bf16 mixed precision (autocast over the fp32
    weights the trainer keeps)."""
    config = tiny_config(tmp_path, data_dir, taught_vlm_dir, tiny_sam2, prompts_per_step=2,
                         save_every=0, weight_decay=0.0)
    ranks = _two_processes(tmp_path, config, "ddp", precision)
    assert len(ranks) == 2 and ranks[0]["world"] == 2 and ranks[0]["type"].endswith("MULTI_CPU")
    assert ranks[0]["mixed_precision"] == precision
    assert ranks[0]["after"] != ranks[0]["before"]
    # each process rolled out its own sample, so only synchronised gradients agree
    assert ranks[0]["loss"] != ranks[1]["loss"]
    assert ranks[0]["after"] == ranks[1]["after"]
    assert np.isfinite(ranks[0]["loss"]) and np.isfinite(ranks[1]["loss"])


@pytest.mark.parametrize("mode, kind, lora", [("fsdp2", "FSDP", 0), ("zero3", "DEEPSPEED", 0),
                                              ("fsdp2", "FSDP", 4), ("zero3", "DEEPSPEED", 4)])
def test_sharded_step_on_two_processes_saves_and_resumes(tmp_path, data_dir, taught_vlm_dir,
                                                         tiny_sam2, mode, kind, lora):
    """FSDP2 and DeepSpeed ZeRO-3 with the weights sharded over two processes, configured
    as the shipped accelerate configs: each process samples answers of its own lengths
    (generation must keep the shard gathering in step), the step changes the whole
    model, the checkpoint holds the gathered weights, and a new launch resumes."""
    from socio_reasoner.models.vlm import TransformersVLM

    config = tiny_config(tmp_path, data_dir, taught_vlm_dir, tiny_sam2, prompts_per_step=2,
                         save_every=1, weight_decay=0.0, lora_rank=lora)
    first = _two_processes(tmp_path, config, mode, "bf16")    # as the shipped configs
    assert [r["step"] for r in first] == [1, 1] and first[0]["type"].endswith(kind)
    assert first[0]["mixed_precision"] == "bf16"
    main = first[0]                           # the gathered weights are on rank 0 only
    assert main["full_params"] > 0 and first[1]["full_params"] == 0
    assert all(r["local_params"] < 0.75 * main["full_params"] for r in first)    # sharded
    assert first[0]["response_tokens"] != first[1]["response_tokens"]
    assert main["after"] != main["before"] and first[0]["loss"] != first[1]["loss"]
    ckpt = Path(config.out_dir) / "checkpoint-000001"
    if lora:                                   # the adapters only, as peft saves them
        assert (ckpt / "adapter_model.safetensors").exists()
        assert not (ckpt / "model.safetensors").exists()
    else:
        saved = TransformersVLM(ckpt, device="cpu", dtype="float32").model.state_dict()
        start = TransformersVLM(config.model, device="cpu", dtype="float32").model.state_dict()
        assert saved.keys() == start.keys()
        assert any(not torch.equal(saved[k], start[k]) for k in saved)

    second = [r for r in _two_processes(tmp_path, config, mode, "bf16") if r["step"] == 2]
    assert [r["start_step"] for r in second] == [1, 1]
    assert second[0]["before"] == main["after"]              # resumed from the checkpoint
    assert [r["restored_optimizer"] for r in first] == [0, 0]
    assert all(r["restored_optimizer"] > 0 for r in second)   # with the optimiser's state
    assert (Path(config.out_dir) / "checkpoint-000002" / "trainer_state.json").exists()


def test_lora_step_trains_adapters_only(tmp_path, data_dir, taught_vlm_dir, tiny_sam2):
    config = tiny_config(tmp_path, data_dir, taught_vlm_dir, tiny_sam2, lora_rank=4,
                         weight_decay=0.0, lr=1e-2)
    trainer = GRPOTrainer(config)
    assert trainer.reference is None                      # adapters disabled = reference
    named = dict(trainer.policy.model.named_parameters())
    before = {n: p.detach().clone() for n, p in named.items()}
    (metrics,) = trainer.fit(SocioSegDataset.open(config.data, split="train"))
    changed = {n for n, p in trainer.policy.model.named_parameters() if not torch.equal(before[n], p)}
    assert changed and all("lora_" in n for n in changed) and math.isfinite(metrics["kl"])
    assert (Path(config.out_dir) / "checkpoint-000001" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("name, kind", [("accelerate_ddp_cpu.yaml", "MULTI_CPU"),
                                        ("accelerate_fsdp.yaml", "FSDP"),
                                        ("accelerate_deepspeed_zero3.yaml", "DEEPSPEED")])
def test_accelerate_configs_are_valid(name, kind):
    """The launch configs parse with accelerate's own loader (which refuses unknown keys);
    their nested keys are options of `accelerate launch`; FSDP wraps real module classes."""
    import transformers.models.qwen2_5_vl.modeling_qwen2_5_vl as qwen
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    config = load_config_from_file(str(REPO / "configs" / name))
    assert config.distributed_type.value == kind
    options = {a.dest for a in launch_command_parser()._actions}
    nested = {**(config.fsdp_config or {}), **(config.deepspeed_config or {})}
    assert set(nested) <= options, set(nested) - options
    for cls in nested.get("fsdp_transformer_layer_cls_to_wrap", "").split(","):
        assert not cls or isinstance(getattr(qwen, cls, None), type), cls
    if kind == "FSDP":          # the version and state-dict type the FSDP test runs
        assert nested["fsdp_version"] == 2 and nested["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    if kind == "DEEPSPEED":     # checkpoints need the gathered 16-bit weights under ZeRO-3
        assert nested["zero_stage"] == 3 and nested["zero3_save_16bit_model"] is True


@pytest.mark.parametrize("mode, kind", [("fsdp2", "FSDP"), ("zero3", "DEEPSPEED")])
def test_sft_step_with_sharded_weights(tmp_path, data_dir, tiny_vlm_dir, tiny_sam2, mode, kind):
    """The SFT baseline's step under FSDP2 and ZeRO-3 (two CPU processes, bf16 as shipped):
    the saved weights are the whole trained model."""
    from socio_reasoner.models.vlm import TransformersVLM

    config = tiny_config(tmp_path, data_dir, tiny_vlm_dir, tiny_sam2, prompts_per_step=2,
                         sft_lr=1e-3)
    ranks = _two_processes(tmp_path, config, mode, "bf16", task="sft")
    assert len(ranks) == 2 and all(r["type"].endswith(kind) for r in ranks)
    assert ranks[0]["mixed_precision"] == "bf16"
    assert all(np.isfinite(r["loss"]) for r in ranks) and ranks[0]["loss"] != ranks[1]["loss"]
    saved = TransformersVLM(Path(config.out_dir) / "final", device="cpu", dtype="float32")
    start = TransformersVLM(tiny_vlm_dir, device="cpu", dtype="float32").model.state_dict()
    if mode == "zero3":     # DeepSpeed saves its bf16 weights: untrained, they would be these
        start = {k: v.to(torch.bfloat16).float() for k, v in start.items()}
    trained = saved.model.state_dict()
    assert trained.keys() == start.keys()
    assert any(not torch.equal(trained[k], start[k]) for k in start)
