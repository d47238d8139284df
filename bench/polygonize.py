"""Mask → polygons on a large mask: our ``mask_to_polygons`` against GDAL's polygonize.

What it measures
----------------
An 8192² mask (``--size``) of thresholded, smoothed noise: thousands of blobs with
holes and pixel-staircase edges. Timed side by side in one run:

* ours, in memory: ``socio_reasoner.geo.vectorize.mask_to_polygons`` (shapely polygons,
  largest first) — what the worker does with a result mask;
* ours + GeoPackage: the same, then ``socio_reasoner.geo.export.write_polygons``;
* GDAL, in memory: ``osgeo.gdal.Polygonize`` into an OGR Memory layer, timed inside
  Debian's ``/usr/bin/python3`` (the GeoTIFF already open);
* GDAL CLI → GeoPackage: ``/usr/bin/python3 /usr/bin/gdal_polygonize.py`` as a person
  would run it (process start, reading the GeoTIFF and writing the file included).

Debian's Python runs in a clean environment (only PATH, HOME, LANG), so nothing of the
engine's virtualenv leaks into it. Both sides use 4-connectivity and treat 0 as
background (the GeoTIFF's nodata). The footprints are then compared: polygon counts,
total area, the area of the symmetric difference of the two unions, polygons equal one
to one (after sorting by bounds), and both sets rasterized back against the mask.

Note: ``mask_to_polygons`` itself calls GDALPolygonize through rasterio (whose wheel
bundles its own GDAL), so the ratio measures the wrappers and geometry building around
the same algorithm, and two GDAL versions.

Run
---
    .venv/bin/python bench/polygonize.py                  # 8192², ~1 min on 2 cores
    .venv/bin/python bench/polygonize.py --size 4096 --repeats 3

Results: ``bench/results/polygonize-<machine>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import Timing, describe, fmt_s, machine_info, print_table, timeit, write_result

SYSTEM_PYTHON = "/usr/bin/python3"
GDAL_POLYGONIZE = "/usr/bin/gdal_polygonize.py"
CRS = "EPSG:3067"
PIXEL_M = 0.5

# Runs under Debian's python3: gdal.Polygonize into a Memory layer, timed in-process.
_GDAL_IN_MEMORY = r"""
import json, sys, time
from osgeo import gdal, ogr
gdal.UseExceptions()
ds = gdal.Open(sys.argv[1])
band = ds.GetRasterBand(1)
mask = band.GetMaskBand()
times, count = [], 0
for _ in range(int(sys.argv[2])):
    layer_ds = ogr.GetDriverByName("Memory").CreateDataSource("mem")
    layer = layer_ds.CreateLayer("polys", srs=ds.GetSpatialRef(), geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("DN", ogr.OFTInteger))
    t0 = time.perf_counter()
    gdal.Polygonize(band, mask, layer, 0, [], callback=None)
    times.append(time.perf_counter() - t0)
    count = layer.GetFeatureCount()
    layer_ds = None
print(json.dumps({"seconds": times, "count": count, "gdal": gdal.__version__}))
"""


def make_mask(size: int, seed: int, coverage: float) -> np.ndarray:
    """Smoothed noise at a quarter of the size, bilinearly upsampled and thresholded so that
    ``coverage`` of the pixels are set: blobs of many sizes, some with holes."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    small = ndimage.gaussian_filter(rng.standard_normal((size // 4, size // 4), np.float32), 2.5)
    threshold = np.quantile(small, 1 - coverage)
    return ndimage.zoom(small, 4, order=1) > threshold


