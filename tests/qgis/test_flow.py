"""The whole flow from the dock in a real QGIS with the real worker process:
query → task → layers; cancel; a killed worker; edited prompts → Refine; export.

Exact geometry comes from a scripted VLM and box masks served by the worker; the tiny
random models run the same flow once to prove the real backends load and answer.
"""

import os
import shutil
import subprocess
import time

import pytest
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QCoreApplication

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGINE_PYTHON = os.path.join(REPO, ".venv", "bin", "python")
S1 = '<think>a</think><answer>[{"bbox_2d": [300, 300, 420, 380]}]</answer>'
S2 = '<think>b</think><answer>[{"bbox_2d": [300, 300, 420, 380], "points": [[350, 340]]}]</answer>'

pytestmark = pytest.mark.skipif(not os.path.exists(ENGINE_PYTHON),
                                reason="engine env not built (make setup)")


def wait_for(controller, timeout_s=240):
    deadline = time.monotonic() + timeout_s
    while controller.task is not None and time.monotonic() < deadline:
        QCoreApplication.processEvents()
        time.sleep(0.01)
    assert controller.task is None, "the task did not finish in time"
    return controller.last_outcome


@pytest.fixture
def scene(plugin_package, qgis_iface, qgis_canvas, tmp_path):
    """The Helsinki sample (EPSG:3067) shown in a project in EPSG:3857, and a dock."""
    from socioreasoner.ui.controller import Controller
    from socioreasoner.ui.dock import SocioReasonerDock
    from socioreasoner.ui.settings import EngineSettings

    project = QgsProject.instance()
    project.clear()
    layers = {}
    for name in ("sat", "map"):
        src = tmp_path / f"helsinki_{name}.tif"
        shutil.copy(os.path.join(REPO, "sample", f"helsinki_{name}.tif"), src)
        layers[name] = QgsRasterLayer(str(src), f"helsinki {name}")
        assert layers[name].isValid()
    existing = QgsVectorLayer("Point?crs=EPSG:3857", "my own layer", "memory")
    project.addMapLayers([layers["sat"], layers["map"], existing])
    crs = QgsCoordinateReferenceSystem("EPSG:3857")
    project.setCrs(crs)
    qgis_canvas.setDestinationCrs(crs)
    qgis_canvas.resize(600, 600)
    # The offscreen canvas is wider than tall: a 400-unit-high view is ~700 m wide on the
    # ground, one 768 px tile at 1 m/px or finer.
    qgis_canvas.setExtent(QgsRectangle(2777100, 8438000, 2777500, 8438400))
    qgis_canvas.refresh()
    dock = SocioReasonerDock()
    settings = EngineSettings(engine_python=ENGINE_PYTHON, device="cpu", offline=True,
                              timeout_s=240, max_new_tokens=16,
                              extra={"vlm": "scripted", "vlm_answers": [S1, S2], "segmenter": "box"})
    controller = Controller(qgis_iface, dock, settings=settings, project=project,
                            confirm=lambda *a: True)
    dock.sat_combo.setLayer(layers["sat"])
    dock.map_combo.setLayer(layers["map"])
    qgis_iface.messageBar().clear_messages()
    yield controller, dock, project, existing
    controller.shutdown()
    dock.disconnect_project()     # as the plugin's unload does; lets the dock go
    dock.deleteLater()
    project.clear()


def group_layers(project):
    root = project.layerTreeRoot()
    groups = [g for g in root.children() if g.name().startswith("SocioReasoner:")]
    return groups, [layer.layer() for g in groups for layer in g.findLayers()]


def test_find_refine_export_from_the_dock(scene, tmp_path, output_dir):
    controller, dock, project, existing = scene
    dock.query_edit.setText("school")
    assert dock.find_button.isEnabled()
    dock.find_button.click()
    assert isinstance(wait_for(controller), type(controller.last_outcome)) and \
        type(controller.last_outcome).__name__ == "Success", controller.last_outcome
    groups, layers = group_layers(project)
    assert len(groups) == 1
    names = sorted(layer.name() for layer in layers)
    assert names == ["boxes", "points", "result"]
    run = controller.run.layers
    for layer in (run.boxes, run.points, run.result):
        assert layer.crs().authid() == "EPSG:3857"
    assert [f.name() for f in run.result.fields()] == [
        "query", "box_id", "area_m2", "model", "stage", "created"]
    assert run.result.featureCount() == 1 and run.points.featureCount() == 1
    assert run.boxes.featureCount() == 2                    # stage 1 and stage 2 boxes
    first = next(run.result.getFeatures()).geometry().boundingBox()
    assert existing.featureCount() == 0 and existing.isValid()   # the user's layer untouched

    # The analyst moves the final box 100 m east and adds a point, then refines.
    run.boxes.startEditing()
    final = [f for f in run.boxes.getFeatures() if f["stage"] == "stage2"][0]
    moved = QgsGeometry(final.geometry())
    moved.translate(100, 0)
    run.boxes.changeGeometry(final.id(), moved)
    dock.refine_button.click()
    assert type(wait_for(controller)).__name__ == "Success", controller.last_outcome
    after = next(run.result.getFeatures()).geometry().boundingBox()
    assert after.xMinimum() == pytest.approx(first.xMinimum() + 100, abs=3)
    assert after.width() == pytest.approx(first.width(), abs=3)

    for ext in (".gpkg", ".shp", ".geojson"):
        path = str(tmp_path / f"schools{ext}")
        assert controller.export(path)
        back = QgsVectorLayer(path, "back", "ogr")
        assert back.isValid() and back.featureCount() == 1 and back.crs().authid() == "EPSG:3857"
        before = open(path, "rb").read()
        assert not controller.export(path)                  # never overwrites silently
        assert open(path, "rb").read() == before
    assert controller.export(str(tmp_path / "wgs84.gpkg"), crs=QgsCoordinateReferenceSystem("EPSG:4326"))
    assert QgsVectorLayer(str(tmp_path / "wgs84.gpkg"), "w", "ogr").crs().authid() == "EPSG:4326"

    dock.resize(380, 420)
    dock.grab().save(os.path.join(output_dir, "dock_after_run.png"))


