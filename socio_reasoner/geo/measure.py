"""Areas in square metres whatever the CRS: planar in projected CRSs, geodesic otherwise."""

from __future__ import annotations

from pyproj import CRS as ProjCRS
from pyproj import Geod


def area_m2(polygon, crs) -> float:
    """Area of a shapely polygon given in ``crs`` (rasterio/pyproj CRS, WKT or None).

    Projected CRS: planar area times the unit's metres² (conformal projections such as
    Web Mercator inflate areas away from the equator, so those use the ellipsoid too).
    Geographic CRS: area on the CRS's ellipsoid, coordinates in GIS order (x = longitude)
    as GDAL, rasterio and QGIS hand them over. None: pixel units, returned as is.
    """
    if crs is None:
        return float(polygon.area)
    pcrs = ProjCRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    method = (pcrs.coordinate_operation.method_name or "").lower() if pcrs.is_projected else ""
    if pcrs.is_projected and not ("mercator" in method and "transverse" not in method):
        factor = pcrs.axis_info[0].unit_conversion_factor
        return float(polygon.area) * factor * factor
    geo = pcrs.geodetic_crs
    from pyproj import Transformer
    from shapely.ops import transform

    lonlat = polygon
    if not pcrs.is_geographic:
        to_ll = Transformer.from_crs(pcrs, geo, always_xy=True)
        lonlat = transform(to_ll.transform, polygon)
    ellps = geo.ellipsoid
    geod = Geod(a=ellps.semi_major_metre, rf=ellps.inverse_flattening or 0.0)
    return abs(float(geod.geometry_area_perimeter(lonlat)[0]))
