"""Qt widgets of the SocioReasoner plugin (Qt only through qgis.PyQt)."""
