"""The Processing algorithm "Find socio-semantic entities" (``socioreasoner:findentities``).

The dock's "Find in view" without the dock: for batch runs, the graphical modeler,
``processing.run`` and ``qgis_process``. It captures an extent of a satellite layer and a
map layer, sends the tiles to the engine worker's ``run`` request in batches of the
settings' *tiles per batch* (auto: 4 on a GPU, 1 on a CPU), and merges the tiles' replies, exactly as the dock does (the
shared steps live in ui/find.py), then writes the result polygons to a feature sink.

Output
    MultiPolygons with exactly the engine's result schema (``RESULT_SCHEMA`` in
    socio_reasoner/worker/views.py, ``RESULT_FIELDS`` in ui/layers.py): query (str),
    box_id (int), area_m2 (double), model (str), stage (str), created (str). They are in
    the CRS of the EXTENT: the CRS written after the coordinates ("xmin,xmax,ymin,ymax
    [EPSG:3857]"), the layer's CRS when the extent is taken from a layer, or else the
    project CRS. The extent is also captured in that CRS, so the polygons need no
    reprojection. Where overlapping tiles are merged the engine's area is not valid any
    more; those polygons get their ellipsoidal area measured here instead.

Engine settings
    The engine's Python, models, device, timeout and tile size come from the plugin
    settings (``EngineSettings.load()``, i.e. QgsSettings), as for the dock. The advanced
    parameter ENGINE_SPEC (a JSON object, normally left empty) overrides them for one run,
    for replaying a run or for tests: keys that name an ``EngineSettings`` field (``vlm``,
    ``vlm_backend``, ``segmenter``, ``segmenter_checkpoint``, ``segmenter_variant``, ``device``,
    ``sampling``, ``max_new_tokens``, ``timeout_s``, ``tile_px``, ``tile_batch``, ``offline``) replace that
    setting; every other key is added to the worker's ``load`` request, e.g.
    ``{"vlm": "scripted", "vlm_answers": ["..."], "segmenter": "box"}``. The engine's
    interpreter (``engine_python``) cannot be set here: a shared model or batch file must
    not be able to make QGIS start another program. The query mode is the MODE parameter.

Threading
    The algorithm returns ``FlagNoThreading``, so Processing runs it on the main thread:
    capturing renders live project layers, which QGIS only allows from the thread that
    owns them (see ui/capture.py). The engine requests themselves are blocking calls that
    can take minutes; each runs on a short-lived helper thread while the main thread waits,
    relays the worker's progress to ``feedback`` and keeps processing Qt events, so the
    Processing dialog stays responsive and its Cancel button works (``feedback.isCanceled``
    becomes the worker request's ``is_cancelled``). Only the helper thread talks to the
    worker; only the main thread touches QGIS objects.

The engine worker
    The plugin's one worker (``ui/session.py``) serves every run of this algorithm and
    the dock: models load on the first run and stay loaded, so batch rows and model
    iterations do not reload a multi-gigabyte model each time, and the dock does not
    hold a second copy. A run with other models reloads them; another engine Python (or
    offline setting) restarts the worker. Requests are serialised: a Processing run
    during a dock run takes turns with it, batch by batch. The provider's ``unload()``
    (plugin unload) calls ``shutdown_engine()``; a worker whose QGIS process ends exits on
    its own (its stdin closes). Runs of this algorithm never overlap: a second one started
    while one waits on the engine is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import re
import threading

from qgis.core import (
    Qgis,
    QgsFeature,
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterString,
    QgsProject,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QCoreApplication, QThread
from qgis.PyQt.QtGui import QIcon

from ..socio_reasoner.errors import CancelledError, SocioReasonerError
from .capture import CaptureError
from .find import batch_progress, merge_replies, run_tiles, start_capture, tile_batches
from .layers import RESULT_FIELDS, _fields, geometry_from_geojson
from .session import EngineSession, shared_worker
from .settings import EngineSettings

ALGORITHM_ID = "findentities"
ICON_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resources", "icon.svg")
MODES = ("two-stage", "stage1", "single")   # the engine's run modes (pipeline.MODES)
POLL_S = 0.05                                # how often the main thread looks up while waiting
_GROWTH = re.compile(r" \(\d+ tokens\)$")        # "stage 1: localizing (37 tokens)"

# ENGINE_SPEC keys that replace an EngineSettings field; everything else goes to ``load``.
_OVERRIDABLE = ("vlm", "vlm_backend", "segmenter", "segmenter_checkpoint", "segmenter_variant",
                "device", "sampling", "max_new_tokens", "timeout_s", "tile_px", "tile_batch",
                "offline")
_REFUSED = {
    "engine_python": "the engine's Python is only taken from the plugin settings",
    "mode": "use the MODE parameter",
    "extra": "give the load keys at the top level of ENGINE_SPEC",
}

# Progress: capture 0–10 %, starting the engine / loading models 10–20 %, tiles 20–95 %.
_CAPTURE, _LOAD, _TILES = (0.0, 10.0), (10.0, 20.0), (20.0, 95.0)


# Enums under their QGIS 3.22 names, or their Qgis.* homes where the old names are gone
# (QGIS 4 drops the deprecated aliases; metadata.txt says supportsQt6).
def _enum(new_owner: str, name: str, old):
    owner = getattr(Qgis, new_owner, None)
    return getattr(owner, name) if owner is not None else old


_NO_THREADING = _enum("ProcessingAlgorithmFlag", "NoThreading",
                      getattr(QgsProcessingAlgorithm, "FlagNoThreading", None))
_ADVANCED = _enum("ProcessingParameterFlag", "Advanced",
                  getattr(QgsProcessingParameterDefinition, "FlagAdvanced", None))
_RASTER = _enum("ProcessingSourceType", "Raster", getattr(QgsProcessing, "TypeRaster", None))
_POLYGONS = _enum("ProcessingSourceType", "VectorPolygon",
                  getattr(QgsProcessing, "TypeVectorPolygon", None))
_MULTIPOLYGON = _enum("WkbType", "MultiPolygon", getattr(QgsWkbTypes, "MultiPolygon", None))
_FAST_INSERT = QgsFeatureSink.Flag.FastInsert


def tr(text):
    return QCoreApplication.translate("SocioReasoner", text)


# ------------------------------------------------------------------ the shared worker

_busy = threading.Lock()       # held while a run talks to the engine


def shutdown_engine() -> None:
    """Stop the engine worker (the provider calls this on unload)."""
    shared_worker().shutdown()


# ------------------------------------------------------------------ settings

def engine_settings(spec_text: str, base: EngineSettings | None = None) -> EngineSettings:
    """The plugin settings with ENGINE_SPEC's overrides (module docs); ValueError if bad."""
    settings = base if base is not None else EngineSettings.load()
    spec_text = (spec_text or "").strip()
    if not spec_text:
        return settings
    try:
        spec = json.loads(spec_text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"ENGINE_SPEC is not valid JSON: {exc}.") from exc
    if not isinstance(spec, dict):
        raise ValueError("ENGINE_SPEC must be a JSON object, for example "
                         '{"device": "cpu"}.')
    changes, extra = {}, dict(settings.extra)
    defaults = EngineSettings()
    for key, value in spec.items():
        if key in _REFUSED:
            raise ValueError(f"ENGINE_SPEC cannot set '{key}': {_REFUSED[key]}.")
        if key not in _OVERRIDABLE:
            extra[key] = value
            continue
        kind = type(getattr(defaults, key))
        # bool before int: JSON true is not a tile size, and 1 is not a flag
        ok = isinstance(value, bool) if kind is bool else (
            isinstance(value, int) and not isinstance(value, bool) if kind is int
            else isinstance(value, str))
        if not ok:
            raise ValueError(f"ENGINE_SPEC's '{key}' must be a {kind.__name__}, got {value!r}.")
        changes[key] = value
    return dataclasses.replace(settings, extra=extra, **changes)


