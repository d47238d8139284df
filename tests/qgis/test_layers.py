"""The run layers (ui/layers.py) in a real QGIS: build, edit, read back, refine, export.

The reply is what the engine worker sends for a two-stage run over the sample view
(central Helsinki, EPSG:32635 coordinates): two school polygons, one with a courtyard
hole, the boxes of both stages and three refinement points.
"""

import os
import shutil

import pytest
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsRuleBasedRenderer,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtGui import QColor

CRS_WKT = QgsCoordinateReferenceSystem("EPSG:32635").toWkt()
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE_SAT = os.path.join(REPO_ROOT, "sample", "helsinki_sat.tif")

# Kaisaniemi primary school (with a courtyard) and the Kruununhaka school, simplified.
SCHOOL_A_OUTER = [[386115, 6672461], [386125, 6672457], [386175, 6672458], [386175, 6672463],
                  [386186, 6672463], [386185, 6672492], [386115, 6672490], [386115, 6672461]]
SCHOOL_A_HOLE = [[386140, 6672468], [386140, 6672480], [386160, 6672480], [386160, 6672468],
                 [386140, 6672468]]
SCHOOL_B = [[386351, 6672647], [386353, 6672623], [386356, 6672616], [386438, 6672618],
            [386437, 6672671], [386389, 6672670], [386351, 6672663], [386351, 6672647]]

STAGE1_BOXES = [[386100, 6672440, 386200, 6672505], [386335, 6672600, 386438, 6672685]]
STAGE2_BOXES = [[386112, 6672454, 386189, 6672495], [386348, 6672613, 386438, 6672674]]
STAGE2_POINTS = [(0, 0, [386130, 6672475]), (0, 1, [386172, 6672484]),
                 (1, 0, [386395, 6672645])]
QUERY = "where children study"
MODEL = "socioreasoner-3b"


def _box_feature(stage, box_id, xyxy):
    x1, y1, x2, y2 = xyxy
    ring = [[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"stage": stage, "box_id": box_id,
                           "box_xyxy_frame": [10 * box_id, 20, 300, 400]}}


def _result_feature(geometry, box_id, area, stage="stage2", query=QUERY):
    return {"type": "Feature", "geometry": geometry, "properties": {
        "query": query, "box_id": box_id, "area_m2": area, "model": MODEL,
        "stage": stage, "created": "2025-11-25T14:50:00Z"}}


def make_reply(view_id="view-helsinki-1"):
    boxes = [_box_feature("stage1", i, b) for i, b in enumerate(STAGE1_BOXES)]
    boxes += [_box_feature("stage2", i, b) for i, b in enumerate(STAGE2_BOXES)]
    points = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": xy},
               "properties": {"stage": "stage2", "box_id": b, "point_id": k}}
              for b, k, xy in STAGE2_POINTS]
    result = [
        _result_feature({"type": "Polygon", "coordinates": [SCHOOL_A_OUTER, SCHOOL_A_HOLE]},
                        0, 2095.5),
        _result_feature({"type": "MultiPolygon", "coordinates": [[SCHOOL_B]]}, 1, 4311.0),
    ]
    return {
        "view_id": view_id, "query": QUERY, "mode": "two-stage", "crs": CRS_WKT,
        "result": {"type": "FeatureCollection", "features": result},
        "boxes": {"type": "FeatureCollection", "features": boxes},
        "points": {"type": "FeatureCollection", "features": points},
        "stages": [{"name": "stage1", "prompt": "...", "raw_text": "...", "scores": [],
                    "seconds": {}},
                   {"name": "stage2", "prompt": "...", "raw_text": "...", "scores": [],
                    "seconds": {}}],
    }


def make_refine_reply(n_prompts, polygons, view_id="view-helsinki-1"):
    """A refine reply: polygons tagged by prompt index, boxes one per prompt."""
    return {
        "view_id": view_id, "crs": CRS_WKT,
        "result": {"type": "FeatureCollection", "features": [
            _result_feature({"type": "Polygon", "coordinates": [ring]}, index, 100.0 + index,
                            stage="refine")
            for index, ring in polygons]},
        "boxes": {"type": "FeatureCollection", "features": [
            _box_feature("refine", i, [386000, 6672300, 386010, 6672310])
            for i in range(n_prompts)]},
        "points": {"type": "FeatureCollection", "features": []},
    }


