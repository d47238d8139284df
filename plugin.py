"""SocioReasoner plugin object: the toolbar action, the Raster menu entry and the panel.

Everything initGui() adds, unload() takes away again: QGIS calls unload() when the user
disables or reloads the plugin, and anything left behind would pile up on each reload.

The plugin never imports torch, transformers or rasterio: QGIS's Python must stay free of
them (their numpy would clash with QGIS's). Model work runs in a separate worker process.
"""

import os

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QCoreApplication, Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .ui.controller import Controller
from .ui.dock import SocioReasonerDock
from .ui.processing_provider import SocioReasonerProvider

PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))
ICON_PATH = os.path.join(PLUGIN_DIR, "resources", "icon.svg")
MENU_NAME = "&SocioReasoner"
ACTION_OBJECT_NAME = "SocioReasonerToggleAction"


def tr(text):
    """Translate in the plugin's own context, so one .ts file covers the UI."""
    return QCoreApplication.translate("SocioReasoner", text)


class SocioReasonerPlugin:
    """The object QGIS holds while the plugin is enabled (created by classFactory)."""

    def __init__(self, iface):
        """Only keep the interface: QGIS may create the plugin without showing its GUI."""
        self.iface = iface
        self.action = None
        self.dock = None
        self.controller = None
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS plugin API)
        """Register the Processing provider. QGIS calls this itself for plugins with
        hasProcessingProvider=yes (qgis_process too, without initGui); initGui calls it
        as well, so a second call must not add the provider twice."""
        if self.provider is not None:
            return
        provider = SocioReasonerProvider()
        if QgsApplication.processingRegistry().addProvider(provider):
            self.provider = provider

    def initGui(self):  # noqa: N802 (QGIS plugin API)
        """Add the checkable toolbar action, its Raster menu entry and the hidden panel."""
        self.initProcessing()
        main_window = self.iface.mainWindow()

        # Parented to the main window so it dies with QGIS even if unload() is never called.
        self.dock = SocioReasonerDock(main_window)
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        # Hidden until asked for: a panel popping up on every start is a nuisance.
        self.dock.hide()

        self.action = QAction(QIcon(ICON_PATH), tr("SocioReasoner"), main_window)
        self.action.setObjectName(ACTION_OBJECT_NAME)
        self.action.setCheckable(True)
        self.action.setChecked(False)
        self.action.setStatusTip(tr("Show or hide the SocioReasoner panel"))
        self.action.setToolTip(tr("SocioReasoner: find places in the map view"))

        # Both directions, so closing the panel with its own button unchecks the action.
        self.action.toggled.connect(self._on_action_toggled)
        self.dock.openedStateChanged.connect(self._on_dock_opened_changed)

        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToRasterMenu(MENU_NAME, self.action)
        self.controller = Controller(self.iface, self.dock)

    def unload(self):
        """Remove all initGui() added: signals, toolbar icon, menu entry and the panel,
        and the Processing provider (whose removal stops the Processing engine worker)."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        if self.controller is not None:
            self.controller.shutdown()     # stops a running job and the engine worker
            self.controller = None
        if self.action is not None:
            self._disconnect(self.action.toggled, self._on_action_toggled)
        if self.dock is not None:
            self._disconnect(self.dock.openedStateChanged, self._on_dock_opened_changed)
            self.dock.disconnect_project()

        if self.action is not None:
            self.iface.removeToolBarIcon(self.action)
            self.iface.removePluginRasterMenu(MENU_NAME, self.action)
            self.action.deleteLater()
            self.action = None

        if self.dock is not None:
            self.dock.hide()
            self.iface.removeDockWidget(self.dock)
            # Detach before deleting so the main window forgets it at once, not only
            # when the deferred delete runs.
            self.dock.setParent(None)
            self.dock.deleteLater()
            self.dock = None

    def _on_action_toggled(self, checked):
        """Show and raise the panel (it may sit behind another tab), or hide it."""
        if self.dock is None:
            return
        if checked:
            self.dock.show()
            self.dock.raise_()
        else:
            self.dock.hide()

    def _on_dock_opened_changed(self, opened):
        """Keep the action's check mark in step when the panel is opened or closed elsewhere."""
        if self.action is None or self.action.isChecked() == opened:
            return
        # Without blocking, the action would hide the panel again in the middle of its
        # own close event.
        self.action.blockSignals(True)
        try:
            self.action.setChecked(opened)
        finally:
            self.action.blockSignals(False)

    @staticmethod
    def _disconnect(signal, slot):
        """Disconnect and ignore 'not connected' so a second unload() is harmless."""
        try:
            signal.disconnect(slot)
        except (TypeError, RuntimeError):
            pass