# ------------------------------------------------------------------ waiting on the engine

def _wait_for(call, feedback, cancelled: threading.Event, on_progress):
    """Run ``call(report, is_cancelled)`` on a helper thread and wait on this one.

    ``report(fraction, message)`` from the helper is relayed to ``on_progress`` here;
    ``feedback``'s cancel is turned into ``cancelled`` for the helper's ``is_cancelled``.
    On the main thread Qt events keep flowing meanwhile (module docs, Threading).
    """
    messages: queue.SimpleQueue = queue.SimpleQueue()
    outcome = {}

    def target():
        try:
            outcome["value"] = call(lambda f, m: messages.put((f, m)), cancelled.is_set)
        except BaseException as exc:  # handed to the waiting thread, which raises it
            outcome["error"] = exc

    def relay():
        while True:
            try:
                fraction, message = messages.get_nowait()
            except queue.Empty:
                return
            on_progress(fraction, message)

    app = QCoreApplication.instance()
    pump = app is not None and QThread.currentThread() is app.thread()
    helper = threading.Thread(target=target, name="socioreasoner-processing", daemon=True)
    helper.start()
    while helper.is_alive():
        helper.join(POLL_S)
        relay()
        if feedback is not None and feedback.isCanceled():
            cancelled.set()
        if pump and helper.is_alive():
            QCoreApplication.processEvents()
    relay()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _scaled(span, fraction):
    lo, hi = span
    return lo + (hi - lo) * max(0.0, min(1.0, fraction))


