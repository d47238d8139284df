"""Per-view latency of SocioReasoner at the real model sizes, with random weights.

What it measures
----------------
A random Qwen2.5-VL-3B (built from ``qwen2_5_vl_3b_config()``, whose every architecture
value is first checked against the published config.json and transformers' defaults and
printed) is saved to a folder and loaded through ``TransformersVLM``, the path users'
weights take. SAM2 hiera-large (the sam2 package's ``configs/sam2/sam2_hiera_l.yaml``,
random weights) is saved and loaded through ``Sam2Backend``; ``--sam vit_h`` adds SAM ViT-H
through ``SamBackend``. Every answer is forced to ``--tokens`` new tokens
(``min_new_tokens = max_new_tokens``), since a random model's answers have no natural
length. The view is broken down into:

* preprocessing: tile → model frame resize (both images) and Qwen's processor per stage;
* prefill: time to the first new token (the first forward pass inside ``generate``,
  vision tower included and also shown alone), i.e. the time of a 1-token answer;
* decode: seconds per further token and tokens/s;
* SAM encode (``set_image``) and SAM decode per prompt (a box; a box + 3 points);
* render (stage-1 feedback drawn on both images) and vectorize (tile mask → polygons).

"full view (composed)" adds the measured parts the way ``SocioReasoner.run`` does them
in two-stage mode: preprocess + stage 1 (prefill + N tokens) + SAM encode + prompts × SAM
decode + render + stage 2 (prefill + N tokens) + prompts × SAM decode + vectorize. A real
two-stage run cannot be timed with random weights, whose answer holds no boxes, so
"end-to-end, VLM-bound" is one ``SocioReasoner.run`` with the random 3B and the real
segmenter: stage 1 and the SAM encode run, the random answer yields no prompts, and
stage 2 is skipped.

Run
---
    .venv/bin/python bench/latency.py                     # 3B + SAM2-L, cuda if present
    .venv/bin/python bench/latency.py --device cuda --sam sam2 vit_h
    .venv/bin/python bench/latency.py --small --tokens 32 --repeats 2     # quick CPU check
    .venv/bin/python bench/latency.py --device cpu --dtype bf16 --tokens 8 --repeats 1 \\
        --warmup 0 --stage2 reuse   # the 3B on a CPU: ~6 min on 2 cores, 9.5 GiB (fp32: 20)

``--small`` swaps the 3B for a mid-size Qwen2.5-VL (same vocabulary, head sizes and
layout; 8 text layers of width 1024, an 8-block vision tower of width 640). Models are
built in a child process (in bf16, as the released weights are stored) so the measured
process's peak RSS is that of loading and running them; ``--models-dir`` keeps the built
models for the next run. Results:
``bench/results/latency-{3b,small}-{fp32,bf16}-<machine>.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
from common import (
    Timing,
    cuda_sync,
    describe,
    fmt_s,
    machine_info,
    peak_rss_mb,
    print_table,
    rss_mb,
    timeit,
    write_result,
)

SAM2_L_CONFIG = "configs/sam2/sam2_hiera_l.yaml"
QUERY = "where children study"

# Qwen/Qwen2.5-VL-3B-Instruct config.json on the hub (rope_scaling {"type": "mrope",
# "mrope_section": [16, 24, 24]}). Checked field by field below, never used to build.
PUBLISHED_3B = {
    "text.vocab_size": 151936, "text.hidden_size": 2048, "text.intermediate_size": 11008,
    "text.num_hidden_layers": 36, "text.num_attention_heads": 16,
    "text.num_key_value_heads": 2, "text.hidden_act": "silu",
    "text.max_position_embeddings": 128000, "text.rms_norm_eps": 1e-6,
    "text.rope_theta": 1000000.0, "text.mrope_section": [16, 24, 24],
    "text.use_sliding_window": False, "text.sliding_window": 32768,
    "text.max_window_layers": 70, "text.attention_dropout": 0.0,
    "tie_word_embeddings": True,
    "vision.depth": 32, "vision.hidden_size": 1280, "vision.intermediate_size": 3420,
    "vision.num_heads": 16, "vision.hidden_act": "silu", "vision.in_channels": 3,
    "vision.patch_size": 14, "vision.spatial_merge_size": 2, "vision.temporal_patch_size": 2,
    "vision.window_size": 112, "vision.out_hidden_size": 2048,
    "vision.fullatt_block_indexes": [7, 15, 23, 31], "vision.tokens_per_second": 2,
    "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}
PUBLISHED_3B_PARAMS = 3.75e9   # "3.75B params" on the model card (safetensors total)


# ----------------------------------------------------------------------------- configs
def _field(config, key: str):
    """``text.x`` / ``vision.x`` / top-level ``x`` of a Qwen2_5_VLConfig; rope values are
    read from ``rope_parameters`` (transformers 5) or ``rope_scaling`` / ``rope_theta``."""
    part, _, name = key.rpartition(".")
    obj = {"text": config.get_text_config(), "vision": config.vision_config, "": config}[part]
    if name in ("rope_theta", "mrope_section"):
        rope = getattr(obj, "rope_parameters", None) or getattr(obj, "rope_scaling", None) or {}
        if name in rope:
            return rope[name]
        return getattr(obj, name, None)
    value = getattr(obj, name, None)
    return list(value) if isinstance(value, tuple) else value


def check_3b_config() -> tuple[list[list], dict]:
    """Rows (field, ours, published, transformers default, verdict) and a summary."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
    )

    from socio_reasoner.models.random_init import qwen2_5_vl_3b_config

    ours, default = qwen2_5_vl_3b_config(), Qwen2_5_VLConfig()
    rows, mismatches = [], []
    text = ours.get_text_config()
    for key, published in PUBLISHED_3B.items():
        mine, dflt = _field(ours, key), _field(default, key)
        verdict = "ok" if mine == published else "MISMATCH"
        if key == "text.sliding_window" and mine is None and not text.use_sliding_window:
            verdict = "ok (inactive: transformers stores None without use_sliding_window)"
        if verdict == "MISMATCH":
            mismatches.append(key)
        rows.append([key, mine, published, dflt, verdict])
    # Derived values the published file implies rather than states.
    layer_types = set(getattr(text, "layer_types", None) or [])
    derived = [
        ("text.layer_types", f"{len(text.layer_types or [])} × {'/'.join(sorted(layer_types))}",
         "36 × full_attention", layer_types == {"full_attention"}
         and len(text.layer_types) == 36),
        ("text.head_dim", text.hidden_size // text.num_attention_heads, 128,
         text.hidden_size // text.num_attention_heads == 128
         and 2 * sum(_field(ours, "text.mrope_section")) == 128),
        ("vision.head_dim", ours.vision_config.hidden_size // ours.vision_config.num_heads, 80,
         ours.vision_config.hidden_size // ours.vision_config.num_heads == 80),
    ]
    for key, mine, expected, ok in derived:
        if not ok:
            mismatches.append(key)
        rows.append([key, mine, expected, "(derived)", "ok" if ok else "MISMATCH"])
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(ours)
    n_params = sum(p.numel() for p in model.parameters())   # tied embedding counted once
    n_vision = sum(p.numel() for p in model.model.visual.parameters())
    summary = {"mismatches": mismatches, "params": n_params, "vision_params": n_vision,
               "params_vs_model_card": n_params / PUBLISHED_3B_PARAMS}
    return rows, summary


def mid_config():
    """A mid-size Qwen2.5-VL for quick CPU runs: the 3B's vocabulary, head sizes (text 128,
    vision 80), mrope split and layout, at 8 text layers of width 1024 and an 8-block
    vision tower of width 640 (~0.36B parameters, a third of them the embedding)."""
    from transformers import Qwen2_5_VLConfig

    from socio_reasoner.models.random_init import qwen2_5_vl_3b_config

    base = qwen2_5_vl_3b_config()
    text = base.get_text_config().to_dict()
    text.pop("layer_types", None)                 # re-derived for the new depth
    text.update(hidden_size=1024, intermediate_size=5504, num_hidden_layers=8,
                num_attention_heads=8, num_key_value_heads=2, max_window_layers=8)
    vision = base.vision_config.to_dict()
    vision.update(depth=8, hidden_size=640, intermediate_size=1710, num_heads=8,
                  out_hidden_size=1024, fullatt_block_indexes=[3, 7])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                            image_token_id=base.image_token_id,
                            video_token_id=base.video_token_id,
                            vision_start_token_id=base.vision_start_token_id,
                            vision_end_token_id=base.vision_end_token_id,
                            tie_word_embeddings=True)


