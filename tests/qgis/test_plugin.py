"""The plugin's life cycle inside QGIS: load, use the panel, unload, load again.

pytest-qgis's stub iface only records addToolBarIcon/addDockWidget (they do nothing) and
answers the menu methods with MagicMocks. The `gui_iface` fixture below gives those
methods their QGIS behaviour (a real plugins toolbar, a real Raster menu with one submenu
per plugin, docks really added to the main window), so "nothing left after unload" is
checked against real widgets. One test also runs against the bare stub.
"""

import os
import subprocess
from unittest.mock import call

import pytest
from pytest_qgis.utils import process_events
from qgis.core import QgsApplication
from qgis.gui import QgsDockWidget
from qgis.PyQt import sip
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QAction,
    QApplication,
    QDockWidget,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QToolBar,
)

ACTION_NAME = "SocioReasonerToggleAction"
DOCK_NAME = "SocioReasonerDock"
MENU_NAME = "&SocioReasoner"
PROVIDER_ID = "socioreasoner"
ALG_ID = "socioreasoner:findentities"


class IfaceGui:
    """The plugins toolbar, Raster menu and dock handling of QGIS's real iface."""

    def __init__(self, main_window):
        self.main_window = main_window
        self.toolbar = QToolBar("Plugins", main_window)
        self.toolbar.setObjectName("mPluginToolBar")
        main_window.addToolBar(self.toolbar)
        self.raster_menu = main_window.menuBar().addMenu("&Raster")

    def plugin_submenu(self, name):
        for action in self.raster_menu.actions():
            if action.menu() is not None and action.text() == name:
                return action.menu()
        return None

    def add_to_raster_menu(self, name, action):
        submenu = self.plugin_submenu(name)
        if submenu is None:
            submenu = QMenu(name, self.raster_menu)
            self.raster_menu.addMenu(submenu)
        submenu.addAction(action)

    def remove_from_raster_menu(self, name, action):
        submenu = self.plugin_submenu(name)
        if submenu is None:
            return
        submenu.removeAction(action)
        if not submenu.actions():  # QGIS drops a plugin's submenu once it is empty
            self.raster_menu.removeAction(submenu.menuAction())
            submenu.deleteLater()

    def close(self):
        self.main_window.removeToolBar(self.toolbar)
        self.toolbar.deleteLater()
        self.main_window.menuBar().removeAction(self.raster_menu.menuAction())
        self.raster_menu.deleteLater()
        process_events()


@pytest.fixture
def gui_iface(qgis_iface, qgis_new_project, monkeypatch):
    """pytest-qgis's iface with QGIS's toolbar/menu/dock behaviour, on a shown window."""
    main_window = qgis_iface.mainWindow()
    gui = IfaceGui(main_window)
    patches = {
        "addToolBarIcon": gui.toolbar.addAction,
        "removeToolBarIcon": gui.toolbar.removeAction,
        "pluginToolBar": lambda: gui.toolbar,
        "rasterMenu": lambda: gui.raster_menu,
        "addPluginToRasterMenu": gui.add_to_raster_menu,
        "removePluginRasterMenu": gui.remove_from_raster_menu,
        "addDockWidget": main_window.addDockWidget,
        "removeDockWidget": main_window.removeDockWidget,
    }
    for name, replacement in patches.items():
        monkeypatch.setattr(qgis_iface, name, replacement)
    # Offscreen, but shown: a dock's isVisible() means something only in a shown window.
    main_window.show()
    process_events()
    yield qgis_iface, gui
    main_window.hide()
    gui.close()


def our_docks():
    """Every live SocioReasoner dock in the application, parented or not."""
    return [
        widget
        for widget in QApplication.allWidgets()
        if isinstance(widget, QDockWidget) and widget.objectName() == DOCK_NAME
    ]


