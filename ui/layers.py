"""The layers an analyst sees and edits for one run.

A run's reply from the engine worker (see socio_reasoner/worker/views.py) carries GeoJSON
in the view's CRS: the segmented ``result`` polygons, the prompt ``boxes`` of every stage
and the refinement ``points``. ``add_run_layers`` turns it into three styled memory layers
in a layer-tree group of their own; the analyst moves, adds or deletes boxes and points;
``prompts_from_layers`` reads them back (edit buffer included) as the ``prompts`` of the
worker's ``refine``; and ``update_result_layer`` swaps in the refined polygons. Export to
files lives in ``ui/export.py``.

GeoJSON is read here with QGIS's own geometry classes: QGIS's Python has no shapely.
Everything that touches layers or the layer tree must run on the main thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsDefaultValue,
    QgsEditFormConfig,
    QgsExpression,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsFillSymbol,
    QgsGeometry,
    QgsLayerTreeGroup,
    QgsMarkerSymbol,
    QgsMemoryProviderUtils,
    QgsPalLayerSettings,
    QgsPointXY,
    QgsProject,
    QgsRuleBasedRenderer,
    QgsSimpleFillSymbolLayer,
    QgsSingleSymbolRenderer,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
    QgsWkbTypes,
)
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication, QThread, QVariant
from qgis.PyQt.QtGui import QColor, QFont

GROUP_PREFIX = "SocioReasoner"
ROLE_PROPERTY = "socioreasoner/role"          # "boxes", "points" or "result" on each layer
VIEW_PROPERTY = "socioreasoner/view_id"
STAGE_PROPERTY = "socioreasoner/final_stage"

# Colours: one hue per role, so the three layers never read as one another.
FINAL_BOX_COLOR = "31,120,180,255"         # blue outline: the editable prompts
EARLIER_BOX_COLOR = "110,110,110,255"      # dashed grey: what stage 1 proposed
HALO_COLOR = "255,255,255,170"             # thin white under the box outlines
POINT_COLOR = "51,160,44,255"              # green dot, black outline
EARLIER_POINT_COLOR = "190,190,190,255"
RESULT_FILL = "255,127,0,100"              # orange at ~40 % so the map shows through
RESULT_OUTLINE = "217,72,1,255"

_QUERY_CHARS = 60                           # longer queries are shortened in the group name


@dataclass
class RunLayers:
    """One run's layer-tree group and its three memory layers."""

    group: QgsLayerTreeGroup
    boxes: QgsVectorLayer
    points: QgsVectorLayer
    result: QgsVectorLayer
    view_id: str
    query: str
    model: str = ""
    # The stage whose boxes and points are the editable prompts ("stage2", "single", ...).
    final_stage: str = ""
    # The layer box_id behind each prompt of the last prompts_from_layers() call: refine
    # replies number their polygons by prompt index, update_result_layer maps them back.
    prompt_box_ids: list = field(default_factory=list)


# --------------------------------------------------------------------------- helpers


def _require_main_thread() -> None:
    app = QCoreApplication.instance()
    if app is not None and QThread.currentThread() != app.thread():
        raise RuntimeError("SocioReasoner layers can only be changed from QGIS's main thread.")


def _require_alive(*layers: QgsVectorLayer) -> None:
    for layer in layers:
        if layer is None or sip.isdeleted(layer):
            raise RuntimeError("This run's layers were removed from the project.")


def _field(name: str, kind: str) -> QgsField:
    """A QgsField of kind "str", "int" or "double" (QMetaType from QGIS 3.38 on)."""
    if Qgis.QGIS_VERSION_INT >= 33800:
        from qgis.PyQt.QtCore import QMetaType

        types = {"str": QMetaType.Type.QString, "int": QMetaType.Type.Int,
                 "double": QMetaType.Type.Double}
    else:
        types = {"str": QVariant.Type.String, "int": QVariant.Type.Int,
                 "double": QVariant.Type.Double}
    return QgsField(name, types[kind])


