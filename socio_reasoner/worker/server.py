"""The engine side of the worker: load models once, answer run/refine requests.

``Engine.handle`` is the one place where a request becomes work; the stdio loop in
``serve`` and the CLI both call it, so the plugin and the command line run the same code.
Long jobs run on a job thread so that ``cancel`` is read while they work.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import traceback
import uuid

from .. import __version__
from ..errors import CancelledError, ProtocolError, SocioReasonerError, UnknownViewError
from ..frames import ModelFrame
from ..models.base import GenerationConfig
from . import protocol
from .views import ViewCache, load_view, prompt_features, prompts_from_map, result_features

log = logging.getLogger("socio_reasoner.worker")

DEFAULT_MODELS = {
    "vlm": "vvangfaye/SocioReasoner-3B",
    "segmenter": "sam2",            # its weights default in load_segmenter (SAM2-L for sam2)
    "device": "auto",
}


class Engine:
    """Holds the loaded models and the recent views; stateless otherwise."""

    def __init__(self):
        self.reasoner = None
        self.model_spec: dict | None = None
        self.views = ViewCache()
        self.last_view = None      # for in-process callers (the CLI's overlay)
        self.last_result = None

    # ---------------------------------------------------------------- methods
    def handle(self, method: str, params: dict, progress=None, cancel=None) -> dict:
        progress = progress or (lambda f, m: None)
        if method == "hello":
            return self.hello()
        if method == "load":
            return self.load(params, progress)
        if method == "run":
            return self.run(params, progress, cancel)
        if method == "refine":
            return self.refine(params, progress)
        raise ProtocolError(f"Unknown method {method!r}; known: {', '.join(protocol.METHODS)}.")

    def hello(self) -> dict:
        import torch  # imported here so that a broken install is reported as an error reply

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        return {"version": __version__, "protocol": protocol.PROTOCOL_VERSION,
                "python": sys.version.split()[0], "torch": torch.__version__,
                "devices": devices, "models": self.model_spec, "pid": os.getpid()}

    def load(self, params: dict, progress) -> dict:
        spec = {**DEFAULT_MODELS, **{k: v for k, v in params.items() if v is not None}}
        spec.pop("generation", None)
        if spec == self.model_spec and self.reasoner is not None:
            self._set_generation(params.get("generation"))
            return {"models": spec, "reused": True, "device": self._vlm_device()}
        self.unload()
        progress(0.0, "loading models")
        from ..models.loading import build_reasoner  # heavy imports start here

        t0 = time.perf_counter()
        self.reasoner = build_reasoner(spec)
        self.model_spec = spec
        self._set_generation(params.get("generation"))
        progress(1.0, "models loaded")
        return {"models": spec, "reused": False, "seconds": time.perf_counter() - t0,
                "device": self._vlm_device()}

    def _vlm_device(self) -> str:
        """Where the VLM runs ("cuda:0", "cpu"...): the plugin sizes tile batches by it."""
        return str(getattr(self.reasoner.vlm, "device", "cpu"))   # a scripted VLM: none

    def unload(self) -> None:
        """Drop the current models (and their GPU memory) before loading others."""
        if self.reasoner is None:
            return
        self.reasoner = None
        self.model_spec = None
        self.views.clear()
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def _set_generation(self, gen: dict | None) -> None:
        if gen:
            self.reasoner.generation = GenerationConfig(**gen)

    def _require_models(self):
        if self.reasoner is None:
            self.load({}, lambda f, m: None)
        return self.reasoner

    def run(self, params: dict, progress, cancel) -> dict:
        """One view, or several (``params["views"]``: a list of {sat, map, grid, view_id})
        answered in one VLM batch per stage; the reply then holds ``results`` in order."""
        query = str(params.get("query") or "").strip()
        if not query:
            raise ValueError("The query is empty: say what to find, for example 'school'.")
        mode = params.get("mode", "two-stage")
        reasoner = self._require_models()
        progress(0.0, "reading images")
        specs = params.get("views") or [params]
        views = [self._load_view(spec, reasoner) for spec in specs]
        results = reasoner.run_batch([(v.map.pixels, v.sat.pixels, query) for v in views],
                                     mode=mode, progress=lambda f, m: progress(0.05 + 0.9 * f, m),
                                     cancel=cancel)
        outs = [self._run_reply(spec, view, result, query, mode, params)
                for spec, view, result in zip(specs, views, results, strict=True)]
        return outs[0] if "views" not in params else {"results": outs}

    @staticmethod
    def _load_view(params: dict, reasoner):
        view = load_view(params)
        view.frame_wh = ModelFrame.of(reasoner.vlm, view.grid.width, view.grid.height).frame_wh
        return view

    def _run_reply(self, spec, view, result, query, mode, params) -> dict:
        view_id = spec.get("view_id") or uuid.uuid4().hex
        self.views.put(view_id, view)
        self.last_view, self.last_result = view, result
        model = str(self.model_spec.get("vlm"))
        out = {
            "view_id": view_id, "query": query, "mode": mode,
            "crs": view.grid.crs.to_wkt() if view.grid.crs else None,
            "grid": view.grid.to_dict(), "frame_wh": list(result.frame.frame_wh),
            "result": result_features(view, result.object_masks, query, result.final.name, model,
                                      params.get("min_area_m2", 0.0), params.get("simplify", 0.0)),
            **prompt_features(view, {s.name: s.prompts for s in result.stages}),
            "stages": [{"name": s.name, "prompt": s.prompt, "raw_text": s.raw_text,
                        "answer_text": s.parsed.answer_text, "problems": s.parsed.problems,
                        "scores": s.scores, "seconds": s.seconds} for s in result.stages],
            "seconds": result.seconds,
            "sam_encodings": getattr(self.reasoner.segmenter, "encode_count", None),
        }
        if params.get("return_mask") or params.get("return_images"):
            from .views import encode_png

            out["mask_png_base64"] = encode_png(result.mask.astype("uint8") * 255)
            if params.get("return_images"):      # what the engine saw, on the view's grid
                out["sat_png_base64"] = encode_png(view.sat.pixels)
                out["map_png_base64"] = encode_png(view.map.pixels)
        return out

    def refine(self, params: dict, progress) -> dict:
        reasoner = self._require_models()
        view_id = params.get("view_id")
        view = self.views.get(view_id) if view_id else None
        if view is None:
            if "sat" not in params:
                raise UnknownViewError(
                    f"Unknown view {view_id!r}: send 'sat' and 'map' again to refine.")
            view = self._load_view(params, reasoner)
            view_id = view_id or uuid.uuid4().hex
            self.views.put(view_id, view)
        items = params.get("prompts") or []
        object_prompts = prompts_from_map(view, items)
        progress(0.2, "segmenting from edited prompts")
        t0 = time.perf_counter()
        mask, object_masks, scores = reasoner.refine(view.sat.pixels, object_prompts)
        query = str(params.get("query") or "")
        return {
            "view_id": view_id, "crs": view.grid.crs.to_wkt() if view.grid.crs else None,
            "result": result_features(view, object_masks, query, "refine",
                                      str(self.model_spec.get("segmenter")),
                                      params.get("min_area_m2", 0.0), params.get("simplify", 0.0)),
            **prompt_features(view, {"refine": object_prompts}),
            "scores": scores, "seconds": {"sam": time.perf_counter() - t0},
            "sam_encodings": getattr(reasoner.segmenter, "encode_count", None),
        }


def _error_for(exc: BaseException) -> tuple[str, str, dict]:
    if isinstance(exc, SocioReasonerError):
        return exc.code, str(exc), {}
    if isinstance(exc, (ValueError, KeyError, TypeError)):
        return "invalid_request", f"{type(exc).__name__}: {exc}", {}
    return "internal", f"{type(exc).__name__}: {exc}", {"traceback": traceback.format_exc()}


def serve(stdin, stdout, engine: Engine | None = None, finish_on_eof: bool = False) -> int:
    """Read requests from ``stdin`` until EOF or ``shutdown``; reply on ``stdout``.

    At EOF the parent is gone, so queued work is dropped unless ``finish_on_eof`` (used
    when replaying a request file or an in-memory stream) asks to drain the queue first.
    """
    engine = engine or Engine()
    writer = protocol.MessageWriter(stdout)
    jobs: queue.Queue = queue.Queue()
    cancelled: set = set()

    def job_loop():
        while True:
            msg = jobs.get()
            if msg is None:
                return
            rid, method, params = msg["id"], msg["method"], msg.get("params") or {}

            def progress(fraction, message, rid=rid):
                writer.write(protocol.notification(
                    "progress", {"id": rid, "fraction": round(float(fraction), 4), "message": message}))

            try:
                if rid in cancelled:
                    raise CancelledError("Cancelled before it started.")
                result = engine.handle(method, params, progress, cancel=lambda rid=rid: rid in cancelled)
                writer.write(protocol.reply(rid, result))
            except BaseException as exc:  # the loop must survive any job
                code, message, data = _error_for(exc)
                if code == "internal":
                    log.error("request %s (%s) failed:\n%s", rid, method, data.get("traceback"))
                writer.write(protocol.error_reply(rid, code, message, data))
            finally:
                cancelled.discard(rid)

    thread = threading.Thread(target=job_loop, name="socio-reasoner-jobs", daemon=True)
    thread.start()
    for raw in stdin:
        try:
            msg = protocol.decode_line(raw)
        except ValueError as exc:
            if str(exc) != "empty line":
                log.warning("skipping malformed line: %s", exc)
                writer.write(protocol.error_reply(None, "protocol", f"Malformed message: {exc}"))
            continue
        method, rid = msg.get("method"), msg.get("id")
        params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
        if method == "cancel":
            cancelled.add(params.get("id"))
            continue
        if method not in protocol.METHODS or rid is None:
            writer.write(protocol.error_reply(
                rid, "protocol", f"Unknown or id-less request {method!r}; "
                f"known methods: {', '.join(protocol.METHODS)}."))
            continue
        if method == "shutdown":
            writer.write(protocol.reply(rid, {"ok": True}))
            break
        if method == "hello":
            try:
                writer.write(protocol.reply(rid, engine.hello()))
            except Exception as exc:
                writer.write(protocol.error_reply(rid, *_error_for(exc)))
            continue
        jobs.put({"id": rid, "method": method, "params": params})
    jobs.put(None)
    if finish_on_eof:
        thread.join()
    return 0


def main() -> int:
    """Serve on the real stdio; anything printed by libraries goes to stderr."""
    logging.basicConfig(level=os.environ.get("SOCIO_REASONER_LOG", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    protocol_out = sys.stdout
    sys.stdout = sys.stderr          # stray prints must not corrupt the protocol stream
    return serve(sys.stdin.buffer, protocol_out)
