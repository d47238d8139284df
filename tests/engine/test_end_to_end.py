"""The engine end to end on tiny random models loaded through the users' code paths:
the CLI on the Helsinki sample, the worker process, and SAM's encoder count."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest

from socio_reasoner.cli import main as cli_main
from socio_reasoner.models.scripted import ScriptedVLM
from socio_reasoner.models.segmenter import Sam2Backend, SamBackend
from socio_reasoner.pipeline import SocioReasoner
from socio_reasoner.worker.client import WorkerClient

SAMPLE = Path(__file__).resolve().parents[2] / "sample"
S1 = '<think>a</think><answer>[{"bbox_2d": [300, 300, 420, 380]}, {"bbox_2d": [600, 100, 700, 200]}]</answer>'
S2 = ('<think>b</think><answer>[{"bbox_2d": [300, 300, 420, 380], "points": [[350, 340]]}, '
      '{"bbox_2d": [600, 100, 700, 200], "points": [[650, 150], [660, 160]]}]</answer>')


def _tiny_args(tiny_vlm_dir, tiny_sam2):
    return ["--vlm", str(tiny_vlm_dir), "--segmenter", "sam2", "--segmenter-checkpoint",
            str(tiny_sam2), "--device", "cpu", "--max-new-tokens", "24"]


def test_cli_segment_on_the_sample_view(tmp_path, tiny_vlm_dir, tiny_sam2):
    out, overlay, report = tmp_path / "r.gpkg", tmp_path / "o.png", tmp_path / "r.json"
    args = ["segment", "--sat", str(SAMPLE / "helsinki_sat.tif"), "--map",
            str(SAMPLE / "helsinki_map.tif"), "--query", "where children study", "--out", str(out),
            "--overlay", str(overlay), "--json", str(report), *_tiny_args(tiny_vlm_dir, tiny_sam2)]
    assert cli_main(args) == 0
    info = pyogrio.read_info(out)
    assert info["crs"] == "EPSG:3067" and list(info["fields"]) == [
        "query", "box_id", "area_m2", "model", "stage", "created"]
    rep = json.loads(report.read_text())
    assert rep["frame_wh"] == [756, 756] and rep["stages"][0]["raw_text"]
    assert rep["stages"][0]["prompt"].startswith("You will be given two images.")
    assert overlay.stat().st_size > 10_000
    assert cli_main(args) == 2                    # never overwrites without --overwrite
    assert cli_main([*args, "--overwrite"]) == 0


def test_cli_says_how_to_get_weights(tmp_path, capsys):
    code = cli_main(["segment", "--sat", str(SAMPLE / "helsinki_sat.tif"), "--map",
                     str(SAMPLE / "helsinki_map.tif"), "--query", "school",
                     "--out", str(tmp_path / "x.gpkg"), "--vlm", "nobody/no-such-model"])
    err = capsys.readouterr().err
    assert code == 2 and "socio-reasoner download" in err and not (tmp_path / "x.gpkg").exists()


@pytest.mark.parametrize("backend", ["sam2", "sam"])
def test_sam_encoder_runs_once_per_view_across_stages_and_refine(backend, tiny_sam2, tiny_sam_checkpoint):
    seg = Sam2Backend(tiny_sam2, device="cpu") if backend == "sam2" else SamBackend(
        tiny_sam_checkpoint, variant="tiny", device="cpu")
    encoder = seg.predictor.model.image_encoder
    calls = []
    encoder.register_forward_hook(lambda *a: calls.append(1))
    rng = np.random.default_rng(0)
    map_img, sat_img = (rng.integers(0, 256, (768, 768, 3), dtype=np.uint8) for _ in range(2))
    reasoner = SocioReasoner(ScriptedVLM([S1, S2]), seg)
    result = reasoner.run(map_img, sat_img, "school")
    assert len(calls) == 1 and result.mask.shape == (768, 768)
    assert [len(s.object_masks) for s in result.stages] == [2, 2]
    from socio_reasoner.parsing import ObjectPrompt
    reasoner.refine(sat_img, [ObjectPrompt((10, 10, 200, 200), [(50, 60)])])
    assert len(calls) == 1


def test_worker_process_with_tiny_models(tmp_path, tiny_vlm_dir, tiny_sam2):
    spec = {"vlm": str(tiny_vlm_dir), "segmenter": "sam2", "segmenter_checkpoint": str(tiny_sam2),
            "segmenter_variant": None, "device": "cpu", "generation": {"max_new_tokens": 16}}
    view = {"sat": {"path": str(SAMPLE / "helsinki_sat.tif")},
            "map": {"path": str(SAMPLE / "helsinki_map.tif")}}
    with WorkerClient(sys.executable, env={"HF_HUB_OFFLINE": "1"}, log_path=tmp_path / "w.log") as c:
        loaded = c.request("load", spec, timeout_s=300)
        assert loaded["reused"] is False and c.request("load", spec)["reused"] is True
        assert loaded["device"] == "cpu"          # the plugin sizes tile batches by it
        out = c.request("run", {**view, "query": "park", "view_id": "v"}, timeout_s=300)
        assert 'AUTHORITY["EPSG","3067"]]' in out["crs"] and out["stages"][0]["name"] == "stage1"
        assert out["sam_encodings"] == 1
        ref = c.request("refine", {"view_id": "v", "query": "park", "prompts": [
            {"box": [385900, 6672500, 386100, 6672700], "points": [[386000, 6672600]]}]})
        assert ref["sam_encodings"] == 1 and ref["boxes"]["features"][0]["properties"]["stage"] == "refine"
        for f in ref["result"]["features"]:
            assert f["properties"]["stage"] == "refine" and f["properties"]["area_m2"] > 0


def test_worker_rejects_unknown_requests(tmp_path):
    """Only known requests run; a shell-looking query is data, never a command."""
    proc = subprocess.run(
        [sys.executable, "-m", "socio_reasoner.worker"], input=b'{"id": 1, "method": "exec", '
        b'"params": {"cmd": "rm -rf /"}}\n{"id": 2, "method": "shutdown"}\n',
        capture_output=True, timeout=120)
    lines = [json.loads(x) for x in proc.stdout.decode().splitlines()]
    assert lines[0]["error"]["code"] == "protocol" and lines[1]["result"] == {"ok": True}


def test_cli_evaluate_with_tiny_models(tmp_path, tiny_vlm_dir, tiny_sam2):
    from socio_reasoner.data.synthetic import write_synthetic_socioseg

    data = write_synthetic_socioseg(tmp_path / "d", {"test": 3}, size=256, layout="parquet")
    out = tmp_path / "run"
    args = ["evaluate", "--data", str(data), "--split", "test", "--out", str(out), "--limit", "2",
            "--mode", "stage1", *_tiny_args(tiny_vlm_dir, tiny_sam2), "--sample", "--seed", "3"]
    assert cli_main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["scored"] == 2 and "stage1_vlm" in summary["mean_seconds"]
    assert (out / "gallery.png").exists() and (out / "summary.md").exists()


def test_batched_views_match_one_at_a_time_and_encode_once(taught_vlm_dir, tiny_sam2):
    from socio_reasoner.data.synthetic import make_synthetic_sample
    from socio_reasoner.models.vlm import TransformersVLM

    seg = Sam2Backend(tiny_sam2, device="cpu")
    calls = []
    seg.predictor.model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    vlm = TransformersVLM(taught_vlm_dir, device="cpu")
    from socio_reasoner.models.base import GenerationConfig
    reasoner = SocioReasoner(vlm, seg, GenerationConfig(max_new_tokens=48))
    views = [(s.map, s.sat, s.query) for s in (make_synthetic_sample("train", k, size=128)
                                              for k in range(3))]
    batched = reasoner.run_batch(views)
    assert len(calls) == 3                          # one encoding per view, both stages
    assert all(r.stages[0].raw_text.startswith("<think>") for r in batched)   # near the format
    single = [SocioReasoner(vlm, Sam2Backend(tiny_sam2, device="cpu"),
                            GenerationConfig(max_new_tokens=48)).run(*v) for v in views]
    for b, s in zip(batched, single, strict=True):
        assert b.stages[0].raw_text == s.stages[0].raw_text
        assert np.array_equal(b.mask, s.mask)