@pytest.fixture(scope="module")
def layers(plugin_package):
    from socioreasoner.ui import layers as module

    return module


@pytest.fixture(scope="module")
def export(plugin_package):
    from socioreasoner.ui import export as module

    return module


@pytest.fixture
def project(qgis_new_project):
    """QgsProject.instance(), emptied, holding one unrelated layer in a group of its own."""
    project = QgsProject.instance()
    other = QgsVectorLayer("Point?crs=EPSG:3067&field=name:string", "existing", "memory")
    feature = QgsFeature(other.fields())
    feature.setAttribute("name", "keep me")
    feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(386000, 6672500)))
    other.dataProvider().addFeatures([feature])
    project.addMapLayer(other, False)
    project.layerTreeRoot().addGroup("Basemaps").addLayer(other)
    yield project
    project.clear()


@pytest.fixture
def run(layers, project):
    return layers.add_run_layers(project, make_reply(), QUERY, MODEL)


def _rect(xyxy):
    return QgsGeometry.fromRect(QgsRectangle(*xyxy))


def _files(folder):
    return sorted(os.listdir(folder))


def _bytes(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in os.listdir(folder)}


# ------------------------------------------------------------------- add_run_layers


def test_add_run_layers_builds_a_group_of_three_layers(layers, project, run):
    root = project.layerTreeRoot()
    assert root.children()[0] is run.group                      # at the top of the tree
    assert run.group.name().startswith(f"SocioReasoner: {QUERY} (")
    assert [node.layer() for node in run.group.findLayers()] == [run.points, run.boxes,
                                                                run.result]
    assert [lyr.name() for lyr in (run.boxes, run.points, run.result)] == [
        "boxes", "points", "result"]
    assert run.view_id == "view-helsinki-1" and run.query == QUERY
    assert run.final_stage == "stage2"

    expected_crs = QgsCoordinateReferenceSystem("EPSG:32635")
    for layer in (run.boxes, run.points, run.result):
        assert layer.isValid() and layer.providerType() == "memory"
        assert layer.crs() == expected_crs
        assert project.mapLayer(layer.id()) is layer
        assert not layer.isEditable()

    assert run.boxes.wkbType() == QgsWkbTypes.Type.Polygon
    assert run.points.wkbType() == QgsWkbTypes.Type.Point
    assert run.result.wkbType() == QgsWkbTypes.Type.MultiPolygon
    assert run.boxes.fields().names() == ["stage", "box_id"]
    assert run.points.fields().names() == ["stage", "box_id", "point_id"]
    assert run.result.fields().names() == ["query", "box_id", "area_m2", "model", "stage",
                                           "created"]
    assert run.boxes.featureCount() == 4
    assert run.points.featureCount() == 3
    assert run.result.featureCount() == 2

    stages = sorted((f["stage"], f["box_id"]) for f in run.boxes.getFeatures())
    assert stages == [("stage1", 0), ("stage1", 1), ("stage2", 0), ("stage2", 1)]
    school_a = next(f for f in run.result.getFeatures() if f["box_id"] == 0)
    assert school_a["query"] == QUERY and school_a["model"] == MODEL
    assert school_a["area_m2"] == pytest.approx(2095.5)
    assert school_a["stage"] == "stage2" and school_a["created"] == "2025-11-25T14:50:00Z"
    polygon = school_a.geometry().asMultiPolygon()
    assert len(polygon) == 1 and len(polygon[0]) == 2                 # the courtyard hole
    assert polygon[0][1][0] == QgsPointXY(386140, 6672468)
    assert school_a.geometry().area() == pytest.approx(2289.5 - 240)


