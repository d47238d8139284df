"""The Processing algorithm "Find socio-semantic entities" in a real QGIS with Processing
initialised, run through ``processing.run`` against the real engine worker.

As in test_flow.py, exact geometry comes from a scripted VLM and the box segmenter,
injected through the algorithm's ENGINE_SPEC parameter; the engine's Python comes from the
plugin settings (QgsSettings), set for these tests and restored afterwards.
"""

import json
import os
import shutil
import sys
import time

import pytest
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsDistanceArea,
    QgsFeature,
    QgsGeometry,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterString,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSettings,
    QgsUnitTypes,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGINE_PYTHON = os.path.join(REPO, ".venv", "bin", "python")
ALG_ID = "socioreasoner:findentities"
BOX = [300, 300, 420, 380]                 # model-frame pixels (756 px frame of a 768 tile)
S1 = f'<think>a</think><answer>[{{"bbox_2d": {BOX}}}]</answer>'
S2 = f'<think>b</think><answer>[{{"bbox_2d": {BOX}, "points": [[350, 340]]}}]</answer>'
TWO = ('<think>a</think><answer>[{"bbox_2d": [300, 300, 420, 380]}, '
       '{"bbox_2d": [100, 100, 160, 150]}]</answer>')
SCRIPTED = {"vlm": "scripted", "segmenter": "box", "device": "cpu", "offline": True,
            "timeout_s": 240, "max_new_tokens": 16}
FIELDS = [("query", QVariant.String), ("box_id", QVariant.Int), ("area_m2", QVariant.Double),
          ("model", QVariant.String), ("stage", QVariant.String), ("created", QVariant.String)]
TILE_PX, FRAME_PX = 768, 756

needs_engine = pytest.mark.skipif(not os.path.exists(ENGINE_PYTHON),
                                  reason="engine env not built (make setup)")


def spec(answers, **more):
    return json.dumps({**SCRIPTED, "vlm_answers": answers, **more})


@pytest.fixture(scope="module")
def processing(plugin_package, qgis_app):
    """Processing initialised, with the plugin's provider registered (removed after)."""
    plugins = os.path.join(QgsApplication.pkgDataPath(), "python", "plugins")
    for path in (plugins, "/usr/share/qgis/python/plugins"):
        if os.path.isdir(os.path.join(path, "processing")) and path not in sys.path:
            sys.path.append(path)
    processing = pytest.importorskip("processing")
    from processing.core.Processing import Processing
    from socioreasoner.ui.processing_provider import SocioReasonerProvider
    from socioreasoner.ui.session import shared_worker

    Processing.initialize()
    registry = QgsApplication.processingRegistry()
    assert registry.providerById("socioreasoner") is None
    provider = SocioReasonerProvider()
    assert registry.addProvider(provider)
    yield processing
    registry.removeProvider(provider)          # unload() stops the shared worker
    assert registry.providerById("socioreasoner") is None
    assert shared_worker().client is None


@pytest.fixture
def engine_settings_stored():
    """The plugin settings the algorithm reads: the test engine's Python; restored after."""
    settings = QgsSettings()
    keys = {"socioreasoner/engine_python": ENGINE_PYTHON, "socioreasoner/device": "cpu"}
    before = {k: settings.value(k, None) for k in keys}
    for key, value in keys.items():
        settings.setValue(key, value)
    yield settings
    for key, value in before.items():
        if value is None:
            settings.remove(key)
        else:
            settings.setValue(key, value)


@pytest.fixture
def scene(processing, engine_settings_stored, tmp_path):
    """The Helsinki sample (EPSG:3067 rasters) in a project in EPSG:3857."""
    project = QgsProject.instance()
    project.clear()
    layers = {}
    for name in ("sat", "map"):
        src = tmp_path / f"helsinki_{name}.tif"
        shutil.copy(os.path.join(REPO, "sample", f"helsinki_{name}.tif"), src)
        layers[name] = QgsRasterLayer(str(src), f"helsinki {name}")
        assert layers[name].isValid()
    project.addMapLayers(list(layers.values()))
    project.setCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    yield processing, layers, tmp_path
    project.clear()


