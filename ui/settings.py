"""Plugin settings in one place: keys, defaults and where each is stored.

Per-user values (the engine's Python, models, device) live in QgsSettings so every
project uses the same engine; nothing here imports the engine.
"""

from dataclasses import dataclass, field, fields

from qgis.core import QgsSettings

from ..socio_reasoner.worker.client import default_engine_python

PREFIX = "socioreasoner/"
# 2: tile_batch 0 means auto. Settings saved before it hold the old default 1, which
# nobody chose (the dialog saves every field): read as auto.
VERSION = 2


@dataclass
class EngineSettings:
    """What the worker needs to start and which models it loads."""

    engine_python: str = ""                      # empty: the .venv next to the plugin
    vlm: str = "vvangfaye/SocioReasoner-3B"      # hub id or local folder
    vlm_backend: str = "transformers"            # transformers | vllm (an engine with vLLM)
    segmenter: str = "sam2"                      # sam2 | sam
    segmenter_checkpoint: str = ""               # empty: sam2's default (SAM2-L); sam needs a file
    segmenter_variant: str = ""                  # only for bare checkpoint files
    device: str = "auto"                         # auto | cuda | mps | cpu
    mode: str = "two-stage"                      # two-stage | stage1 | single
    sampling: bool = False                       # the paper's sampling instead of greedy
    max_new_tokens: int = 1024
    timeout_s: int = 900                         # per request; a hung worker is stopped
    tile_px: int = 768
    max_tiles: int = 64                          # larger views are refused (zoom in)
    tile_batch: int = 0                          # tiles per VLM batch; 0: auto (4 on a GPU, else 1)
    offline: bool = False                        # never contact the hub
    # Not stored: extra ``load`` keys, e.g. a scripted replay {"vlm": "scripted", ...}.
    extra: dict = field(default_factory=dict)

    def python_path(self) -> str:
        return self.engine_python or str(default_engine_python())

    def model_spec(self) -> dict:
        """The worker's ``load`` parameters."""
        gen = {"max_new_tokens": self.max_new_tokens}
        if self.sampling:
            gen.update(do_sample=True, temperature=0.99, top_p=0.99, top_k=100)
        return {"vlm": self.vlm, "vlm_backend": self.vlm_backend, "segmenter": self.segmenter,
                "segmenter_checkpoint": self.segmenter_checkpoint or None,
                "segmenter_variant": self.segmenter_variant or None,
                "device": self.device, "generation": gen, **self.extra}

    @classmethod
    def load(cls) -> "EngineSettings":
        s, out = QgsSettings(), cls()
        for f in _stored_fields():
            raw = s.value(PREFIX + f.name, None)
            if raw is None:
                continue
            default = getattr(out, f.name)
            # bool before int: bool is an int subclass, and "false" must not read as True
            if isinstance(default, bool):
                value = raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                value = int(raw)
            else:
                value = str(raw)
            setattr(out, f.name, value)
        if int(s.value(PREFIX + "version", 1)) < 2 and out.tile_batch == 1:
            out.tile_batch = 0
        return out

    def save(self) -> None:
        s = QgsSettings()
        for f in _stored_fields():
            s.setValue(PREFIX + f.name, getattr(self, f.name))
        s.setValue(PREFIX + "version", VERSION)


def _stored_fields():
    return [f for f in fields(EngineSettings) if f.name != "extra"]
