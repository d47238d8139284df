"""SocioReasoner's Processing provider (placeholder).

Gives the plugin its own entry in the Processing toolbox. It has no algorithms yet: the
segmentation algorithm is added to loadAlgorithms() later. Registering and removing the
provider is the plugin's job (QgsApplication.processingRegistry()).
"""

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

PROVIDER_ID = "socioreasoner"
ICON_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resources", "icon.svg"
)


class SocioReasonerProvider(QgsProcessingProvider):
    """The "SocioReasoner" group of the Processing toolbox."""

    def id(self):  # noqa: A003 (QGIS API)
        return PROVIDER_ID

    def name(self):
        return "SocioReasoner"

    def longName(self):  # noqa: N802 (QGIS API)
        return self.name()

    def icon(self):
        return QIcon(ICON_PATH)

    def loadAlgorithms(self):  # noqa: N802 (QGIS API)
        """No algorithms yet."""
