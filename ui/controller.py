"""What happens when the user clicks: capture → task → layers, refine, export.

Kept apart from the dock's widgets so the whole flow can be driven in tests from a real
QGIS project and canvas. Captures run on the main thread (they read live layers); model
work runs in an ``EngineTask``; layers are created in the task's ``finished()``.
"""

from dataclasses import dataclass, field

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QCoreApplication, QObject, Qt, QThread, pyqtSignal
from qgis.PyQt.QtWidgets import QFileDialog, QMessageBox

from ..socio_reasoner.errors import UnknownViewError
from .capture import CaptureError, capture_tile
from .export import ExportError, export_layer
from .find import batch_progress, merge_replies, run_tiles, start_capture, tile_batches, tile_view
from .layers import add_run_layers, prompts_from_layers, update_result_layer
from .session import EngineSession
from .settings import EngineSettings
from .task import Canceled, EngineTask, Failed, Success

ASK_ABOVE_TILES = 4     # larger views ask before they start


def tr(text):
    return QCoreApplication.translate("SocioReasoner", text)


@dataclass
class Run:
    """One "Find in view" result: its layers and the worker views behind each tile."""

    layers: object
    tiles: list = field(default_factory=list)   # (view_id, QgsRectangle extent)
    recapture: object = None                    # extent -> CaptureTile, if the worker forgot it
    sat_file: dict | None = None                # {"path": ...} when the engine reads the file


class MainThreadCall(QObject):
    """Run a function on the main thread from a task's thread and wait for its result.

    Rendering a capture must happen on the main thread; the task asks for one batch of
    tiles at a time through this, instead of all tiles being rendered (and held) up front.
    """

    _request = pyqtSignal(object)

    def __init__(self):
        super().__init__()
        self._request.connect(self._run, Qt.ConnectionType.BlockingQueuedConnection)

    def _run(self, box):
        try:
            box["result"] = box["fn"]()
        except Exception as exc:   # re-raised in the calling thread
            box["error"] = exc

    def __call__(self, fn):
        if QThread.currentThread() == self.thread():
            return fn()
        box = {"fn": fn}
        self._request.emit(box)
        if "error" in box:
            raise box["error"]
        return box["result"]