def assert_loaded(plugin, iface, gui):
    main_window = iface.mainWindow()
    dock, action = plugin.dock, plugin.action
    assert isinstance(dock, QgsDockWidget)
    assert dock in main_window.findChildren(QDockWidget)
    assert main_window.dockWidgetArea(dock) == Qt.DockWidgetArea.RightDockWidgetArea
    assert dock.windowTitle() == "SocioReasoner"
    assert our_docks() == [dock]
    assert action.isCheckable() and not action.isChecked()
    assert not action.icon().isNull(), "resources/icon.svg did not load"
    assert action in gui.toolbar.actions()
    submenu = gui.plugin_submenu(MENU_NAME)
    assert submenu is not None and action in submenu.actions()
    assert not dock.isVisible(), "the panel should wait until it is asked for"
    registry = QgsApplication.processingRegistry()
    assert registry.providerById(PROVIDER_ID) is plugin.provider is not None
    assert registry.algorithmById(ALG_ID) is not None


def assert_nothing_left(iface, gui, old_dock, old_action):
    """After unload() and an event flush: no action, menu entry or dock anywhere."""
    process_events()
    main_window = iface.mainWindow()
    assert sip.isdeleted(old_dock), "the dock widget was not deleted"
    assert sip.isdeleted(old_action), "the toolbar action was not deleted"
    assert our_docks() == []
    assert not [d for d in main_window.findChildren(QDockWidget) if d.objectName() == DOCK_NAME]
    assert not [a for a in main_window.findChildren(QAction) if a.objectName() == ACTION_NAME]
    assert not [a for a in gui.toolbar.actions() if a.objectName() == ACTION_NAME]
    assert gui.plugin_submenu(MENU_NAME) is None, "the Raster menu still has our submenu"
    assert_no_provider()


def assert_no_provider():
    """The Processing provider, its algorithm and the Processing engine worker are gone."""
    from socioreasoner.ui.session import shared_worker

    registry = QgsApplication.processingRegistry()
    assert registry.providerById(PROVIDER_ID) is None, "the Processing provider is still registered"
    assert registry.algorithmById(ALG_ID) is None
    assert shared_worker().client is None


def test_load_toggle_unload_reload(plugin_package, gui_iface):
    iface, gui = gui_iface
    for _round in range(2):  # a second load/unload shows nothing piles up on reloads
        plugin = plugin_package.classFactory(iface)
        plugin.initProcessing()  # QGIS calls it before initGui (hasProcessingProvider=yes)
        provider = plugin.provider
        plugin.initGui()  # which calls it again: still one provider
        assert plugin.provider is provider
        assert_loaded(plugin, iface, gui)
        dock, action = plugin.dock, plugin.action

        action.trigger()  # the toolbar button
        process_events()
        assert action.isChecked() and dock.isVisible()

        dock.close()  # the panel's own close button unchecks the action
        process_events()
        assert not dock.isVisible() and not action.isChecked()

        action.setChecked(True)
        process_events()
        assert dock.isVisible()
        action.setChecked(False)
        process_events()
        assert not dock.isVisible()

        action.setChecked(True)  # unload with the panel open
        process_events()
        plugin.unload()
        assert plugin.dock is None and plugin.action is None and plugin.provider is None
        assert_no_provider()
        # Signals are cut before deletion: neither object reacts to the other any more.
        assert not sip.isdeleted(dock) and not sip.isdeleted(action)
        assert action.receivers(action.toggled) == 0
        assert dock.receivers(dock.openedStateChanged) == 0
        checked_before = action.isChecked()
        dock.show()
        dock.close()
        assert action.isChecked() == checked_before
        action.setChecked(not action.isChecked())
        assert not dock.isVisible()

        plugin.unload()  # a second unload is harmless
        assert_nothing_left(iface, gui, dock, action)


