"""The model card: the JSON beside a weights file (`model.safetensors` -> `model.json`), also carried in an ONNX
export's metadata. It says what the network is (its config and classes), how it was trained (data, recipe, steps,
wall time, hardware, where the base's ImageNet weights came from) and what it measured (val mAP, per-class AP, the
recommended score threshold).

Training writes it (`ssd.export_weights`, with `train.card`'s fields); `ssd.Detector`, the app and the tools read
it as a `ModelCard`, by attribute. Every card is checked once, when it is read or written (`ModelCard.from_dict`):
a misspelt key or a value of the wrong type is refused with one ValueError that names it, instead of reading back
as a missing value.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from .config import SSDConfig

# The card's layout. A card written before the version was recorded has no `schema_version` key: its layout is
# version 1's. Bump this when a key changes meaning or type (and read the older layout in `from_dict`).
SCHEMA_VERSION = 1
VERSION_KEY = "schema_version"


@dataclass(kw_only=True)
class Validation:
    """What a run measured on its validation data (`train.card.evaluation_fields`): the VOC mAPs, the number of
    images, the point of best F1 (score, precision, recall, f1; absent from cards written before it was measured)
    and each class's AP ({class: {ap_11pt, ap_area, npos, ndet}})."""

    map_11pt: float
    map_area: float
    images: int
    best_f1: dict[str, float] | None = None
    per_class: dict[str, dict]


@dataclass(kw_only=True)
class ModelCard:
    """A model card. Only `config` (an `SSDConfig.to_dict()`) and `classes` are always there; every other field is
    None where the card does not have it (a card written by hand, an older run, a detector built in memory).
    The fields are in the order training writes them."""

    config: dict
    classes: list[str]
    data: str | None = None  # what it was trained on, e.g. "PASCAL VOC2007 train (2476 images) ..."
    recipe: dict | None = None  # train.recipe.Recipe's fields, and world_size, global_batch, optimizer, ...
    steps: int | None = None
    epochs: float | None = None
    wall_time_s: float | None = None
    hardware: str | None = None
    train_img_per_s: float | None = None
    skipped_steps: int | None = None
    torch: str | None = None  # torch.__version__ of the run
    backbone: str | None = None
    # Where the base network's pretrained weights came from ({package, version, file, dataset, license}), or a
    # sentence (e.g. that the base was trained from scratch).
    base_weights: dict | str | None = None
    complete: bool | None = None  # whether the run reached the end of its schedule
    # For a run stopped early: step, max_steps, epochs, max_epochs, stopped_by, finish_command, resumes_from.
    progress: dict | None = None
    status: str | None = None  # "<tag>: <why>", e.g. "interim: superseded by ..." or "incomplete: stopped by ..."
    command: str | None = None  # the command that trained (or averaged) these weights
    averaged: dict | None = None  # train.average's: the snapshots averaged ({weights, batchnorm})
    # How the file stores its tensors where not float16 ({dtype}, and train.compact's source: ssd.weight_storage);
    # written by export_weights, absent for float16
    storage: dict | None = None
    val: Validation | None = None
    score_threshold: float | None = None  # the recommended one (best F1 on val): the app's and the CLI's default
    score_threshold_basis: str | None = None  # how score_threshold was chosen, where not by best F1
    commands: list[str] | None = None  # written by hand: the commands of a run in several segments
    history: str | None = None
    note: str | None = None

    @classmethod
    def from_dict(cls, data, where: str = "model card") -> ModelCard:
        """The card of a JSON object, as every version of the project wrote it. ValueError naming each unknown
        key, missing key and value of the wrong type (`where`: the file, for the message)."""
        try:  # the card is its JSON: a copy, with tuples (SSDConfig.to_dict()'s) as lists, as read from a file
            data = json.loads(json.dumps(data))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: not a model card: {e}") from None
        problems = card_problems(data)
        if problems:
            raise ValueError(f"{where}: not a model card this version reads: {'; '.join(problems)}")
        fields = {k: v for k, v in data.items() if k != VERSION_KEY}
        if fields.get("val") is not None:
            fields["val"] = Validation(**fields["val"])
        return cls(**fields)

    def to_dict(self) -> dict:
        """The JSON object of the card, with its schema version; fields that are None are left out, as the
        writers leave out what they do not know (so a card read and written again is the same card)."""
        out = {VERSION_KEY: SCHEMA_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Validation):
                value = {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
            if value is not None:
                out[f.name] = copy.deepcopy(value)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def ssd_config(self) -> SSDConfig:
        """The network's config (checked when the card was read)."""
        return SSDConfig.from_dict(self.config)

    def training_commands(self) -> list[str]:
        """The commands that made these weights: `command`, or the hand-written `commands` of several segments."""
        return [self.command] if self.command else list(self.commands or [])


def read_card(path) -> ModelCard:
    """The model card in the JSON file at `path`. ValueError naming the file when it is not JSON or not a card."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: the model card is not JSON ({e})") from None
    return ModelCard.from_dict(data, where=str(path))


def card_problems(data) -> list[str]:
    """What is wrong with `data` as a model card (nothing: an empty list), one phrase per key."""
    if not isinstance(data, dict):
        return [f"a JSON object expected, got {type(data).__name__}"]
    version = data.get(VERSION_KEY, SCHEMA_VERSION)
    if type(version) is not int or not 1 <= version <= SCHEMA_VERSION:
        # A newer layout may rename or retype keys: reading it by this one's rules would misread it.
        return [f"{VERSION_KEY} {version!r} is not one this version reads (it reads up to "
                f"{SCHEMA_VERSION}); a newer version of the project wrote it"]
    problems = _key_problems(ModelCard, {k: v for k, v in data.items() if k != VERSION_KEY}, "")
    if isinstance(data.get("val"), dict):
        problems += _key_problems(Validation, data["val"], "val.")
    if isinstance(data.get("config"), dict):
        try:
            cfg = SSDConfig.from_dict(data["config"])
        except (TypeError, ValueError) as e:
            problems.append(f"config: {e}")
        else:
            if isinstance(data.get("classes"), list) and len(data["classes"]) != cfg.num_classes:
                problems.append(f"classes: {len(data['classes'])} names for a {cfg.num_classes}-class config")
    return problems


def _key_problems(cls, data: dict, prefix: str) -> list[str]:
    """Unknown keys, missing keys and values of the wrong type of `data` as the fields of dataclass `cls`.

    Unknown keys are refused rather than kept: every key the project has written is a field here, so an unknown
    one is a misspelling ("score_treshold") that would otherwise be carried along while every reader fell back to
    the default, the silent failure this type is for; a newer layout says so by its schema version."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems = [f"unknown key {prefix}{k!r}" for k in data if k not in fields]
    required = [k for k, f in fields.items() if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    problems += [f"missing key {prefix}{k!r}" for k in required if k not in data]
    for k, value in data.items():
        if k in fields and not _fits(value, hints[k]):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            problems.append(f"{prefix}{k} must be {_type_name(hints[k])}, not {type(value).__name__} {shown}")
    return problems


def _fits(value, hint) -> bool:
    """Whether a JSON value fits a field's type: an int is a float too (JSON writes 1.0 as 1), a bool is no
    number, and a nested dataclass is a JSON object."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(_fits(k, key) and _fits(v, item) for k, v in value.items())
    return isinstance(value, hint)


def _type_name(hint) -> str:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return "an object"
    return str(hint) if typing.get_origin(hint) else hint.__name__