def expected_box(x0, y_top, side, box=BOX):
    """Map coordinates of a model-frame box on the single square tile whose top-left is
    (x0, y_top) and whose side is ``side`` map units (the extent's longer side)."""
    per_px = side / TILE_PX * TILE_PX / FRAME_PX           # map units per frame pixel
    x1, y1, x2, y2 = box
    return (x0 + x1 * per_px, y_top - y2 * per_px, x0 + x2 * per_px, y_top - y1 * per_px)


def assert_bbox(geometry, expected, abs_=2.0):
    bbox = geometry.boundingBox()
    got = (bbox.xMinimum(), bbox.yMinimum(), bbox.xMaximum(), bbox.yMaximum())
    assert got == pytest.approx(expected, abs=abs_), (got, expected)


# ---------------------------------------------------------------------- registry


def test_the_algorithm_is_registered_with_its_parameters(processing):
    registry = QgsApplication.processingRegistry()
    alg = registry.algorithmById(ALG_ID)
    assert alg is not None
    assert alg.displayName() == "Find socio-semantic entities"
    assert alg.group() == "Segmentation" and alg.groupId() == "segmentation"
    assert alg.provider().name() == "SocioReasoner" and alg.provider().id() == "socioreasoner"
    assert alg.flags() & QgsProcessingAlgorithm.FlagNoThreading
    assert alg.shortHelpString() and not alg.icon().isNull()
    names = [p.name() for p in alg.parameterDefinitions()]
    assert names == ["EXTENT", "SATELLITE", "MAP", "QUERY", "MODE", "ENGINE_SPEC", "OUTPUT"]
    mode = alg.parameterDefinition("MODE")
    assert mode.options() == ["two-stage", "stage1", "single"]
    assert mode.defaultValue() == "two-stage"
    spec_param = alg.parameterDefinition("ENGINE_SPEC")
    assert spec_param.flags() & spec_param.FlagAdvanced and spec_param.flags() & spec_param.FlagOptional
    assert [o.name() for o in alg.outputDefinitions()] == ["OUTPUT"]
    assert alg.parameterDefinition("OUTPUT").dataType() == 2      # TypeVectorPolygon
    assert alg in registry.algorithms()


def test_engine_spec_overrides(plugin_package):
    from socioreasoner.ui.processing_algorithm import engine_settings
    from socioreasoner.ui.settings import EngineSettings

    base = EngineSettings(engine_python="/opt/engine/python", device="cuda")
    out = engine_settings(json.dumps({"device": "cpu", "tile_px": 512, "offline": True,
                                      "vlm": "scripted", "vlm_answers": ["x"]}), base)
    assert (out.device, out.tile_px, out.offline, out.vlm) == ("cpu", 512, True, "scripted")
    assert out.engine_python == "/opt/engine/python"         # never from a parameter
    assert out.model_spec()["vlm_answers"] == ["x"] and out.model_spec()["device"] == "cpu"
    assert base.device == "cuda" and base.extra == {}          # the stored settings untouched
    assert engine_settings("", base) is base
    for bad, words in (('{"engine_python": "/bin/sh"}', "engine_python"),
                       ('{"mode": "single"}', "MODE"), ("[1]", "JSON object"),
                       ("{nope", "not valid JSON"), ('{"tile_px": "big"}', "tile_px"),
                       ('{"offline": 1}', "offline")):
        with pytest.raises(ValueError, match=words):
            engine_settings(bad, base)


# ---------------------------------------------------------------------- runs


