"""Georeferencing: image grids, reading rasters onto a grid, mask → polygons, export.

Plain functions over ``(array, affine, crs)`` in the manner of rasterio; nothing here
knows about models.
"""
