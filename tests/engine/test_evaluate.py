"""Evaluation end to end on a generated SocioSeg-shaped set: scoring, resume, reports."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from socio_reasoner.cli import main as cli_main
from socio_reasoner.data.socioseg import SocioSegDataset
from socio_reasoner.data.synthetic import write_synthetic_socioseg
from socio_reasoner.evaluate import evaluate, read_records
from socio_reasoner.metrics import sample_scores, summarize
from socio_reasoner.models.scripted import BoxSegmenter, ScriptedVLM
from socio_reasoner.pipeline import SocioReasoner

N_TEST = 6


@pytest.fixture
def dataset_dir(tmp_path):
    return write_synthetic_socioseg(tmp_path / "socioseg", {"train": 1, "val": 1, "test": N_TEST},
                                    size=128, layout="raw", bad_samples=True)


def test_perfect_and_missing_predictions_through_the_cli(tmp_path, dataset_dir, capsys):
    ds = SocioSegDataset.open(dataset_dir, split="test")
    preds = tmp_path / "preds"
    preds.mkdir()
    good = [s for s in ds if hasattr(s, "mask")]
    for s in good[:4]:                      # four perfect predictions, the rest missing
        Image.fromarray(s.mask.astype(np.uint8) * 255).save(preds / f"{s.id}.png")
    out = tmp_path / "run"
    assert cli_main(["evaluate", "--data", str(dataset_dir), "--split", "test", "--out", str(out),
                     "--predictions", str(preds)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    c = summary["counts"]
    assert (c["scored"], c["skipped"], c["missing_predictions"]) == (N_TEST, 3, 2)
    expected = summarize(
        [sample_scores(s.mask, s.mask) for s in good[:4]]
        + [sample_scores(np.zeros_like(s.mask), s.mask) for s in good[4:]])
    assert summary["overall"] == pytest.approx(expected)
    assert summary["overall"]["cIoU"] < 100 and summary["overall"]["fn"] > 0
    assert set(summary["by_task"]) == {"Socio-name", "Socio-class", "Socio-function"}
    assert {s["reason"] for s in summary["skipped"]} >= {"empty question"}
    md = (out / "summary.md").read_text()
    assert "| **all** | 6 |" in md and "Skipped:" in md
    for name in ("iou_by_task.png", "gallery.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 100
    assert "cIoU" in capsys.readouterr().out


def test_all_perfect_scores_100(tmp_path, dataset_dir):
    ds = SocioSegDataset.open(dataset_dir, split="test")
    preds = tmp_path / "p"
    preds.mkdir()
    for s in ds:
        if hasattr(s, "mask"):
            Image.fromarray(s.mask.astype(np.uint8) * 255).save(preds / f"{s.id}.png")
    o = evaluate(ds, tmp_path / "run", predictions_dir=preds, show_progress=False)["overall"]
    assert (o["cIoU"], o["gIoU"], o["F1"]) == (100.0, 100.0, 100.0)


def test_model_run_records_problems_and_timings(tmp_path, dataset_dir):
    ds = SocioSegDataset.open(dataset_dir, split="test")
    vlm = ScriptedVLM(['<think>x</think><answer>[{"bbox_2d": [10, 10, 200, 200]}]</answer>',
                       '<think>y</think><answer>[{"bbox_2d": [10, 10, 200, 200], "points": [[50, 50]]}]</answer>',
                       "I cannot answer that"])
    summary = evaluate(ds, tmp_path / "run", reasoner=SocioReasoner(vlm, BoxSegmenter()),
                       show_progress=False)
    rows = [r for r in read_records(tmp_path / "run" / "records.jsonl") if "skipped" not in r]
    assert len(rows) == N_TEST and all("seconds" in r for r in rows)
    assert summary["counts"]["parse_failed"] >= 1
    assert "stage1_vlm" in summary["mean_seconds"]


RUNNER = """
import sys
from socio_reasoner.data.socioseg import SocioSegDataset
from socio_reasoner.evaluate import evaluate
from socio_reasoner.models.scripted import BoxSegmenter, ScriptedVLM
from socio_reasoner.pipeline import SocioReasoner
vlm = ScriptedVLM(['<think>x</think><answer>[{"bbox_2d": [10, 20, 300, 250]}]</answer>',
                   '<think>y</think><answer>[{"bbox_2d": [10, 20, 300, 250], "points": [[99, 99]]}]</answer>'],
                  delay_s=float(sys.argv[3]))
evaluate(SocioSegDataset.open(sys.argv[1], split="test"), sys.argv[2],
         reasoner=SocioReasoner(vlm, BoxSegmenter()), show_progress=False)
"""


def test_killed_run_resumes_without_redoing_samples(tmp_path, dataset_dir):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(dataset_dir), str(out), "0.4"], env=env)
    log = out / "records.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and len(read_records(log)) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = read_records(log)
    assert 2 <= len(partial) < N_TEST + 3, "the run should have been killed part-way"
    subprocess.run([sys.executable, "-c", RUNNER, str(dataset_dir), str(out), "0"], env=env, check=True)
    rows = read_records(log)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == N_TEST + 3
    assert rows[:len(partial)] == partial                 # finished samples were not redone
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-c", RUNNER, str(dataset_dir), str(fresh), "0"], env=env, check=True)
    a = json.loads((out / "summary.json").read_text())
    b = json.loads((fresh / "summary.json").read_text())
    assert a["overall"] == b["overall"] and a["counts"] == b["counts"]
