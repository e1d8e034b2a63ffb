"""The model card's type (ssd.card.ModelCard): every card the project has written reads back, and writes back the
same JSON; a misspelt key, a value of the wrong type or a newer layout is refused, naming it; the Detector, the
export and the weights' writer all go through it."""

from __future__ import annotations

import dataclasses
import json

import pytest

import ssd
from ssd.card import SCHEMA_VERSION, VERSION_KEY, ModelCard, Validation, read_card
from ssd.detector import WEIGHTS_DIR, card_path

SHIPPED = sorted(WEIGHTS_DIR.glob("*.safetensors"))
TINY = ssd.SSD300_VOC.replace(batch_norm=True, width=0.25)


def shipped_card(name: str = "ssd300_bn_voc07") -> dict:
    return json.loads((WEIGHTS_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize("weights", SHIPPED, ids=lambda p: p.stem)
def test_a_shipped_card_reads_and_writes_back_the_same_json(weights):
    data = json.loads(card_path(weights).read_text())
    assert data.get(VERSION_KEY) in (None, SCHEMA_VERSION)  # None: written before the version was, layout 1
    card = ModelCard.from_dict(data)
    assert card.classes == list(ssd.VOC_CLASSES) and card.ssd_config().num_classes == 20
    assert isinstance(card.val, Validation) and 0 < card.val.map_area < 1
    again = card.to_dict()
    data.pop(VERSION_KEY, None)
    assert again.pop(VERSION_KEY) == SCHEMA_VERSION and again == data
    assert ModelCard.from_dict(json.loads(card.to_json())) == card


def test_the_two_shipped_layouts_read_by_attribute():
    """The interim card is written by hand (status, note, a threshold set by hand, several commands, no backbone
    or best F1); the default one by training (one command, best F1, base weights, history)."""
    interim = read_card(WEIGHTS_DIR / "ssd300_bn_voc07.json")
    default = read_card(WEIGHTS_DIR / "ssd384_lite0_voc07.json")
    assert interim.status.startswith("interim:") and interim.backbone is None and interim.base_weights is None
    assert interim.score_threshold_basis and len(interim.training_commands()) == 2 and interim.command is None
    assert interim.val.best_f1 is None and interim.val.images == 1785
    assert default.backbone == "efficientnet_lite0" and default.base_weights["dataset"] == "ImageNet-1k"
    assert default.training_commands() == [default.command] and default.commands is None
    assert set(default.val.best_f1) == {"score", "precision", "recall", "f1"} and default.history


def test_a_misspelt_key_or_a_wrong_type_is_refused_naming_each():
    data = shipped_card()
    data["score_treshold"] = data.pop("score_threshold")
    data["steps"] = "1400"
    data["val"]["images"] = True  # a bool is no count
    data["val"]["mAP"] = 0.5
    with pytest.raises(ValueError) as e:
        ModelCard.from_dict(data, where="w.json")
    message = str(e.value)
    assert message.startswith("w.json: not a model card")
    for named in ("unknown key 'score_treshold'", "steps must be int or null, not str '1400'",
                  "val.images must be int, not bool", "unknown key val.'mAP'"):
        assert named in message, message


@pytest.mark.parametrize("change, named", [
    (lambda d: d.pop("classes"), "missing key 'classes'"),
    (lambda d: d["config"].update(imagesize=300), "config: unknown SSDConfig fields ['imagesize']"),
    (lambda d: d.update(classes=d["classes"][:3]), "classes: 3 names for a 20-class config"),
    (lambda d: d.update(commands="python -m train"), "commands must be list[str] or null"),
    (lambda d: d.update(val=[1]), "val must be an object or null"),
    (lambda d: d.update({VERSION_KEY: SCHEMA_VERSION + 1}), "a newer version of the project wrote it"),
])
def test_each_kind_of_problem_is_named(change, named):
    data = shipped_card()
    change(data)
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("]", r"\]")):
        ModelCard.from_dict(data)


def test_a_card_of_the_current_version_and_ints_for_floats_read():
    data = {**shipped_card(), VERSION_KEY: SCHEMA_VERSION, "score_threshold": 0, "epochs": 9}
    assert ModelCard.from_dict(data).score_threshold == 0
    with pytest.raises(ValueError, match="not JSON"):
        read_card(__file__)


def test_export_weights_writes_a_versioned_card_and_refuses_a_misspelt_field(tmp_path):
    model = ssd.build_ssd(TINY)
    path = ssd.export_weights(model, TINY, ssd.VOC_CLASSES, tmp_path / "w.safetensors", note="n", steps=3)
    written = json.loads(card_path(path).read_text())
    assert written[VERSION_KEY] == SCHEMA_VERSION and written["note"] == "n"
    assert written["config"] == json.loads(json.dumps(TINY.to_dict()))  # tuples as lists
    card = read_card(card_path(path))
    again = ssd.export_weights(model, TINY, ssd.VOC_CLASSES, tmp_path / "again.safetensors",
                               card=dataclasses.replace(card, note=None), complete=True)
    assert json.loads(card_path(again).read_text()) == {**{k: v for k, v in written.items() if k != "note"},
                                                        "complete": True}
    with pytest.raises(ValueError, match="unknown key 'score_treshold'"):
        ssd.export_weights(model, TINY, ssd.VOC_CLASSES, tmp_path / "bad.safetensors", score_treshold=0.3)
    assert not (tmp_path / "bad.safetensors").exists() and not (tmp_path / "bad.json").exists()


def test_the_detector_exposes_a_model_card(tmp_path):
    model = ssd.build_ssd(TINY)
    path = ssd.export_weights(model, TINY, ssd.VOC_CLASSES, tmp_path / "w.safetensors", score_threshold=0.3)
    loaded = ssd.Detector.load(path, device="cpu", backend="torch")
    assert isinstance(loaded.card, ModelCard) and loaded.card.score_threshold == loaded.score_threshold == 0.3
    # Built in memory: a card of its own config and classes, or some fields of one completed with them.
    bare = ssd.Detector(model, TINY, ssd.VOC_CLASSES, device="cpu")
    assert bare.card == ModelCard.from_dict({"config": TINY.to_dict(), "classes": ssd.VOC_CLASSES})
    assert bare.card.score_threshold is None and bare.score_threshold == ssd.detector.FALLBACK_SCORE_THRESHOLD
    partial = ssd.Detector(model, TINY, ssd.VOC_CLASSES, device="cpu", card={"score_threshold": 0.2})
    assert partial.card.score_threshold == partial.score_threshold == 0.2 and partial.card.classes[0] == "aeroplane"
    with pytest.raises(ValueError, match="score_threshold must be float or null"):
        ssd.Detector(model, TINY, ssd.VOC_CLASSES, device="cpu", card={"score_threshold": "0.2"})


def test_the_onnx_metadata_carries_the_card():
    from ssd.export import CARD_KEY, card_from_metadata, metadata

    card = read_card(WEIGHTS_DIR / "ssd300_bn_voc07.json")
    props = metadata(card.ssd_config(), card.classes, card)
    assert props["score_threshold"] == "0.15" and json.loads(props[CARD_KEY])[VERSION_KEY] == SCHEMA_VERSION
    carried = card_from_metadata(props, "m.onnx")  # its config as the network's: every field, defaults included
    assert carried.ssd_config() == card.ssd_config() and dataclasses.replace(carried, config=card.config) == card
    bare = metadata(TINY, ssd.VOC_CLASSES, None)
    assert bare["score_threshold"] == "" and card_from_metadata(bare, "m.onnx").classes == list(ssd.VOC_CLASSES)
    with pytest.raises(ValueError, match="m.onnx's metadata: not a model card"):
        card_from_metadata({**props, CARD_KEY: json.dumps({**card.to_dict(), "stats": 1})}, "m.onnx")
