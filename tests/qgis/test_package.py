"""The release zip from tools/package_plugin.py, checked as plugins.qgis.org would check it.

The packager runs with the system Python (as `make package` does), and the unpacked
plugin must import with the system Python too: that is the interpreter QGIS embeds.
"""

import ast
import configparser
import os
import re
import shutil
import subprocess
import zipfile

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
REQUIRED_METADATA = (
    "name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
    "repository", "tracker",
)
COMPILED_SUFFIXES = (".pyc", ".pyo", ".pyd", ".so", ".dll", ".dylib", ".exe")
EXECUTABLE_MAGICS = (b"\x7fELF", b"MZ", b"\xfe\xed\xfa", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")
NEVER_SHIPPED = ("tests", "bench", ".ci", "tools", "dist", "runs", "test-output", "__pycache__")

pytestmark = pytest.mark.skipif(
    not os.path.exists(SYSTEM_PYTHON), reason="needs the system Python QGIS uses"
)


def run_packager(repo_root, *args):
    return subprocess.run(
        [SYSTEM_PYTHON, os.path.join(repo_root, "tools", "package_plugin.py"), *args],
        capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def built(repo_root, tmp_path_factory):
    """(zip path, folder it was unpacked into) for one packager run."""
    out = tmp_path_factory.mktemp("dist")
    result = run_packager(repo_root, "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    zip_path = result.stdout.strip().splitlines()[-1]
    assert os.path.isfile(zip_path) and os.path.dirname(zip_path) == str(out)
    unpacked = tmp_path_factory.mktemp("unpacked")
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.testzip() is None
        archive.extractall(unpacked)
    return zip_path, str(unpacked)


@pytest.fixture(scope="module")
def names(built):
    with zipfile.ZipFile(built[0]) as archive:
        return archive.namelist()


def version_tuple(text):
    assert re.fullmatch(r"\d+(\.\d+)+", text), f"{text!r} is not a dotted version"
    return tuple(int(part) for part in text.split("."))


def test_zip_name_and_size(built):
    zip_path, _ = built
    assert re.fullmatch(r"socioreasoner-\d+\.\d+\.\d+\.zip", os.path.basename(zip_path))
    assert os.path.getsize(zip_path) < 25 * 1024 * 1024


def test_one_ascii_top_level_folder(names, built):
    tops = {name.split("/")[0] for name in names}
    assert tops == {"socioreasoner"}
    assert all(name.startswith("socioreasoner/") for name in names)
    assert all(name.isascii() for name in names)
    assert os.listdir(built[1]) == ["socioreasoner"]


def test_metadata(built, repo_root):
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(os.path.join(built[1], "socioreasoner", "metadata.txt"), encoding="utf-8")
    meta = dict(parser.items("general"))
    for key in REQUIRED_METADATA:
        assert meta.get(key, "").strip(), f"metadata.txt lacks {key}"
    assert version_tuple(meta["qgisMinimumVersion"]) >= (3, 22)
    assert version_tuple(meta["qgisMaximumVersion"]) >= (4, 0)
    version_tuple(meta["version"])
    assert os.path.basename(built[0]) == f"socioreasoner-{meta['version']}.zip"
    assert meta["supportsQt6"] == "True"
    assert os.path.isfile(os.path.join(built[1], "socioreasoner", meta["icon"]))


def test_class_factory_in_top_level_init(built):
    path = os.path.join(built[1], "socioreasoner", "__init__.py")
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "classFactory" in functions
    assert [arg.arg for arg in functions["classFactory"].args.args] == ["iface"]


def test_expected_content(names):
    for required in (
        "metadata.txt", "__init__.py", "plugin.py", "LICENSE", "ui/__init__.py", "ui/dock.py",
        "resources/icon.svg", "socio_reasoner/__init__.py",
    ):
        assert f"socioreasoner/{required}" in names
    assert any(name.startswith("socioreasoner/requirements/") for name in names)


def test_nothing_that_must_stay_out(names):
    for name in names:
        parts = name.split("/")[1:]
        assert not set(parts) & set(NEVER_SHIPPED), name
        assert not any(part.startswith((".git", ".venv")) for part in parts), name
        assert not name.endswith(COMPILED_SUFFIXES), name


def test_no_binary_files(built):
    for dirpath, _dirs, files in os.walk(built[1]):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as handle:
                head = handle.read(4)
            assert not head.startswith(EXECUTABLE_MAGICS), path


def test_unpacked_plugin_imports_with_system_python(built):
    code = (
        "import sys\n"
        "import socioreasoner, socioreasoner.plugin\n"
        "assert callable(socioreasoner.classFactory)\n"
        "assert socioreasoner.plugin.SocioReasonerPlugin\n"
        "print(socioreasoner.__file__)\n"
    )
    env = dict(os.environ, PYTHONPATH=built[1], QT_QPA_PLATFORM="offscreen")
    result = subprocess.run(
        [SYSTEM_PYTHON, "-c", code], cwd=built[1], env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().startswith(os.path.join(built[1], "socioreasoner"))


def test_missing_metadata_field_fails_clearly(repo_root, tmp_path):
    """A metadata.txt without `email` stops the build with a message, writing no zip."""
    root = tmp_path / "plugin"
    root.mkdir()
    for name in ("__init__.py", "plugin.py", "LICENSE"):
        shutil.copy(os.path.join(repo_root, name), root / name)
    with open(os.path.join(repo_root, "metadata.txt"), encoding="utf-8") as handle:
        lines = [line for line in handle if not line.startswith("email=")]
    (root / "metadata.txt").write_text("".join(lines), encoding="utf-8")

    out = tmp_path / "out"
    result = run_packager(repo_root, "--root", str(root), "--out", str(out))
    assert result.returncode != 0
    assert "email" in result.stderr and "metadata.txt" in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_filters_outside_git(repo_root, tmp_path):
    """Without git (a plain folder walk) the same things stay out of the zip."""
    root = tmp_path / "plugin"
    root.mkdir()
    for name in ("__init__.py", "plugin.py", "LICENSE", "metadata.txt"):
        shutil.copy(os.path.join(repo_root, name), root / name)
    shutil.copytree(os.path.join(repo_root, "resources"), root / "resources")
    junk = {
        "socio_reasoner/__init__.py": b"",
        "socio_reasoner/__pycache__/x.cpython-311.pyc": b"\x00\x01",
        "socio_reasoner/fast.cpython-311-x86_64-linux-gnu.so": b"\x7fELF....",
        "socio_reasoner/tool": b"\x7fELF....",  # executable without a suffix
        "socio_reasoner/weights.safetensors": b"\x00" * 16,
        "tests/test_x.py": b"",
        "bench/run.py": b"",
        ".venv/lib/site.py": b"",
        ".qgis-settings/QGIS3.ini": b"",
        "runs/demo/result.gpkg": b"",
        "test-output/dock.png": b"",
        "Makefile": b"all:\n",                # shipped: it builds the engine env
        "configs/grpo.yaml": b"",
    }
    for rel, data in junk.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    out = tmp_path / "out"
    result = run_packager(repo_root, "--root", str(root), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    with zipfile.ZipFile(result.stdout.strip().splitlines()[-1]) as archive:
        shipped = sorted(name.split("/", 1)[1] for name in archive.namelist())
    assert shipped == [
        "LICENSE", "Makefile", "__init__.py", "metadata.txt", "plugin.py", "resources/icon.svg",
        "socio_reasoner/__init__.py",
    ]
