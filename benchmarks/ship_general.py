"""Copy a train-general run's best weights into the package as ``texseg:general``, with its model card.

Usage::

    python benchmarks/ship_general.py RUN --scores scores.json --command "texseg train-general ..." \\
        --commit COMMIT --hardware "2-core AMD EPYC ..." [--note "..." ...]

``scores.json`` is what ``benchmarks/general_eval.py --json`` wrote for the run's best
weights. The card records the recipe, the training (steps, seconds, hardware, commit),
the validation used for choosing the checkpoint and every benchmark score.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

DEST = Path(__file__).resolve().parents[1] / "src" / "texseg" / "models" / "weights" / "general"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("--scores", required=True)
    parser.add_argument("--command", required=True, help="the exact recipe command")
    parser.add_argument("--commit", required=True, help="the texseg commit the run trained with")
    parser.add_argument("--hardware", required=True)
    parser.add_argument("--note", action="append", default=[], help="a line of the card's notes (repeatable)")
    args = parser.parse_args()
    run = Path(args.run)
    summary = json.loads((run / "summary.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    best = next(r for r in metrics if r["step"] == summary["best_step"])
    DEST.mkdir(parents=True, exist_ok=True)
    for name in ("model.json", "model.safetensors"):
        shutil.copyfile(run / "best" / name, DEST / name)
    card = {
        "name": "general",
        "architecture": "texnet",
        "summary": "Texture-agnostic per-pixel embeddings; regions by k-means per image (K given), K estimated, "
                   "or the region of a reference patch (the image's Gabor energies set beside the embeddings "
                   "there). Trained only on texseg's procedural collages (no texture images), so every real "
                   "texture is an unseen texture.",
        "recipe": args.command,
        "config": config,
        "training": {"steps": summary["steps"], "train_seconds": summary["train_seconds"],
                     "eval_seconds": summary["eval_seconds"], "status": summary["status"],
                     "hardware": args.hardware, "torch": torch.__version__, "commit": args.commit},
        "checkpoint": {"step": summary["best_step"], "chosen_by": "mean per-image matched mIoU (k-means, true K) "
                       "over the validation sets below", "validation": best},
        "scores": json.loads(Path(args.scores).read_text()),
        "notes": args.note,
    }
    (DEST / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    print(f"shipped step {summary['best_step']} of {run} -> {DEST}")


if __name__ == "__main__":
    main()