@needs_engine
def test_two_stage_run_writes_the_result_schema(scene):
    processing, layers, _ = scene
    feedback = QgsProcessingFeedback()
    results = processing.run(ALG_ID, {
        "EXTENT": "2777000,2777600,8438000,8438400 [EPSG:3857]",
        "SATELLITE": layers["sat"], "MAP": layers["map"], "QUERY": "  school ",
        "ENGINE_SPEC": spec([S1, S2]), "OUTPUT": "TEMPORARY_OUTPUT"}, feedback=feedback)
    out = results["OUTPUT"]
    assert isinstance(out, QgsVectorLayer) and out.isValid()
    assert [(f.name(), f.type()) for f in out.fields()] == FIELDS
    assert out.crs().authid() == "EPSG:3857"
    assert QgsWkbTypes.geometryType(out.wkbType()) == QgsWkbTypes.PolygonGeometry
    assert out.featureCount() == 1
    (feature,) = out.getFeatures()
    assert feature["query"] == "school" and feature["box_id"] == 0
    assert feature["model"] == "scripted" and feature["stage"] == "stage2"
    assert feature["created"].endswith("Z")
    # 600 × 400 map units: one square tile of 600 centred on the extent.
    assert_bbox(feature.geometry(), expected_box(2777000, 8438500, 600))
    measure = QgsDistanceArea()
    measure.setSourceCrs(out.crs(), QgsProject.instance().transformContext())
    measure.setEllipsoid("EPSG:7030")
    ground = measure.measureArea(feature.geometry()) * QgsUnitTypes.fromUnitToUnitFactor(
        measure.areaUnits(), QgsUnitTypes.AreaSquareMeters)
    assert feature["area_m2"] == pytest.approx(ground, rel=0.02)


@needs_engine
def test_stage1_in_the_project_crs_and_from_file_paths(scene):
    processing, layers, tmp_path = scene
    results = processing.run(ALG_ID, {
        "EXTENT": "2777000,2777600,8438000,8438400",           # no CRS: the project's
        "SATELLITE": layers["sat"].source(), "MAP": layers["map"].source(),
        "QUERY": "park", "MODE": "stage1", "ENGINE_SPEC": spec([TWO]),
        "OUTPUT": str(tmp_path / "parks.gpkg")})
    out = QgsVectorLayer(results["OUTPUT"], "parks", "ogr")
    assert out.isValid() and out.crs().authid() == "EPSG:3857"
    assert [f.name() for f in out.fields() if f.name() != "fid"] == [n for n, _ in FIELDS]
    features = sorted(out.getFeatures(), key=lambda f: f["box_id"])
    assert [f["box_id"] for f in features] == [0, 1]
    assert {f["stage"] for f in features} == {"stage1"}
    assert_bbox(features[0].geometry(), expected_box(2777000, 8438500, 600))
    assert_bbox(features[1].geometry(), expected_box(2777000, 8438500, 600, [100, 100, 160, 150]))


@needs_engine
def test_the_output_is_in_the_extents_crs(scene):
    """An extent in EPSG:3067 in a project in EPSG:3857, with a vector map layer in
    EPSG:4326: the polygons come back in EPSG:3067, on the extent's own grid."""
    processing, layers, _ = scene
    streets = QgsVectorLayer("Polygon?crs=EPSG:4326", "streets", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(24.93, 60.16, 24.96, 60.18)))
    streets.dataProvider().addFeatures([feature])
    streets.updateExtents()
    out = processing.run(ALG_ID, {
        "EXTENT": "385900,386200,6672400,6672700 [EPSG:3067]",
        "SATELLITE": layers["sat"], "MAP": streets, "QUERY": "school",
        "MODE": "single", "ENGINE_SPEC": spec([S1]), "OUTPUT": "TEMPORARY_OUTPUT"})["OUTPUT"]
    assert out.crs().authid() == "EPSG:3067" and out.featureCount() == 1
    (feature,) = out.getFeatures()
    assert feature["stage"] == "single"
    assert_bbox(feature.geometry(), expected_box(385900, 6672700, 300))


