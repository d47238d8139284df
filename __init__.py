"""SocioReasoner QGIS plugin package (the repository root is the plugin folder).

QGIS imports this module when it scans the plugin folders, before the user enables the
plugin, so it must stay cheap: the plugin itself is only imported in classFactory().
"""


def classFactory(iface):  # noqa: N802 (name fixed by the QGIS plugin API)
    """Entry point QGIS calls to create the plugin instance."""
    from .plugin import SocioReasonerPlugin

    return SocioReasonerPlugin(iface)
