"""The QGIS process's one engine worker, started on first use and kept warm.

The dock and the Processing algorithm share it, so models load once however the user
runs the engine (a second 3B model would not fit many GPUs). Each caller holds an
`EngineSession` with its own settings; requests are serialised, and before each one the
worker is (re)started or the models (re)loaded if that caller's settings differ from what
the worker runs. (So a dock run and a Processing run with different models at the same
time take turns reloading them, batch by batch: slow, never wrong.)
"""

import contextlib
import os
import threading

from ..socio_reasoner.errors import CancelledError
from ..socio_reasoner.worker.client import WorkerClient

# Tiles per batch on a GPU when the setting is auto: the 3B at batch 4 on an H100 gave
# 2.2x the samples/s of batch 1 (5x at 16, which needs more GPU memory than many have).
GPU_TILE_BATCH = 4


class SharedWorker:
    """The worker process and what it was started and loaded with."""

    def __init__(self):
        self.lock = threading.RLock()
        self.client = None
        self.started_with = None    # (python, offline): fixed at process start
        self.loaded_spec = None
        self.loaded_device = None   # where the loaded VLM runs, as the worker said

    def shutdown(self) -> None:
        """Stop the worker now, without waiting for a caller's request to end (that could
        hold QGIS's main thread for minutes at unload): the request then ends with the
        worker's 'stopped' error."""
        client, self.client = self.client, None
        self.started_with = None
        self.loaded_spec = None
        self.loaded_device = None
        if client is not None:
            client.stop()


_worker = SharedWorker()


def shared_worker() -> SharedWorker:
    return _worker


class EngineSession:
    """A caller's settings over the shared worker; usable from any thread."""

    def __init__(self, settings, worker: SharedWorker | None = None):
        self.settings = settings
        self._worker = worker or _worker

    @contextlib.contextmanager
    def _locked(self, is_cancelled=None):
        """The worker's lock, waited for while another caller's request runs (cancellable)."""
        lock = self._worker.lock
        while not lock.acquire(timeout=0.1):
            if is_cancelled is not None and is_cancelled():
                raise CancelledError("Cancelled.")
        try:
            yield
        finally:
            lock.release()

    def client(self) -> WorkerClient:
        """The worker, restarted when the engine Python or the offline flag changed (both
        are fixed at process start); a model change only reloads models."""
        with self._locked():
            return self._started_client()

    def _started_client(self) -> WorkerClient:
        w = self._worker        # the caller holds the lock, as in the next method
        wanted = (self.settings.python_path(), self.settings.offline)
        if w.client is None or w.started_with != wanted:
            w.shutdown()
            env = {"HF_HUB_OFFLINE": "1"} if self.settings.offline else {}
            w.client, w.started_with = WorkerClient(wanted[0], env=env), wanted
        return w.client

    def _loaded_client(self, on_progress=None, is_cancelled=None) -> WorkerClient:
        w = self._worker
        spec = self.settings.model_spec()
        client = self._started_client()
        if spec == w.loaded_spec and client.is_running():
            return client
        w.loaded_spec = w.loaded_device = None
        reply = client.request("load", spec, on_progress=on_progress, is_cancelled=is_cancelled,
                               timeout_s=max(self.settings.timeout_s, 1800))
        w.loaded_spec, w.loaded_device = spec, reply.get("device")
        return client

    def ensure_loaded(self, on_progress=None, is_cancelled=None) -> dict:
        """Start the worker and load this caller's models unless they are loaded."""
        with self._locked(is_cancelled):
            self._loaded_client(on_progress, is_cancelled)
        return self.settings.model_spec()

    def tile_batch(self) -> int:
        """Tiles per VLM batch: the setting, or with 0 (auto) `GPU_TILE_BATCH` when the
        loaded VLM runs on a GPU and 1 elsewhere (batches buy nothing on a CPU)."""
        if self.settings.tile_batch > 0:
            return self.settings.tile_batch
        device = self._worker.loaded_device or ""
        return GPU_TILE_BATCH if device.startswith("cuda") else 1

    def request(self, method, params, on_progress=None, is_cancelled=None) -> dict:
        """One request with this caller's models (reloaded first if another caller's
        were loaded in between). A worker shut down meanwhile (plugin unload) is never
        started again by it: the request fails instead."""
        with self._locked(is_cancelled):
            client = self._loaded_client(on_progress, is_cancelled)
            return client.request(method, params, on_progress=on_progress,
                                  is_cancelled=is_cancelled, timeout_s=self.settings.timeout_s)

    def log_tail(self) -> str:
        client = self._worker.client
        return client.log_tail() if client else ""

    @property
    def log_path(self) -> str:
        client = self._worker.client
        return os.fspath(client.log_path) if client else ""

    def shutdown(self) -> None:
        """Stop the shared worker (plugin unload)."""
        self._worker.shutdown()
