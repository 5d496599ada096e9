"""Optional TensorBoard logging of a run (``tensorboard=True``; ``pip install 'texseg[tensorboard]'``).

Events go into the run directory itself, so ``tensorboard --logdir runs`` shows every run
side by side: the metrics of each evaluation as scalars, the samples panel as an image,
and the run's settings with its final metrics as hyperparameters.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


class TensorBoardLogger:
    """Writes one run's events with torch's ``SummaryWriter``.

    Raises:
        ValueError: the ``tensorboard`` package is not installed.
    """

    def __init__(self, run_dir: Path) -> None:
        self.writer = self.writer_class()(log_dir=str(run_dir))

    @staticmethod
    def writer_class() -> type:
        """torch's ``SummaryWriter``; a ValueError if the ``tensorboard`` package is missing."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError("tensorboard needs the optional dependency: pip install 'texseg[tensorboard]'") from None
        return SummaryWriter

    def scalars(self, row: dict[str, float]) -> None:
        """One metrics row (``step`` and its values): ``train/loss``, ``val/iou``, ``lr``..."""
        step = int(row["step"])
        for key, value in row.items():
            if key == "step" or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            tag = f"val/{key[4:]}" if key.startswith("val_") else key.replace("train_", "train/")
            self.writer.add_scalar(tag, value, step)

    def figure(self, tag: str, fig: Figure, step: int) -> None:
        """A matplotlib figure as an image."""
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        image = np.asarray(canvas.buffer_rgba())[..., :3]
        self.writer.add_image(tag, image, step, dataformats="HWC")

    def hparams(self, config: dict[str, Any], final: dict[str, float]) -> None:
        """The run's settings (scalars and strings) against its final metrics, for comparing runs."""
        hparams = {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))}
        metrics = {f"hparam/{k}": v for k, v in final.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        self.writer.add_hparams(hparams, metrics, run_name=".")

    def close(self) -> None:
        self.writer.close()
