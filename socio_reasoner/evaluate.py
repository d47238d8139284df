"""``socio-reasoner evaluate``: reproduce the paper's table for a model, resumably.

Every finished sample is appended to ``records.jsonl`` (and its predicted mask saved),
so a run killed part-way resumes where it stopped, and the summary is always computed
from the log rather than from memory.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from .metrics import DEFAULT_METRICS, MetricConfig, sample_scores, summarize

RECORDS = "records.jsonl"
# Parser problems meaning the answer could not be read at all (not merely repaired).
FAILED_PARSE_CODES = ("missing_answer_tag", "invalid_json", "not_text")


def read_records(path: Path) -> list[dict]:
    """The log's records; a torn last line (a kill mid-write) is ignored."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _parse_failed(problems: list[str]) -> bool:
    return any(p.split(":", 1)[0] in FAILED_PARSE_CODES for p in problems)


def _load_mask_png(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    if not path.exists():
        return None
    with Image.open(path) as im:
        m = np.asarray(im.convert("L")) > 0
    if m.shape != shape:
        raise ValueError(f"Predicted mask {path} is {m.shape[::-1]} but the truth is {shape[::-1]}.")
    return m


def evaluate(dataset, out_dir, reasoner=None, predictions_dir=None, mode: str = "two-stage",
             limit: int | None = None, config: MetricConfig = DEFAULT_METRICS,
             show_progress: bool = True, batch_size: int = 1) -> dict:
    """Score a model (``reasoner``) or a folder of masks (``predictions_dir``) on a dataset.

    Parameters
    ----------
    dataset : SocioSegDataset (or any iterable of Sample / SkippedSample with ``len``)
    out_dir : folder for ``records.jsonl``, ``masks/``, ``summary.{json,md}`` and figures;
        an existing log there is resumed.
    reasoner : SocioReasoner, optional
    predictions_dir : folder of ``<id>.png`` masks from any other system, optional;
        a missing file counts as an empty prediction and is counted.
    limit : score only the first ``limit`` samples.
    batch_size : views per VLM call (``SocioReasoner.run_batch``); answers are the same
        as one at a time up to floating-point batching effects.

    Returns
    -------
    dict, the summary also written to ``summary.json``.
    """
    from tqdm import tqdm

    if (reasoner is None) == (predictions_dir is None):
        raise ValueError("Give exactly one of a model or a predictions folder.")
    out = Path(out_dir)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    log_path = out / RECORDS
    done = {r["id"] for r in read_records(log_path)}
    total = min(len(dataset), limit) if limit else len(dataset)
    bar = tqdm(total=total, initial=min(len(done), total), desc="evaluate", unit="sample",
               disable=not show_progress)
    with open(log_path, "a", encoding="utf-8") as log:
        def flush(batch):
            for record in _score_batch(batch, out, reasoner, predictions_dir, mode, config):
                log.write(json.dumps(record) + "\n")
                log.flush()          # a kill loses at most the batch in flight
                bar.update(1)

        batch = []
        for k, sample in enumerate(dataset):
            if k >= total:
                break
            if sample.id in done:
                continue
            batch.append(sample)
            if len(batch) >= max(1, batch_size):
                flush(batch)
                batch = []
        flush(batch)
    bar.close()
    return write_summary(out, config, dataset)


def _score_batch(samples, out: Path, reasoner, predictions_dir, mode, config) -> list[dict]:
    """Records for a batch, in order; SkippedSamples are recorded, never dropped."""
    usable = [s for s in samples if hasattr(s, "mask")]
    results = {}
    if reasoner is not None and usable:
        t0 = time.perf_counter()
        runs = reasoner.run_batch([(s.map, s.sat, s.query) for s in usable], mode=mode)
        per_sample = (time.perf_counter() - t0) / len(usable)
        results = {s.id: (r, per_sample) for s, r in zip(usable, runs, strict=True)}
    records = []
    for sample in samples:
        if not hasattr(sample, "mask"):
            records.append({"id": sample.id, "skipped": sample.reason})
            continue
        record = {"id": sample.id, "task": sample.task, "query": sample.query}
        if reasoner is not None:
            result, seconds = results[sample.id]
            record["seconds"] = {"total": seconds, **result.seconds}
            problems = [p for s in result.stages for p in s.parsed.problems]
            record.update(problems=problems, parse_failed=_parse_failed(problems),
                          n_objects=len(result.final.prompts))
            pred = result.mask
        else:
            pred = _load_mask_png(Path(predictions_dir) / f"{sample.id}.png", sample.mask.shape)
            record["missing_prediction"] = pred is None
            pred = np.zeros(sample.mask.shape, bool) if pred is None else pred
        Image.fromarray(pred.astype(np.uint8) * 255).save(out / "masks" / f"{sample.id}.png",
                                                          optimize=True)
        record.update(sample_scores(pred, sample.mask, config).to_dict())
        records.append(record)
    return records


def write_summary(out: Path, config: MetricConfig = DEFAULT_METRICS, dataset=None) -> dict:
    """Summary JSON + Markdown, a per-task (or per-query) IoU bar chart, and a gallery of
    the best and worst samples (when the dataset is at hand to draw them)."""
    rows = read_records(out / RECORDS)
    scored = [r for r in rows if "skipped" not in r]
    by_group = defaultdict(list)
    for r in scored:
        by_group[r.get("task") or "unknown"].append(r)
    group_key = "task"
    if set(by_group) == {"unknown"}:            # no tasks: group by query instead
        by_group = defaultdict(list)
        for r in scored:
            by_group[r.get("query", "")].append(r)
        group_key = "query"
    seconds = defaultdict(list)
    for r in scored:
        for k, v in (r.get("seconds") or {}).items():
            seconds[k].append(v)
    summary = {
        "overall": summarize(scored),
        f"by_{group_key}": {g: summarize(rs) for g, rs in sorted(by_group.items())},
        "counts": {"records": len(rows), "scored": len(scored),
                   "skipped": len(rows) - len(scored),
                   "parse_failed": sum(bool(r.get("parse_failed")) for r in scored),
                   "missing_predictions": sum(bool(r.get("missing_prediction")) for r in scored)},
        "skipped": [{"id": r["id"], "reason": r["skipped"]} for r in rows if "skipped" in r],
        "mean_seconds": {k: float(np.mean(v)) for k, v in sorted(seconds.items())},
        "metric_config": config.__dict__,
    }
    n = max(summary["counts"]["scored"], 1)
    summary["counts"]["parse_failure_rate"] = summary["counts"]["parse_failed"] / n
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(_markdown(summary, group_key))
    _bar_chart(summary[f"by_{group_key}"], out / f"iou_by_{group_key}.png", group_key)
    _gallery(out, scored, dataset)
    return summary


def _markdown(summary: dict, group_key: str) -> str:
    lines = ["# Evaluation summary", "", f"| {group_key} | n | cIoU | gIoU | F1 |", "|---|---|---|---|---|"]
    for name, s in [*summary[f"by_{group_key}"].items(), ("**all**", summary["overall"])]:
        lines.append(f"| {name} | {s['n']} | {s['cIoU']:.1f} | {s['gIoU']:.1f} | {s['F1']:.1f} |")
    c = summary["counts"]
    lines += ["", f"Scored {c['scored']} samples, skipped {c['skipped']}; parse failures "
              f"{c['parse_failed']} ({100 * c['parse_failure_rate']:.1f} %); missing predictions "
              f"{c['missing_predictions']}."]
    if summary["skipped"]:
        lines += ["", "Skipped:"] + [f"- `{s['id']}`: {s['reason']}" for s in summary["skipped"]]
    if summary["mean_seconds"]:
        lines += ["", "Mean seconds per sample:"] + [
            f"- {k}: {v:.3f}" for k, v in summary["mean_seconds"].items()]
    return "\n".join(lines) + "\n"


def _bar_chart(groups: dict, path: Path, group_key: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)[:30]
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(names) + 2), 3.5))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [groups[n]["cIoU"] for n in names], 0.4, label="cIoU")
    ax.bar(x + 0.2, [groups[n]["gIoU"] for n in names], 0.4, label="gIoU")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.set_title(f"IoU by {group_key}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _gallery(out: Path, scored: list[dict], dataset, n: int = 4, thumb_px: int = 192) -> None:
    """Best and worst samples: the satellite image with the prediction in red and the
    truth outlined in green, so a glance shows whether a miss is a shift or a confusion."""
    from PIL import ImageDraw
    from scipy import ndimage

    ranked = sorted(scored, key=lambda r: r["iou"])
    picks = ranked[-n:][::-1] + [r for r in ranked[:n] if r not in ranked[-n:]]
    index = {sid: k for k, sid in enumerate(dataset.ids())} if dataset is not None else {}
    picks = [r for r in picks if r["id"] in index]
    if not picks:
        return
    sheet = Image.new("RGB", (thumb_px * len(picks), thumb_px + 16), "white")
    draw = ImageDraw.Draw(sheet)
    for k, r in enumerate(picks):
        sample = dataset.get(index[r["id"]])
        pred = _load_mask_png(out / "masks" / f"{r['id']}.png", sample.mask.shape)
        rgb = sample.sat.copy()
        if pred is not None:
            rgb[pred] = (0.5 * rgb[pred] + 0.5 * np.array([255, 0, 0])).astype(np.uint8)
        edge = sample.mask & ~ndimage.binary_erosion(sample.mask, iterations=3)
        rgb[edge] = (0, 255, 0)
        sheet.paste(Image.fromarray(rgb).resize((thumb_px, thumb_px)), (k * thumb_px, 16))
        draw.text((k * thumb_px + 4, 2), f"{r['id'][:16]} IoU {100 * r['iou']:.0f}%", fill="black")
    sheet.save(out / "gallery.png")
