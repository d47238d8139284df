"""Export a result layer to GeoPackage, Shapefile or GeoJSON through QgsVectorFileWriter,
atomically: written to a hidden temporary file beside the target, then renamed, so a
failure never leaves half a file and nothing is replaced unless the user agreed."""

from __future__ import annotations

import os
import uuid

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.PyQt import sip


class ExportError(Exception):
    """A layer could not be written (or would have replaced an existing file)."""


_DRIVERS = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON",
            ".json": "GeoJSON"}
# A shapefile is a set of files sharing a stem: the parts GDAL/QGIS write, and the spatial
# indexes that would go stale. A user's .qml style or .qmd metadata is left alone.
_SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qpj", ".qix", ".sbn", ".sbx")


def _driver_for(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext in _DRIVERS:
        return _DRIVERS[ext]
    raise ExportError(f"Cannot tell the file format from {os.path.basename(path)!r}: use a "
                      ".gpkg, .shp or .geojson file name.")


def _parts(folder: str, stem: str, ext: str, multi_file: bool) -> dict[str, str]:
    """suffix → path of every file that makes up ``stem+ext`` and exists now."""
    if not multi_file:
        path = os.path.join(folder, stem + ext)
        return {ext: path} if os.path.lexists(path) else {}
    out = {}
    for name in os.listdir(folder):
        if name.startswith(stem + ".") and name[len(stem):].lower() in _SHAPEFILE_PARTS:
            out[name[len(stem):]] = os.path.join(folder, name)
    return out


def _remove_quietly(paths) -> None:
    for path in paths:
        try:
            os.remove(path)
        except OSError:     # already gone, or not ours to remove: nothing to undo
            pass


def _write(layer: QgsVectorLayer, path: str, options) -> tuple[int, str]:
    context = layer.transformContext()
    if hasattr(QgsVectorFileWriter, "writeAsVectorFormatV3"):          # QGIS 3.20+
        result = QgsVectorFileWriter.writeAsVectorFormatV3(layer, path, context, options)
    else:
        result = QgsVectorFileWriter.writeAsVectorFormatV2(layer, path, context, options)
    return result[0], result[1]


def export_layer(layer: QgsVectorLayer, path: str, crs: QgsCoordinateReferenceSystem | None = None,
                 overwrite: bool = False) -> str:
    """Write ``layer`` (edit buffer included) to ``path``; returns the written path.

    The format follows the extension: .gpkg (GeoPackage), .shp (shapefile) or .geojson.
    With ``crs`` the features are reprojected (using the project's transform context).
    The file is first written under a temporary name in the same folder and then renamed
    into place, every sidecar of a shapefile included, so a failure never leaves a partial
    file and never damages the file being replaced. An existing file (for a shapefile:
    any of its parts) is only replaced with ``overwrite=True``; a GeoPackage is replaced
    as a whole. Raises ExportError with the reason.
    """
    if layer is None or sip.isdeleted(layer) or not layer.isValid():
        raise ExportError("There is no valid layer to export.")
    path = os.path.abspath(os.path.expanduser(path))
    folder, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    driver = _driver_for(path)
    if not stem:
        raise ExportError(f"{path!r} has no file name before its extension.")
    if not os.path.isdir(folder):
        raise ExportError(f"The folder {folder!r} does not exist.")
    multi_file = driver == "ESRI Shapefile"
    if _parts(folder, stem, ext, multi_file) and not overwrite:
        raise ExportError(f"{path!r} already exists; choose another name or allow overwriting.")

    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = driver
    options.fileEncoding = "UTF-8"
    options.layerName = stem
    options.actionOnExistingFile = QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteFile
    if crs is not None:
        if not crs.isValid():
            raise ExportError("The target CRS is not valid.")
        if not layer.crs().isValid():
            raise ExportError(f"Layer {layer.name()!r} has no CRS, so it cannot be reprojected.")
        if crs != layer.crs():
            options.ct = QgsCoordinateTransform(layer.crs(), crs, layer.transformContext())

    token = uuid.uuid4().hex[:12]
    temp_stem = f".{stem}.{token}.part"
    temp_path = os.path.join(folder, temp_stem + ext)

    def temp_files() -> list[str]:
        prefix = temp_stem + "."
        return [os.path.join(folder, n) for n in os.listdir(folder) if n.startswith(prefix)]

    try:
        error, message = _write(layer, temp_path, options)
    except Exception as exc:                         # noqa: BLE001 (reported, then cleaned)
        _remove_quietly(temp_files())
        raise ExportError(f"Could not write {path!r}: {exc}") from exc
    if error != QgsVectorFileWriter.WriterError.NoError or not os.path.exists(temp_path):
        _remove_quietly(temp_files())
        raise ExportError(f"Could not write {path!r}: {message or f'writer error {error}'}")

    try:
        if not multi_file:
            if os.path.lexists(path) and not overwrite:      # appeared while writing
                raise ExportError(f"{path!r} already exists; not replaced.")
            os.replace(temp_path, path)                      # atomic
        else:
            _move_shapefile(folder, stem, ext, temp_stem, token, overwrite)
    except ExportError:
        _remove_quietly(temp_files())
        raise
    except OSError as exc:
        _remove_quietly(temp_files())
        raise ExportError(f"Could not put {path!r} in place: {exc}") from exc
    return path


def _move_shapefile(folder, stem, ext, temp_stem, token, overwrite) -> None:
    """Move every temporary part to its final name; the old parts are kept aside until
    all new ones are in place, and put back if anything fails."""
    new = {n[len(temp_stem):]: os.path.join(folder, n) for n in os.listdir(folder)
           if n.startswith(temp_stem + ".")}
    old = _parts(folder, stem, ext, True)
    if old and not overwrite:
        raise ExportError(f"{os.path.join(folder, stem + ext)!r} already exists; not replaced.")
    backups, moved = {}, []
    try:
        for suffix, current in old.items():
            backup = os.path.join(folder, f".{stem}.{token}.old{suffix}")
            os.replace(current, backup)
            backups[current] = backup
        # The .shp last: a reader that sees it finds its sidecars already there.
        for suffix in sorted(new, key=lambda s: s.lower() == ".shp"):
            target = os.path.join(folder, stem + suffix)
            os.replace(new[suffix], target)
            moved.append(target)
    except OSError:
        _remove_quietly(moved)
        for current, backup in backups.items():
            try:
                os.replace(backup, current)
            except OSError:
                pass
        raise
    _remove_quietly(backups.values())
