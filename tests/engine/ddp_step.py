"""Run under `accelerate launch`: one GRPO step, then each process writes a digest of its
weights, so the test can check that DDP left every process with identical weights."""

import hashlib
import json
import sys
from pathlib import Path

import torch

from socio_reasoner.data.socioseg import SocioSegDataset
from socio_reasoner.train.config import TrainConfig
from socio_reasoner.train.grpo import GRPOTrainer

config = TrainConfig(**json.loads(sys.argv[1]))
trainer = GRPOTrainer(config)
before = {n: p.detach().clone() for n, p in trainer.policy.model.named_parameters()}
metrics = trainer.fit(SocioSegDataset.open(config.data, split=config.split), steps=1)[-1]
digest = hashlib.sha256()
changed = 0
for name, p in trainer.policy.model.named_parameters():
    digest.update(p.detach().cpu().to(torch.float32).numpy().tobytes())
    changed += int(not torch.equal(before[name], p.detach()))
rank = trainer.acc.process_index
Path(sys.argv[2], f"rank{rank}.json").write_text(json.dumps(
    {"digest": digest.hexdigest(), "changed": changed, "world": trainer.acc.num_processes,
     "loss": metrics["loss"]}))
