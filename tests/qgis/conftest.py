"""Shared setup for the QGIS-side tests (run with .venv-qgis, under pytest-qgis).

QGIS loads the plugin as a package named after its folder ("socioreasoner" once
installed), and plugin.py uses relative imports. The checkout's folder can have any
name, so the tests import it the same way QGIS does: through a symlink called
socioreasoner that points at the repository root.
"""

import os
import sys
import tempfile

import pytest

# pytest-qgis creates the QgsApplication before this file is read, so the Makefile also
# exports QT_QPA_PLATFORM; setting it here covers the subprocesses the tests start.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE_NAME = "socioreasoner"
OUTPUT_DIR = os.path.join(REPO_ROOT, "test-output")
QGIS_VENV_PYTHON = os.path.join(REPO_ROOT, ".venv-qgis", "bin", "python")
SYSTEM_PYTHON = "/usr/bin/python3"


def make_package_link(parent_dir):
    """Create parent_dir/socioreasoner -> repository root; returns parent_dir."""
    link = os.path.join(parent_dir, PACKAGE_NAME)
    if not os.path.lexists(link):
        os.symlink(REPO_ROOT, link, target_is_directory=True)
    return parent_dir


@pytest.fixture(scope="session")
def plugin_parent_dir():
    """A temporary folder holding only socioreasoner -> the repository root.

    Put it on sys.path (or PYTHONPATH) to import the checkout as the plugin package.
    """
    with tempfile.TemporaryDirectory(prefix="socioreasoner-plugin-") as parent:
        yield make_package_link(parent)


@pytest.fixture(scope="session")
def plugin_package(plugin_parent_dir):
    """The repository imported as the plugin package `socioreasoner`."""
    sys.path.insert(0, plugin_parent_dir)
    try:
        import socioreasoner

        assert os.path.realpath(os.path.dirname(socioreasoner.__file__)) == (
            os.path.realpath(REPO_ROOT)
        ), f"imported {socioreasoner.__file__}, not the checkout under test"
        yield socioreasoner
    finally:
        sys.path.remove(plugin_parent_dir)


@pytest.fixture(scope="session")
def qgis_venv_python():
    """The QGIS test environment's interpreter (the current one if that venv is absent)."""
    return QGIS_VENV_PYTHON if os.path.exists(QGIS_VENV_PYTHON) else sys.executable


@pytest.fixture(scope="session")
def repo_root():
    """The checkout under test (also the plugin folder)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def plugin_class(plugin_package):
    """SocioReasonerPlugin, imported the way classFactory() imports it."""
    from socioreasoner.plugin import SocioReasonerPlugin

    return SocioReasonerPlugin


@pytest.fixture(scope="session")
def output_dir():
    """<repo>/test-output/, where screenshots go for a human to look at."""
    os.makedirs(OUTPUT_DIR, exist_ok=True)
    return OUTPUT_DIR