def _fields(spec: list[tuple[str, str]]) -> QgsFields:
    fields = QgsFields()
    for name, kind in spec:
        fields.append(_field(name, kind))
    return fields


BOX_FIELDS = [("stage", "str"), ("box_id", "int")]
POINT_FIELDS = [("stage", "str"), ("box_id", "int"), ("point_id", "int")]
RESULT_FIELDS = [("query", "str"), ("box_id", "int"), ("area_m2", "double"),
                 ("model", "str"), ("stage", "str"), ("created", "str")]


def _xy(coords) -> QgsPointXY:
    return QgsPointXY(float(coords[0]), float(coords[1]))


def _ring(coords) -> list[QgsPointXY]:
    return [_xy(c) for c in coords]


def geometry_from_geojson(geometry: dict | None) -> QgsGeometry:
    """A GeoJSON (Multi)Point / (Multi)Polygon / (Multi)LineString → QgsGeometry (2D)."""
    if not geometry:
        return QgsGeometry()
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Point":
        return QgsGeometry.fromPointXY(_xy(coords))
    if kind == "MultiPoint":
        return QgsGeometry.fromMultiPointXY([_xy(c) for c in coords])
    if kind == "LineString":
        return QgsGeometry.fromPolylineXY(_ring(coords))
    if kind == "MultiLineString":
        return QgsGeometry.fromMultiPolylineXY([_ring(line) for line in coords])
    if kind == "Polygon":
        return QgsGeometry.fromPolygonXY([_ring(r) for r in coords])
    if kind == "MultiPolygon":
        return QgsGeometry.fromMultiPolygonXY([[_ring(r) for r in poly] for poly in coords])
    raise ValueError(f"Unsupported GeoJSON geometry type {kind!r}.")


def _value(value, kind: str):
    """A GeoJSON property → an attribute value (None stays NULL)."""
    if value is None:
        return None
    if kind == "int":
        return int(value)
    if kind == "double":
        return float(value)
    return str(value)


def _features(collection: dict | None, fields: QgsFields, spec, multi: bool = False,
              defaults: dict | None = None) -> list[QgsFeature]:
    out = []
    for item in (collection or {}).get("features", []):
        props = dict(defaults or {})
        props.update({k: v for k, v in (item.get("properties") or {}).items() if v is not None})
        feature = QgsFeature(fields)
        geom = geometry_from_geojson(item.get("geometry"))
        if multi and not geom.isNull():
            geom.convertToMultiType()
        feature.setGeometry(geom)
        for name, kind in spec:
            feature.setAttribute(name, _value(props.get(name), kind))
        out.append(feature)
    return out


def _final_stage(reply: dict) -> str:
    """The stage whose prompts the analyst edits: the reply's last stage."""
    stages = reply.get("stages") or []
    if stages and stages[-1].get("name"):
        return str(stages[-1]["name"])
    for key in ("result", "boxes", "points"):
        names = [(f.get("properties") or {}).get("stage")
                 for f in (reply.get(key) or {}).get("features", [])]
        names = [n for n in names if n]
        if names:
            return str(names[-1])
    return ""


def _crs(reply: dict) -> QgsCoordinateReferenceSystem:
    wkt = reply.get("crs")
    return QgsCoordinateReferenceSystem.fromWkt(wkt) if wkt else QgsCoordinateReferenceSystem()


def _memory_layer(name: str, spec, wkb_type, crs) -> QgsVectorLayer:
    layer = QgsMemoryProviderUtils.createMemoryLayer(name, _fields(spec), wkb_type, crs)
    if layer is None or not layer.isValid():
        raise RuntimeError(f"QGIS could not create the memory layer {name!r}.")
    return layer


def _is_final_expression(final_stage: str) -> str:
    """Filter for the editable prompts: the final stage, or drawn by hand (no stage)."""
    return f'"stage" IS NULL OR "stage" = {QgsExpression.quotedValue(final_stage)}'