def clean_env(home: str) -> dict:
    return {"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=8192, help="mask side in pixels")
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each method")
    p.add_argument("--coverage", type=float, default=0.32, help="fraction of pixels set")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import rasterio
    import shapely
    from affine import Affine
    from pyogrio.raw import read
    from scipy import ndimage

    from socio_reasoner.geo.export import write_polygons
    from socio_reasoner.geo.vectorize import mask_to_polygons, polygons_to_mask

    print(describe(machine_info("cpu")), flush=True)
    for need in (SYSTEM_PYTHON, GDAL_POLYGONIZE):
        if not os.path.exists(need):
            print(f"{need} is missing: install Debian's gdal-bin and python3-gdal", file=sys.stderr)
            return 2

    t0 = time.perf_counter()
    mask = make_mask(args.size, args.seed, args.coverage)
    _, n_blobs = ndimage.label(mask)
    _, n_background = ndimage.label(~mask, structure=np.ones((3, 3)))   # holes: 8-connected
    print(f"mask {args.size}×{args.size}: {mask.mean():.1%} set, {n_blobs} components "
          f"(4-connected), ~{n_background - 1} holes; made in {time.perf_counter() - t0:.1f} s",
          flush=True)
    transform = Affine(PIXEL_M, 0, 385_000.0, 0, -PIXEL_M, 6_672_000.0 + args.size * PIXEL_M)
    pixel_area = PIXEL_M * PIXEL_M

    with tempfile.TemporaryDirectory(prefix="socio-poly-") as tmp:
        tmp = Path(tmp)
        tif = tmp / "mask.tif"
        with rasterio.open(tif, "w", driver="GTiff", width=args.size, height=args.size, count=1,
                           dtype="uint8", crs=CRS, transform=transform, nodata=0,
                           tiled=True, blockxsize=512, blockysize=512) as dst:
            dst.write(mask.astype(np.uint8), 1)
        env = clean_env(str(tmp))

        # ---- ours
        print("ours: mask_to_polygons ...", flush=True)
        ours_t, ours = timeit(lambda: mask_to_polygons(mask, transform), args.repeats, 0)
        gpkg_ours = tmp / "ours.gpkg"

        def write_ours():
            polys = mask_to_polygons(mask, transform)
            write_polygons(gpkg_ours, polys, [{"DN": 1}] * len(polys), crs=CRS, overwrite=True)

        print("ours: mask_to_polygons + write_polygons (GPKG) ...", flush=True)
        ours_file_t, _ = timeit(write_ours, args.repeats, 0)

        # ---- GDAL in memory (Debian python, clean env)
        print("GDAL: gdal.Polygonize → Memory layer ...", flush=True)
        out = subprocess.run([SYSTEM_PYTHON, "-c", _GDAL_IN_MEMORY, str(tif), str(args.repeats)],
                             env=env, capture_output=True, text=True, check=True)
        gdal_mem = json.loads(out.stdout.strip().splitlines()[-1])
        gdal_mem_t = Timing(gdal_mem["seconds"])

        # ---- GDAL CLI to a GeoPackage
        print("GDAL: gdal_polygonize.py → GPKG ...", flush=True)
        gpkg_gdal = tmp / "gdal.gpkg"
        cli_t = Timing()
        for _ in range(args.repeats):
            gpkg_gdal.unlink(missing_ok=True)
            t0 = time.perf_counter()
            subprocess.run([SYSTEM_PYTHON, GDAL_POLYGONIZE, "-q", str(tif), "-f", "GPKG",
                            str(gpkg_gdal), "polys", "DN"], env=env, check=True,
                           capture_output=True)
            cli_t.seconds.append(time.perf_counter() - t0)

        # ---- footprints
        print("comparing footprints ...", flush=True)
        _, _, wkb, _ = read(str(gpkg_gdal), read_geometry=True)
        gdal_polys = shapely.from_wkb(np.asarray(wkb, dtype=object))
        gdal_polys = np.array([g.geoms[0] if g.geom_type == "MultiPolygon" and len(g.geoms) == 1
                               else g for g in gdal_polys], dtype=object)
        ours_arr = np.array(ours, dtype=object)
        t0 = time.perf_counter()
        area_ours = float(shapely.area(ours_arr).sum())
        area_gdal = float(shapely.area(gdal_polys).sum())

        def by_bounds(arr):
            b = shapely.bounds(arr)
            return arr[np.lexsort((shapely.area(arr), b[:, 3], b[:, 2], b[:, 1], b[:, 0]))]

        same_count = len(ours_arr) == len(gdal_polys)
        equal_pairs = int(shapely.equals(by_bounds(ours_arr), by_bounds(gdal_polys)).sum()) \
            if same_count else 0
        union_ours = shapely.coverage_union_all(ours_arr)
        union_gdal = shapely.coverage_union_all(gdal_polys)
        symdiff = float(shapely.symmetric_difference(union_ours, union_gdal).area)
        raster_ours = polygons_to_mask(list(ours_arr), transform, mask.shape)
        raster_gdal = polygons_to_mask(list(gdal_polys), transform, mask.shape)
        compare_s = time.perf_counter() - t0
        holes = int(sum(len(g.interiors) for g in ours_arr))
        vertices = int(shapely.get_num_coordinates(ours_arr).sum())

    ratio_mem = ours_t.median / gdal_mem_t.median
    ratio_file = ours_file_t.median / cli_t.median
    rows = [
        ["ours: mask_to_polygons (in memory)", fmt_s(ours_t.median), fmt_s(ours_t.min),
         f"{len(ours)} polygons, {holes} holes, {vertices / 1e6:.2f} M vertices"],
        ["GDAL: gdal.Polygonize → Memory layer", fmt_s(gdal_mem_t.median), fmt_s(gdal_mem_t.min),
         f"{gdal_mem['count']} features, GDAL {gdal_mem['gdal']} (Debian)"],
        ["ratio ours / GDAL, in memory", f"{ratio_mem:.2f}×", "-", ""],
        ["ours + write_polygons → GPKG", fmt_s(ours_file_t.median), fmt_s(ours_file_t.min),
         f"rasterio {rasterio.__version__}, GDAL {rasterio.__gdal_version__} (wheel)"],
        ["GDAL: gdal_polygonize.py → GPKG", fmt_s(cli_t.median), fmt_s(cli_t.min),
         "process start + read + write"],
        ["ratio ours / GDAL, to a file", f"{ratio_file:.2f}×", "-", ""],
    ]
    print_table(rows, ["method", "median", "min", "note"],
                title=f"\nMask → polygons, {args.size}×{args.size} mask, {n_blobs} components "
                      f"(median of {args.repeats})")
    checks = [
        ["polygon count", len(ours), len(gdal_polys), "equal" if same_count else "DIFFERENT"],
        ["total area (m²)", f"{area_ours:.2f}", f"{area_gdal:.2f}",
         f"mask {mask.sum() * pixel_area:.2f}; diff {abs(area_ours - area_gdal):.3g}"],
        ["area of symmetric difference (m²)", f"{symdiff:.3g}", "", "0 = identical footprints"],
        ["polygons equal one to one", equal_pairs, len(gdal_polys),
         "shapely.equals after sorting by bounds"],
        ["rasterized back == mask", bool(np.array_equal(raster_ours, mask)),
         bool(np.array_equal(raster_gdal, mask)), f"checks took {compare_s:.1f} s"],
    ]
    print_table(checks, ["check", "ours", "GDAL", "note"], title="\nFootprints")
    identical = (same_count and abs(area_ours - area_gdal) < 1e-6 * area_ours and symdiff < 1e-6
                 and np.array_equal(raster_ours, mask) and np.array_equal(raster_gdal, mask))
    print(f"\nfootprints identical: {identical}")
    write_result("polygonize", {
        "size": args.size, "components": n_blobs, "holes": holes, "vertices": vertices,
        "coverage": float(mask.mean()),
        "ours": ours_t, "ours_gpkg": ours_file_t, "gdal_memory": gdal_mem_t, "gdal_cli_gpkg": cli_t,
        "gdal_version_debian": gdal_mem["gdal"], "gdal_version_rasterio": rasterio.__gdal_version__,
        "ratio_in_memory": ratio_mem, "ratio_to_file": ratio_file,
        "checks": {"count_ours": len(ours), "count_gdal": len(gdal_polys), "area_ours": area_ours,
                   "area_gdal": area_gdal, "symdiff_area": symdiff, "equal_pairs": equal_pairs,
                   "identical": bool(identical)},
        "table": rows}, "cpu", args)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