# ----------------------------------------------------------------------------- building
def build_models(out: str, small: bool, sams: list[str], init_device: str, seed: int) -> None:
    """Write the random VLM (bf16, as the released weights) and SAM checkpoints (fp32, as
    released) under ``out``; runs in a child process so its memory is returned."""
    import torch

    from socio_reasoner.models.random_init import qwen2_5_vl_3b_config, save_random_qwen2_5_vl
    from socio_reasoner.models.segmenter import build_sam2_model, build_sam_model

    root = Path(out)
    if not (root / "vlm" / "config.json").is_file():
        t0 = time.perf_counter()
        torch.set_default_dtype(torch.bfloat16)       # build in bf16: half the memory
        config = mid_config() if small else qwen2_5_vl_3b_config()
        save_random_qwen2_5_vl(root / "vlm", config=config, seed=seed, dtype=torch.bfloat16,
                               device=init_device)
        torch.set_default_dtype(torch.float32)
        print(f"  built and saved the random VLM in {time.perf_counter() - t0:.0f} s", flush=True)
    for sam in sams:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        if sam == "sam2" and not (root / "sam2_l" / "model.pt").is_file():
            (root / "sam2_l").mkdir(parents=True, exist_ok=True)
            text = resources.files("sam2").joinpath(SAM2_L_CONFIG).read_text(encoding="utf-8")
            (root / "sam2_l" / "config.yaml").write_text(text, encoding="utf-8")
            model = build_sam2_model(root / "sam2_l" / "config.yaml")
            torch.save({"model": model.state_dict()}, root / "sam2_l" / "model.pt")
        elif sam == "vit_h" and not (root / "sam_vit_h.pth").is_file():
            torch.save(build_sam_model("vit_h").state_dict(), root / "sam_vit_h.pth")
        else:
            continue
        print(f"  built and saved random {sam} in {time.perf_counter() - t0:.0f} s", flush=True)