def _wkb(name: str):
    enum = getattr(Qgis, "WkbType", None)                 # QGIS 3.30+
    return getattr(enum if enum is not None else QgsWkbTypes.Type, name)


def _placement(name: str):
    enum = getattr(Qgis, "LabelPlacement", None)          # QGIS 3.26+
    return getattr(enum if enum is not None else QgsPalLayerSettings.Placement, name)


def _text_format(size: float, color: str = "0,0,0", bold: bool = True) -> QgsTextFormat:
    fmt = QgsTextFormat()
    font = QFont()
    font.setBold(bold)
    fmt.setFont(font)
    fmt.setSize(size)                                         # points
    fmt.setColor(QColor(*[int(c) for c in color.split(",")]))
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setSize(0.8)                                       # millimetres
    buffer.setColor(QColor(255, 255, 255))
    fmt.setBuffer(buffer)
    return fmt


def _labels(expression: str, placement: str, fmt: QgsTextFormat,
            distance_mm: float = 0.0) -> QgsVectorLayerSimpleLabeling:
    settings = QgsPalLayerSettings()
    settings.fieldName = expression
    settings.isExpression = True
    settings.placement = _placement(placement)
    settings.dist = distance_mm
    settings.setFormat(fmt)
    return QgsVectorLayerSimpleLabeling(settings)


def _outline(color: str, width_mm: float, style: str = "solid") -> QgsFillSymbol:
    """An unfilled polygon outline over a thin white halo, readable on imagery and paper."""
    symbol = QgsFillSymbol.createSimple({
        "style": "no", "outline_style": style, "outline_color": color,
        "outline_width": str(width_mm), "outline_width_unit": "MM", "joinstyle": "miter"})
    halo = QgsSimpleFillSymbolLayer.create({
        "style": "no", "outline_style": "solid", "outline_color": HALO_COLOR,
        "outline_width": str(width_mm + 0.5), "outline_width_unit": "MM",
        "joinstyle": "miter"})
    symbol.insertSymbolLayer(0, halo)
    return symbol


def _style_boxes(layer: QgsVectorLayer, final_stage: str) -> None:
    root = QgsRuleBasedRenderer.Rule(None)
    root.appendChild(QgsRuleBasedRenderer.Rule(
        _outline(FINAL_BOX_COLOR, 0.7), 0, 0, _is_final_expression(final_stage),
        f"{final_stage or 'final'} boxes (prompts to edit)"))
    root.appendChild(QgsRuleBasedRenderer.Rule(
        _outline(EARLIER_BOX_COLOR, 0.45, "dash"), 0, 0, "ELSE", "earlier-stage boxes"))
    layer.setRenderer(QgsRuleBasedRenderer(root))
    # "box 3" along the outline of each editable box, so points can be matched to it.
    expression = (f"CASE WHEN {_is_final_expression(final_stage)} "
                  "THEN 'box ' || coalesce(to_string(\"box_id\"), 'new') END")
    layer.setLabeling(_labels(expression, "Line", _text_format(8, FINAL_BOX_COLOR)))
    layer.setLabelsEnabled(True)


def _style_points(layer: QgsVectorLayer, final_stage: str) -> None:
    final = QgsMarkerSymbol.createSimple({
        "name": "circle", "color": POINT_COLOR, "outline_color": "0,0,0,255",
        "outline_width": "0.4", "outline_width_unit": "MM", "size": "3", "size_unit": "MM"})
    earlier = QgsMarkerSymbol.createSimple({
        "name": "circle", "color": EARLIER_POINT_COLOR, "outline_color": "90,90,90,255",
        "outline_width": "0.3", "outline_width_unit": "MM", "size": "2.2", "size_unit": "MM"})
    root = QgsRuleBasedRenderer.Rule(None)
    root.appendChild(QgsRuleBasedRenderer.Rule(
        final, 0, 0, _is_final_expression(final_stage),
        f"{final_stage or 'final'} points (prompts to edit)"))
    root.appendChild(QgsRuleBasedRenderer.Rule(earlier, 0, 0, "ELSE", "earlier-stage points"))
    layer.setRenderer(QgsRuleBasedRenderer(root))
    layer.setLabeling(_labels('to_string("box_id")', "AroundPoint", _text_format(9), 1.0))
    layer.setLabelsEnabled(True)


