"""Evaluation throughput: samples per second at batch sizes 1, 4 and 16.

What it measures
----------------
A SocioSeg-shaped test split is generated (``write_synthetic_socioseg``, 768² tiles) and
opened with ``SocioSegDataset``. Then, at batch sizes 1, 4 and 16 (``--batch-sizes``):

1. the stage-1 VLM step alone (Qwen's processor + ``generate``) on every sample, through
   ``TransformersVLM.batch_generate`` (left-padded batches), as samples/s, with how many
   answers equal the batch-1 answers (greedy decoding; padding may change low bits);
2. ``evaluate()`` end to end (two-stage: VLM, SAM2, metrics, mask PNGs) as samples/s.
   When the pipeline has a batched path (``evaluate(batch_size=...)`` running
   ``SocioReasoner.run_batch``, one VLM batch per stage) every batch size is run, with a
   fresh reasoner each time; otherwise ``evaluate()`` runs once, sequentially, and the
   table says so and adds what it would be with the widest stage-1 batch (an estimate).

Answers are forced to ``--tokens`` new tokens (``min_new_tokens = max_new_tokens``) so
every batch size does the same work; ``--free-length`` lets answers stop at their end
token (with real weights a batch then waits for its longest answer).

Models: the tiny random Qwen2.5-VL and tiny SAM2 of ``socio_reasoner.models.random_init``
by default (a random answer has no boxes, so stage 2 and SAM decoding rarely run), or real
weights with ``--vlm PATH`` (and ``--sam2 PATH_OR_ID``).

Run
---
    .venv/bin/python bench/eval_throughput.py                      # tiny models, 16 samples
    .venv/bin/python bench/eval_throughput.py --samples 32 --batch-sizes 1 4 16 32
    .venv/bin/python bench/eval_throughput.py --vlm vvangfaye/SocioReasoner-3B \\
        --sam2 facebook/sam2-hiera-large --device cuda --free-length --tokens 1024

Results: ``bench/results/eval_throughput-<tag>-<machine>.json`` (``--tag``; ``tiny`` by
default).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
import time
from pathlib import Path

from common import Timing, cuda_sync, describe, fmt_s, machine_info, print_table, write_result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=16, help="test samples to generate")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--tokens", type=int, default=32, help="new tokens per answer")
    p.add_argument("--free-length", action="store_true",
                   help="let answers end at their end token (max = --tokens)")
    p.add_argument("--vlm", default=None, help="VLM folder or hub id (default: tiny random)")
    p.add_argument("--sam2", default=None, help="SAM2 folder, .pt or hub id (default: tiny random)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, ...")
    p.add_argument("--size", type=int, default=768, help="tile side of the generated set")
    p.add_argument("--repeats", type=int, default=1, help="timed passes per batch size")
    p.add_argument("--no-evaluate", action="store_true", help="skip the evaluate() run")
    p.add_argument("--tag", default=None,
                   help="results name tag (default: 'tiny', or 'custom' with --vlm)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from socio_reasoner.data.socioseg import SocioSegDataset
    from socio_reasoner.data.synthetic import write_synthetic_socioseg
    from socio_reasoner.evaluate import RECORDS, evaluate, read_records
    from socio_reasoner.frames import ModelFrame
    from socio_reasoner.models.base import GenerationConfig
    from socio_reasoner.models.random_init import save_tiny_qwen2_5_vl, save_tiny_sam2
    from socio_reasoner.models.segmenter import Sam2Backend
    from socio_reasoner.models.vlm import TransformersVLM, pick_device
    from socio_reasoner.pipeline import SocioReasoner
    from socio_reasoner.prompts import stage1_prompt
    from socio_reasoner.render import resize_rgb

    device = pick_device(args.device)
    print(describe(machine_info(device)), flush=True)
    gen = GenerationConfig(max_new_tokens=args.tokens,
                           min_new_tokens=0 if args.free_length else args.tokens)
    with tempfile.TemporaryDirectory(prefix="socio-eval-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        write_synthetic_socioseg(tmp / "data", {"test": args.samples}, size=args.size)
        dataset = SocioSegDataset.open(tmp / "data", "test")
        print(f"generated {len(dataset)} samples at {args.size}² in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        vlm_src = args.vlm or save_tiny_qwen2_5_vl(tmp / "vlm")
        sam_src = args.sam2 or save_tiny_sam2(tmp / "sam2")
        vlm = TransformersVLM(vlm_src, device=device, dtype=args.dtype)
        seg = Sam2Backend(sam_src, device=device)
        vlm_name = args.vlm or "tiny random Qwen2.5-VL"
        sam_name = args.sam2 or "tiny random SAM2"
        n_params = sum(p.numel() for p in vlm.model.parameters())

        # ---- stage-1 requests, prepared as the pipeline prepares them
        t0 = time.perf_counter()
        samples = [s for s in dataset if hasattr(s, "mask")]
        requests = []
        for s in samples:
            fw, fh = ModelFrame.for_tile(s.sat.shape[1], s.sat.shape[0]).frame_wh
            requests.append(([resize_rgb(s.map, fw, fh), resize_rgb(s.sat, fw, fh)],
                             stage1_prompt(s.query)))
        load_s = time.perf_counter() - t0
        n = len(requests)

        # ---- 1. stage-1 VLM, batched
        vlm.batch_generate(requests[:1], gen)                   # warm-up
        by_bs, reference = {}, None
        for bs in args.batch_sizes:
            timing, pre, gen_s, texts, tokens = Timing(), 0.0, 0.0, [], 0
            for _ in range(max(args.repeats, 1)):
                pre, gen_s, texts, tokens = 0.0, 0.0, [], 0
                cuda_sync(device)
                t0 = time.perf_counter()
                for i in range(0, n, bs):
                    replies = vlm.batch_generate(requests[i:i + bs], gen)
                    pre += replies[0].seconds["preprocess"]
                    gen_s += replies[0].seconds["generate"]
                    texts += [r.text for r in replies]
                    tokens += sum(r.new_tokens for r in replies)
                cuda_sync(device)
                timing.seconds.append(time.perf_counter() - t0)
            if reference is None:
                reference = texts
            same = sum(a == b for a, b in zip(texts, reference, strict=True))
            by_bs[bs] = {"time": timing, "samples_per_s": n / timing.median,
                         "preprocess_s": pre, "generate_s": gen_s, "new_tokens": tokens,
                         "same_as_batch1": same}
            print(f"  batch {bs:>3}: {n / timing.median:.2f} samples/s "
                  f"(processor {pre:.2f} s, generate {gen_s:.2f} s)", flush=True)

        # ---- 2. evaluate() end to end: batched where the pipeline can, else sequential
        batched = pipeline_batches(evaluate, SocioReasoner)
        evals = {}
        if not args.no_evaluate:
            for bs in (args.batch_sizes if batched else [1]):
                out = tmp / f"eval-{bs}"
                # A fresh reasoner per run: kept SAM embeddings must not carry over.
                reasoner = SocioReasoner(vlm, seg, generation=gen)
                kwargs = {"batch_size": bs} if batched else {}
                cuda_sync(device)
                t0 = time.perf_counter()
                summary = evaluate(dataset, out, reasoner=reasoner, mode="two-stage",
                                   show_progress=False, **kwargs)
                cuda_sync(device)
                total = time.perf_counter() - t0
                records = {r["id"]: r for r in read_records(out / RECORDS)}
                evals[bs] = {"total_s": total, "samples_per_s": n / total,
                             "mean_seconds": summary["mean_seconds"],
                             "samples_with_boxes": sum(bool(r.get("n_objects"))
                                                       for r in records.values()),
                             "ious": {k: r.get("iou") for k, r in records.items()},
                             "counts": summary["counts"],
                             "cIoU": summary["overall"].get("cIoU")}
                print(f"  evaluate(batch {bs}): {n / total:.2f} samples/s", flush=True)
            first = evals[min(evals)]
            for r in evals.values():
                r["same_iou_as_first"] = sum(r["ious"][k] == v for k, v in first["ious"].items())
            if not batched:   # what batching the stage-1 VLM alone would give (estimate)
                stage1 = first["mean_seconds"].get("stage1_vlm", 0.0) * n
                widest = by_bs[max(args.batch_sizes)]["time"].median
                first["estimate_batched_stage1_samples_per_s"] = n / (
                    first["total_s"] - stage1 + widest)

    base = by_bs[args.batch_sizes[0]]["samples_per_s"]
    rows = [[f"stage-1 VLM only, batch {bs}", f"{r['samples_per_s']:.2f}",
             f"{r['samples_per_s'] / base:.2f}×", fmt_s(r["time"].median),
             f"processor {fmt_s(r['preprocess_s'])}, generate {fmt_s(r['generate_s'])}; "
             f"{r['same_as_batch1']}/{n} answers = batch {args.batch_sizes[0]}"]
            for bs, r in by_bs.items()]
    if evals:
        ev_base = evals[min(evals)]["samples_per_s"]
        for bs, r in evals.items():
            ms = r["mean_seconds"]
            rows.append([f"evaluate(), two-stage, batch {bs}" if batched else
                         "evaluate(), two-stage, sequential", f"{r['samples_per_s']:.2f}",
                         f"{r['samples_per_s'] / ev_base:.2f}×", fmt_s(r["total_s"]),
                         f"per sample: stage-1 VLM {fmt_s(ms.get('stage1_vlm'))}, SAM encode "
                         f"{fmt_s(ms.get('sam_encode'))}; {r['samples_with_boxes']}/{n} "
                         f"answers had boxes; {r['same_iou_as_first']}/{n} IoUs = batch "
                         f"{min(evals)}"])
        est = evals[min(evals)].get("estimate_batched_stage1_samples_per_s")
        if est:
            rows.append([f"evaluate() if stage 1 ran batched ×{max(args.batch_sizes)} "
                         "(estimate)", f"{est:.2f}", "-", "-",
                         "not a pipeline path: evaluate() has no batching"])
    length = "up to" if args.free_length else "forced to"
    how = ("evaluate(batch_size=...) runs SocioReasoner.run_batch (one VLM batch per stage)"
           if batched else "the pipeline has no batched path: batching is measured on the "
           "stage-1 VLM step alone")
    title = (f"\nEvaluation throughput: {n} samples ({args.size}² tiles), {vlm_name} "
             f"({n_params / 1e6:.1f} M params, {vlm.dtype}) + {sam_name} on {device}; answers "
             f"{length} {args.tokens} tokens; {how}.")
    print_table(rows, ["what", "samples/s", "speed-up", "wall", "note"], title=title)
    write_result(results_name(args), {
        "samples": n, "vlm": vlm_name, "sam2": sam_name, "vlm_params": n_params,
        "dtype": str(vlm.dtype), "device": device, "load_and_resize_s": load_s,
        "stage1_batched": by_bs, "evaluate": evals, "pipeline_has_batched_path": batched,
        "table_title": title.strip(), "table": rows}, device, args)
    return 0


def results_name(args) -> str:
    tag = args.tag or ("custom" if args.vlm else "tiny")
    return f"eval_throughput-{tag}"


def pipeline_batches(evaluate, reasoner_cls) -> bool:
    """True when ``evaluate`` takes ``batch_size`` and the reasoner has ``run_batch``."""
    return "batch_size" in inspect.signature(evaluate).parameters and hasattr(
        reasoner_cls, "run_batch")


if __name__ == "__main__":
    sys.exit(main())
