"""SocioReasoner engine: find socially defined urban places with a VLM and SAM.

This package runs without QGIS. Importing it stays light (no torch, transformers or
rasterio) because QGIS's own Python imports the worker client from here.
"""

__version__ = "0.1.0"
