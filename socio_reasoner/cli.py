"""``socio-reasoner``: the engine from the command line, no QGIS needed.

    socio-reasoner segment --sat SAT.tif --map MAP.tif --query "school" --out result.gpkg
    socio-reasoner download

``segment`` goes through the same ``Engine.handle`` as the QGIS worker.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import SocioReasonerError
from .models.segmenter import DEFAULT_SAM2
from .worker.server import DEFAULT_MODELS


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vlm", default=DEFAULT_MODELS["vlm"],
                   help="VLM: a Hugging Face hub id or a local folder (default: %(default)s).")
    p.add_argument("--segmenter", default=DEFAULT_MODELS["segmenter"], choices=["sam2", "sam"],
                   help="Segmenter backend (default: %(default)s).")
    p.add_argument("--segmenter-checkpoint", default=None,
                   help="Segmenter weights: hub id, folder, or checkpoint file "
                        f"(default for sam2: {DEFAULT_SAM2}).")
    p.add_argument("--segmenter-variant", default=None,
                   help="Architecture of a bare checkpoint file: for sam2 a hub id "
                        "(facebook/sam2-hiera-large) or config (configs/sam2/sam2_hiera_l.yaml), "
                        "guessed from official file names; vit_h (default)/vit_l/vit_b for sam.")
    p.add_argument("--device", default="auto", help="cuda, mps, cpu or auto (default).")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                   help="VLM weights and SAM's image-encoder compute: auto is bf16 on CUDA "
                        "(the VLM also on MPS) and on CPUs with AVX512-BF16 or AMX (1.5-2x faster there, see "
                        "bench/README.md), else fp32.")
    p.add_argument("--vlm-backend", default="transformers", choices=["transformers", "vllm"],
                   help="vllm (experimental, where vLLM is installed on a CUDA machine): "
                        "batched evaluation with vLLM's scheduler (default: %(default)s).")
    p.add_argument("--compile-decode", action="store_true",
                   help="Experimental: static KV cache + compiled decoding (CUDA graphs on "
                        "CUDA): ~3x faster tokens on an H100 after a ~45 s first-call compile; "
                        "slower on CPUs.")
    p.add_argument("--sample", action="store_true",
                   help="Sample like the paper's rollouts (temperature 0.99, top-p 0.99, top-k 100) "
                        "instead of greedy decoding.")
    p.add_argument("--seed", type=int, default=0, help="Seed for --sample (default 0).")


def _model_spec(args) -> dict:
    spec = {"vlm": args.vlm, "segmenter": args.segmenter, "device": args.device,
            "dtype": args.dtype, "compile_decode": args.compile_decode,
            "vlm_backend": args.vlm_backend}
    if args.segmenter_checkpoint:
        spec["segmenter_checkpoint"] = args.segmenter_checkpoint
    if args.segmenter_variant:
        spec["segmenter_variant"] = args.segmenter_variant
    return spec


def _generation(args):
    from .models.base import GenerationConfig

    if args.sample:
        return GenerationConfig.paper_sampling(max_new_tokens=args.max_new_tokens, seed=args.seed)
    return GenerationConfig(max_new_tokens=args.max_new_tokens, seed=args.seed)


def cmd_segment(args) -> int:
    from .geo.export import write_polygons
    from .worker.server import Engine
    from .worker.views import RESULT_SCHEMA

    for path in (args.sat, args.map):
        if not Path(path).exists():
            raise SocioReasonerError(f"Input {path} does not exist.")
    out = Path(args.out)
    for target in (out, args.overlay, args.json):   # fail before minutes of model work
        if target and Path(target).exists() and not args.overwrite:
            raise SocioReasonerError(f"{target} exists; choose another name or pass --overwrite.")
    engine = Engine()
    engine.load({**_model_spec(args), "generation": _generation(args).__dict__}, lambda f, m: None)
    params = {"sat": {"path": str(args.sat)}, "map": {"path": str(args.map)},
              "query": args.query, "mode": args.mode, "min_area_m2": args.min_area,
              "simplify": args.simplify}
    progress = _progress_bar()
    result = engine.handle("run", params, progress)
    progress(1.0, "done")
    from shapely.geometry import shape

    feats = result["result"]["features"]
    write_polygons(out, [shape(f["geometry"]) for f in feats],
                   [f["properties"] for f in feats], crs=result["crs"], overwrite=args.overwrite,
                   schema=RESULT_SCHEMA)
    print(f"{len(feats)} polygon(s) for {args.query!r} written to {out}", file=sys.stderr)
    if args.overlay:
        _write_overlay(engine, args.overlay, args.overwrite)
    if args.json:
        from .geo.export import atomic_target

        with atomic_target(args.json, overwrite=args.overwrite) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
    return 0


def _write_overlay(engine, path, overwrite: bool) -> None:
    """Satellite image with the final mask, boxes and points, for people to look at."""
    from PIL import Image

    from .geo.export import atomic_target
    from .render import draw_feedback, draw_points

    view, run = engine.last_view, engine.last_result
    boxes = [run.frame.box_frame_to_tile(p.box_xyxy) for p in run.final.prompts]
    img = draw_feedback(view.sat.pixels, run.mask, boxes)
    pts = [tuple(xy) for p in run.final.prompts if p.points_xy
           for xy in run.frame.frame_to_tile(p.points_xy)]
    img = draw_points(img, pts) if pts else img
    with atomic_target(path, overwrite=overwrite) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")


def _progress_bar():
    from tqdm import tqdm

    bar = tqdm(total=100, desc="segment", unit="%", file=sys.stderr, leave=False)

    def update(fraction, message):
        bar.set_postfix_str(message[:40])
        bar.update(max(0, round(fraction * 100) - bar.n))
        if fraction >= 1.0:
            bar.close()
    return update


def cmd_evaluate(args) -> int:
    from .data.socioseg import SocioSegDataset
    from .evaluate import evaluate
    from .metrics import MetricConfig

    dataset = SocioSegDataset.open(args.data, split=args.split, task_map=args.task_map)
    reasoner = None
    if not args.predictions:
        from .models.loading import build_reasoner

        reasoner = build_reasoner(_model_spec(args))
        reasoner.generation = _generation(args)
    config = MetricConfig(empty_iou=args.empty_iou, min_instance_px=args.min_instance_px,
                          match_iou=args.match_iou)
    summary = evaluate(dataset, args.out, reasoner=reasoner, predictions_dir=args.predictions,
                       mode=args.mode, limit=args.limit, config=config,
                       batch_size=args.batch_size)
    o = summary["overall"]
    print(f"cIoU {o['cIoU']:.1f}  gIoU {o['gIoU']:.1f}  F1 {o['F1']:.1f}  "
          f"(n={o['n']}, skipped {summary['counts']['skipped']}) -> {args.out}/summary.md")
    return 0


def _train_config(args):
    from .train.config import TrainConfig

    overrides = {k: v for k, v in (("steps", args.steps), ("out_dir", args.out_dir)) if v is not None}
    return TrainConfig.from_yaml(args.config, **overrides)


def cmd_train(args) -> int:
    from .data.socioseg import SocioSegDataset
    from .train.grpo import GRPOTrainer

    config = _train_config(args)
    dataset = SocioSegDataset.open(config.data, split=config.split)
    trainer = GRPOTrainer(config)
    history = trainer.fit(dataset)
    trainer.acc.end_training()    # leaves the process group: processes exit cleanly
    if history:
        last = history[-1]
        print(f"step {last['step']}: reward stage1 {last['reward_stage1']:.3f}, "
              f"stage2 {last['reward_stage2']:.3f}, kl {last['kl']:.4f} -> {config.out_dir}")
    return 0


def cmd_sft(args) -> int:
    from .data.socioseg import SocioSegDataset
    from .train.sft import train_sft

    config = _train_config(args)
    accelerator = config.make_accelerator()
    history = train_sft(config, SocioSegDataset.open(config.data, split=config.split), accelerator=accelerator)
    accelerator.end_training()    # leaves the process group: processes exit cleanly
    last = f", last loss {history[-1]['loss']:.4f}" if history else ""
    print(f"sft: {len(history)} step(s){last} -> {config.out_dir}")
    return 0


def cmd_download(args) -> int:
    """Fill the Hugging Face cache so later runs work offline."""
    from .models.hub import resolve_file, resolve_model_dir
    from .models.segmenter import SAM2_HUB

    print(f"vlm: {resolve_model_dir(args.vlm)}")
    if args.segmenter_checkpoint not in SAM2_HUB:
        raise SocioReasonerError(f"Unknown SAM2 hub id {args.segmenter_checkpoint!r}; "
                                 f"known: {', '.join(sorted(SAM2_HUB))}.")
    filename = SAM2_HUB[args.segmenter_checkpoint][1]
    print(f"segmenter: {resolve_file(args.segmenter_checkpoint, filename=filename)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="socio-reasoner", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="Log debugging details.")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="Find a place in one view and write polygons.")
    seg.add_argument("--sat", required=True, help="Satellite image: GeoTIFF (or any GDAL raster).")
    seg.add_argument("--map", required=True,
                     help="Map rendering of the same area: a raster in any CRS (read onto the "
                          "satellite grid) or an image of the same size.")
    seg.add_argument("--query", required=True, help="What to find, e.g. 'school'.")
    seg.add_argument("--out", required=True, help="Output polygons: .gpkg, .shp or .geojson.")
    seg.add_argument("--overlay", help="Also write a PNG of the result over the satellite image.")
    seg.add_argument("--json", help="Also write a JSON report with raw answers and timings.")
    seg.add_argument("--mode", default="two-stage", choices=["two-stage", "stage1", "single"],
                     help="The paper's method (default) or one of its ablations.")
    seg.add_argument("--min-area", type=float, default=0.0, help="Drop polygons under this many m².")
    seg.add_argument("--simplify", type=float, default=0.0,
                     help="Simplify outlines by this tolerance, in map units.")
    seg.add_argument("--max-new-tokens", type=int, default=1024, help="Answer length cap per stage.")
    seg.add_argument("--overwrite", action="store_true", help="Replace existing output files.")
    _add_model_args(seg)
    seg.set_defaults(func=cmd_segment)

    ev = sub.add_parser("evaluate", help="Score a model or a folder of masks on SocioSeg.")
    ev.add_argument("--data", required=True,
                    help="SocioSeg: hub id, parquet/arrow/saved-dataset folder, or raw folders.")
    ev.add_argument("--split", default="test", help="Split to score (default: %(default)s).")
    ev.add_argument("--out", required=True, help="Run folder; an existing run there is resumed.")
    ev.add_argument("--limit", type=int, default=None, help="Score only the first N samples.")
    ev.add_argument("--batch-size", type=int, default=1,
                    help="Views per VLM call; larger batches use the GPU better (default 1).")
    ev.add_argument("--mode", default="two-stage", choices=["two-stage", "stage1", "single"])
    ev.add_argument("--predictions", default=None,
                    help="Score <id>.png masks from this folder instead of running a model.")
    ev.add_argument("--task-map", default=None, help="CSV of id,task when the data has no task column.")
    ev.add_argument("--max-new-tokens", type=int, default=1024, help="Answer length cap per stage.")
    ev.add_argument("--empty-iou", type=float, default=1.0,
                    help="gIoU of a sample with empty prediction and truth (default 1).")
    ev.add_argument("--min-instance-px", type=int, default=10,
                    help="F1 instances need more pixels than this (default 10).")
    ev.add_argument("--match-iou", type=float, default=0.5, help="F1 match threshold (default 0.5).")
    _add_model_args(ev)
    ev.set_defaults(func=cmd_evaluate)

    for name, func, text in (("train", cmd_train, "GRPO training (the paper's recipe)."),
                             ("sft", cmd_sft, "The SFT baseline with the same data code.")):
        tr = sub.add_parser(name, help=text)
        tr.add_argument("--config", required=True, help="YAML of TrainConfig fields, e.g. "
                        "configs/grpo_socioseg.yaml.")
        tr.add_argument("--steps", type=int, default=None, help="Override the number of steps.")
        tr.add_argument("--out-dir", default=None, help="Override the run folder (resumes if it "
                        "holds checkpoints).")
        tr.set_defaults(func=func)

    dl = sub.add_parser("download", help="Fetch the default weights into the Hugging Face cache.")
    dl.add_argument("--vlm", default=DEFAULT_MODELS["vlm"], help="VLM hub id (default: %(default)s).")
    dl.add_argument("--segmenter-checkpoint", default=DEFAULT_SAM2,
                    help="SAM2 hub id (default: %(default)s).")
    dl.set_defaults(func=cmd_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except SocioReasonerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