def load_segmenter(root: Path, sam: str, device: str, dtype: str):
    from socio_reasoner.models.segmenter import Sam2Backend, SamBackend

    if sam == "sam2":
        return Sam2Backend(root / "sam2_l", device=device, dtype=dtype)
    return SamBackend(root / "sam_vit_h.pth", variant="vit_h", device=device, dtype=dtype)


# ----------------------------------------------------------------------------- VLM timing
class StepClock:
    """Forward hooks on the loaded VLM: a timestamp at the end of each forward pass (one per
    new token; the first is the prefill) and the vision tower's time."""

    def __init__(self, vlm):
        self.device = vlm.device
        self.steps: list[float] = []
        self.vision: list[float] = []
        self._v0 = 0.0
        model = vlm.model
        visual = getattr(getattr(model, "model", model), "visual", None)
        self._handles = [model.register_forward_hook(self._step)]
        if visual is not None:
            self._handles += [visual.register_forward_pre_hook(self._vision_start),
                              visual.register_forward_hook(self._vision_end)]

    def _now(self) -> float:
        cuda_sync(self.device)
        return time.perf_counter()

    def _step(self, *_):
        self.steps.append(self._now())

    def _vision_start(self, *_):
        self._v0 = self._now()

    def _vision_end(self, *_):
        self.vision.append(self._now() - self._v0)

    def reset(self):
        self.steps.clear()
        self.vision.clear()

    def close(self):
        for h in self._handles:
            h.remove()


