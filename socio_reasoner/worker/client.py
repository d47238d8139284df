"""Start the engine worker and talk to it. Standard library only: QGIS imports this.

The worker runs in the engine environment (``.venv``: torch, transformers, SAM) so that
QGIS's own Python never imports them.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import CancelledError, WorkerError, from_code
from . import protocol

ENGINE_ROOT = Path(__file__).resolve().parents[2]
_CLIENTS = itertools.count(1)   # one log file per client, even within one QGIS process   # the folder that holds socio_reasoner/


def default_engine_python(root: Path = ENGINE_ROOT) -> Path:
    """The engine venv's interpreter next to the plugin (``.venv``), as ``make setup`` builds it."""
    sub = "Scripts/python.exe" if os.name == "nt" else "bin/python"
    return root / ".venv" / sub


class WorkerClient:
    """One worker process; ``request`` blocks the calling thread until the reply.

    Call it from a background thread (a QgsTask), never from the GUI thread.

    Parameters
    ----------
    python : path of the engine environment's interpreter.
    env : extra environment variables for the worker (e.g. ``HF_HUB_OFFLINE``).
    log_path : where the worker's stderr goes; shown to the user when it crashes.
    """

    def __init__(self, python: str | os.PathLike | None = None, env: dict | None = None,
                 log_path: str | os.PathLike | None = None, root: Path = ENGINE_ROOT):
        self.python = Path(python) if python else default_engine_python(root)
        self.root = Path(root)
        self.env = env or {}
        self.log_path = Path(log_path) if log_path else Path(
            tempfile.gettempdir()) / f"socio-reasoner-worker-{os.getpid()}-{next(_CLIENTS)}.log"
        self._proc: subprocess.Popen | None = None
        self._ids = itertools.count(1)
        self._inbox: queue.Queue = queue.Queue()
        self._write_lock = threading.Lock()
        self._request_lock = threading.Lock()
        self._closed = False     # stop() was called: never start again (a crash may restart)

    # ---------------------------------------------------------------- process
    def start(self) -> None:
        if self.is_running():
            return
        if self._closed:
            raise WorkerError("The engine worker was shut down.")
        if not self.python.exists():
            raise WorkerError(
                f"The engine environment was not found: {self.python} does not exist. "
                "Build it with 'make setup' in the plugin folder, or set the engine Python "
                "in the plugin settings.")
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join([str(self.root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        for var in ("PYTHONHOME", "QGIS_PREFIX_PATH"):   # QGIS's own Python must not leak in
            env.pop(var, None)
        self._log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [str(self.python), "-m", "socio_reasoner.worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, cwd=str(self.root), env=env,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        if self._closed:             # stop() ran while this process was starting
            self._proc.kill()
            raise WorkerError("The engine worker was shut down.")
        self._inbox = queue.Queue()
        threading.Thread(target=self._read_loop, args=(self._proc, self._inbox),
                         daemon=True, name="socio-reasoner-reader").start()

    def _read_loop(self, proc, inbox) -> None:
        for raw in proc.stdout:
            try:
                inbox.put(protocol.decode_line(raw))
            except ValueError:
                continue
        inbox.put(None)   # EOF: the worker exited

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, n_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the worker to exit, for good; kill it if it does not within ``timeout_s``."""
        self._closed = True
        if not self.is_running():
            return
        try:
            self._send(protocol.request(next(self._ids), "shutdown"))
            self._proc.wait(timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired, WorkerError):
            self.kill()
        finally:
            self._close_log()

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    def _send(self, message: dict) -> None:
        line = (json.dumps(message, separators=(",", ":")) + "\n").encode("utf-8")
        with self._write_lock:
            try:
                self._proc.stdin.write(line)
                self._proc.stdin.flush()
            except (OSError, ValueError) as exc:
                raise WorkerError(f"The worker is not accepting requests: {exc}.\n{self.log_tail()}") from exc

    # ---------------------------------------------------------------- requests
    def request(self, method: str, params: dict | None = None,
                on_progress: Callable[[float, str], None] | None = None,
                is_cancelled: Callable[[], bool] | None = None,
                timeout_s: float | None = None, cancel_grace_s: float = 10.0) -> dict:
        """Send one request and wait for its reply, relaying progress.

        ``is_cancelled`` is polled ~10 times a second; when it turns True the worker is
        asked to cancel, and killed if it has not stopped within ``cancel_grace_s``.
        Raises the engine's error class for an error reply, CancelledError when
        cancelled, and WorkerError when the worker dies or ``timeout_s`` passes.
        """
        if method not in protocol.METHODS:
            raise ValueError(f"Unknown method {method!r}.")
        with self._request_lock:
            self.start()
            rid = next(self._ids)
            self._send(protocol.request(rid, method, params))
            started = time.monotonic()
            cancel_sent_at = None
            while True:
                try:
                    msg = self._inbox.get(timeout=0.1)
                except queue.Empty:
                    msg = False
                if msg is None:
                    code = self._proc.poll()
                    raise WorkerError(
                        f"The engine worker stopped unexpectedly (exit code {code}). "
                        f"Its log ({self.log_path}) ends with:\n{self.log_tail()}")
                if msg:
                    if msg.get("method") == "progress" and msg.get("params", {}).get("id") == rid:
                        if on_progress:
                            p = msg["params"]
                            on_progress(float(p.get("fraction", 0.0)), str(p.get("message", "")))
                        continue
                    if msg.get("id") == rid:
                        if "error" in msg:
                            err = msg["error"]
                            raise from_code(err.get("code", "error"), err.get("message", ""))
                        return msg.get("result", {})
                    continue
                now = time.monotonic()
                if cancel_sent_at is None and is_cancelled is not None and is_cancelled():
                    self._send(protocol.notification("cancel", {"id": rid}))
                    cancel_sent_at = now
                if cancel_sent_at is not None and now - cancel_sent_at > cancel_grace_s:
                    self.kill()   # a step that cannot be interrupted: stop it the hard way
                    raise CancelledError("Cancelled; the worker was stopped and will restart.")
                if timeout_s is not None and now - started > timeout_s:
                    self.kill()
                    raise WorkerError(
                        f"The engine worker did not answer '{method}' within {timeout_s:.0f} s; "
                        "it was stopped. Try a smaller view, or raise the timeout in settings.")

    def __enter__(self) -> WorkerClient:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":   # a quick manual check: python -m socio_reasoner.worker.client
    with WorkerClient(sys.executable) as c:
        print(c.request("hello"))
