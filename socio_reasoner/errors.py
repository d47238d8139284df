"""One root exception for the engine, with stable codes that cross the worker boundary.

Each class carries a ``code`` so the QGIS side can show a specific message without
importing anything heavy; ``from_code`` maps a code back to its class.
"""

from __future__ import annotations


class SocioReasonerError(Exception):
    """Root of every error the engine raises on purpose."""

    code = "error"


class RasterOpenError(SocioReasonerError, OSError):
    """A raster could not be opened or read."""

    code = "raster_open"


class NoOverlapError(SocioReasonerError, ValueError):
    """The requested window does not intersect the raster."""

    code = "no_overlap"


class CRSError(SocioReasonerError, ValueError):
    """A CRS is missing, unknown, or cannot be transformed."""

    code = "crs"


class ShapeMismatchError(SocioReasonerError, ValueError):
    """An array does not have the shape its grid requires."""

    code = "shape_mismatch"


class OutputExistsError(SocioReasonerError, FileExistsError):
    """An output file exists and overwriting was not asked for."""

    code = "output_exists"


class ModelNotFoundError(SocioReasonerError, FileNotFoundError):
    """Model weights are neither local nor in the cache and cannot be downloaded."""

    code = "model_not_found"


class ModelLoadError(SocioReasonerError, RuntimeError):
    """Weights were found but could not be loaded (wrong format, version, or memory)."""

    code = "model_load"


class DatasetNotFoundError(SocioReasonerError, FileNotFoundError):
    """No such dataset source or split, or a hub dataset that is not cached offline."""

    code = "dataset_not_found"


class DatasetFormatError(SocioReasonerError, ValueError):
    """Data without SocioSeg's columns or files, or an unreadable task map."""

    code = "dataset_format"


class BadSampleError(SocioReasonerError, ValueError):
    """One sample cannot be used (unreadable image, wrong mask size, empty question)."""

    code = "bad_sample"


class UnknownViewError(SocioReasonerError, KeyError):
    """The worker no longer holds a view's images (it keeps the last few only)."""

    code = "unknown_view"

    def __str__(self) -> str:   # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CancelledError(SocioReasonerError):
    """The running job was cancelled by the user."""

    code = "cancelled"


class ProtocolError(SocioReasonerError, ValueError):
    """A worker message was malformed or named an unknown method."""

    code = "protocol"


class WorkerError(SocioReasonerError, RuntimeError):
    """The worker process died, timed out, or could not be started."""

    code = "worker"


_BY_CODE = {
    cls.code: cls
    for cls in (
        SocioReasonerError, RasterOpenError, NoOverlapError, CRSError, ShapeMismatchError,
        OutputExistsError, ModelNotFoundError, ModelLoadError, DatasetNotFoundError,
        DatasetFormatError, BadSampleError, UnknownViewError, CancelledError,
        ProtocolError, WorkerError,
    )
}


def from_code(code: str, message: str) -> SocioReasonerError:
    """Rebuild an engine error from its wire code (unknown codes become the root class)."""
    return _BY_CODE.get(code, SocioReasonerError)(message)
