"""QGIS responsiveness and memory during a real "Find in view": run with QGIS's Python.

    QT_QPA_PLATFORM=offscreen .venv-qgis/bin/python bench/qgis_run.py            # 1, 16, 256 tiles
    QT_QPA_PLATFORM=offscreen .venv-qgis/bin/python bench/qgis_run.py --tiles 16 --delay 0.5

Each size runs in a fresh process (peak RSS is a high-water mark): a real QGIS project,
the plugin's dock and controller, and the real worker process from .venv serving a
scripted VLM whose every answer takes ``--delay`` seconds (the injected slow step) and
the box segmenter. A 10 ms QTimer in the QGIS process records the longest gap between
its ticks: the longest event-loop stall, goal < 100 ms. Reported: stall, wall time,
peak RSS of the QGIS process and of the worker. Writes bench/results/qgis_run-<machine>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
S1 = '<think>a</think><answer>[{"bbox_2d": [300, 300, 420, 380]}]</answer>'
S2 = '<think>b</think><answer>[{"bbox_2d": [300, 300, 420, 380], "points": [[350, 340]]}]</answer>'


def one_run(tiles: int, delay: float) -> dict:
    """Inside QGIS: one Find in view over a view of about ``tiles`` tiles."""
    import numpy as np
    from osgeo import gdal, osr
    from qgis.core import (
        QgsApplication,
        QgsCoordinateReferenceSystem,
        QgsProject,
        QgsRasterLayer,
        QgsRectangle,
    )
    from qgis.gui import QgsMessageBar
    from qgis.PyQt.QtCore import QCoreApplication, QElapsedTimer, QTimer

    app = QgsApplication([], False)
    app.initQgis()
    parent = tempfile.mkdtemp()
    os.symlink(REPO, os.path.join(parent, "socioreasoner"))
    sys.path.insert(0, parent)
    from socioreasoner.ui.controller import Controller
    from socioreasoner.ui.dock import SocioReasonerDock
    from socioreasoner.ui.settings import EngineSettings

    side = int(np.ceil(np.sqrt(tiles)))
    # tiles of 768 px at 1 m/px overlap by 64 px: (side - 1) steps of 704 m plus one tile
    ground_m = 0.97 * (768 + (side - 1) * 704)   # a little less, so rounding adds no tile
    units = ground_m / 0.4985          # EPSG:3857 units per ground metre at 60.17° N ≈ 2.006
    x0, y1 = 2776000.0, 8438000.0
    path = os.path.join(parent, "sat.tif")
    px = int(units / 4)                 # a 4-unit (≈2 m) raster covering the whole view
    ds = gdal.GetDriverByName("GTiff").Create(path, px, px, 3, gdal.GDT_Byte,
                                              ["COMPRESS=DEFLATE", "TILED=YES"])
    ds.SetGeoTransform((x0, 4.0, 0, y1, 0, -4.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(3857)
    ds.SetProjection(srs.ExportToWkt())
    row = (np.arange(px) % 251).astype(np.uint8)
    for b in range(3):                  # written in strips: the bench's own memory stays small
        band = ds.GetRasterBand(b + 1)
        for y0 in range(0, px, 512):
            h = min(512, px - y0)
            band.WriteArray(np.tile(np.roll(row, y0 + 7 * b), (h, 1)), 0, y0)
    ds = None
    layer = QgsRasterLayer(path, "sat")
    project = QgsProject.instance()
    project.addMapLayer(layer)
    crs = QgsCoordinateReferenceSystem("EPSG:3857")
    project.setCrs(crs)
    extent = QgsRectangle(x0, y1 - units, x0 + units, y1)

    class Canvas:                       # the view to capture, exactly this extent
        def extent(self):
            return extent

        def mapSettings(self):          # noqa: N802
            class S:
                def destinationCrs(self):  # noqa: N802
                    return crs
            return S()

    class Iface:
        bar = QgsMessageBar()

        def mapCanvas(self):            # noqa: N802
            return Canvas()

        def messageBar(self):           # noqa: N802
            return self.bar

    dock = SocioReasonerDock()
    settings = EngineSettings(engine_python=str(REPO / ".venv" / "bin" / "python"), offline=True,
                              max_tiles=max(64, tiles),
                              extra={"vlm": "scripted", "vlm_answers": [S1, S2],
                                     "vlm_delay_s": delay, "segmenter": "box"})
    controller = Controller(Iface(), dock, settings=settings, project=project,
                            confirm=lambda *a: True)
    dock.sat_combo.setLayer(layer)
    dock.map_combo.setLayer(layer)
    dock.query_edit.setText("school")
    controller.session.ensure_loaded()  # the worker's start is not part of the run

    clock, longest = QElapsedTimer(), [0]
    clock.start()
    last = [clock.elapsed()]

    def tick():
        now = clock.elapsed()
        longest[0] = max(longest[0], now - last[0] - 10)
        last[0] = now

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(10)
    t0 = time.perf_counter()
    controller.find_in_view()
    while controller.task is not None:
        QCoreApplication.processEvents()
        time.sleep(0.002)
    wall = time.perf_counter() - t0
    timer.stop()
    worker_pid = controller.session.client()._proc.pid
    worker_hwm = _vm_hwm_mb(worker_pid)
    outcome = controller.last_outcome
    n = len(controller.run.tiles) if controller.run else 0
    controller.shutdown()
    return {"tiles_requested": tiles, "tiles_run": n, "outcome": type(outcome).__name__,
            "delay_s": delay, "wall_s": round(wall, 2), "longest_stall_ms": longest[0],
            "qgis_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "worker_peak_rss_mb": worker_hwm}


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiles", type=int, nargs="*", default=[1, 16, 256])
    parser.add_argument("--delay", type=float, default=0.2, help="Seconds per scripted answer.")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.tiles[0], args.delay)), flush=True)
        os._exit(0)   # skip QGIS's teardown at exit, which crashes without a full shutdown
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import describe, machine_info, print_table, write_result

    print(describe(machine_info()))
    rows = []
    for n in args.tiles:
        out = subprocess.run([sys.executable, __file__, "--one", "--tiles", str(n), "--delay",
                              str(args.delay)], capture_output=True, text=True, check=True,
                             env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    print_table([(r["tiles_run"], r["outcome"], r["wall_s"], r["longest_stall_ms"],
                  r["qgis_peak_rss_mb"], r["worker_peak_rss_mb"]) for r in rows],
                ["tiles", "outcome", "wall s", "longest stall ms", "QGIS peak MB", "worker peak MB"])
    write_result("qgis_run", {"runs": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
