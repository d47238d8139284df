"""Framing of the worker protocol: one JSON object per line, UTF-8. Standard library only.

Messages (every request has an ``id``; every reply echoes it):

* request       ``{"id": 7, "method": "run", "params": {...}}``
* reply         ``{"id": 7, "result": {...}}``
* error reply   ``{"id": 7, "error": {"code": "model_not_found", "message": "...", "data": {}}}``
* notification  ``{"method": "progress", "params": {"id": 7, "fraction": 0.5, "message": "..."}}``
* cancel        ``{"method": "cancel", "params": {"id": 7}}`` (a notification, no reply)

Stdout carries protocol only; everything else a process prints goes to stderr.
"""

from __future__ import annotations

import json
import threading

METHODS = ("hello", "load", "run", "refine", "cancel", "shutdown")
PROTOCOL_VERSION = 1


class MessageWriter:
    """Writes whole lines under a lock so progress and replies never interleave."""

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()

    def write(self, message: dict) -> None:
        line = json.dumps(message, separators=(",", ":"), allow_nan=False) + "\n"
        with self._lock:
            if hasattr(self._stream, "buffer"):
                self._stream.buffer.write(line.encode("utf-8"))
            else:
                self._stream.write(line.encode("utf-8") if _is_binary(self._stream) else line)
            self._stream.flush()


def _is_binary(stream) -> bool:
    return "b" in getattr(stream, "mode", "") or not hasattr(stream, "encoding")


def decode_line(line: bytes | str) -> dict:
    """Parse one line into a message dict; raises ValueError with a reason otherwise."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    line = line.strip()
    if not line:
        raise ValueError("empty line")
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"a message must be a JSON object, got {type(message).__name__}")
    return message


def request(id_, method: str, params: dict | None = None) -> dict:
    return {"id": id_, "method": method, "params": params or {}}


def reply(id_, result: dict) -> dict:
    return {"id": id_, "result": result}


def error_reply(id_, code: str, message: str, data: dict | None = None) -> dict:
    return {"id": id_, "error": {"code": code, "message": message, "data": data or {}}}


def notification(method: str, params: dict) -> dict:
    return {"method": method, "params": params}