def test_cancel_mid_run_and_a_killed_worker(scene):
    """An answer that takes long (as on a CPU) shows its growth in the dock, and Cancel
    stops it inside the answer, keeping the worker and its models."""
    from socioreasoner.ui.session import shared_worker

    controller, dock, project, _ = scene
    controller.settings.extra["vlm_delay_s"] = 30.0
    dock.query_edit.setText("park")
    dock.find_button.click()
    deadline = time.monotonic() + 120
    while "tokens)" not in dock.status_label.text() and time.monotonic() < deadline:
        QCoreApplication.processEvents()
        time.sleep(0.01)
    assert "stage 1: localizing (" in dock.status_label.text()
    pid = shared_worker().client._proc.pid
    t0 = time.monotonic()
    dock.cancel_button.click()
    assert type(wait_for(controller)).__name__ == "Canceled"
    assert time.monotonic() - t0 < 4 and group_layers(project)[0] == []
    assert shared_worker().client._proc.pid == pid           # not killed: models stay loaded

    dock.find_button.click()
    deadline = time.monotonic() + 60
    while "stage 1" not in dock.status_label.text() and time.monotonic() < deadline:
        QCoreApplication.processEvents()
        time.sleep(0.01)
    shared_worker().client._proc.kill()                      # the worker crashes
    outcome = wait_for(controller)
    assert type(outcome).__name__ == "Failed" and "stopped unexpectedly" in outcome.message
    critical = controller.iface.messageBar().get_messages(Qgis.MessageLevel.Critical)
    assert critical and "stopped unexpectedly" in critical[-1]

    controller.settings.extra["vlm_delay_s"] = 0.0          # QGIS goes on; the next run works
    dock.find_button.click()
    assert type(wait_for(controller)).__name__ == "Success"


def test_bad_input_gets_a_clear_message(scene):
    controller, dock, project, _ = scene
    dock.query_edit.setText("")
    controller.find_in_view()
    assert "Type what to find" in dock.status_label.text()
    dock.query_edit.setText("school")
    dock.sat_combo.setLayer(None)
    controller.find_in_view()
    assert "Choose a satellite layer" in dock.status_label.text()
    controller.settings.engine_python = "/nonexistent/python"
    controller.session.settings = controller.settings
    dock.sat_combo.setLayer(project.mapLayersByName("helsinki sat")[0])
    dock.find_button.click()
    outcome = wait_for(controller)
    assert type(outcome).__name__ == "Failed" and "engine environment was not found" in outcome.message
    assert "make setup" in outcome.message


