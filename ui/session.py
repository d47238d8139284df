"""One engine worker per QGIS session, started on first use and kept warm.

Models load once and stay loaded between "Find in view" clicks; changing the models in
the settings reloads them (the worker unloads the old ones first).
"""

import os

from ..socio_reasoner.worker.client import WorkerClient


class EngineSession:
    """Owns the worker process; used from QgsTask threads, one request at a time."""

    def __init__(self, settings):
        self.settings = settings
        self._client = None
        self._started_with = None   # (python, offline) the running worker was started with
        self._loaded_spec = None

    def client(self) -> WorkerClient:
        """The worker, restarted when the engine Python or the offline flag changed (both
        are fixed at process start); a model change only reloads models."""
        wanted = (self.settings.python_path(), self.settings.offline)
        if self._client is None or self._started_with != wanted:
            self.shutdown()
            env = {"HF_HUB_OFFLINE": "1"} if self.settings.offline else {}
            self._client = WorkerClient(wanted[0], env=env)
            self._started_with = wanted
        return self._client

    def ensure_loaded(self, on_progress=None, is_cancelled=None) -> dict:
        """Start the worker and load the configured models unless already loaded."""
        spec = self.settings.model_spec()
        client = self.client()
        if spec == self._loaded_spec and client.is_running():
            return spec
        client.request("load", spec, on_progress=on_progress, is_cancelled=is_cancelled,
                       timeout_s=max(self.settings.timeout_s, 1800))
        self._loaded_spec = spec
        return spec

    def request(self, method, params, on_progress=None, is_cancelled=None) -> dict:
        return self.client().request(method, params, on_progress=on_progress,
                                     is_cancelled=is_cancelled, timeout_s=self.settings.timeout_s)

    def log_tail(self) -> str:
        return self._client.log_tail() if self._client else ""

    @property
    def log_path(self) -> str:
        return os.fspath(self._client.log_path) if self._client else ""

    def shutdown(self) -> None:
        if self._client is not None:
            self._client.stop()
        self._client = None
        self._started_with = None
        self._loaded_spec = None
