"""The SocioReasoner panel: where the user types a query about the current map view.

Only the layout exists for now; the button stays disabled until the engine worker is
wired in, so the panel never offers an action it cannot carry out.
"""

from qgis.gui import QgsDockWidget
from qgis.PyQt.QtCore import QCoreApplication, Qt
from qgis.PyQt.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

DOCK_OBJECT_NAME = "SocioReasonerDock"


def tr(text):
    """Translate in the plugin's own context, so one .ts file covers the UI."""
    return QCoreApplication.translate("SocioReasoner", text)


class SocioReasonerDock(QgsDockWidget):
    """Panel with the query field, the "Find in view" button and a status line.

    A QgsDockWidget (not a bare QDockWidget) so it behaves like QGIS's own panels:
    it can be tabbed with them and reports when the user closes it.
    """

    def __init__(self, parent=None):
        super().__init__(tr("SocioReasoner"), parent)
        # A stable object name lets QMainWindow save and restore the panel's place.
        self.setObjectName(DOCK_OBJECT_NAME)
        self.setAllowedAreas(
            Qt.DockWidgetArea.LeftDockWidgetArea | Qt.DockWidgetArea.RightDockWidgetArea
        )

        body = QWidget(self)
        body.setObjectName("SocioReasonerDockBody")
        layout = QVBoxLayout(body)

        intro = QLabel(tr("Ask where something happens in the current map view."), body)
        intro.setWordWrap(True)
        layout.addWidget(intro)

        self.query_edit = QLineEdit(body)
        self.query_edit.setObjectName("SocioReasonerQuery")
        self.query_edit.setPlaceholderText(tr("e.g. where children study"))
        self.query_edit.setClearButtonEnabled(True)

        # Disabled until the engine worker exists: nothing could answer a click yet.
        self.find_button = QPushButton(tr("Find in view"), body)
        self.find_button.setObjectName("SocioReasonerFind")
        self.find_button.setEnabled(False)
        self.find_button.setToolTip(tr("Segment the places that answer the query"))

        row = QHBoxLayout()
        row.addWidget(self.query_edit, 1)
        row.addWidget(self.find_button)
        layout.addLayout(row)

        self.status_label = QLabel(tr("Engine not connected yet."), body)
        self.status_label.setObjectName("SocioReasonerStatus")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
        )
        layout.addWidget(self.status_label)
        layout.addStretch(1)

        self.setWidget(body)

    def set_status(self, text):
        """Show one line of progress or error text under the query."""
        self.status_label.setText(text)