def test_add_run_layers_leaves_existing_layers_alone(layers, project):
    existing = project.mapLayersByName("existing")[0]
    renderer_before = existing.renderer().dump()
    run = layers.add_run_layers(project, make_reply(), QUERY, MODEL, group_name="Run A")
    second = layers.add_run_layers(project, make_reply("view-2"), "parks", MODEL)

    assert len(project.mapLayers()) == 7
    root = project.layerTreeRoot()
    assert [child.name() for child in root.children()] == [second.group.name(), "Run A",
                                                           "Basemaps"]
    assert root.findGroup("Basemaps").findLayers()[0].layer() is existing
    assert existing.featureCount() == 1 and not existing.isModified()
    assert next(existing.getFeatures())["name"] == "keep me"
    assert existing.renderer().dump() == renderer_before
    assert existing.name() == "existing" and existing.crs().authid() == "EPSG:3067"
    assert run.boxes.id() != second.boxes.id()


def test_styles_read_at_a_glance(layers, run):
    boxes = run.boxes.renderer()
    assert isinstance(boxes, QgsRuleBasedRenderer)
    final_rule, earlier_rule = boxes.rootRule().children()
    assert "stage2" in final_rule.filterExpression() and earlier_rule.isElse()
    final_fill = final_rule.symbol().symbolLayer(1)          # (0 is a white halo)
    earlier_fill = earlier_rule.symbol().symbolLayer(1)
    assert final_fill.strokeColor() == QColor(31, 120, 180)
    assert final_fill.brushStyle() == Qt.BrushStyle.NoBrush
    assert final_fill.strokeStyle() == Qt.PenStyle.SolidLine
    assert earlier_fill.strokeStyle() == Qt.PenStyle.DashLine
    assert earlier_fill.strokeColor() == QColor(110, 110, 110)

    point_symbol = run.points.renderer().rootRule().children()[0].symbol()
    assert point_symbol.color() == QColor(51, 160, 44)
    assert point_symbol.symbolLayer(0).strokeColor() == QColor(0, 0, 0)
    assert run.points.labelsEnabled()
    assert "box_id" in run.points.labeling().settings().fieldName

    result = run.result.renderer()
    assert isinstance(result, QgsSingleSymbolRenderer)
    fill = result.symbol().symbolLayer(0)
    assert fill.color().red() == 255 and 0 < fill.color().alpha() < 255   # see-through
    assert fill.strokeColor().alpha() == 255 and fill.strokeStyle() == Qt.PenStyle.SolidLine


def test_final_stage_without_stage_list(layers, project):
    reply = make_reply()
    del reply["stages"]
    run = layers.add_run_layers(project, reply, QUERY, MODEL)
    assert run.final_stage == "stage2"


# ------------------------------------------------------------------- prompts_from_layers


def test_prompts_from_unedited_layers(layers, run):
    assert layers.prompts_from_layers(run) == [
        {"box": [386112.0, 6672454.0, 386189.0, 6672495.0],
         "points": [[386130.0, 6672475.0], [386172.0, 6672484.0]]},
        {"box": [386348.0, 6672613.0, 386438.0, 6672674.0],
         "points": [[386395.0, 6672645.0]]},
    ]
    assert run.prompt_box_ids == [0, 1]


def _edit(run):
    """Delete final box 0, move its second point into box 1, add two points and a box."""
    boxes, points = run.boxes, run.points
    assert boxes.startEditing() and points.startEditing()
    box0 = next(f for f in boxes.getFeatures()
                if f["stage"] == "stage2" and f["box_id"] == 0)
    assert boxes.deleteFeature(box0.id())
    moved = next(f for f in points.getFeatures() if f["box_id"] == 0 and f["point_id"] == 1)
    assert points.changeGeometry(
        moved.id(), QgsGeometry.fromPointXY(QgsPointXY(386410.5, 6672660.25)))
    for xy in ((386365.0, 6672630.0), (386000.5, 6672300.5)):     # in box 1; in no box
        new_point = QgsFeature(points.fields())
        new_point.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(*xy)))
        assert points.addFeature(new_point)
    new_box = QgsFeature(boxes.fields())
    new_box.setGeometry(_rect([386240, 6672380, 386300, 6672420]))
    assert boxes.addFeature(new_box)


EDITED_PROMPTS = [
    # box 1 keeps its point, gains the moved point (its box 0 is gone, it lies in box 1)
    # and the new point drawn inside it
    {"box": [386348.0, 6672613.0, 386438.0, 6672674.0],
     "points": [[386395.0, 6672645.0], [386410.5, 6672660.25], [386365.0, 6672630.0]]},
    # the hand-drawn box: fresh id 2, no points
    {"box": [386240.0, 6672380.0, 386300.0, 6672420.0], "points": []},
    # box 0's other point, its box deleted and inside no other box
    {"box": None, "points": [[386130.0, 6672475.0]]},
    # the new point outside every box
    {"box": None, "points": [[386000.5, 6672300.5]]},
]


