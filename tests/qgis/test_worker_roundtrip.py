"""QGIS's Python reaches the engine only through the worker: a real round trip from the
QGIS environment to a worker in the engine environment, with torch kept out of QGIS."""

import base64
import os
import sys

import pytest

ENGINE_PYTHON = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), ".venv", "bin", "python")

S1 = '<think>a</think><answer>[{"bbox_2d": [10, 20, 110, 70]}]</answer>'


def _png_b64(rgb, size):
    from qgis.PyQt.QtCore import QBuffer, QByteArray, QIODevice
    from qgis.PyQt.QtGui import QColor, QImage

    img = QImage(size, size, QImage.Format.Format_RGB888)
    img.fill(QColor(*rgb))
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    img.save(buf, "PNG")
    return base64.b64encode(bytes(data)).decode()


@pytest.mark.skipif(not os.path.exists(ENGINE_PYTHON), reason="engine env not built (make setup)")
def test_qgis_python_talks_to_the_engine_worker_without_importing_torch(qgis_app, tmp_path, repo_root):
    from qgis.core import QgsCoordinateReferenceSystem

    sys.path.insert(0, repo_root)
    from socio_reasoner.worker.client import WorkerClient

    assert "numpy" not in sys.modules or sys.modules["numpy"].__version__.startswith("1.")
    crs_wkt = QgsCoordinateReferenceSystem("EPSG:3857").toWkt()
    grid = {"width": 256, "height": 256, "transform": [2.0, 0.0, 2775000.0, 0.0, -2.0, 8437000.0],
            "crs": crs_wkt}
    with WorkerClient(ENGINE_PYTHON, env={"HF_HUB_OFFLINE": "1"}, log_path=tmp_path / "w.log") as client:
        hello = client.request("hello", timeout_s=120)
        assert hello["torch"].startswith("2.") and hello["pid"] != os.getpid()
        client.request("load", {"vlm": "scripted", "vlm_answers": [S1], "segmenter": "box"})
        out = client.request("run", {"query": "park", "mode": "stage1", "grid": grid,
                                     "sat": {"png_base64": _png_b64((30, 90, 30), 256)},
                                     "map": {"png_base64": _png_b64((240, 240, 230), 256)}})
    (feature,) = out["result"]["features"]
    xs = [x for x, _ in feature["geometry"]["coordinates"][0]]
    # frame of a 256 px tile is 504 px (min_pixels); box x 10–110 → tile 5.08–55.9 px → ×2 m
    assert min(xs) == pytest.approx(2775000 + 2 * 10 * 256 / 504, abs=2.0)
    assert max(xs) == pytest.approx(2775000 + 2 * 110 * 256 / 504, abs=2.0)
    assert "torch" not in sys.modules and "transformers" not in sys.modules
    assert "rasterio" not in sys.modules