@needs_engine
@pytest.mark.parametrize("tile_batch", [0, 1, 2])
def test_a_wide_extent_runs_per_tile_and_merges(scene, tile_batch):
    """An extent wider than one 768 px tile at 1 m/px: two tiles, each answered with the
    scripted box, one request per tile or both in one batch (the settings' tiles per
    batch; 0, auto, is 1 for a model on the CPU); the overlapping boxes are dissolved into
    one polygon whose area is measured on the QGIS side."""
    from socioreasoner.ui.capture import plan_capture
    from socioreasoner.ui.session import shared_worker

    processing, layers, _ = scene
    extent, crs = QgsRectangle(2776200, 8438000, 2777780, 8438400), \
        QgsCoordinateReferenceSystem("EPSG:3857")
    plan = plan_capture(extent, crs, transform_context=QgsProject.instance().transformContext())
    assert len(plan.tiles) == 2
    boxes = [expected_box(t.xMinimum(), t.yMaximum(), t.width()) for t in plan.tiles]
    feedback = CancelAt("never")
    progress = []
    feedback.progressChanged.connect(progress.append)
    out = processing.run(ALG_ID, {
        "EXTENT": "2776200,2777780,8438000,8438400 [EPSG:3857]",
        "SATELLITE": layers["sat"], "MAP": layers["map"], "QUERY": "school",
        "MODE": "stage1", "ENGINE_SPEC": spec([S1], tile_batch=tile_batch),
        "OUTPUT": "TEMPORARY_OUTPUT"}, feedback=feedback)["OUTPUT"]
    told = "tiles 1–2/2" if tile_batch == 2 else "tile 2/2, about "   # the rest's estimate
    assert any(told in t and (tile_batch == 2 or " left: " in t) for t in feedback.texts)
    steps = [p for p in progress if p < 100]     # then 100 once the sink is written
    assert steps == sorted(steps) and steps[-1] == pytest.approx(95) and progress[-1] == 100
    assert any(20 < p < 95 for p in steps)       # the worker's own progress came through
    assert shared_worker().loaded_device == "cpu"          # from the worker's load reply
    assert out.featureCount() == 1
    (feature,) = out.getFeatures()
    assert_bbox(feature.geometry(), (min(b[0] for b in boxes), min(b[1] for b in boxes),
                                     max(b[2] for b in boxes), max(b[3] for b in boxes)), 3.0)
    measure = QgsDistanceArea()
    measure.setSourceCrs(crs, QgsProject.instance().transformContext())
    measure.setEllipsoid("EPSG:7030")
    ground = measure.measureArea(feature.geometry()) * QgsUnitTypes.fromUnitToUnitFactor(
        measure.areaUnits(), QgsUnitTypes.AreaSquareMeters)
    assert feature["area_m2"] == pytest.approx(ground, rel=0.01)


@needs_engine
def test_batch_rows_reuse_the_loaded_models(scene):
    """Runs with the same models talk to the same worker and do not reload them."""
    from socioreasoner.ui.session import shared_worker

    processing, layers, _ = scene
    params = {"EXTENT": "2777000,2777600,8438000,8438400 [EPSG:3857]",
              "SATELLITE": layers["sat"], "MAP": layers["map"], "MODE": "stage1",
              "ENGINE_SPEC": spec([S1]), "OUTPUT": "TEMPORARY_OUTPUT"}
    counts, texts = [], []
    for query in ("school", "kindergarten", "library"):
        feedback = CancelAt("never")
        counts.append(processing.run(ALG_ID, {**params, "QUERY": query},
                                     feedback=feedback)["OUTPUT"].featureCount())
        texts.append(feedback.texts)
        assert feedback.progress() == pytest.approx(100)
    assert counts == [1, 1, 1]
    client = shared_worker().client
    assert client.is_running()
    assert not any("loading models" in t for t in texts[1] + texts[2])