def time_stage(vlm, clock: StepClock | None, images, text: str, tokens: int) -> dict:
    """One forced-length answer, split into preprocess, prefill, vision and decode.

    Without a clock (``--compile``: per-step hooks would break the compiled decode graph)
    the prefill is a separate 1-token answer and decode is the difference per token; the
    vision tower is not timed."""
    from socio_reasoner.models.base import GenerationConfig

    config = GenerationConfig(max_new_tokens=tokens, min_new_tokens=tokens)
    if clock is None:
        one = vlm.generate(images, text, GenerationConfig(max_new_tokens=1, min_new_tokens=1))
        reply = vlm.generate(images, text, config)
        pre, gen = reply.seconds["preprocess"], reply.seconds["generate"]
        prefill = one.seconds["generate"]
        decode = (gen - prefill) / (tokens - 1) if tokens > 1 else float("nan")
        return {"preprocess": pre, "generate": gen, "prefill": prefill, "vision": float("nan"),
                "decode_per_token": decode, "new_tokens": reply.new_tokens,
                "forward_passes": reply.new_tokens, "prompt_tokens": reply.prompt_tokens,
                "text_head": reply.text[:60]}
    clock.reset()
    cuda_sync(vlm.device)
    t0 = time.perf_counter()
    reply = vlm.generate(images, text, config)
    pre, gen = reply.seconds["preprocess"], reply.seconds["generate"]
    steps = list(clock.steps)
    prefill = steps[0] - (t0 + pre)
    decode = (steps[-1] - steps[0]) / (len(steps) - 1) if len(steps) > 1 else float("nan")
    return {"preprocess": pre, "generate": gen, "prefill": prefill,
            "vision": sum(clock.vision), "decode_per_token": decode,
            "new_tokens": reply.new_tokens, "forward_passes": len(steps),
            "prompt_tokens": reply.prompt_tokens, "text_head": reply.text[:60]}