def _style_result(layer: QgsVectorLayer) -> None:
    symbol = QgsFillSymbol.createSimple({
        "style": "solid", "color": RESULT_FILL, "outline_style": "solid",
        "outline_color": RESULT_OUTLINE, "outline_width": "0.5", "outline_width_unit": "MM"})
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))


def _prompt_layer_defaults(layer: QgsVectorLayer, final_stage: str) -> None:
    """New boxes/points drawn by hand get the final stage, and no form pops up:
    prompts_from_layers gives them ids (boxes) or finds their box (points)."""
    if final_stage:
        layer.setDefaultValueDefinition(layer.fields().indexOf("stage"),
                                        QgsDefaultValue(QgsExpression.quotedValue(final_stage)))
    config = layer.editFormConfig()
    suppress = getattr(Qgis, "AttributeFormSuppression", None)           # QGIS 3.32+
    config.setSuppress(suppress.On if suppress is not None
                       else QgsEditFormConfig.FeatureFormSuppress.SuppressOn)
    layer.setEditFormConfig(config)


def _tag(layer: QgsVectorLayer, role: str, view_id: str, final_stage: str) -> None:
    layer.setCustomProperty(ROLE_PROPERTY, role)
    layer.setCustomProperty(VIEW_PROPERTY, view_id)
    layer.setCustomProperty(STAGE_PROPERTY, final_stage)


def _group_name(query: str) -> str:
    short = " ".join(query.split())
    if len(short) > _QUERY_CHARS:
        short = short[: _QUERY_CHARS - 1].rstrip() + "…"
    return f"{GROUP_PREFIX}: {short} ({time.strftime('%H:%M:%S')})"


# --------------------------------------------------------------------------- public API


def add_run_layers(project: QgsProject, reply: dict, query: str, model: str,
                   group_name: str | None = None) -> RunLayers:
    """Show a run's reply as a new group at the top of ``project``'s layer tree.

    The group holds, top to bottom, "points", "boxes" and "result": memory layers in the
    reply's CRS. Every stage's boxes are kept, styled by stage (the final stage's editable
    prompts in blue, earlier ones dashed grey). Existing layers and groups are untouched.
    Main thread only.
    """
    _require_main_thread()
    crs = _crs(reply)
    view_id = str(reply.get("view_id") or "")
    final_stage = _final_stage(reply)

    boxes = _memory_layer("boxes", BOX_FIELDS, _wkb("Polygon"), crs)
    points = _memory_layer("points", POINT_FIELDS, _wkb("Point"), crs)
    result = _memory_layer("result", RESULT_FIELDS, _wkb("MultiPolygon"), crs)

    boxes.dataProvider().addFeatures(_features(reply.get("boxes"), boxes.fields(), BOX_FIELDS))
    points.dataProvider().addFeatures(
        _features(reply.get("points"), points.fields(), POINT_FIELDS))
    result.dataProvider().addFeatures(_features(
        reply.get("result"), result.fields(), RESULT_FIELDS, multi=True,
        defaults={"query": query, "model": model, "stage": final_stage}))

    _style_boxes(boxes, final_stage)
    _style_points(points, final_stage)
    _style_result(result)
    for layer, role in ((boxes, "boxes"), (points, "points"), (result, "result")):
        layer.updateExtents()
        _tag(layer, role, view_id, final_stage)
    _prompt_layer_defaults(boxes, final_stage)
    _prompt_layer_defaults(points, final_stage)

    root = project.layerTreeRoot()
    group = root.insertGroup(0, group_name or _group_name(query))
    group.setCustomProperty(ROLE_PROPERTY, "run")
    group.setCustomProperty(VIEW_PROPERTY, view_id)
    for layer in (points, boxes, result):          # first child draws on top
        project.addMapLayer(layer, False)
        group.addLayer(layer)
    return RunLayers(group, boxes, points, result, view_id, query, model, final_stage)