def test_prompts_from_edited_layers_read_the_edit_buffer(layers, run):
    _edit(run)
    assert layers.prompts_from_layers(run) == EDITED_PROMPTS
    assert run.prompt_box_ids == [1, 2, 0, 3]
    # Reading changed nothing: still editing, nothing committed to the provider.
    assert run.boxes.isEditable() and run.boxes.isModified()
    assert run.points.isEditable() and run.points.isModified()
    assert run.boxes.dataProvider().featureCount() == 4
    assert run.points.dataProvider().featureCount() == 3


def test_prompts_from_saved_edits(layers, run):
    _edit(run)
    assert run.boxes.commitChanges() and run.points.commitChanges()
    assert not run.boxes.isEditable()
    assert layers.prompts_from_layers(run) == EDITED_PROMPTS


def test_stage1_boxes_are_not_prompts_and_copies_get_new_ids(layers, run):
    boxes = run.boxes
    boxes.startEditing()
    box1 = next(f for f in boxes.getFeatures() if f["stage"] == "stage2" and f["box_id"] == 1)
    copy = QgsFeature(box1)                   # a copy-paste keeps stage and box_id
    copy.setGeometry(_rect([386200, 6672600, 386260, 6672650]))
    boxes.addFeature(copy)
    prompts = layers.prompts_from_layers(run)
    assert [p["box"] for p in prompts] == [
        [386112.0, 6672454.0, 386189.0, 6672495.0],
        [386348.0, 6672613.0, 386438.0, 6672674.0],
        [386200.0, 6672600.0, 386260.0, 6672650.0]]
    assert prompts[1]["points"] == [[386395.0, 6672645.0]]
    assert run.prompt_box_ids == [0, 1, 2]


# ------------------------------------------------------------------- update_result_layer


def test_update_result_layer_replaces_features_and_keeps_style(layers, run):
    _edit(run)
    prompts = layers.prompts_from_layers(run)
    style_before = run.result.renderer().dump()
    rings = [(0, [[386350, 6672615], [386430, 6672615], [386430, 6672670], [386350, 6672615]]),
             (1, [[386245, 6672385], [386295, 6672385], [386295, 6672415], [386245, 6672385]]),
             (2, [[386120, 6672460], [386140, 6672460], [386140, 6672490], [386120, 6672460]])]
    layers.update_result_layer(run, make_refine_reply(len(prompts), rings, "view-2"))

    features = sorted(run.result.getFeatures(), key=lambda f: f["area_m2"])
    assert len(features) == 3
    # refine numbers polygons by prompt; the layer shows the box ids the analyst sees
    assert [f["box_id"] for f in features] == [1, 2, 0]
    assert {f["stage"] for f in features} == {"refine"}
    assert features[0].geometry().asMultiPolygon()[0][0][0] == QgsPointXY(386350, 6672615)
    assert run.result.renderer().dump() == style_before
    assert run.result.extent().xMinimum() == pytest.approx(386120)
    assert run.view_id == "view-2"
    # the analyst's edits stay, still in their edit buffers
    assert run.boxes.isModified() and run.points.isModified()
    assert layers.prompts_from_layers(run) == EDITED_PROMPTS


def test_update_result_layer_while_result_is_edited_is_one_undo_step(layers, run):
    run.result.startEditing()
    ring = [[386350, 6672615], [386430, 6672615], [386430, 6672670], [386350, 6672615]]
    layers.update_result_layer(run, make_refine_reply(2, [(1, ring)]))
    assert run.result.featureCount() == 1
    assert next(run.result.getFeatures())["box_id"] == 1
    run.result.undoStack().undo()
    assert run.result.featureCount() == 2


# ------------------------------------------------------------------- export

EXTENSIONS = [".gpkg", ".shp", ".geojson"]


