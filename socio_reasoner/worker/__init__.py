"""The engine as a separate process speaking newline-delimited JSON over stdio.

QGIS imports only ``client`` and ``protocol`` (standard library only); the engine
process runs ``python -m socio_reasoner.worker`` from the engine environment.
"""