def repeat_stage(vlm, clock, images, text, tokens, repeats, warmup) -> dict:
    runs = []
    for i in range(warmup + max(repeats, 1)):
        r = time_stage(vlm, clock, images, text, tokens)
        print(f"    {'warm-up' if i < warmup else 'run'}: generate {fmt_s(r['generate'])} "
              f"(prefill {fmt_s(r['prefill'])}, {r['new_tokens']} tokens)", flush=True)
        if i >= warmup:
            runs.append(r)
    out = {k: Timing([r[k] for r in runs]) for k in
           ("preprocess", "generate", "prefill", "vision", "decode_per_token")}
    out.update({k: runs[-1][k] for k in ("new_tokens", "forward_passes", "prompt_tokens",
                                         "text_head")})
    return out


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"],
                   help="VLM dtype; auto = bf16 on cuda and on CPUs with native bf16, else fp32")
    p.add_argument("--sam-dtype", default="auto", choices=["auto", "fp32", "bf16"],
                   help="SAM image-encoder precision (autocast); auto as for the VLM")
    p.add_argument("--tokens", type=int, default=256, help="forced new tokens per stage")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--small", action="store_true", help="mid-size VLM instead of the 3B")
    p.add_argument("--sam", nargs="+", default=["sam2"], choices=["sam2", "vit_h"],
                   help="segmenters to time; the first one is used for the full view")
    p.add_argument("--prompts", type=int, default=3, help="objects per stage in the full view")
    p.add_argument("--no-e2e", action="store_true", help="skip the SocioReasoner.run timing")
    p.add_argument("--stage2", choices=["measure", "reuse"], default="measure",
                   help="reuse: compose stage 2 from stage 1's VLM timings (saves one prefill "
                        "per repeat on slow machines; its prompt is ~160 tokens longer)")
    p.add_argument("--models-dir", default=None,
                   help="keep the random models here and reuse them (default: a temp dir)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true",
                   help="TransformersVLM(compile_decode=True): static KV cache + compiled decode "
                        "(the warm-up call pays the compilation)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from socio_reasoner.data.synthetic import make_synthetic_sample
    from socio_reasoner.frames import ModelFrame
    from socio_reasoner.geo.vectorize import mask_to_polygons
    from socio_reasoner.models.base import GenerationConfig
    from socio_reasoner.models.vlm import TransformersVLM, pick_device
    from socio_reasoner.parsing import ObjectPrompt, answer_json
    from socio_reasoner.pipeline import SocioReasoner
    from socio_reasoner.prompts import stage1_prompt, stage2_prompt
    from socio_reasoner.render import draw_feedback, resize_mask, resize_rgb

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = {"auto": "auto", "fp32": "float32", "bf16": "bfloat16"}[args.dtype]
    info = machine_info(device)
    print(describe(info), flush=True)

    # ---- 1. the 3B architecture, checked before anything is built
    rows, summary = check_3b_config()
    print_table(rows, ["field", "qwen2_5_vl_3b_config()", "published 3B", "transformers default",
                       "check"], title="Qwen2.5-VL-3B architecture (ours vs config.json on the hub)")
    print(f"parameters: {summary['params'] / 1e9:.3f} B ({summary['vision_params'] / 1e6:.0f} M "
          f"vision); model card says ~{PUBLISHED_3B_PARAMS / 1e9:.2f} B; mismatches: "
          f"{summary['mismatches'] or 'none'}")
    print("(save_random_qwen2_5_vl then renumbers the special-token ids to its small "
          "in-process tokenizer; the architecture is unchanged)", flush=True)
    if summary["mismatches"]:
        print("WARNING: qwen2_5_vl_3b_config() differs from the published config", flush=True)

    # ---- 2. build (child process) and load through the users' loaders
    keep = args.models_dir is not None
    root = Path(args.models_dir) if keep else Path(tempfile.mkdtemp(prefix="socio-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    label = "mid-size (--small)" if args.small else "Qwen2.5-VL-3B"
    print(f"\nbuilding random models in {root} ({label}, {', '.join(args.sam)})", flush=True)
    reused = (root / "vlm" / "config.json").is_file() and all(
        (root / ("sam2_l/model.pt" if sam == "sam2" else "sam_vit_h.pth")).is_file()
        for sam in args.sam)
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    child = ctx.Process(target=build_models, args=(str(root), args.small, args.sam,
                                                   "cuda" if device.startswith("cuda") else "cpu",
                                                   args.seed))
    child.start()
    child.join()
    if child.exitcode != 0:
        print(f"building the models failed (exit code {child.exitcode})", file=sys.stderr)
        return 1
    build_s = time.perf_counter() - t0
    build_peak = peak_rss_mb(children=True)
    payload: dict = {"config_check": {"rows": rows, **summary}, "vlm": label,
                     "tokens": args.tokens, "build_s": build_s, "build_peak_rss_mb": build_peak,
                     "models_reused": reused, "compile_decode": args.compile}
    try:
        mem: dict = {"start_rss_mb": rss_mb()}
        t0 = time.perf_counter()
        vlm = TransformersVLM(root / "vlm", device=device, dtype=dtype, attn_implementation="sdpa",
                              compile_decode=args.compile)
        cuda_sync(device)
        load = Timing([time.perf_counter() - t0])
        n_params = sum(p.numel() for p in vlm.model.parameters())
        mem["after_vlm_rss_mb"] = rss_mb()
        print(f"loaded {label}: {n_params / 1e9:.3f} B params, {vlm.dtype}, {device}, "
              f"in {fmt_s(load.median)}; RSS {mem['after_vlm_rss_mb']:.0f} MiB", flush=True)
        segs, seg_load = {}, {}
        for sam in args.sam:
            t0 = time.perf_counter()
            segs[sam] = load_segmenter(root, sam, device, args.sam_dtype)
            seg_load[sam] = time.perf_counter() - t0
        mem["after_sam_rss_mb"] = rss_mb()

        # ---- 3. one SocioSeg-shaped view (768² tiles) and stage inputs
        sample = make_synthetic_sample("test", 0, size=768)
        h, w = sample.sat.shape[:2]
        frame = ModelFrame.for_tile(w, h)
        fw, fh = frame.frame_wh
        resize_t, (map_f, sat_f) = timeit(
            lambda: (resize_rgb(sample.map, fw, fh), resize_rgb(sample.sat, fw, fh)),
            repeats=max(args.repeats, 3), warmup=1)
        union_f = resize_mask(sample.mask, fw, fh)
        boxes = [(fw * (0.08 + 0.3 * k), fh * (0.1 + 0.25 * k), fw * (0.3 + 0.3 * k),
                  fh * (0.35 + 0.25 * k)) for k in range(args.prompts)]
        objs = [ObjectPrompt(tuple(round(v) for v in b),
                             [((b[0] + b[2]) / 2 + d, (b[1] + b[3]) / 2 + d) for d in (-20, 0, 20)])
                for b in boxes]
        text1 = stage1_prompt(QUERY)
        map_fb, sat_fb = draw_feedback(map_f, union_f, boxes), draw_feedback(sat_f, union_f, boxes)
        text2 = stage2_prompt(QUERY, answer_json(objs, with_points=False))

        # ---- 4. VLM stages
        clock = None if vlm.compile_decode else StepClock(vlm)
        print(f"\nstage 1 ({args.tokens} forced tokens)", flush=True)
        s1 = repeat_stage(vlm, clock, [map_f, sat_f], text1, args.tokens, args.repeats, args.warmup)
        if args.stage2 == "measure":
            print(f"stage 2 ({args.tokens} forced tokens)", flush=True)
            s2 = repeat_stage(vlm, clock, [map_fb, sat_fb], text2, args.tokens, args.repeats,
                              args.warmup)
        else:
            s2 = dict(s1, reused_from_stage1=True)
        if clock is not None:
            clock.close()
        for s in (s1, s2):
            if s["new_tokens"] != args.tokens:
                print(f"WARNING: asked for {args.tokens} tokens, got {s['new_tokens']}")

        # ---- 5. SAM, render, vectorize
        sam_t = {}
        for sam, seg in segs.items():
            enc, _ = timeit(lambda seg=seg: seg.set_image(sat_f), args.repeats, args.warmup, device)
            box, _ = timeit(lambda seg=seg: seg.predict(box_xyxy=np.array(objs[0].box_xyxy)),
                            max(args.repeats, 5), 1, device)
            pts, _ = timeit(lambda seg=seg: seg.predict(box_xyxy=np.array(objs[0].box_xyxy),
                                                        points_xy=np.array(objs[0].points_xy)),
                            max(args.repeats, 5), 1, device)
            sam_t[sam] = {"load_s": seg_load[sam], "encode": enc, "decode_box": box,
                          "decode_box_points": pts}
        render, _ = timeit(lambda: (draw_feedback(map_f, union_f, boxes),
                                    draw_feedback(sat_f, union_f, boxes)),
                           max(args.repeats, 5), 1)
        obj_masks_f = [union_f] * args.prompts
        to_tile, _ = timeit(lambda: [resize_mask(m, w, h) for m in obj_masks_f],
                            max(args.repeats, 5), 1)
        from affine import Affine

        transform = Affine(0.5, 0, 385_000.0, 0, -0.5, 6_672_000.0)   # 0.5 m pixels
        vector, polys = timeit(lambda: mask_to_polygons(sample.mask, transform),
                               max(args.repeats, 5), 1)

        # ---- 6. full view, composed from the measured parts
        main_sam = args.sam[0]
        st = sam_t[main_sam]
        n = args.prompts
        parts = [
            ("preprocess: resize tile → frame (2 images)", resize_t.median),
            ("preprocess: processor, stage 1", s1["preprocess"].median),
            ("stage 1 VLM: prefill (1st token)", s1["prefill"].median),
            (f"stage 1 VLM: decode {args.tokens - 1} more tokens",
             s1["generate"].median - s1["prefill"].median),
            (f"SAM encode ({main_sam})", st["encode"].median),
            (f"stage 1 SAM decode: {n} × box", n * st["decode_box"].median),
            ("render feedback (2 images)", render.median),
            ("preprocess: processor, stage 2", s2["preprocess"].median),
            ("stage 2 VLM: prefill (1st token)", s2["prefill"].median),
            (f"stage 2 VLM: decode {args.tokens - 1} more tokens",
             s2["generate"].median - s2["prefill"].median),
            (f"stage 2 SAM decode: {n} × (box + 3 points)", n * st["decode_box_points"].median),
            ("masks → tile size", to_tile.median),
            ("vectorize (mask → polygons)", vector.median),
        ]
        composed = sum(v for _, v in parts)
        vlm_share = sum(v for k, v in parts if "VLM" in k) / composed
        per_tok = (s1["decode_per_token"].median + s2["decode_per_token"].median) / 2
        extrapolated = None
        if args.tokens != 256:
            extrapolated = composed + 2 * (256 - args.tokens) * per_tok

        # ---- 7. one real SocioReasoner.run (random 3B: no boxes come back)
        e2e = None
        if not args.no_e2e:
            gen = GenerationConfig(max_new_tokens=args.tokens, min_new_tokens=args.tokens)
            seg = segs[main_sam]
            print("\nend-to-end SocioReasoner.run", flush=True)
            e2e_t, result = timeit(lambda: SocioReasoner(vlm, seg, generation=gen).run(
                sample.map, sample.sat, QUERY, mode="two-stage"), repeats=1, warmup=0,
                device=device)
            e2e = {"time": e2e_t, "stages": len(result.stages),
                   "answer_chars": len(result.stages[0].raw_text),
                   "prompts": len(result.final.prompts),
                   "problems": result.final.parsed.problems[:3], "seconds": result.seconds}
        mem["peak_rss_mb"] = peak_rss_mb()
        if device.startswith("cuda"):
            mem["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)

    # ---- 8. report
    rows = [
        ["load VLM (TransformersVLM)", fmt_s(load.median), "-", f"{n_params / 1e9:.2f} B params, "
         f"{str(vlm.dtype).replace('torch.', '')}, from bf16 safetensors"],
        *[[f"load {k} ({type(segs[k]).__name__})", fmt_s(v["load_s"]), "-", ""]
          for k, v in sam_t.items()],
        ["resize tile → frame (2 images)", fmt_s(resize_t.median), fmt_s(resize_t.min),
         f"{w}×{h} → {fw}×{fh}"],
    ]
    for name, s in (("stage 1", s1), ("stage 2", s2)):
        if s.get("reused_from_stage1"):
            rows.append([f"{name}: not measured (--stage2 reuse)", "-", "-",
                         "composed with stage 1's figures"])
            continue
        rows += [
            [f"{name}: processor", fmt_s(s["preprocess"].median), fmt_s(s["preprocess"].min),
             f"{s['prompt_tokens']} prompt tokens"],
            [f"{name}: prefill (time to 1st token)", fmt_s(s["prefill"].median),
             fmt_s(s["prefill"].min), f"vision tower {fmt_s(s['vision'].median)} of it"],
            [f"{name}: decode per token", fmt_s(s["decode_per_token"].median),
             fmt_s(s["decode_per_token"].min),
             f"{1 / s['decode_per_token'].median:.1f} tokens/s" if args.tokens > 1 else ""],
            [f"{name}: generate {args.tokens} tokens", fmt_s(s["generate"].median),
             fmt_s(s["generate"].min), f"{s['new_tokens']} new tokens"],
        ]
    for k, v in sam_t.items():
        rows += [[f"{k}: encode (set_image)", fmt_s(v["encode"].median), fmt_s(v["encode"].min),
                  f"{fw}×{fh} image, encoder {str(segs[k].dtype).replace('torch.', '')}"],
                 [f"{k}: decode, box", fmt_s(v["decode_box"].median),
                  fmt_s(v["decode_box"].min), "per prompt"],
                 [f"{k}: decode, box + 3 points", fmt_s(v["decode_box_points"].median),
                  fmt_s(v["decode_box_points"].min), "per prompt"]]
    rows += [["render feedback (2 images)", fmt_s(render.median), fmt_s(render.min),
              f"{n} boxes + mask"],
             ["masks → tile size", fmt_s(to_tile.median), fmt_s(to_tile.min), f"{n} masks"],
             ["vectorize (mask → polygons)", fmt_s(vector.median), fmt_s(vector.min),
              f"{len(polys)} polygons, {w}×{h}"],
             [f"**full view, composed** ({args.tokens} tokens/stage)", fmt_s(composed), "-",
              f"VLM {100 * vlm_share:.0f} %"]]
    if extrapolated is not None:
        rows.append(["full view, extrapolated to 256 tokens/stage", fmt_s(extrapolated), "-",
                     "composed + 2 × (256 − N) × decode/token"])
    if e2e:
        rows.append([f"end-to-end, VLM-bound (SocioReasoner.run, {args.tokens} tokens)",
                     fmt_s(e2e["time"].median), "-",
                     f"{e2e['stages']} stage(s), {e2e['prompts']} prompts; random answer "
                     f"({e2e['answer_chars']} chars)"])
    rows += [["peak RSS (this process)", f"{mem['peak_rss_mb'] / 1024:.1f} GiB", "-",
              "models reused from --models-dir" if reused else
              f"builder child peak {build_peak / 1024:.1f} GiB, build {fmt_s(build_s)}"]]
    if "cuda_max_allocated_mb" in mem:
        rows.append(["peak CUDA memory allocated", f"{mem['cuda_max_allocated_mb'] / 1024:.1f} GiB",
                     "-", ""])
    title = (f"Per-view latency: {label} ({vlm.dtype}) + {', '.join(args.sam)} on {device}; "
             f"answers forced to {args.tokens} tokens per stage"
             + (" (few tokens: CPU run; see the extrapolated row)" if args.tokens < 64 else "")
             + f"; median of {args.repeats} after {args.warmup} warm-up")
    print_table(rows, ["step", "median", "min", "note"], title="\n" + title)

    payload.update(
        device=device, dtype=str(vlm.dtype), vlm_params=n_params, load_vlm=load, memory=mem,
        resize=resize_t, stage1=s1, stage2=s2, sam=sam_t, render=render, masks_to_tile=to_tile,
        vectorize=vector, n_polygons=len(polys), prompts_per_stage=n,
        composed={"parts": dict(parts), "total_s": composed, "vlm_share": vlm_share,
                  "extrapolated_256_s": extrapolated},
        end_to_end=e2e, table_title=title, table=rows)
    tag = "bf16" if vlm.dtype == torch.bfloat16 else "fp32" if vlm.dtype == torch.float32 else \
        str(vlm.dtype).replace("torch.", "")
    write_result(f"latency-{'small' if args.small else '3b'}-{tag}"
                 + ("-compiled" if vlm.compile_decode else "")
                 + (f"-sam-{args.sam_dtype}" if args.sam_dtype != "auto" else ""),
                 payload, device, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
