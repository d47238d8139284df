"""Run under `torch.distributed.run`: one GRPO step, then each process reports on its
weights as JSON, so the tests can check what DDP or FSDP did across processes.

    dist_step.py CONFIG_JSON OUT_DIR {ddp|fsdp2|zero3} [sft]

accelerate runs FSDP and DeepSpeed on GPUs only. For ``fsdp2`` this script sets the
distributed type of a CPU (gloo) accelerator to FSDP by hand, with the plugin settings of
configs/accelerate_fsdp.yaml; for ``zero3`` (run with ACCELERATE_USE_DEEPSPEED=true and
DS_ACCELERATOR=cpu) it gives accelerate the process count it misses on CPUs, with the
settings of configs/accelerate_deepspeed_zero3.yaml. The trainer's own code paths then
run: sharded prepare, generation with gathered weights, state-dict gathering, save/resume.
"""

import hashlib
import json
import sys
from pathlib import Path

import torch

from socio_reasoner.data.socioseg import SocioSegDataset
from socio_reasoner.train.config import TrainConfig
from socio_reasoner.train.grpo import GRPOTrainer

config = TrainConfig(**json.loads(sys.argv[1]))
out, mode = Path(sys.argv[2]), sys.argv[3]


def accelerator():
    from accelerate import Accelerator, DistributedType, FullyShardedDataParallelPlugin
    from accelerate.state import PartialState

    if mode == "zero3":
        import torch.distributed as dist
        from accelerate import DeepSpeedPlugin

        acc = Accelerator(deepspeed_plugin=DeepSpeedPlugin(**shipped_deepspeed_options()))
        world = {"num_processes": dist.get_world_size(), "process_index": dist.get_rank(),
                 "local_process_index": dist.get_rank()}
        PartialState._shared_state.update(world)
        for key, value in world.items():
            setattr(acc.state, key, value)
        return acc
    acc = Accelerator(cpu=True)
    if mode == "fsdp2":     # both states: AcceleratorState re-reads PartialState's
        acc.state.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        plugin = FullyShardedDataParallelPlugin(**shipped_fsdp_options())
        if acc.mixed_precision != "no":     # as Accelerator does with a plugin it is given
            plugin.set_mixed_precision(acc.mixed_precision)
        acc.state.fsdp_plugin = plugin
    return acc


def shipped_deepspeed_options() -> dict:
    """The plugin settings of configs/accelerate_deepspeed_zero3.yaml."""
    import yaml

    repo = Path(__file__).resolve().parents[2]
    path = repo / "configs" / "accelerate_deepspeed_zero3.yaml"
    return yaml.safe_load(path.read_text())["deepspeed_config"]


def shipped_fsdp_options() -> dict:
    """The plugin settings of configs/accelerate_fsdp.yaml, as `accelerate launch` passes them."""
    import yaml

    repo = Path(__file__).resolve().parents[2]
    fsdp = yaml.safe_load((repo / "configs" / "accelerate_fsdp.yaml").read_text())["fsdp_config"]
    return {"fsdp_version": fsdp["fsdp_version"],
            "reshard_after_forward": fsdp["fsdp_reshard_after_forward"],
            "auto_wrap_policy": fsdp["fsdp_auto_wrap_policy"].lower(),
            "transformer_cls_names_to_wrap": fsdp["fsdp_transformer_layer_cls_to_wrap"].split(","),
            "state_dict_type": fsdp["fsdp_state_dict_type"]}


def full_digest(trainer) -> tuple[str, int]:
    """Digest of the whole model (gathered from the shards under FSDP) and its size."""
    state = trainer.acc.get_state_dict(trainer.model) or {}   # sharded: rank 0 only
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().to(torch.float32).numpy().tobytes())
    return digest.hexdigest(), sum(v.numel() for v in state.values())


if len(sys.argv) > 4 and sys.argv[4] == "sft":     # the SFT baseline's step instead
    from socio_reasoner.train.sft import train_sft

    acc = accelerator()
    history = train_sft(config, SocioSegDataset.open(config.data, split=config.split), steps=1,
                        accelerator=acc)
    Path(out, f"sft-rank{acc.process_index}.json").write_text(json.dumps(
        {"loss": history[-1]["loss"], "world": acc.num_processes,
         "type": str(acc.distributed_type), "mixed_precision": acc.mixed_precision}))
    acc.end_training()
    if mode == "zero3":
        import os

        os._exit(0)
    sys.exit(0)

trainer = GRPOTrainer(config, accelerator=accelerator())
rank = trainer.acc.process_index
start_step = trainer.step
# what the optimiser brought back from a checkpoint: DeepSpeed's step count, else how many
# parameters have AdamW moments (none in a fresh optimiser)
restored = (int(trainer.model.global_steps) if mode == "zero3"
            else len(trainer.optimizer.state_dict()["state"]))
before, full = full_digest(trainer)


def local_numel(p) -> int:
    """Elements this process holds: FSDP2's DTensor shard, ZeRO-3's partition, or all."""
    if hasattr(p, "ds_tensor"):
        return p.ds_tensor.numel()
    return p.to_local().numel() if hasattr(p, "to_local") else p.numel()


local = sum(local_numel(p) for p in trainer.model.parameters())
metrics = trainer.fit(SocioSegDataset.open(config.data, split=config.split), steps=start_step + 1)[-1]
after, _ = full_digest(trainer)
Path(out, f"rank{rank}-step{trainer.step}.json").write_text(json.dumps(
    {"before": before, "after": after, "full_params": full, "local_params": local,
     "world": trainer.acc.num_processes, "type": str(trainer.acc.distributed_type),
     "mixed_precision": trainer.acc.mixed_precision,
     "start_step": start_step, "step": trainer.step, "restored_optimizer": restored, "loss": metrics["loss"],
     "response_tokens": metrics["response_tokens"],
     "seconds_rollout": metrics["seconds_rollout"]}))
trainer.acc.end_training()     # as the CLI does: leave the process group before exit
if mode == "zero3":
    # DeepSpeed's CPU shared-memory collectives (JIT-built here; GPU runs use NCCL)
    # sometimes abort in their C++ teardown at interpreter exit (about 1 exit in 5 on this
    # VM), after all work is done and written: skip that teardown
    import os

    os._exit(0)