@pytest.mark.parametrize("ext", EXTENSIONS)
def test_export_writes_a_readable_file(layers, export, run, tmp_path, ext):
    path = str(tmp_path / f"schools{ext}")
    assert export.export_layer(run.result, path) == path
    back = QgsVectorLayer(path, "back", "ogr")
    assert back.isValid()
    assert back.featureCount() == 2
    names = back.fields().names()
    for name in ("query", "box_id", "area_m2", "model", "stage", "created"):
        assert name in names
    assert back.crs().authid() == "EPSG:32635"
    school_a = next(f for f in back.getFeatures() if f["box_id"] == 0)
    assert school_a["query"] == QUERY and school_a["area_m2"] == pytest.approx(2095.5)
    assert school_a.geometry().area() == pytest.approx(2049.5)            # hole kept
    if ext == ".gpkg":
        assert back.dataProvider().subLayers()[0].split("!!::!!")[1] == "schools"
    expected = {".gpkg": ["schools.gpkg"], ".geojson": ["schools.geojson"],
                ".shp": ["schools.cpg", "schools.dbf", "schools.prj", "schools.shp",
                         "schools.shx"]}[ext]
    assert _files(tmp_path) == expected                                   # no temp files


@pytest.mark.parametrize("ext", [".gpkg", ".geojson"])
def test_export_reprojects(layers, export, run, tmp_path, ext):
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    path = str(tmp_path / f"schools_wgs84{ext}")
    export.export_layer(run.points, path, crs=wgs84)
    back = QgsVectorLayer(path, "back", "ogr")
    assert back.crs() == wgs84
    point = next(f for f in back.getFeatures() if f["box_id"] == 1).geometry().asPoint()
    transform = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32635"), wgs84,
                                       QgsProject.instance())
    expected = transform.transform(QgsPointXY(386395, 6672645))
    assert point.x() == pytest.approx(expected.x(), abs=1e-9)
    assert point.y() == pytest.approx(expected.y(), abs=1e-9)
    assert point.x() == pytest.approx(24.9522, abs=1e-3)                 # central Helsinki
    assert point.y() == pytest.approx(60.1744, abs=1e-3)


@pytest.mark.parametrize("ext", EXTENSIONS)
def test_export_refuses_to_overwrite(layers, export, run, tmp_path, ext):
    path = str(tmp_path / f"schools{ext}")
    export.export_layer(run.result, path)
    before = _bytes(tmp_path)
    with pytest.raises(export.ExportError, match="already exists"):
        export.export_layer(run.result, path)
    assert _bytes(tmp_path) == before

    ring = [[386350, 6672615], [386430, 6672615], [386430, 6672670], [386350, 6672615]]
    layers.update_result_layer(run, make_refine_reply(2, [(1, ring)]))
    export.export_layer(run.result, path, overwrite=True)
    assert QgsVectorLayer(path, "back", "ogr").featureCount() == 1
    assert _files(tmp_path) == sorted(before)                             # no temp files


def test_overwriting_a_shapefile_drops_its_stale_index(layers, export, run, tmp_path):
    path = str(tmp_path / "schools.shp")
    export.export_layer(run.result, path)
    (tmp_path / "schools.qix").write_bytes(b"stale spatial index")
    (tmp_path / "notes.txt").write_text("not part of the shapefile")
    (tmp_path / "schools.qml").write_text("<qgis/>")           # the user's style stays
    with pytest.raises(export.ExportError):
        export.export_layer(run.boxes, path)
    export.export_layer(run.boxes, path, overwrite=True)
    assert "schools.qix" not in _files(tmp_path)
    assert {"notes.txt", "schools.qml"} <= set(_files(tmp_path))
    assert QgsVectorLayer(path, "back", "ogr").featureCount() == 4


def test_failed_shapefile_move_restores_the_old_files(layers, export, run, tmp_path, monkeypatch):
    path = str(tmp_path / "schools.shp")
    export.export_layer(run.result, path)
    before = _bytes(tmp_path)
    real_replace, moved_parts = os.replace, []

    def failing_replace(src, dst):
        if ".part." in os.path.basename(src):              # a new part into place
            moved_parts.append(dst)
            if len(moved_parts) == 2:                      # ... fails half way through
                raise PermissionError("file is locked")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(export.ExportError, match="file is locked"):
        export.export_layer(run.boxes, path, overwrite=True)
    monkeypatch.undo()
    assert len(moved_parts) == 2                           # one new part had been moved
    assert _bytes(tmp_path) == before
    assert QgsVectorLayer(path, "back", "ogr").featureCount() == 2