def test_tiny_real_models_through_the_dock(scene, tmp_path):
    controller, dock, project, _ = scene
    build = ("import sys; from socio_reasoner.models.random_init import save_tiny_qwen2_5_vl, "
             "save_tiny_sam2; save_tiny_qwen2_5_vl(sys.argv[1]); save_tiny_sam2(sys.argv[2])")
    subprocess.run([ENGINE_PYTHON, "-c", build, str(tmp_path / "vlm"), str(tmp_path / "sam2")],
                   check=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    controller.settings.extra = {}
    controller.settings.vlm = str(tmp_path / "vlm")
    controller.settings.segmenter_checkpoint = str(tmp_path / "sam2")
    dock.query_edit.setText("where children study")
    dock.find_button.click()
    outcome = wait_for(controller)
    assert type(outcome).__name__ == "Success", outcome
    (reply,) = outcome.replies
    assert reply["stages"][0]["raw_text"] and reply["frame_wh"] == [756, 756]
    assert len(group_layers(project)[0]) == 1
    assert QgsApplication.taskManager().countActiveTasks() == 0


@pytest.mark.parametrize("tile_batch", [1, 3])
def test_large_view_runs_tile_by_tile_and_refines_an_evicted_tile(scene, tmp_path, tile_batch):
    """Many tiles: captured one at a time during the task; refining the first tile after the
    worker has forgotten it (it keeps four views) re-sends that tile's capture."""
    import numpy as np
    from osgeo import gdal, osr

    controller, dock, project, _ = scene
    controller.settings.tile_batch = tile_batch          # 3: tiles go to the VLM in batches
    path = str(tmp_path / "wide.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 1800, 600, 3, gdal.GDT_Byte)
    ds.SetGeoTransform((2776000, 4.0, 0, 8439600, 0, -4.0))       # 7200 × 2400 map units
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(3857)
    ds.SetProjection(srs.ExportToWkt())
    rng = np.random.default_rng(0)
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(rng.integers(0, 255, (600, 1800), dtype=np.uint8))
    ds = None
    wide = QgsRasterLayer(path, "wide sat")
    project.addMapLayer(wide)
    dock.sat_combo.setLayer(wide)
    dock.map_combo.setLayer(wide)
    controller.iface.mapCanvas().setExtent(QgsRectangle(2776000, 8437200, 2783200, 8439600))
    dock.query_edit.setText("school")
    controller.find_in_view()
    assert type(wait_for(controller)).__name__ == "Success", controller.last_outcome
    n_tiles = len(controller.run.tiles)
    assert n_tiles >= 5, n_tiles
    run = controller.run.layers
    assert run.result.featureCount() >= n_tiles - 1          # one box per tile (some may merge)
    # merged across tiles, each polygon is measured again: ~120×80 frame px ≈ 2.1 m² a px
    areas = [f["area_m2"] for f in run.result.getFeatures()]
    assert all(a is not None and 5_000 < a < 40_000 for a in areas), areas

    first_extent = controller.run.tiles[0][1]
    run.boxes.startEditing()
    final = [f for f in run.boxes.getFeatures()
             if f["stage"] == "stage2" and first_extent.contains(f.geometry().boundingBox().center())][0]
    moved = QgsGeometry(final.geometry())
    moved.translate(-40, 0)
    run.boxes.changeGeometry(final.id(), moved)
    before = sorted(f.geometry().boundingBox().xMinimum() for f in run.result.getFeatures())
    dock.refine_button.click()
    assert type(wait_for(controller)).__name__ == "Success", controller.last_outcome
    after = sorted(f.geometry().boundingBox().xMinimum() for f in run.result.getFeatures())
    assert after[0] == pytest.approx(before[0] - 40, abs=3)


@pytest.mark.parametrize("project_crs", ["EPSG:3857", "EPSG:4326"])
def test_local_raster_reaches_the_engine_within_a_pixel(scene, tmp_path, project_crs):
    """A GeoTIFF in EPSG:32635 under a project in another CRS: the engine reads the file
    itself onto the tile's grid, and the pattern's corners land within one pixel."""
    import base64

    import numpy as np
    from osgeo import gdal, osr
    from qgis.core import QgsCoordinateTransform, QgsPointXY
    from qgis.PyQt.QtGui import QImage

    controller, dock, project, _ = scene
    path = str(tmp_path / "pattern_32635.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 800, 800, 3, gdal.GDT_Byte)
    ds.SetGeoTransform((385300, 1.0, 0, 6672900, 0, -1.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32635)
    ds.SetProjection(srs.ExportToWkt())
    data = np.zeros((800, 800), np.uint8)
    data[300:420, 250:450] = 255                     # 200 × 120 m rectangle
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(data)
    ds = None
    layer = QgsRasterLayer(path, "pattern")
    project.addMapLayer(layer)
    dock.sat_combo.setLayer(layer)
    target = QgsCoordinateReferenceSystem(project_crs)
    project.setCrs(target)
    canvas = controller.iface.mapCanvas()
    canvas.setDestinationCrs(target)
    to_3857 = QgsCoordinateTransform(layer.crs(), target, project)
    # the offscreen canvas is ~3.5× wider than tall: a 200 m high view is one 768 px tile
    view = to_3857.transformBoundingBox(QgsRectangle(385600, 6672400, 385800, 6672600))
    canvas.setExtent(view)
    controller.debug_params = {"return_images": True}
    dock.query_edit.setText("school")
    controller.find_in_view()
    outcome = wait_for(controller)
    assert type(outcome).__name__ == "Success", outcome
    (reply,) = outcome.replies
    img = QImage.fromData(base64.b64decode(reply["sat_png_base64"]))
    w, h = img.width(), img.height()
    gray_img = img.convertToFormat(QImage.Format.Format_Grayscale8)   # keep it alive
    ptr = gray_img.constBits()
    ptr.setsize(gray_img.bytesPerLine() * h)
    gray = np.frombuffer(ptr, np.uint8).reshape(h, gray_img.bytesPerLine())[:, :w].copy()
    rows, cols = np.nonzero(gray > 127)
    a, _, c, _, e, f = reply["grid"]["transform"]
    corners = [to_3857.transform(QgsPointXY(x, y)) for x, y in
               [(385550, 6672600), (385750, 6672600), (385750, 6672480), (385550, 6672480)]]
    px = [((p.x() - c) / a, (p.y() - f) / e) for p in corners]
    assert abs(cols.min() - min(x for x, _ in px)) <= 1 and abs(cols.max() + 1 - max(x for x, _ in px)) <= 1
    assert abs(rows.min() - min(y for _, y in px)) <= 1 and abs(rows.max() + 1 - max(y for _, y in px)) <= 1
