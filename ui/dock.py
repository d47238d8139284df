"""The SocioReasoner panel: a query, the two layer pickers, and the run's buttons.

The dock only holds widgets and says what the user asked for (signals); the
``Controller`` in ``ui/controller.py`` does the work, so both can be tested apart.
"""

from qgis.core import QgsMapLayerProxyModel, QgsProject, QgsRasterLayer
from qgis.gui import QgsDockWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QCoreApplication, Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QCompleter,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

DOCK_OBJECT_NAME = "SocioReasonerDock"
EXAMPLE_QUERIES = ("school", "park", "hospital", "where children study", "shopping mall",
                   "parking lot", "university", "sports and cultural venues")
BASEMAP_HINTS = ("openstreetmap", "osm")


def tr(text):
    """Translate in the plugin's own context, so one .ts file covers the UI."""
    return QCoreApplication.translate("SocioReasoner", text)


class SocioReasonerDock(QgsDockWidget):
    """Panel with the query, layer pickers, Find/Cancel/Refine/Export and progress.

    A QgsDockWidget (not a bare QDockWidget) so it behaves like QGIS's own panels.
    """

    find_requested = pyqtSignal()
    cancel_requested = pyqtSignal()
    refine_requested = pyqtSignal()
    export_requested = pyqtSignal()
    settings_requested = pyqtSignal()

    def __init__(self, parent=None):
        super().__init__(tr("SocioReasoner"), parent)
        # A stable object name lets QMainWindow save and restore the panel's place.
        self.setObjectName(DOCK_OBJECT_NAME)
        self.setAllowedAreas(
            Qt.DockWidgetArea.LeftDockWidgetArea | Qt.DockWidgetArea.RightDockWidgetArea)
        body = QWidget(self)
        body.setObjectName("SocioReasonerDockBody")
        layout = QVBoxLayout(body)

        intro = QLabel(tr("Find places in the current map view, e.g. schools or "
                          "\"where children study\"."), body)
        intro.setWordWrap(True)
        layout.addWidget(intro)

        self.query_edit = QLineEdit(body)
        self.query_edit.setObjectName("SocioReasonerQuery")
        self.query_edit.setPlaceholderText(tr("e.g. where children study"))
        self.query_edit.setClearButtonEnabled(True)
        self.query_edit.setCompleter(QCompleter(list(EXAMPLE_QUERIES), self.query_edit))
        self.examples = QComboBox(body)
        self.examples.setObjectName("SocioReasonerExamples")
        self.examples.addItem(tr("Examples…"))
        self.examples.addItems(list(EXAMPLE_QUERIES))
        self.examples.setMaximumWidth(110)
        self.examples.activated.connect(self._use_example)

        form = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.query_edit, 1)
        row.addWidget(self.examples)
        form.addRow(tr("Query"), row)
        self.sat_combo = self._layer_combo(body, "SocioReasonerSatLayer")
        self.map_combo = self._layer_combo(body, "SocioReasonerMapLayer")
        form.addRow(tr("Satellite"), self.sat_combo)
        form.addRow(tr("Map"), self.map_combo)
        layout.addLayout(form)

        self.find_button = self._button(body, tr("Find in view"), "SocioReasonerFind",
                                        tr("Segment the places that answer the query"))
        self.cancel_button = self._button(body, tr("Cancel"), "SocioReasonerCancel",
                                          tr("Stop the running job"))
        self.refine_button = self._button(body, tr("Refine"), "SocioReasonerRefine",
                                          tr("Segment again from the edited boxes and points"))
        self.export_button = self._button(body, tr("Export…"), "SocioReasonerExport",
                                          tr("Save the result as GeoPackage, Shapefile or GeoJSON"))
        self.settings_button = self._button(body, tr("Settings…"), "SocioReasonerSettings",
                                            tr("Engine, models, device and sampling"))
        buttons = QHBoxLayout()
        for b in (self.find_button, self.cancel_button, self.refine_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)
        more = QHBoxLayout()
        more.addWidget(self.export_button)
        more.addWidget(self.settings_button)
        layout.addLayout(more)

        self.progress = QProgressBar(body)
        self.progress.setObjectName("SocioReasonerProgress")
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        layout.addWidget(self.progress)
        self.status_label = QLabel(tr("Type a query and choose the layers."), body)
        self.status_label.setObjectName("SocioReasonerStatus")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
        self.setWidget(body)

        self.find_button.clicked.connect(self.find_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.refine_button.clicked.connect(self.refine_requested)
        self.export_button.clicked.connect(self.export_requested)
        self.settings_button.clicked.connect(self.settings_requested)
        self.query_edit.returnPressed.connect(self._return_pressed)
        self.query_edit.textChanged.connect(self._update_buttons)
        self.sat_combo.layerChanged.connect(self._update_buttons)
        self.set_running(False)
        self.set_has_run(False)
        self.pick_default_layers()
        # layers added later (a basemap, imagery) fill the pickers if they are still empty
        QgsProject.instance().layersAdded.connect(self._layers_added)

    @staticmethod
    def _layer_combo(parent, name):
        combo = QgsMapLayerComboBox(parent)
        combo.setObjectName(name)
        combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer | QgsMapLayerProxyModel.Filter.VectorLayer)
        combo.setAllowEmptyLayer(True)
        combo.setLayer(None)
        return combo

    @staticmethod
    def _button(parent, text, name, tip):
        b = QPushButton(text, parent)
        b.setObjectName(name)
        b.setToolTip(tip)
        return b

    def _use_example(self, index):
        if index > 0:
            self.query_edit.setText(self.examples.itemText(index))
        self.examples.setCurrentIndex(0)

    def _return_pressed(self):
        if self.find_button.isEnabled():
            self.find_requested.emit()

    def pick_default_layers(self, project=None):
        """Map: a layer that looks like an OpenStreetMap basemap; satellite: another raster."""
        layers = list((project or QgsProject.instance()).mapLayers().values())
        if self.map_combo.currentLayer() is None:
            for layer in layers:
                if any(h in layer.name().lower() for h in BASEMAP_HINTS):
                    self.map_combo.setLayer(layer)
                    break
        if self.sat_combo.currentLayer() is None:
            for layer in layers:
                if isinstance(layer, QgsRasterLayer) and layer is not self.map_combo.currentLayer():
                    self.sat_combo.setLayer(layer)
                    break

    def _layers_added(self, _layers):
        if self.map_combo.currentLayer() is None or self.sat_combo.currentLayer() is None:
            self.pick_default_layers()

    def disconnect_project(self):
        """Stop following the project's layers (the plugin calls this on unload)."""
        try:
            QgsProject.instance().layersAdded.disconnect(self._layers_added)
        except (TypeError, RuntimeError):
            pass

    def _update_buttons(self, *_):
        ready = bool(self.query_edit.text().strip()) and self.sat_combo.currentLayer() is not None
        self.find_button.setEnabled(ready and not self._running)

    def set_running(self, running: bool):
        """Disable what cannot be used while a job runs; only Cancel stays live."""
        self._running = running
        self.cancel_button.setEnabled(running)
        self.settings_button.setEnabled(not running)
        self.refine_button.setEnabled(not running and getattr(self, "_has_run", False))
        self.export_button.setEnabled(not running and getattr(self, "_has_run", False))
        if not running:
            self.progress.setValue(0)
        self._update_buttons()

    def set_has_run(self, has_run: bool):
        self._has_run = has_run
        self.set_running(getattr(self, "_running", False))

    def set_progress(self, percent: float):
        self.progress.setValue(int(round(percent)))

    def set_status(self, text):
        """Show one line of progress or error text under the buttons."""
        self.status_label.setText(text)
