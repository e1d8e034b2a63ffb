"""The files that travel with a weights file, named after it in the same folder (`model.safetensors` ->
`model.json`, `model.log.csv`, `model.eval.json`): the model card (written with the weights), the training log
(training's export) and the evaluation report (`python -m train.evaluate --report`). Their writers (`ssd`,
`train`) and their reader (`visualize.model_report`) take the names from here."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .card import ModelCard, read_card
from .weight_storage import read_tensors

CARD_SUFFIX = ".json"
LOG_SUFFIX = ".log.csv"
REPORT_SUFFIX = ".eval.json"
# The evaluation report's layout: its writer (`ssd.evaluation.report`) stamps it, its reader refuses any other.
REPORT_FORMAT = 1


def beside(weights, suffix: str) -> Path:
    """`model.safetensors` + ".eval.json" -> `model.eval.json` in the same folder."""
    weights = Path(weights)
    return weights.with_name(weights.stem + suffix)


def card_beside(weights) -> ModelCard:
    """The model card beside the weights file `weights` (OSError: none there; ValueError: not a card)."""
    return read_card(beside(weights, CARD_SUFFIX))


def read_weights(path, hint: str | None = None) -> tuple[dict, ModelCard]:
    """(tensors, card) of a weights file and the model card beside it, floating-point tensors as float32 whatever
    the file stores (`ssd.weight_storage`: float16, float32 or int8). FileNotFoundError names the missing file, then
    `hint` (default: what the file must be); ValueError names a card that is not one (`ssd.card.read_card`)."""
    path, card = Path(path), beside(path, CARD_SUFFIX)
    if not path.is_file() or not card.is_file():
        hint = hint or "Pass the .safetensors file written by training; its model card (.json) must sit beside it."
        raise FileNotFoundError(f"weights not found: {path if not path.is_file() else card}. {hint}")
    return read_tensors(path), read_card(card)


def sha256(path) -> str:
    """The file's SHA-256 (hex): the evaluation report records it, so a reader can tell whose report it is."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
