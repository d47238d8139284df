#!/usr/bin/env python3
"""Build the QGIS plugin zip: dist/socioreasoner-<version>.zip.

The repository root is the plugin folder, but it also holds tests, benchmarks, CI files
and virtual environments that must not reach users. The zip gets one top-level folder,
socioreasoner/, with the plugin, the engine source (the worker needs it) and the
requirement files (users build the engine environment from them).

The checks here mirror what plugins.qgis.org rejects on upload, so a bad zip fails
locally: missing metadata fields, a non-ASCII folder name, compiled binaries, or a zip
of 25 MB or more.

Standard library only: it runs with the system Python (`make package`).
"""

import argparse
import configparser
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_FOLDER = "socioreasoner"
MAX_ZIP_BYTES = 25 * 1024 * 1024

# Fields plugins.qgis.org refuses a plugin without.
REQUIRED_METADATA = (
    "name",
    "qgisMinimumVersion",
    "description",
    "about",
    "version",
    "author",
    "email",
    "repository",
    "tracker",
)

# What goes in, by top-level entry; everything else in the checkout stays out.
INCLUDED_TOP_FILES = ("metadata.txt", "LICENSE", "README.md", "Makefile", "pyproject.toml")
INCLUDED_TOP_DIRS = ("ui", "resources", "socio_reasoner", "requirements", "scripts", "i18n")
# Without these the zip is not a working plugin (LICENSE: plugins.qgis.org requires one).
REQUIRED_FILES = ("metadata.txt", "__init__.py", "plugin.py", "LICENSE")
# Expected but not fatal when missing (warned about).
EXPECTED_FILES = ("README.md",)

# Never shipped, wherever they appear (the top-level ones are also outside the list above).
EXCLUDED_DIRS = {
    "tests", "bench", "tools", "dist", "runs", "test-output", "__pycache__", "build",
}
# Compiled code (plugins.qgis.org rejects it) and model weights (users download those).
BINARY_SUFFIXES = (
    ".pyc", ".pyo", ".pyd", ".so", ".dll", ".dylib", ".exe", ".o", ".a", ".lib",
    ".pt", ".pth", ".ckpt", ".safetensors", ".onnx", ".bin",
)
# Executable headers: ELF, Windows PE, Mach-O (both byte orders, 32/64 bit, fat).
BINARY_MAGICS = (
    b"\x7fELF", b"MZ", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe",
)


class PackagingError(Exception):
    """A problem that makes the zip unfit for release."""


def is_binary(path):
    """True for compiled or executable files, judged by suffix and then by header."""
    if path.lower().endswith(BINARY_SUFFIXES) or ".so." in os.path.basename(path):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return any(head.startswith(magic) for magic in BINARY_MAGICS)


def is_wanted(relpath):
    """Whether a path (relative, '/'-separated) belongs in the plugin zip."""
    parts = relpath.split("/")
    if any(part.startswith(".") for part in parts):  # .git*, .venv*, .ci, .qgis-settings
        return False
    if any(part in EXCLUDED_DIRS for part in parts[:-1]):
        return False
    if len(parts) == 1:
        return parts[0] in INCLUDED_TOP_FILES or parts[0].endswith(".py")
    return parts[0] in INCLUDED_TOP_DIRS


def list_candidates(root):
    """Files of the checkout: tracked plus untracked-not-ignored in git, else a walk."""
    if os.path.isdir(os.path.join(root, ".git")) or os.path.isfile(os.path.join(root, ".git")):
        try:
            out = subprocess.run(
                ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                cwd=root, check=True, capture_output=True,
            ).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"note: git ls-files failed ({exc}); walking the folder", file=sys.stderr)
        else:
            names = {name for name in out.decode("utf-8").split("\0") if name}
            # Tracked files deleted in the working tree are listed but absent.
            return sorted(n for n in names if os.path.lexists(os.path.join(root, n)))
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d not in EXCLUDED_DIRS
        )
        found.extend(rel_dir + name for name in filenames)
    return sorted(found)


