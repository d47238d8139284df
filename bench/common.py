"""Helpers shared by the benchmark scripts in ``bench/`` (not a benchmark itself).

* `machine_info` / `machine_slug`: what ran the benchmark (CPU model, cores, memory,
  torch version, GPU name) and a short name for result files.
* `timeit`: warm-up calls, then repeats, with ``torch.cuda.synchronize()`` around each
  timed call when CUDA is in use; `Timing` keeps every sample, the median and the min.
* `write_result`: ``bench/results/<name>-<machine>.json`` with the machine and arguments.
* `print_table`: a plain-text table for the terminal (and copying into README.md).
* `rss_mb` / `peak_rss_mb`: resident memory now, and the process's (or children's) peak.

The scripts run as ``.venv/bin/python bench/<script>.py``, so ``bench/`` is on
``sys.path`` and they import this module as ``common``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import resource
import socket
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# No benchmark may reach the hub: every model is built locally from random weights.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# sam2's transforms wrap the (read-only) resized image; harmless, and noise in a table.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


# ----------------------------------------------------------------------------- machine
def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def memory_total_gb() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        return None


def gpu_name() -> str | None:
    """Name of CUDA device 0, or None when torch sees no CUDA device."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return None


def machine_info(device: str | None = None) -> dict:
    """What ran the benchmark: host, CPU, cores, memory, Python, torch, GPU (if any)."""
    info = {
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": memory_total_gb(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": gpu_name(),
        "device": device,
        # Other processes compete for a small machine's cores: keep the load with the figures.
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg")
        else None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def _slug(text: str) -> str:
    text = re.sub(r"\(r\)|\(tm\)|\bcpu\b|\bprocessor\b|@.*$", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def machine_slug(device: str | None = None) -> str:
    """Short file-name tag: the GPU's name when the run used CUDA (``nvidia-h100-80gb-hbm3``),
    else host, CPU model and core count (``vm-amd-epyc-2c``)."""
    if device and device.startswith("cuda"):
        name = gpu_name()
        if name:
            return _slug(name)
    host = _slug(socket.gethostname().split(".")[0])[:16]
    return "-".join(p for p in (host, _slug(cpu_model())[:24], f"{os.cpu_count()}c") if p)


def describe(info: dict) -> str:
    """One line for the top of a benchmark's output."""
    mem = f", {info['memory_gb']} GB RAM" if info.get("memory_gb") else ""
    line = f"{info['cpu']} ({info['cores']} cores{mem}), torch {info.get('torch')}"
    if info.get("transformers"):
        line += f", transformers {info['transformers']}"
    line += f", GPU: {info['gpu'] or 'none'}"
    if info.get("device"):
        line += f"; ran on {info['device']}"
    if info.get("loadavg_1_5_15"):
        line += f"; load average {info['loadavg_1_5_15'][0]}"
    return f"machine {info['hostname']}: {line}"


# ----------------------------------------------------------------------------- timing
def cuda_sync(device: str | None) -> None:
    """Wait for queued CUDA work, so wall clocks measure it (no-op elsewhere)."""
    if device and str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


@dataclass
class Timing:
    """Seconds of each timed call (warm-ups excluded)."""

    seconds: list[float] = field(default_factory=list)
    warmup: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def min(self) -> float:
        return min(self.seconds) if self.seconds else float("nan")

    def to_dict(self) -> dict:
        return {"median_s": self.median, "min_s": self.min, "repeats": len(self.seconds),
                "warmup": self.warmup, "all_s": self.seconds}


def timeit(fn: Callable[[], object], repeats: int = 3, warmup: int = 1,
           device: str | None = None) -> tuple[Timing, object]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

    On CUDA every timed call is bracketed by ``torch.cuda.synchronize()`` so queued
    kernels are counted. Returns (Timing, the last call's result).
    """
    result = None
    for _ in range(warmup):
        result = fn()
    cuda_sync(device)
    timing = Timing(warmup=warmup)
    for _ in range(max(repeats, 1)):
        cuda_sync(device)
        t0 = time.perf_counter()
        result = fn()
        cuda_sync(device)
        timing.seconds.append(time.perf_counter() - t0)
    return timing, result


# ----------------------------------------------------------------------------- memory
def rss_mb() -> float:
    """Resident memory of this process now, MiB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return float("nan")


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory (Linux ``ru_maxrss``) of this process, or of its waited-for
    children (the largest of them), MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    kb = resource.getrusage(who).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


# ----------------------------------------------------------------------------- output
def fmt_s(seconds: float | None) -> str:
    """Seconds with a unit that keeps 3 significant digits (µs to hours)."""
    if seconds is None or seconds != seconds:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 600:
        return f"{seconds:.3g} s"
    return f"{seconds / 60:.3g} min"


def print_table(rows: Sequence[Sequence[object]], headers: Sequence[str],
                title: str | None = None) -> str:
    """Print a Markdown-compatible table (pipes) and return its text."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells[1:]]
    text = ("\n" + title + "\n\n" if title else "") + "\n".join(out)
    print(text, flush=True)
    return text


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Timing):
        return obj.to_dict()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):   # numpy / torch scalars
        return obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def write_result(name: str, payload: dict, device: str | None = None,
                 args: object | None = None) -> Path:
    """Write ``bench/results/<name>-<machine>.json`` (replacing an older run's file)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    slug = machine_slug(device)
    doc = {
        "benchmark": name,
        "machine_slug": slug,
        "machine": machine_info(device),   # loadavg here is the load at the end of the run
        "argv": sys.argv[1:],
        "args": vars(args) if args is not None and hasattr(args, "__dict__") else args,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **payload,
    }
    path = RESULTS_DIR / f"{name}-{slug}.json"
    path.write_text(json.dumps(_jsonable(doc), indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {path.relative_to(BENCH_DIR.parent)}", flush=True)
    return path
