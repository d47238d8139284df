"""The worker protocol over in-memory streams, then over a real subprocess pipe."""

import base64
import io
import json
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from socio_reasoner.errors import CancelledError, ProtocolError, WorkerError
from socio_reasoner.geo.image import Grid
from socio_reasoner.worker import protocol
from socio_reasoner.worker.client import WorkerClient
from socio_reasoner.worker.server import Engine, serve

S1 = '<think>a</think><answer>[{"bbox_2d": [100, 100, 200, 150]}]</answer>'
S2 = '<think>b</think><answer>[{"bbox_2d": [100, 100, 200, 150], "points": [[150, 120]]}]</answer>'
SCRIPTED = {"vlm": "scripted", "vlm_answers": [S1, S2], "segmenter": "box"}


def png_b64(pixels):
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
def view_params():
    rng = np.random.default_rng(1)
    grid = Grid.from_bounds(385000, 6671000, 385768, 6671768, 768, 768, "EPSG:32635")
    return {"grid": grid.to_dict(),
            "sat": {"png_base64": png_b64(rng.integers(0, 256, (768, 768, 3), dtype=np.uint8))},
            "map": {"png_base64": png_b64(rng.integers(0, 256, (768, 768, 3), dtype=np.uint8))}}


def converse(lines):
    stdin = io.BytesIO("".join(json.dumps(m) + "\n" if isinstance(m, dict) else m for m in lines).encode())
    stdout = io.BytesIO()
    assert serve(stdin, stdout, finish_on_eof=True) == 0
    return [json.loads(line) for line in stdout.getvalue().decode().splitlines()]


def replies_by_id(messages):
    return {m["id"]: m for m in messages if "id" in m and "method" not in m}


def test_run_and_refine_over_streams(view_params):
    run = {"id": 2, "method": "run", "params": {**view_params, "query": "school", "view_id": "v1"}}
    refine = {"id": 3, "method": "refine", "params": {
        "view_id": "v1", "query": "school",
        "prompts": [{"box": [385100, 6671500, 385300, 6671600], "points": [[385200, 6671550]]}]}}
    msgs = converse([protocol.request(1, "load", SCRIPTED), run, refine])
    replies = replies_by_id(msgs)
    assert replies[1]["result"]["models"]["vlm"] == "scripted"
    r = replies[2]["result"]
    assert r["view_id"] == "v1" and "UTM zone 35N" in r["crs"]
    (feature,) = r["result"]["features"]
    from shapely.geometry import shape
    poly = shape(feature["geometry"])
    # box (100,100)-(200,150) in the 756 frame → map, within one tile pixel (1 m)
    s = 768 / 756
    assert poly.bounds == pytest.approx((385000 + 100 * s, 6671768 - 150 * s,
                                         385000 + 200 * s, 6671768 - 100 * s), abs=1.0)
    assert feature["properties"]["box_id"] == 0 and feature["properties"]["stage"] == "stage2"
    assert feature["properties"]["area_m2"] == pytest.approx(poly.area, rel=1e-6)
    assert [f["properties"]["stage"] for f in r["boxes"]["features"]] == ["stage1", "stage2"]
    assert len(r["points"]["features"]) == 1 and r["sam_encodings"] == 1
    progress = [m for m in msgs if m.get("method") == "progress" and m["params"]["id"] == 2]
    assert progress and progress[-1]["params"]["fraction"] == pytest.approx(0.95)
    ref = replies[3]["result"]
    (rf,) = ref["result"]["features"]
    assert shape(rf["geometry"]).bounds == pytest.approx((385100, 6671500, 385300, 6671600), abs=1.1)
    assert ref["sam_encodings"] == 1      # the run's embedding was reused


def test_bad_messages_get_error_replies_and_the_loop_survives():
    msgs = converse(["this is not json\n", "[1, 2]\n", "\n",
                     {"id": 5, "method": "format_disk", "params": {}},
                     {"method": "run", "params": {}},
                     {"id": 6, "method": "run", "params": {"query": ""}},
                     {"id": 7, "method": "shutdown"}])
    errors = [m["error"]["code"] for m in msgs if "error" in m]
    assert errors[:4] == ["protocol", "protocol", "protocol", "protocol"]
    assert replies_by_id(msgs)[7]["result"] == {"ok": True}


def test_engine_rejects_unknown_methods_and_empty_queries():
    engine = Engine()
    with pytest.raises(ProtocolError, match="Unknown method"):
        engine.handle("exec", {})
    with pytest.raises(ValueError, match="query is empty"):
        engine.handle("run", {"query": "  "})


def _worker_client(tmp_path):
    return WorkerClient(python=sys.executable, log_path=tmp_path / "worker.log",
                        env={"HF_HUB_OFFLINE": "1"})


