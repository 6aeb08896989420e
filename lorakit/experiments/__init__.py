"""Experiments that honestly need longer than a notebook cell: run them as commands.

    python -m lorakit.experiments.sweeps        # notebook 02: target modules, rank and alpha sweeps
    python -m lorakit.experiments.replication   # notebook 06: LoRA / DoRA / HyLoRADA at equal budget
    python -m lorakit.experiments.init_race     # notebook 06: orthogonal vs Kaiming init at equal row length

Each writes its results (with date, machine, seeds, and mean and spread over seeds) to
``lorakit/experiments/results/NAME.json``; the notebooks load them with ``load_results(NAME)``
and show them beside the small version they run live.
"""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load_results(name: str) -> dict:
    """The saved results of experiment ``name`` (``results/NAME.json``)."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python -m lorakit.experiments.{name}` to create it")
    return json.loads(path.read_text(encoding="utf-8"))