def select_files(root):
    """The files to ship, as sorted relative paths; notes what it leaves out and why."""
    selected = []
    for rel in list_candidates(root):
        if not is_wanted(rel):
            continue
        path = os.path.join(root, rel)
        if os.path.islink(path):
            print(f"note: skipping symlink {rel}", file=sys.stderr)
            continue
        if not os.path.isfile(path):
            continue
        if is_binary(path):
            print(f"note: skipping binary file {rel}", file=sys.stderr)
            continue
        selected.append(rel)
    return selected


def read_metadata(root):
    """metadata.txt's [general] section; raises PackagingError on anything missing."""
    path = os.path.join(root, "metadata.txt")
    if not os.path.isfile(path):
        raise PackagingError("metadata.txt not found in " + root)
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are camelCase (qgisMinimumVersion)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as exc:
        raise PackagingError(f"metadata.txt does not parse: {exc}") from exc
    if not parser.has_section("general"):
        raise PackagingError("metadata.txt has no [general] section")
    meta = dict(parser.items("general"))
    missing = [key for key in REQUIRED_METADATA if not meta.get(key, "").strip()]
    if missing:
        raise PackagingError("metadata.txt lacks required field(s): " + ", ".join(missing))
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?", meta["qgisMinimumVersion"].strip()):
        raise PackagingError(
            f"qgisMinimumVersion {meta['qgisMinimumVersion']!r} is not like 3.22"
        )
    if not re.fullmatch(r"\d+(\.\d+){0,3}([-.]?\w+)?", meta["version"].strip()):
        raise PackagingError(f"version {meta['version']!r} is not like 0.1.0")
    return meta


def check_folder_name(name):
    """plugins.qgis.org wants an ASCII folder name usable as a Python package."""
    if not name.isascii() or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise PackagingError(f"plugin folder name {name!r} must be an ASCII identifier")


def zip_timestamp(path):
    """The file's mtime, clamped to 1980 (the earliest a zip entry can hold)."""
    stamp = time.localtime(os.path.getmtime(path))[:6]
    return max(stamp, (1980, 1, 1, 0, 0, 0))


def build_zip(root, out_dir, folder=PLUGIN_FOLDER):
    """Validate, then write <out_dir>/<folder>-<version>.zip; returns its path."""
    check_folder_name(folder)
    meta = read_metadata(root)
    files = select_files(root)
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise PackagingError("required plugin file(s) missing: " + ", ".join(missing))
    for name in EXPECTED_FILES:
        if name not in files:
            print(f"warning: {name} is missing; the zip is built without it", file=sys.stderr)
    icon = meta.get("icon", "").strip()
    if icon and icon not in files:
        raise PackagingError(f"metadata.txt names icon {icon!r}, which is not packaged")

    version = meta["version"].strip()
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, f"{folder}-{version}.zip")
    # Built beside the target and renamed, so a failed check leaves no half-made zip.
    fd, tmp_path = tempfile.mkstemp(prefix=".package-", suffix=".zip", dir=out_dir)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for rel in files:
                path = os.path.join(root, rel)
                info = zipfile.ZipInfo(f"{folder}/{rel}", date_time=zip_timestamp(path))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (os.stat(path).st_mode & 0o777 | 0o100000) << 16
                with open(path, "rb") as handle:
                    archive.writestr(info, handle.read())
        size = os.path.getsize(tmp_path)
        if size >= MAX_ZIP_BYTES:
            raise PackagingError(
                f"zip is {size / 1048576:.1f} MB; plugins.qgis.org accepts under 25 MB"
            )
        os.replace(tmp_path, target)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
    return target, files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=os.path.join(ROOT, "dist"),
        help="folder to write the zip into (default: dist/ in the repository)",
    )
    parser.add_argument(
        "--root", default=ROOT, help="plugin folder to package (default: this repository)"
    )
    args = parser.parse_args(argv)
    try:
        target, files = build_zip(os.path.abspath(args.root), os.path.abspath(args.out))
    except PackagingError as exc:
        print(f"package_plugin: error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(files)} files packaged", file=sys.stderr)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