def test_bare_pytest_qgis_stub(plugin_package, qgis_iface, qgis_new_project):
    """The plugin also loads and unloads cleanly on pytest-qgis's unmodified stub."""
    qgis_iface.addPluginToRasterMenu.reset_mock()
    qgis_iface.removePluginRasterMenu.reset_mock()
    plugin = plugin_package.classFactory(qgis_iface)
    plugin.initGui()
    dock, action = plugin.dock, plugin.action
    assert dock.parent() is qgis_iface.mainWindow()
    assert qgis_iface.addPluginToRasterMenu.call_args_list == [call(MENU_NAME, action)]

    plugin.unload()
    assert qgis_iface.removePluginRasterMenu.call_args_list == [call(MENU_NAME, action)]
    process_events()
    assert sip.isdeleted(dock) and sip.isdeleted(action)
    assert our_docks() == []
    assert_no_provider()


def test_processing_only_load_as_qgis_process_does(plugin_package):
    """qgis_process creates the plugin without an iface and calls only initProcessing()."""
    plugin = plugin_package.classFactory(None)
    plugin.initProcessing()
    alg = QgsApplication.processingRegistry().algorithmById(ALG_ID)
    assert alg is not None and alg.displayName() == "Find socio-semantic entities"
    plugin.unload()
    assert_no_provider()


def test_dock_contents_and_screenshot(plugin_package, gui_iface, output_dir):
    iface, _gui = gui_iface
    plugin = plugin_package.classFactory(iface)
    plugin.initGui()
    try:
        dock = plugin.dock
        plugin.action.setChecked(True)
        process_events()

        query = dock.findChild(QLineEdit, "SocioReasonerQuery")
        button = dock.findChild(QPushButton, "SocioReasonerFind")
        status = dock.findChild(QLabel, "SocioReasonerStatus")
        assert query is not None and query.placeholderText()
        assert button is not None and button.text() == "Find in view"
        assert not button.isEnabled(), "nothing can answer a query before the engine is wired"
        assert status is not None and status.text()
        dock.set_status("Ready.")
        assert status.text() == "Ready."

        dock.resize(340, 220)
        query.setText("where children study")
        process_events()
        path = os.path.join(output_dir, "dock.png")
        pixmap = dock.grab()
        assert not pixmap.isNull()
        assert pixmap.save(path, "PNG")
        assert os.path.getsize(path) > 0
    finally:
        plugin.unload()
        process_events()


def test_import_does_not_load_model_libraries(plugin_parent_dir, qgis_venv_python):
    """Importing the plugin in QGIS's Python must not pull in torch, transformers, rasterio."""
    heavy = ("torch", "transformers", "rasterio")
    code = (
        "import sys\n"
        "import socioreasoner, socioreasoner.plugin, socioreasoner.ui.dock\n"
        "import socioreasoner.socio_reasoner\n"
        "assert callable(socioreasoner.classFactory)\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})\n"
        "print('LOADED', loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    # A fresh interpreter: this test process has imported plenty already.
    env = dict(os.environ, PYTHONPATH=plugin_parent_dir, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run(
        [qgis_venv_python, "-c", code], cwd=plugin_parent_dir, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED []" in result.stdout


def test_dock_defaults_to_a_basemap_added_later(plugin_package, qgis_app, qgis_new_project,
                                                repo_root, tmp_path):
    import shutil

    from qgis.core import QgsProject, QgsRasterLayer
    from socioreasoner.ui.dock import SocioReasonerDock

    dock = SocioReasonerDock()
    assert dock.map_combo.currentLayer() is None and dock.sat_combo.currentLayer() is None
    osm = QgsRasterLayer("type=xyz&url=http://127.0.0.1:9/{z}/{x}/{y}.png&zmax=19&zmin=0",
                         "OpenStreetMap", "wms")
    shutil.copy(os.path.join(repo_root, "sample", "helsinki_sat.tif"), tmp_path / "sat.tif")
    imagery = QgsRasterLayer(str(tmp_path / "sat.tif"), "imagery")
    QgsProject.instance().addMapLayers([osm, imagery])
    assert dock.map_combo.currentLayer() is osm
    assert dock.sat_combo.currentLayer() is imagery
    dock.disconnect_project()
    dock.deleteLater()