def _attr(feature: QgsFeature, name: str):
    """An attribute value with NULL as None (PyQGIS returns a null QVariant for NULL)."""
    value = feature[name]
    if value is None or (isinstance(value, QVariant) and value.isNull()):
        return None
    return value


def _fid_order(fid: int) -> tuple:
    """Saved features first, then new ones in the order they were drawn (the edit buffer
    numbers them -1, -2, ...)."""
    return (fid < 0, abs(fid))


def _point_sort_key(item):
    point_id, fid, _xy = item
    return (point_id is None, point_id if point_id is not None else 0, _fid_order(fid))


def prompts_from_layers(run: RunLayers) -> list[dict]:
    """The analyst's current prompts → ``refine``'s ``prompts``, in the layers' CRS.

    Reads the final-stage boxes and points, edit buffer included (edited layers need not
    be saved). Boxes without stage or box_id (drawn by hand) count as final and get fresh
    ids after the largest one; a copy of a box keeps its id only for the first copy. Each
    box becomes ``{"box": [xmin, ymin, xmax, ymax], "points": [...]}`` (its bounding box),
    ordered by box_id. A point joins the box named by its box_id; when no such box is left
    it joins the smallest box that contains it, and otherwise becomes a points-only prompt
    (``"box": None``), shared with the other stray points that named the same box_id.
    ``run.prompt_box_ids`` records the box_id behind each prompt (for update_result_layer).
    """
    _require_main_thread()
    _require_alive(run.boxes, run.points)
    final = run.final_stage

    def is_final(stage) -> bool:
        return stage is None or stage == "" or stage == final or not final

    boxes = []                                    # [fid, box_id or None, QgsRectangle]
    for feature in run.boxes.getFeatures():
        geom = feature.geometry()
        if geom is None or geom.isNull() or geom.isEmpty():
            continue
        if not is_final(_attr(feature, "stage")):
            continue
        box_id = _attr(feature, "box_id")
        boxes.append([feature.id(), None if box_id is None else int(box_id),
                      geom.boundingBox()])
    boxes.sort(key=lambda b: (b[1] is None, b[1] if b[1] is not None else 0, _fid_order(b[0])))

    # Ids: unique, existing ones kept (first copy wins), the rest numbered after the max.
    used, next_id = set(), max([b[1] for b in boxes if b[1] is not None], default=-1) + 1
    named: dict[int, list] = {}                   # original box_id → boxes that carried it
    for box in boxes:
        original = box[1]
        if original is not None:
            named.setdefault(original, []).append(box)
        if original is None or original in used:
            box[1] = next_id
            next_id += 1
        used.add(box[1])

    members: dict[int, list] = {box[1]: [] for box in boxes}
    strays: dict[int | None, list] = {}
    for feature in run.points.getFeatures():
        geom = feature.geometry()
        if geom is None or geom.isNull() or geom.isEmpty():
            continue
        if not is_final(_attr(feature, "stage")):
            continue
        box_id, point_id = _attr(feature, "box_id"), _attr(feature, "point_id")
        box_id = None if box_id is None else int(box_id)
        point_id = None if point_id is None else int(point_id)
        for vertex in geom.vertices():
            xy = QgsPointXY(vertex.x(), vertex.y())
            item = (point_id, feature.id(), (vertex.x(), vertex.y()))
            target = None
            carriers = named.get(box_id, []) if box_id is not None else []
            if carriers:                          # its box, or the copy that contains it
                inside = [b for b in carriers if b[2].contains(xy)]
                target = (inside or carriers)[0][1]
            else:
                inside = [b for b in boxes if b[2].contains(xy)]
                if inside:
                    target = min(inside, key=lambda b: (b[2].area(), b[1]))[1]
            if target is not None:
                members[target].append(item)
            elif box_id is not None:
                strays.setdefault(box_id, []).append(item)
            else:
                strays.setdefault(("single", feature.id(), len(strays)), []).append(item)

    prompts, ids = [], []
    for box in sorted(boxes, key=lambda b: b[1]):
        rect = box[2]
        pts = sorted(members[box[1]], key=_point_sort_key)
        prompts.append({"box": [rect.xMinimum(), rect.yMinimum(), rect.xMaximum(),
                                rect.yMaximum()],
                        "points": [[x, y] for _pid, _fid, (x, y) in pts]})
        ids.append(box[1])
    stale = sorted(k for k in strays if isinstance(k, int))
    singles = sorted((k for k in strays if not isinstance(k, int)),
                     key=lambda k: (_fid_order(k[1]), k[2]))
    for key in stale + singles:
        pts = sorted(strays[key], key=_point_sort_key)
        prompts.append({"box": None, "points": [[x, y] for _pid, _fid, (x, y) in pts]})
        if isinstance(key, int) and key not in used:
            ids.append(key)
            used.add(key)
        else:
            ids.append(next_id)
            used.add(next_id)
            next_id += 1
    run.prompt_box_ids = ids
    return prompts