def test_failed_export_leaves_no_files(layers, export, run, tmp_path):
    blocker = tmp_path / "schools.gpkg"
    blocker.mkdir()                              # a folder where the file should go
    with pytest.raises(export.ExportError):
        export.export_layer(run.result, str(blocker), overwrite=True)
    assert _files(tmp_path) == ["schools.gpkg"] and os.listdir(blocker) == []

    with pytest.raises(export.ExportError, match="file format"):
        export.export_layer(run.result, str(tmp_path / "schools.xyz"))
    with pytest.raises(export.ExportError, match="does not exist"):
        export.export_layer(run.result, str(tmp_path / "missing" / "schools.gpkg"))
    with pytest.raises(export.ExportError, match="not valid"):
        export.export_layer(run.result, str(tmp_path / "a.gpkg"),
                            crs=QgsCoordinateReferenceSystem())
    assert _files(tmp_path) == ["schools.gpkg"]


# ------------------------------------------------------------------- picture + provider


def _render(layer_list, extent, crs, path):
    settings = QgsMapSettings()
    settings.setLayers(layer_list)
    settings.setDestinationCrs(crs)
    settings.setOutputSize(QSize(1000, 760))
    settings.setOutputDpi(110)
    settings.setBackgroundColor(QColor(255, 255, 255))
    settings.setExtent(extent)
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    assert image.save(path, "PNG")
    return image


def _extent(run):
    extent = QgsRectangle()                # of every feature, edit buffers included
    for layer in (run.boxes, run.points):
        for feature in layer.getFeatures():
            extent.combineExtentWith(feature.geometry().boundingBox())
    extent.grow(25)
    return extent


def test_render_layers_for_a_person_to_look_at(layers, run, output_dir, tmp_path):
    """Pictures under test-output/ of the run over the sample's satellite-like view:
    layers.png as the run arrives, layers_edited.png after _edit() (box 0 deleted, a box
    and two points drawn, a point moved), layers_plain.png as it arrives, no backdrop."""
    # A copy: GDAL writes band statistics (.aux.xml) next to the raster it draws.
    sat_copy = tmp_path / "helsinki_sat.tif"
    shutil.copyfile(SAMPLE_SAT, sat_copy)
    sat = QgsRasterLayer(str(sat_copy), "sat", "gdal")
    assert sat.isValid()
    crs, run_layers = run.result.crs(), [run.points, run.boxes, run.result]
    extent = _extent(run)
    image = _render(run_layers + [sat], extent, crs, os.path.join(output_dir, "layers.png"))
    plain = _render(run_layers, extent, crs, os.path.join(output_dir, "layers_plain.png"))
    _edit(run)
    edited = _render(run_layers + [sat], _extent(run), crs,
                     os.path.join(output_dir, "layers_edited.png"))

    def count(picture, test):
        return sum(1 for x in range(0, picture.width(), 3) for y in range(0, picture.height(), 3)
                   if test(QColor(picture.pixel(x, y))))

    # Each layer shows up in the plain picture: orange fill, blue and grey box outlines,
    # green points.
    assert count(plain, lambda c: c.red() > 240 and 150 < c.green() < 230 and c.blue() < 190) > 200
    assert count(plain, lambda c: c.blue() > 150 and c.red() < 90) > 20
    assert count(plain, lambda c: c.red() == c.green() == c.blue() and 90 < c.red() < 140) > 20
    assert count(plain, lambda c: c.green() > 140 and c.red() < 80 and c.blue() < 80) > 5
    assert not image.isNull() and not edited.isNull()


def test_processing_provider_skeleton(plugin_package):
    from socioreasoner.ui.processing_provider import SocioReasonerProvider

    provider = SocioReasonerProvider()
    assert provider.id() == "socioreasoner" and provider.name() == "SocioReasoner"
    assert not provider.icon().isNull()
    provider.loadAlgorithms()
    assert [a.name() for a in provider.algorithms()] == ["findentities"]
