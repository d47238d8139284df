"""SAM image encodings per view: stage 1, stage 2 and manual refines must share one.

What it measures
----------------
The SAM image encoder is the expensive part of segmentation (tens of seconds per image
for SAM2-L on a CPU; see latency.py), so ``SocioReasoner`` encodes each satellite view
once and reuses the embedding for stage 1, stage 2 and every ``refine``. This script
counts the encoder's real forward calls with a forward hook on
``predictor.model.image_encoder`` (not the backend's own ``encode_count``, which it
prints beside) through the steps of a session:

* view A: two-stage run (counted at its progress callbacks: before stage 1, after
  stage 1, after stage 2), a manual refine, a second refine with other prompts, a second
  query on the same view;
* view B: a two-stage run, then a refine of view A again (0 new encodings where the
  reasoner keeps several views' embeddings, 1 where it keeps only the last view's;
  reported, not checked);
* when the pipeline has ``SocioReasoner.run_batch``: views C and D in one batch, both
  stages, then a refine of each (one encoding per view expected).

Models are tiny random SAM2 and SAM (``socio_reasoner.models.random_init``) loaded
through ``Sam2Backend`` / ``SamBackend``; the VLM is ``ScriptedVLM`` with fixed valid
answers, so both stages really run SAM on two boxes each. It must print 1 encoding per
view for both backends and every scenario (exit status 1 otherwise).

Run
---
    .venv/bin/python bench/sam_encodings.py

Results: ``bench/results/sam_encodings-<machine>.json``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import describe, machine_info, print_table, write_result

STAGE1 = ('<think>two schools</think><answer>[{"bbox_2d": [300, 300, 420, 380]}, '
          '{"bbox_2d": [600, 100, 700, 200]}]</answer>')
STAGE2 = ('<think>points</think><answer>[{"bbox_2d": [300, 300, 420, 380], '
          '"points": [[350, 340], [380, 350]]}, {"bbox_2d": [600, 100, 700, 200], '
          '"points": [[650, 150]]}]</answer>')


def session(seg, views) -> tuple[list[list], dict[str, float]]:
    """Run the steps above. Returns rows (view, step, encoder forwards so far, new,
    encode_count) and the encodings per view of each checked scenario."""
    from socio_reasoner.models.scripted import ScriptedVLM
    from socio_reasoner.parsing import ObjectPrompt
    from socio_reasoner.pipeline import SocioReasoner

    calls: list[float] = []
    hook = seg.predictor.model.image_encoder.register_forward_hook(
        lambda *_: calls.append(time.perf_counter()))
    rows: list[list] = []
    last = [0]

    def record(view, step):
        rows.append([view, step, len(calls), len(calls) - last[0], seg.encode_count])
        last[0] = len(calls)

    def progress(view):
        names = {"stage 1": "view encoded, stage 1 starts",
                 "stage 2": "stage 1 done (VLM, SAM on 2 boxes)",
                 "done": "stage 2 done (VLM, SAM on 2 boxes + points)"}

        def cb(_fraction, message):
            for key, name in names.items():
                if message.startswith(key):
                    record(view, name)
        return cb

    def two_stages(result) -> bool:
        return [len(s.object_masks) for s in result.stages] == [2, 2]

    edit = [ObjectPrompt((300, 300, 420, 380), [(350, 340)])]
    (map_a, sat_a), (map_b, sat_b), (map_c, sat_c), (map_d, sat_d) = views
    reasoner = SocioReasoner(ScriptedVLM([STAGE1, STAGE2]), seg)
    ok = two_stages(reasoner.run(map_a, sat_a, "where children study", progress=progress("A")))
    reasoner.refine(sat_a, edit)
    record("A", "manual refine (edited points)")
    reasoner.refine(sat_a, [ObjectPrompt((100, 100, 250, 260), [(170, 180), (200, 200)]),
                            ObjectPrompt((600, 100, 700, 200), [(650, 150)])])
    record("A", "second refine (moved box, added one)")
    reasoner.run(map_a, sat_a, "where people shop")
    record("A", "second query, same view")
    per_view = {"A": len(calls)}
    ok &= two_stages(reasoner.run(map_b, sat_b, "where children study", progress=progress("B")))
    per_view["B"] = len(calls) - per_view["A"]
    reasoner.refine(sat_a, edit)
    record("A again", "refine after view B (not checked)")
    if hasattr(SocioReasoner, "run_batch"):
        before = len(calls)
        batcher = SocioReasoner(ScriptedVLM([STAGE1, STAGE1, STAGE2, STAGE2]), seg)
        results = batcher.run_batch([(map_c, sat_c, "where children study"),
                                     (map_d, sat_d, "where children study")])
        ok &= all(two_stages(r) for r in results)
        record("C + D", "run_batch of 2 views, both stages")
        batcher.refine(sat_c, edit)
        batcher.refine(sat_d, edit)
        record("C, D", "refine each view of the batch")
        n_new = len(calls) - before
        per_view["C+D batch"] = n_new // 2 if n_new % 2 == 0 else n_new / 2
    hook.remove()
    if not ok:
        raise RuntimeError("the scripted answers did not give two stages of two objects")
    return rows, per_view


def main() -> int:
    from socio_reasoner.models.random_init import save_tiny_sam, save_tiny_sam2
    from socio_reasoner.models.segmenter import Sam2Backend, SamBackend

    print(describe(machine_info("cpu")), flush=True)
    rng = np.random.default_rng(0)
    views = [tuple(rng.integers(0, 256, (768, 768, 3), dtype=np.uint8) for _ in range(2))
             for _ in range(4)]
    results, ok = {}, True
    with tempfile.TemporaryDirectory() as tmp:
        backends = {
            "sam2 (tiny, Sam2Backend)": lambda: Sam2Backend(save_tiny_sam2(Path(tmp) / "sam2"),
                                                            device="cpu"),
            "sam (tiny, SamBackend)": lambda: SamBackend(save_tiny_sam(Path(tmp) / "sam.pth"),
                                                         variant="tiny", device="cpu"),
        }
        for name, make in backends.items():
            rows, per_view = session(make(), views)
            print_table(rows, ["view", "after step", "encoder forwards", "new", "encode_count"],
                        title=f"\n{name}: SAM image-encoder forward calls (forward hook)")
            results[name] = {"rows": rows, "per_view": per_view}
            ok &= all(v == 1 for v in per_view.values())
    scenarios = list(next(iter(results.values()))["per_view"])
    summary = [[name, *[r["per_view"].get(k, "-") for k in scenarios],
                "ok" if all(v == 1 for v in r["per_view"].values()) else "FAIL"]
               for name, r in results.items()]
    print_table(summary, ["backend", *[f"per view, {k}" for k in scenarios], "check"],
                title="\nSAM image encodings per view (must be 1)")
    print(f"\nSAM image encodings per view: {1 if ok else 'NOT 1'}")
    write_result("sam_encodings", {"backends": results, "encodings_per_view": 1 if ok else None,
                                   "ok": ok}, "cpu")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
