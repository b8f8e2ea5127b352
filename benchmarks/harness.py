"""Small pieces the benchmark scripts share: the evaluation splits, the fine-tuning recipe, the run's
description, and an atomic JSON write.

The course's rule for the splits: every choice (a learning rate, a threshold, the "best" variant) is made
on ``val``; every headline comparison is reported on ``test``, which no choice was made on. So the
scripts score every model on both (:func:`split_scorers`) and record both.

Imported by the scripts next to it (``python benchmarks/capstone.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch.utils.data import DataLoader

from course_utils import CocoDetection, TinyDetector, collate_detection, fit, materialize
from course_utils.deploy import cpu_info
from course_utils.train import make_finetune_optimizer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def split_loader(split: str, batch_size: int = 50) -> DataLoader:
    """The shipped ``data/<split>`` set (``val`` or ``test``, 200 images each), loaded once, in a fixed order."""
    return DataLoader(materialize(CocoDetection(ROOT / "data" / split / "annotations.json"), progress=False),
                      batch_size=batch_size, collate_fn=collate_detection)


def load_start(checkpoint: Path, device: torch.device) -> tuple[TinyDetector, int]:
    """The width-1 detector a sweep starts from, in eval mode on ``device``, and the epochs it was trained for
    (so every variant's total epochs can be counted). Checked: the checkpoint records its epochs."""
    from course_utils import load_checkpoint

    model = TinyDetector()
    epochs = load_checkpoint(checkpoint, model)["metadata"].get("epochs")
    if epochs is None:
        raise ValueError(f"{checkpoint} records no 'epochs' in its metadata; write it with "
                         "benchmarks/train_tiny_detector.py so the sweep can count every variant's total epochs")
    return model.eval().to(device), int(epochs)


def split_scorers(device: torch.device) -> dict[str, Callable[[torch.nn.Module], float]]:
    """``{"val": model -> val mAP@[.5:.95], "test": model -> test mAP@[.5:.95]}``, each split loaded once
    (:func:`split_loader`). Choose on val, report on test."""
    from course_utils import evaluate

    loaders = {split: split_loader(split) for split in ("val", "test")}
    return {split: (lambda model, data=data: evaluate(model, data, device)["map"]) for split, data in loaders.items()}


def seeded_loader(dataset: Any, seed: int, batch_size: int = 32) -> DataLoader:
    """A shuffled training loader whose order depends only on ``seed``: every run of one seed sees the same
    batches in the same order (the course's equal-data rule for a method and its control)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate_detection,
                      generator=torch.Generator().manual_seed(seed))


def finetune(model: TinyDetector, loader: DataLoader, epochs: int, lr: float, device: torch.device,
             hooks: Iterable[Any] = ()) -> TinyDetector:
    """The course's fine-tuning recipe for a trained model: AdamW, cosine decay from ``lr`` to 0, no warm-up
    (``make_finetune_optimizer``), ``epochs`` passes over ``loader``. Returns the model in eval mode.

    Chosen on a 60 % pruned detector (seed 0): 6 epochs this way reached val mAP 0.765, 3 epochs of the
    training schedule (one-cycle with warm-up, peak 1e-3) only 0.697."""
    optimizer, scheduler = make_finetune_optimizer(model, lr, total_steps=epochs * len(loader))
    fit(model, loader, optimizer, epochs, device=device, hooks=list(hooks), scheduler=scheduler, progress=False)
    return model.eval()


def run_info(device: torch.device) -> dict[str, Any]:
    """What every result file records about where it ran: device, library versions, CPU (``cpu_info``)."""
    import onnxruntime

    return {"device": str(device), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "machine": platform.machine(), "cpu": cpu_info()}


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON atomically (a temporary file, then a rename): an interrupted run
    leaves the previous file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path