# ------------------------------------------------------------------ the algorithm

class FindEntitiesAlgorithm(QgsProcessingAlgorithm):
    """Find socio-semantic entities in an extent and write them as polygons."""

    EXTENT = "EXTENT"
    SATELLITE = "SATELLITE"
    MAP = "MAP"
    QUERY = "QUERY"
    MODE = "MODE"
    ENGINE_SPEC = "ENGINE_SPEC"
    OUTPUT = "OUTPUT"

    # -------------------------------------------------------------- description
    def name(self):
        return ALGORITHM_ID

    def displayName(self):  # noqa: N802 (QGIS API)
        return tr("Find socio-semantic entities")

    def group(self):
        return tr("Segmentation")

    def groupId(self):  # noqa: N802 (QGIS API)
        return "segmentation"

    def tags(self):
        return tr("socioreasoner,socio-semantic,segmentation,vision language model,vlm,sam,"
                  "urban,query,school,reasoning").split(",")

    def icon(self):
        return QIcon(ICON_PATH)

    def shortHelpString(self):  # noqa: N802 (QGIS API)
        return tr(
            "<p>Finds the places a question describes (for example <i>school</i> or "
            "<i>where children study</i>) in an extent, from a satellite layer and a map "
            "layer, with SocioReasoner's vision-language model and SAM, and writes them as "
            "polygons.</p>"
            "<p><b>Extent</b>: the area to search. It is captured at about 1 m per pixel "
            "in tiles of the configured size (768 px); larger extents take one model answer "
            "per tile (several tiles per batch on a GPU). The output is in the extent's CRS (the CRS given with the extent, "
            "the layer's CRS for an extent taken from a layer, else the project CRS).</p>"
            "<p><b>Satellite layer</b>: imagery (a raster layer), rendered without labels. "
            "<b>Map layer</b>: a cartographic map such as an OpenStreetMap basemap (a raster, "
            "vector or vector tile layer), rendered with its labels. Both are rendered as "
            "styled in the project.</p>"
            "<p><b>Query</b>: what to find, in words; it must not be empty.</p>"
            "<p><b>Mode</b>: <i>two-stage</i> (locate, then refine with points; the paper's "
            "method), <i>stage1</i> (locate only, faster) or <i>single</i> (one pass). Scripts and "
            "qgis_process give the name, e.g. MODE=stage1.</p>"
            "<p><b>Output fields</b>: query, box_id, area_m2, model, stage, created.</p>"
            "<p>The engine's Python, models and device come from the plugin settings "
            "(SocioReasoner panel ▸ Settings). The advanced <b>engine overrides</b> "
            "parameter takes a JSON object that replaces some of them for one run, for "
            "replaying a run or testing; leave it empty otherwise.</p>"
            "<p>Runs on QGIS's main thread (capturing renders live layers); the models "
            "stay loaded between runs.</p>")

    def helpUrl(self):  # noqa: N802 (QGIS API)
        return "https://github.com/socioreasoner/socioreasoner-qgis"

    def flags(self):
        # Main thread only: capture renders live project layers (module docs, Threading).
        return super().flags() | _NO_THREADING

    def createInstance(self):  # noqa: N802 (QGIS API)
        return FindEntitiesAlgorithm()

    # -------------------------------------------------------------- parameters
    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, tr("Extent to search")))
        self.addParameter(QgsProcessingParameterMapLayer(
            self.SATELLITE, tr("Satellite layer"), types=[_RASTER]))
        # Any layer QGIS draws: a raster basemap (XYZ, WMS, file), vector layers, vector tiles.
        self.addParameter(QgsProcessingParameterMapLayer(
            self.MAP, tr("Map layer (e.g. an OpenStreetMap basemap)")))
        self.addParameter(QgsProcessingParameterString(
            self.QUERY, tr("What to find (e.g. 'school', 'where children study')")))
        self.addParameter(QgsProcessingParameterEnum(
            self.MODE, tr("Mode"), options=list(MODES), defaultValue=MODES[0],
            usesStaticStrings=True))
        spec = QgsProcessingParameterString(
            self.ENGINE_SPEC, tr("Engine overrides (JSON, for replaying or testing)"),
            defaultValue="", multiLine=False, optional=True)
        spec.setFlags(spec.flags() | _ADVANCED)
        spec.setHelp(tr("A JSON object: EngineSettings fields (vlm, segmenter, device, "
                        "timeout_s, tile_px, ...) replace the plugin settings; other keys "
                        "are passed to the engine's model loading."))
        self.addParameter(spec)
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT, tr("Entities"), _POLYGONS))

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS API)
        # The query first: an empty one would otherwise only read "Incorrect parameter
        # value for QUERY".
        if not self.parameterAsString(parameters, self.QUERY, context).strip():
            return False, tr("Type what to find first, for example 'school'.")
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        try:
            engine_settings(self.parameterAsString(parameters, self.ENGINE_SPEC, context),
                            EngineSettings())
        except ValueError as exc:
            return False, str(exc)
        return True, ""

    # -------------------------------------------------------------- running
    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        feedback = feedback or QgsProcessingFeedback()   # run() may be given none
        query = self.parameterAsString(parameters, self.QUERY, context).strip()
        if not query:
            raise QgsProcessingException(tr("Type what to find first, for example 'school'."))
        mode = self.parameterAsEnumString(parameters, self.MODE, context) or MODES[0]
        if mode not in MODES:
            raise QgsProcessingException(tr(f"Unknown mode '{mode}': use one of {', '.join(MODES)}."))
        try:
            settings = engine_settings(
                self.parameterAsString(parameters, self.ENGINE_SPEC, context))
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from exc

        sat = self.parameterAsLayer(parameters, self.SATELLITE, context)
        map_ = self.parameterAsLayer(parameters, self.MAP, context)
        if sat is None:
            raise QgsProcessingException(tr("Choose a satellite layer."))
        if map_ is None:
            raise QgsProcessingException(
                tr("Choose a map layer (an OpenStreetMap basemap works well)."))
        crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
        if not crs.isValid():
            raise QgsProcessingException(tr(
                "The extent has no CRS and there is no project CRS: give the extent with its "
                "CRS, for example 'xmin,xmax,ymin,ymax [EPSG:3857]'."))
        extent = self.parameterAsExtent(parameters, self.EXTENT, context, crs)

        captured = self._capture(extent, crs, sat, map_, settings, context, feedback)
        fields = _fields(RESULT_FIELDS)
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, fields,
                                             _MULTIPOLYGON, crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))

        replies = self._run_engine(captured, query, mode, settings, feedback)
        reply = merge_replies(replies, context.transformContext())
        features = self._features(reply, fields, query, crs, context)
        for feature in features:
            if not sink.addFeature(feature, _FAST_INSERT):
                raise QgsProcessingException(self.writeFeatureError(sink, parameters, self.OUTPUT))
        feedback.setProgress(100)
        feedback.pushInfo(tr(f"Found {len(features)} polygon(s) for '{query}'."))
        return {self.OUTPUT: dest_id}

    def _capture(self, extent, crs, sat, map_, settings, context, feedback):
        """Plan the tiles and check the layers; tiles are rendered (on this, the main
        thread) one batch at a time as the engine asks for them, so memory stays flat.

        Returns a `ViewCapture`.
        """
        try:
            capture = start_capture(extent, crs, sat, map_, settings, context.transformContext(),
                                    context.project() or QgsProject.instance())
        except CaptureError as exc:
            raise QgsProcessingException(str(exc)) from exc
        plan = capture.plan
        feedback.pushInfo(tr(
            f"Capturing {capture.count} tile(s) of {plan.tile_px} px at "
            f"{plan.ground_px_size:.3g} map units per pixel ({crs.authid() or crs.description()})."))
        feedback.setProgress(_CAPTURE[1])
        return capture

    def _run_engine(self, captured, query, mode, settings, feedback):
        """Load the models and run every tile; engine errors become QgsProcessingException."""
        if not _busy.acquire(blocking=False):
            raise QgsProcessingException(tr(
                "Another 'Find socio-semantic entities' run is waiting on the engine; "
                "let it finish or cancel it first."))
        session = None
        last = {"message": "", "logged": ""}

        def show(message):
            if message and message != last["message"]:
                last["message"] = message
                feedback.setProgressText(message)
                # the log gets each step once, not each growth of an answer (4 a second)
                step = _GROWTH.sub("", message)
                if step != last["logged"]:
                    last["logged"] = step
                    feedback.pushInfo(message)

        try:
            session = EngineSession(settings)    # over the one worker the dock uses too
            cancelled = threading.Event()
            feedback.pushInfo(tr(f"Engine: {settings.python_path()} · models: {settings.vlm} + "
                                 f"{settings.segmenter} on {settings.device} · mode: {mode}"))
            show(tr("Starting the engine…"))

            def on_load(f, m):
                feedback.setProgress(_scaled(_LOAD, f))
                show(m)

            _wait_for(lambda report, is_cancelled: session.ensure_loaded(report, is_cancelled),
                      feedback, cancelled, on_load)
            def on_tiles(value, message):
                feedback.setProgress(value)
                show(message)

            replies = []
            # rendered here, on the main thread, one batch at a time (flat memory)
            for batch in tile_batches(captured, session.tile_batch(),
                                      is_cancelled=feedback.isCanceled):
                for warning in (w for tile in batch.tiles for w in tile.warnings):
                    feedback.reportError(warning, False)
                progress = batch_progress(on_tiles, batch, captured.count, _TILES)
                replies += _wait_for(
                    lambda report, is_cancelled, tiles=batch.tiles: run_tiles(
                        session, tiles, captured.sat_file, query, mode, report, is_cancelled),
                    feedback, cancelled, progress)
                progress(1.0, tr("done"))
            if feedback.isCanceled():
                raise CancelledError("Cancelled.")
            if not replies:
                raise QgsProcessingException(
                    tr("No part of the extent is covered by the satellite layer."))
            return replies
        except CaptureError as exc:
            raise QgsProcessingException(str(exc)) from exc
        except CancelledError as exc:
            raise QgsProcessingException(tr("Cancelled.")) from exc
        except SocioReasonerError as exc:     # engine errors carry a user-facing message
            self._log_tail(session, feedback)
            raise QgsProcessingException(str(exc)) from exc
        except QgsProcessingException:
            raise
        except Exception as exc:              # never let a run take QGIS down
            self._log_tail(session, feedback)
            raise QgsProcessingException(f"{type(exc).__name__}: {exc}") from exc
        finally:
            _busy.release()

    @staticmethod
    def _log_tail(session, feedback):
        tail = session.log_tail() if session is not None else ""
        if tail:
            feedback.pushDebugInfo(tr(f"The engine worker's log ({session.log_path}) ends with:")
                                   + "\n" + tail)

    @staticmethod
    def _features(reply, fields, query, crs, context):
        """The reply's result polygons as features of ``fields`` (the result schema)."""
        defaults = {"query": query}
        out = []
        for item in (reply.get("result") or {}).get("features", []):
            geom = geometry_from_geojson(item.get("geometry"))
            if geom.isNull() or geom.isEmpty():
                continue
            geom.convertToMultiType()
            props = {**defaults, **{k: v for k, v in (item.get("properties") or {}).items()
                                    if v is not None}}
            feature = QgsFeature(fields)
            feature.setGeometry(geom)
            for name, kind in RESULT_FIELDS:
                value = props.get(name)
                if value is not None:
                    value = {"int": int, "double": float}.get(kind, str)(value)
                feature.setAttribute(name, value)
            out.append(feature)
        return out


__all__ = ["ALGORITHM_ID", "FindEntitiesAlgorithm", "MODES", "engine_settings",
           "shutdown_engine"]