@needs_engine
def test_the_dock_and_processing_share_one_worker(scene):
    """One worker for the plugin: a dock session with the models Processing loaded uses
    them as they are; other models are loaded for the request that needs them, and the
    next request of the first caller gets its own back."""
    from socioreasoner.ui.processing_algorithm import engine_settings
    from socioreasoner.ui.session import EngineSession, shared_worker

    processing, layers, _ = scene
    params = {"EXTENT": "2777000,2777600,8438000,8438400 [EPSG:3857]",
              "SATELLITE": layers["sat"], "MAP": layers["map"], "MODE": "stage1",
              "QUERY": "school", "ENGINE_SPEC": spec([S1]), "OUTPUT": "TEMPORARY_OUTPUT"}
    assert processing.run(ALG_ID, params)["OUTPUT"].featureCount() == 1
    proc_settings = engine_settings(spec([S1]))
    worker = shared_worker()
    pid = worker.client._proc.pid
    loads = []

    def watch(f, message):
        loads.append(message)

    dock = EngineSession(proc_settings)                       # the same models
    assert dock.ensure_loaded(watch) == proc_settings.model_spec() and loads == []
    other = EngineSession(engine_settings(spec([TWO])))
    other.ensure_loaded(watch)
    assert worker.loaded_spec == other.settings.model_spec() and loads   # reloaded
    loads.clear()
    reply = dock.request("hello", {}, on_progress=watch)      # its own models come back
    assert worker.loaded_spec == proc_settings.model_spec() and loads and reply
    assert worker.client._proc.pid == pid                     # never a second process


@needs_engine
def test_a_model_runs_the_algorithm_as_a_child(scene):
    """The graphical modeler's path: a model inherits FlagNoThreading and runs the child."""
    processing, layers, _ = scene
    model = QgsProcessingModelAlgorithm("find schools", "tests")
    model.addModelParameter(QgsProcessingParameterString("query", "Query"),
                            QgsProcessingModelParameter("query"))
    child = QgsProcessingModelChildAlgorithm(ALG_ID)
    child.generateChildId(model)
    static = QgsProcessingModelChildParameterSource.fromStaticValue
    for name, value in (("EXTENT", "2777000,2777600,8438000,8438400 [EPSG:3857]"),
                        ("SATELLITE", layers["sat"].id()), ("MAP", layers["map"].id()),
                        ("MODE", "stage1"), ("ENGINE_SPEC", spec([TWO]))):
        child.addParameterSources(name, [static(value)])
    child.addParameterSources(
        "QUERY", [QgsProcessingModelChildParameterSource.fromModelParameter("query")])
    output = QgsProcessingModelOutput("entities")
    output.setChildId(child.childId())
    output.setChildOutputName("OUTPUT")
    child.setModelOutputs({"entities": output})
    model.addChildAlgorithm(child)
    model.updateDestinationParameters()
    assert model.flags() & QgsProcessingAlgorithm.FlagNoThreading
    (dest,) = [d.name() for d in model.destinationParameterDefinitions()]
    results = processing.run(model, {"query": "park", dest: "TEMPORARY_OUTPUT"})
    out = results[dest]
    assert isinstance(out, QgsVectorLayer) and out.featureCount() == 2
    assert {f["query"] for f in out.getFeatures()} == {"park"}


# ---------------------------------------------------------------------- errors


def test_an_empty_query_is_refused(scene):
    processing, layers, _ = scene
    for query in ("", "   "):
        with pytest.raises(QgsProcessingException, match="Type what to find"):
            processing.run(ALG_ID, {
                "EXTENT": "2777000,2777600,8438000,8438400 [EPSG:3857]",
                "SATELLITE": layers["sat"], "MAP": layers["map"], "QUERY": query,
                "OUTPUT": "TEMPORARY_OUTPUT"})
    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG_ID)
    from processing.tools.dataobjects import createContext

    ok, message = alg.checkParameterValues({
        "EXTENT": "2777000,2777600,8438000,8438400 [EPSG:3857]",
        "SATELLITE": layers["sat"], "MAP": layers["map"], "QUERY": "  ",
        "OUTPUT": "TEMPORARY_OUTPUT"}, createContext())
    assert not ok and "Type what to find" in message


