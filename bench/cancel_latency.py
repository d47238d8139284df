"""How long Cancel takes to stop a run in the engine worker, and whether the worker (with
its loaded models) survives it.

What it measures
----------------
The real worker process (``WorkerClient``) loads a VLM (``--vlm`` folder; by default the
mid-size random model `latency.py --small` builds, or a tiny one with ``--tiny``) and the
box segmenter, then answers the sample view (``sample/helsinki_*.tif``) with answers forced
to ``--tokens``. Each trial sends ``run`` and asks to cancel ``--at`` seconds later (while
the prompt's forward pass runs, or while tokens are decoded); the time from the cancel
to the worker's "cancelled" reply is the latency. The client kills a worker that has not
stopped ``cancel_grace_s`` (10 s) after the cancel, so a latency near 10 s and a new
worker pid mean the run could not be stopped midway; the next trial then loads the
models again first (``reload_before_s``).

Run
---
    .venv/bin/python bench/cancel_latency.py --vlm /tmp/models/vlm --at 2 8
    .venv/bin/python bench/cancel_latency.py --tiny --at 0.5 1

Results: ``bench/results/cancel_latency-<machine>.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import describe, fmt_s, machine_info, print_table, write_result  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "sample"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--vlm", help="a VLM folder (e.g. the one latency.py --small builds)")
    src.add_argument("--tiny", action="store_true", help="build and use the tiny random VLM")
    p.add_argument("--at", type=float, nargs="+", default=[2.0, 8.0],
                   help="seconds after the request to cancel (one trial each)")
    p.add_argument("--tokens", type=int, default=256, help="forced answer length")
    p.add_argument("--dtype", default="auto")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from socio_reasoner.errors import CancelledError
    from socio_reasoner.worker.client import WorkerClient

    info = machine_info("cpu")
    print(describe(info), flush=True)
    work = Path(tempfile.mkdtemp(prefix="cancel-bench-"))
    vlm = args.vlm
    if args.tiny:
        from socio_reasoner.models.random_init import save_tiny_qwen2_5_vl

        vlm = str(save_tiny_qwen2_5_vl(work / "tiny", seed=0))
    spec = {"vlm": vlm, "segmenter": "box", "device": "cpu", "dtype": args.dtype,
            "generation": {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens}}
    view = {"sat": {"path": str(SAMPLE / "helsinki_sat.tif")},
            "map": {"path": str(SAMPLE / "helsinki_map.tif")}, "query": "school",
            "mode": "stage1"}
    rows, trials = [], []
    with WorkerClient(sys.executable, env={"HF_HUB_OFFLINE": "1"},
                      log_path=work / "worker.log") as client:
        t0 = time.perf_counter()
        client.request("load", spec, timeout_s=1800)
        print(f"loaded {vlm} in {fmt_s(time.perf_counter() - t0)}", flush=True)
        for at in args.at:
            # a killed worker comes back empty: it loads the models again (timed)
            t0 = time.perf_counter()
            reload_s = 0.0 if client.request("load", spec, timeout_s=1800)["reused"] \
                else time.perf_counter() - t0
            pid = client.request("hello")["pid"]
            messages = []
            flag, asked = threading.Event(), {}

            def cancel_now(flag=flag, asked=asked):
                asked["t"] = time.perf_counter()
                flag.set()
            timer = threading.Timer(at, cancel_now)
            start = time.perf_counter()
            timer.start()
            outcome = "finished"
            try:
                client.request("run", view, on_progress=lambda f, m, out=messages: out.append(m),
                               is_cancelled=flag.is_set, timeout_s=3600)
            except CancelledError:
                outcome = "cancelled"
            end = time.perf_counter()
            timer.cancel()
            latency = end - asked["t"] if "t" in asked else float("nan")
            survived = client.request("hello")["pid"] == pid
            where = next((m for m in reversed(messages) if "tokens)" in m), None) or \
                (messages[-1] if messages else "")
            trial = {"cancel_at_s": at, "outcome": outcome, "latency_s": latency,
                     "request_s": end - start, "worker_kept": survived, "last_progress": where,
                     "reload_before_s": reload_s}
            trials.append(trial)
            rows.append((f"{at:g} s", outcome, fmt_s(latency), "yes" if survived else "no (killed)",
                         where))
            print(trial, flush=True)
    print_table(rows, ["cancel at", "outcome", "cancel → reply", "worker kept", "last progress"],
                title=f"Cancel latency, {vlm}, {args.tokens} tokens forced")
    write_result("cancel_latency", {"vlm": vlm, "tokens": args.tokens, "trials": trials},
                 device="cpu", args=args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