class Controller:
    """Connects a dock to the capture, the engine worker and the layers."""

    def __init__(self, iface, dock, settings: EngineSettings | None = None, project=None,
                 confirm=None):
        self.iface = iface
        self.dock = dock
        self.settings = settings or EngineSettings.load()
        self.session = EngineSession(self.settings)
        self.project = project or QgsProject.instance()
        self.confirm = confirm or self._ask       # (title, text) -> bool; tests pass their own
        self.task = None
        self.run = None
        self.last_outcome = None
        self._on_main = MainThreadCall()
        self.debug_params = {}      # extra ``run`` keys, e.g. {"return_images": True} in tests
        dock.find_requested.connect(self.find_in_view)
        dock.cancel_requested.connect(self.cancel)
        dock.refine_requested.connect(self.refine)
        dock.export_requested.connect(self.export_dialog)
        dock.settings_requested.connect(self.settings_dialog)

    # ---------------------------------------------------------------- find
    def find_in_view(self):
        query = self.dock.query_edit.text().strip()
        sat, map_ = self.dock.sat_combo.currentLayer(), self.dock.map_combo.currentLayer()
        if not query:
            return self._fail(tr("Type what to find first, for example 'school'."))
        if sat is None:
            return self._fail(tr("Choose a satellite layer."))
        if map_ is None:
            return self._fail(tr("Choose a map layer (an OpenStreetMap basemap works well)."))
        canvas = self.iface.mapCanvas()
        extent, crs = canvas.extent(), canvas.mapSettings().destinationCrs()
        try:
            # checks the layers now; each tile is rendered only when the task asks for it
            capture = start_capture(extent, crs, sat, map_, self.settings,
                                    self.project.transformContext(), self.project)
        except CaptureError as exc:
            return self._fail(str(exc))
        n = capture.count
        if n > ASK_ABOVE_TILES and not self.confirm(
                tr("Large view"), tr(f"The view will be cut into {n} tiles, each "
                                     "answered by the model in turn. Continue?")):
            return self._status(tr("Cancelled: zoom in for a faster run."))
        mode, sat_file = self.settings.mode, capture.sat_file
        extents = []

        def work(report, is_cancelled):
            report(0.0, tr("Starting the engine…"))
            self.session.ensure_loaded(lambda f, m: report(0.05 * f, m), is_cancelled)
            replies = []
            # rendered on the main thread, one batch at a time: flat memory however large
            # the view, and QGIS stays responsive between batches
            for batch in tile_batches(capture, self.session.tile_batch(), self._on_main,
                                      is_cancelled):
                progress = batch_progress(report, batch, n, (0.05, 1.0))
                replies += run_tiles(self.session, batch.tiles, sat_file, query, mode, progress,
                                     is_cancelled, extra=self.debug_params)
                extents.extend(t.extent for t in batch.tiles)
            if not replies and not is_cancelled():
                raise CaptureError(tr("No part of the view is covered by the satellite layer."))
            return replies

        def succeeded(replies):
            reply = merge_replies(replies, self.project.transformContext())
            layers = add_run_layers(self.project, reply, query, self.settings.vlm)
            tile_px, ctx = self.settings.tile_px, self.project.transformContext()
            self.run = Run(layers, [(r["view_id"], e) for r, e in zip(replies, extents, strict=True)],
                           lambda e: capture_tile(e, crs, [sat], [map_], tile_px, ctx, self.project,
                                                  check_overlap=False,
                                                  render_sat=sat_file is None), sat_file)
            self.dock.set_has_run(True)
            n_found = len(reply["result"]["features"])
            self._status(tr(f"Found {n_found} polygon(s) for '{query}'. Edit the boxes or points "
                            "and click Refine to correct them."), Qgis.MessageLevel.Success)

        self._start(tr(f"SocioReasoner: {query}"), work, succeeded)

    # ---------------------------------------------------------------- refine
    def refine(self):
        if self.run is None:
            return self._fail(tr("Run 'Find in view' first; Refine corrects its result."))
        prompts = prompts_from_layers(self.run.layers)
        if not prompts:
            return self._fail(tr("There are no boxes or points to refine from."))
        by_tile = {}
        for p in prompts:
            view_id = self._tile_for(p)
            by_tile.setdefault(view_id, []).append(p)

        run = self.run
        extent_of = dict(run.tiles)

        def work(report, is_cancelled):
            replies = []
            for k, (view_id, items) in enumerate(by_tile.items()):
                params = {"view_id": view_id, "query": run.layers.query, "prompts": items}

                def progress(f, m, k=k):
                    report((k + f) / len(by_tile), m)
                try:
                    reply = self.session.request("refine", params, progress, is_cancelled)
                except UnknownViewError:
                    # The worker keeps the last few views only (flat memory): send it again.
                    if run.recapture is None:
                        raise
                    tile = self._on_main(lambda v=view_id: run.recapture(extent_of[v]))
                    params.update(tile_view(tile, run.sat_file))
                    reply = self.session.request("refine", params, progress, is_cancelled)
                replies.append(reply)
            return replies

        def succeeded(replies):
            update_result_layer(self.run.layers,
                                merge_replies(replies, self.project.transformContext()))
            n = self.run.layers.result.featureCount()
            self._status(tr(f"Refined: {n} polygon(s)."), Qgis.MessageLevel.Success)

        self._start(tr("SocioReasoner: refine"), work, succeeded)

    def _tile_for(self, prompt: dict) -> str:
        if len(self.run.tiles) == 1:
            return self.run.tiles[0][0]
        box = prompt.get("box")
        if box:
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        else:
            cx, cy = prompt["points"][0]
        for view_id, extent in self.run.tiles:
            if QgsRectangle(extent).contains(QgsPointXY(cx, cy)):
                return view_id
        return self.run.tiles[0][0]

    # ---------------------------------------------------------------- export
    def export_dialog(self):
        if self.run is None:
            return self._fail(tr("Nothing to export yet: run 'Find in view' first."))
        path, _ = QFileDialog.getSaveFileName(
            self.dock, tr("Export result"), "", "GeoPackage (*.gpkg);;ESRI Shapefile (*.shp);;GeoJSON (*.geojson)")
        if path:
            # the file dialog has already asked whether to replace an existing file
            self.export(path, overwrite=True)

    def export(self, path, crs: QgsCoordinateReferenceSystem | None = None, overwrite=False) -> bool:
        try:
            written = export_layer(self.run.layers.result, path, crs=crs, overwrite=overwrite)
        except ExportError as exc:
            self._fail(str(exc))
            return False
        self._status(tr(f"Exported to {written}."), Qgis.MessageLevel.Success)
        return True

    def settings_dialog(self):
        from .settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self.dock)
        if dialog.exec():
            dialog.apply()
            self._status(tr("Settings saved; models reload on the next run."))

    # ---------------------------------------------------------------- plumbing
    def _start(self, description, work, succeeded):
        """Run ``work`` in an EngineTask; ``succeeded(replies)`` builds layers on the main
        thread, and any other outcome is reported."""
        if self.task is not None:
            return self._fail(tr("A job is already running; cancel it first."))

        def done(outcome):
            self.last_outcome = outcome
            self.task = None
            self.dock.set_running(False)
            if isinstance(outcome, Success):
                succeeded(outcome.replies)
            else:
                self._report(outcome)

        task = EngineTask(description, self.session, work, done, expected_errors=(CaptureError,))
        task.message.connect(self.dock.set_status)
        task.progressChanged.connect(self.dock.set_progress)
        self.task = task
        self.dock.set_running(True)
        QgsApplication.taskManager().addTask(task)

    def cancel(self):
        if self.task is not None:
            self.task.cancel()
            self._status(tr("Cancelling…"))

    def _report(self, outcome):
        if isinstance(outcome, Canceled):
            self._status(tr("Cancelled."), Qgis.MessageLevel.Info)
        elif isinstance(outcome, Failed):
            text = outcome.message
            self._status(text, Qgis.MessageLevel.Critical, details=outcome.log)

    def _fail(self, text):
        self._status(text, Qgis.MessageLevel.Warning)

    def _status(self, text, level=None, details=""):
        self.dock.set_status(text)
        if level is not None and self.iface is not None:
            bar = self.iface.messageBar()
            if details:
                bar.pushMessage("SocioReasoner", text, details, level, 0)
            else:
                bar.pushMessage("SocioReasoner", text, level, 8)

    def _ask(self, title, text) -> bool:
        answer = QMessageBox.question(self.dock, title, text)
        return answer == QMessageBox.StandardButton.Yes

    def shutdown(self):
        """Stop a running task and the worker (plugin unload)."""
        if self.task is not None:
            self.task.cancel()
        self.session.shutdown()
