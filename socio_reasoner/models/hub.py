"""Turns "a local folder/file or a Hugging Face hub id" into a local path, one way for
every backend, so that a missing model always fails with the same helpful message."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelNotFoundError

HOW_TO_GET = ("Run `socio-reasoner download` while online (or unset HF_HUB_OFFLINE), "
              "or pass the path of a local copy of the weights.")

_TRUE = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    """Whether hub look-ups are disabled, read at call time (tests set the variable late)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:   # pragma: no cover - huggingface_hub is a hard dependency
        return True
    return bool(constants.HF_HUB_OFFLINE)


def looks_like_hub_id(name: str) -> bool:
    """``owner/name`` with no path separators beyond the one slash and no file suffix."""
    parts = str(name).split("/")
    return (len(parts) == 2 and all(parts) and not str(name).startswith((".", "~"))
            and "\\" not in str(name) and Path(parts[1]).suffix not in {".pt", ".pth"})


def _not_found(what: str, cause: BaseException | None = None) -> ModelNotFoundError:
    detail = f" ({type(cause).__name__})" if cause is not None else ""
    state = "offline and not in the local cache" if hub_offline() else "not available"
    return ModelNotFoundError(f"Model weights '{what}' are {state}{detail}. {HOW_TO_GET}")


def resolve_model_dir(name_or_path: str | os.PathLike, revision: str | None = None,
                      allow_patterns: list[str] | None = None) -> Path:
    """Local folder for a model given as a folder or a hub id.

    Parameters
    ----------
    name_or_path : str or PathLike
        An existing folder, or a hub id such as ``"vvangfaye/SocioReasoner-3B"``; hub ids
        go through ``snapshot_download`` (cache first, progress bar while downloading).
    revision : str, optional
        Hub branch, tag or commit.
    allow_patterns : list of str, optional
        Restricts which files are downloaded.

    Returns
    -------
    pathlib.Path
        The folder holding ``config.json`` and the weights.

    Raises
    ------
    ModelNotFoundError
        The folder does not exist and the hub id is neither cached nor downloadable.
    """
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if not looks_like_hub_id(name):
        raise ModelNotFoundError(f"No model folder at '{name}'. {HOW_TO_GET}")
    try:
        from huggingface_hub import snapshot_download
        local = snapshot_download(name, revision=revision, allow_patterns=allow_patterns,
                                  local_files_only=hub_offline())
    except Exception as exc:   # offline miss, unknown repo, network error, gated repo
        raise _not_found(name, exc) from exc
    return Path(local)


def resolve_file(name_or_path: str | os.PathLike, repo_id: str | None = None,
                 filename: str | None = None, revision: str | None = None) -> Path:
    """Local path of one weights file: an existing file, or ``filename`` of hub ``repo_id``.

    Parameters
    ----------
    name_or_path : str or PathLike
        The file itself, or (when ``repo_id`` is None) a hub id whose ``filename`` is wanted.
    repo_id, filename : str, optional
        Where to find the file on the hub when ``name_or_path`` is not a local file.
    revision : str, optional
        Hub branch, tag or commit.

    Returns
    -------
    pathlib.Path
        The local file (inside the hub cache when downloaded).

    Raises
    ------
    ModelNotFoundError
        Neither local nor cached nor downloadable.
    """
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_file():
        return path
    repo_id = repo_id or str(name_or_path)
    if filename is None or not looks_like_hub_id(repo_id):
        raise ModelNotFoundError(f"No weights file at '{name_or_path}'. {HOW_TO_GET}")
    try:
        from huggingface_hub import hf_hub_download
        local = hf_hub_download(repo_id, filename, revision=revision,
                                local_files_only=hub_offline())
    except Exception as exc:
        raise _not_found(f"{repo_id}/{filename}", exc) from exc
    return Path(local)