def test_subprocess_round_trip_progress_and_cancel(tmp_path, view_params):
    with _worker_client(tmp_path) as client:
        hello = client.request("hello", timeout_s=120)
        assert hello["protocol"] == protocol.PROTOCOL_VERSION and hello["pid"] != 0
        client.request("load", {**SCRIPTED, "vlm_delay_s": 0.5})
        seen = []
        out = client.request("run", {**view_params, "query": "school"},
                             on_progress=lambda f, m: seen.append((f, m)), timeout_s=60)
        assert len(out["result"]["features"]) == 1 and seen[0][0] == 0.0
        assert [m for _, m in seen if m.startswith("stage 2")]
        assert [m for _, m in seen if m.startswith("stage 1: localizing (")]   # answer growing

        client.request("load", {**SCRIPTED, "vlm_delay_s": 20.0})    # a CPU-long answer
        flag = threading.Event()
        threading.Timer(0.5, flag.set).start()
        t0 = time.monotonic()
        with pytest.raises(CancelledError):
            client.request("run", {**view_params, "query": "school"}, is_cancelled=flag.is_set)
        assert time.monotonic() - t0 < 3.0          # promptly, inside the answer
        assert client.request("hello")["pid"] == hello["pid"]   # same worker, still alive


def test_worker_crash_is_reported_with_its_log(tmp_path):
    client = _worker_client(tmp_path)
    client.start()
    client.request("hello", timeout_s=120)
    client._proc.kill()
    with pytest.raises(WorkerError, match="stopped unexpectedly"):
        client.request("hello", timeout_s=30)
    client.kill()
    missing = WorkerClient(python=tmp_path / "nope" / "python")
    with pytest.raises(WorkerError, match="engine environment was not found"):
        missing.start()


def test_run_with_several_views_answers_each_in_order(view_params):
    rng = np.random.default_rng(7)
    other = dict(view_params, grid={**view_params["grid"], "transform": [1.0, 0.0, 386000.0, 0.0, -1.0, 6671768.0]},
                 sat={"png_base64": png_b64(rng.integers(0, 256, (768, 768, 3), dtype=np.uint8))})
    views = [{**view_params, "view_id": "a"}, {**other, "view_id": "b"}]
    msgs = converse([protocol.request(1, "load", {**SCRIPTED, "vlm_answers": [S1, S1, S2, S2]}),
                     protocol.request(2, "run", {"query": "school", "views": views})])
    out = replies_by_id(msgs)[2]["result"]
    assert [r["view_id"] for r in out["results"]] == ["a", "b"]
    xs = [r["result"]["features"][0]["geometry"]["coordinates"][0][0][0] for r in out["results"]]
    assert xs[1] - xs[0] == pytest.approx(1000.0)       # each on its own grid
    assert out["results"][1]["sam_encodings"] == 2       # one encoding per view


def test_a_stopped_worker_stays_stopped(tmp_path):
    """stop() is for good (plugin unload): a request racing it fails instead of starting a
    worker nobody would stop; a crashed worker, by contrast, restarts on the next request."""
    client = _worker_client(tmp_path)
    first = client.request("hello", timeout_s=120)["pid"]
    client._proc.kill()
    client._proc.wait()
    assert client.request("hello", timeout_s=120)["pid"] != first        # restarted
    client.stop()
    with pytest.raises(WorkerError, match="shut down"):
        client.request("hello", timeout_s=30)
    assert not client.is_running()


def test_a_bare_sam2_checkpoint_loads_with_its_config_and_asks_for_it_without(tmp_path, tiny_sam2):
    """The worker's defaults name no segmenter architecture: a bare .pt file gets the
    config it is given (or one guessed from an official file name), and an unknown one a
    clear request for it, not a default meant for another file."""
    import shutil

    from socio_reasoner.errors import ModelLoadError

    bare = tmp_path / "my_finetune.pt"
    shutil.copy(tiny_sam2 / "model.pt", bare)
    spec = {"vlm": "scripted", "vlm_answers": [S1], "segmenter": "sam2",
            "segmenter_checkpoint": str(bare), "device": "cpu"}
    with pytest.raises(ModelLoadError, match="Cannot tell which SAM2 config 'my_finetune.pt'"):
        Engine().load(spec, lambda f, m: None)
    engine = Engine()
    engine.load({**spec, "segmenter_variant": str(tiny_sam2 / "config.yaml")}, lambda f, m: None)
    assert engine.reasoner.segmenter.name.startswith("sam2:")


def test_sam_without_weights_is_asked_for_its_file_not_given_sam2s():
    """The worker's defaults hold no segmenter weights: SAM2's hub id is sam2's default
    inside load_segmenter, and never reaches SAM (v1), which asks for its own file."""
    from socio_reasoner.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="SAM needs a checkpoint file"):
        Engine().load({"vlm": "scripted", "vlm_answers": [S1], "segmenter": "sam",
                       "segmenter_checkpoint": None, "device": "cpu"}, lambda f, m: None)
