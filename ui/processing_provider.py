"""SocioReasoner's Processing provider: the "SocioReasoner" group of the toolbox.

It holds one algorithm, "Find socio-semantic entities" (``socioreasoner:findentities``,
ui/processing_algorithm.py). Registering and removing the provider is the plugin's job
(``QgsApplication.processingRegistry()`` in plugin.py); when the registry removes it, its
``unload()`` stops the engine worker that Processing runs share.
"""

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .processing_algorithm import ICON_PATH, FindEntitiesAlgorithm, shutdown_engine

PROVIDER_ID = "socioreasoner"


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
        self.addAlgorithm(FindEntitiesAlgorithm())

    def unload(self):
        """Called by the registry when the provider is removed (plugin unload)."""
        shutdown_engine()
