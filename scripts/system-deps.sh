#!/usr/bin/env bash
# Installs QGIS's Python bindings from Debian when they are missing. Idempotent.
set -euo pipefail
need=()
/usr/bin/python3 -c "import qgis.core" 2>/dev/null || need+=(python3-qgis qgis-providers)
/usr/bin/python3 -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
command -v gdal_polygonize.py >/dev/null 2>&1 || need+=(gdal-bin python3-gdal)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Missing system packages: ${need[*]}." >&2
  echo "Install QGIS (3.22 or newer) with its Python bindings from your distribution or qgis.org," >&2
  echo "then run 'make setup' again with SYSTEM_PYTHON set to the Python that imports qgis.core." >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "Installing ${need[*]} with apt-get"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