def test_no_overlap_and_bad_spec_are_clear_errors(scene):
    processing, layers, _ = scene
    base = {"SATELLITE": layers["sat"], "MAP": layers["map"], "QUERY": "school",
            "OUTPUT": "TEMPORARY_OUTPUT"}
    with pytest.raises(QgsProcessingException, match="does not overlap"):
        processing.run(ALG_ID, {**base, "EXTENT": "0,600,0,400 [EPSG:3857]",
                                "ENGINE_SPEC": spec([S1])})
    with pytest.raises(QgsProcessingException, match="engine_python"):
        processing.run(ALG_ID, {**base, "EXTENT": "2777000,2777600,8438000,8438400 [EPSG:3857]",
                                "ENGINE_SPEC": '{"engine_python": "/bin/sh"}'})


def test_a_missing_engine_environment_is_a_clear_error(scene, engine_settings_stored):
    processing, layers, _ = scene
    engine_settings_stored.setValue("socioreasoner/engine_python", "/nonexistent/python")
    with pytest.raises(QgsProcessingException, match="engine environment was not found"):
        processing.run(ALG_ID, {
            "EXTENT": "2777000,2777600,8438000,8438400 [EPSG:3857]",
            "SATELLITE": layers["sat"], "MAP": layers["map"], "QUERY": "school",
            "ENGINE_SPEC": spec([S1]), "OUTPUT": "TEMPORARY_OUTPUT"})


class CancelAt(QgsProcessingFeedback):
    """Cancels as soon as a progress message contains ``words``; records the messages."""

    def __init__(self, words):
        super().__init__()
        self.words = words
        self.texts = []
        self.cancelled_at = None

    def setProgressText(self, text):  # noqa: N802 (QGIS API)
        self.texts.append(text)
        if self.words in text and self.cancelled_at is None:
            self.cancelled_at = time.monotonic()
            self.cancel()
        super().setProgressText(text)


@needs_engine
def test_a_growing_answer_shows_in_the_progress_text_and_once_in_the_log(scene):
    processing, layers, _ = scene
    feedback = CancelAt("never")
    processing.run(ALG_ID, {
        "EXTENT": "2777000,2777600,8438000,8438400 [EPSG:3857]", "SATELLITE": layers["sat"],
        "MAP": layers["map"], "QUERY": "school", "MODE": "stage1",
        "ENGINE_SPEC": spec([S1], vlm_delay_s=1.5), "OUTPUT": "TEMPORARY_OUTPUT"},
        feedback=feedback)
    growing = [t for t in feedback.texts if t.startswith("stage 1: localizing (")]
    assert len(growing) >= 3                                  # ~4 a second
    logged = [line for line in feedback.textLog().splitlines() if "stage 1: localizing" in line]
    assert len(logged) == 1


@needs_engine
def test_cancel_stops_the_run_and_the_next_run_works(scene):
    processing, layers, _ = scene
    params = {"EXTENT": "2777000,2777600,8438000,8438400 [EPSG:3857]",
              "SATELLITE": layers["sat"], "MAP": layers["map"], "QUERY": "school",
              "MODE": "stage1", "OUTPUT": "TEMPORARY_OUTPUT"}
    feedback = CancelAt("stage 1")
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run(ALG_ID, {**params, "ENGINE_SPEC": spec([S1], vlm_delay_s=3.0)},
                       feedback=feedback)
    assert feedback.cancelled_at is not None, feedback.texts
    assert time.monotonic() - feedback.cancelled_at < 8
    out = processing.run(ALG_ID, {**params, "ENGINE_SPEC": spec([S1])})["OUTPUT"]
    assert out.featureCount() == 1


def test_durations_read_as_estimates(plugin_package):
    from socioreasoner.ui.find import duration

    assert [duration(s) for s in (0.2, 42.4, 60, 725, 3600, 7530)] == [
        "1 s", "42 s", "1 min", "12 min", "1 h 00 min", "2 h 06 min"]