def update_result_layer(run: RunLayers, reply: dict) -> None:
    """Replace the result layer's polygons with a ``refine`` reply's (main thread).

    The layer keeps its style, and the boxes and points keep the analyst's edits. A refine
    reply numbers its polygons by prompt; when ``run.prompt_box_ids`` matches the reply's
    prompts, box_id is mapped back to the layer's box ids. Polygons in another CRS than
    the layer's are reprojected. If the result layer is being edited, the change goes
    into its edit buffer (one undo step) rather than around it.
    """
    _require_main_thread()
    _require_alive(run.result)
    if not isinstance(reply.get("result"), dict):
        raise ValueError("The reply has no 'result' FeatureCollection.")
    layer = run.result
    features = _features(reply["result"], layer.fields(), RESULT_FIELDS, multi=True,
                         defaults={"query": run.query, "model": run.model, "stage": "refine"})

    reply_crs = _crs(reply)
    if reply_crs.isValid() and layer.crs().isValid() and reply_crs != layer.crs():
        transform = QgsCoordinateTransform(reply_crs, layer.crs(), layer.transformContext())
        for feature in features:
            geom = feature.geometry()
            if not geom.isNull():
                geom.transform(transform)
                feature.setGeometry(geom)

    ids = list(run.prompt_box_ids)
    n_prompts = len((reply.get("boxes") or {}).get("features", [])) or None
    indices = [_attr(f, "box_id") for f in features if _attr(f, "box_id") is not None]
    if ids and (n_prompts in (None, len(ids))) and all(0 <= int(i) < len(ids) for i in indices):
        box_index = layer.fields().indexOf("box_id")
        for feature in features:
            index = _attr(feature, "box_id")
            if index is not None:
                feature.setAttribute(box_index, ids[int(index)])

    if layer.isEditable():
        layer.beginEditCommand("SocioReasoner: refined result")
        layer.deleteFeatures([f.id() for f in layer.getFeatures()])
        layer.addFeatures(features)
        layer.endEditCommand()
    else:
        provider = layer.dataProvider()
        provider.truncate()
        provider.addFeatures(features)
    if reply.get("view_id"):
        run.view_id = str(reply["view_id"])
        for each in (run.boxes, run.points, run.result):
            if not sip.isdeleted(each):
                each.setCustomProperty(VIEW_PROPERTY, run.view_id)
    layer.updateExtents()
    layer.triggerRepaint()
