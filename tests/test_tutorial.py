"""docs/tutorial-own-data.md, run as written on data the test makes: its training commands on YOLO, VOC and COCO
folders of the same photos each leave a model whose card has its mAP and score threshold, also when the time
budget stops the run early, and its evaluation command measures it. The runs are cut to two steps
(--max-steps 2): the commands are the tutorial's, the length is not the point here."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.own_data import photos, write_coco, write_voc, write_yolo

pytestmark = pytest.mark.slow

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial-own-data.md"
SHORT = ["--max-steps", "2", "--workers", "0", "--log-every", "1"]


def commands(prefix: str) -> list[list[str]]:
    """The tutorial's commands that start with `prefix`, as argument lists after it."""
    blocks = re.findall(r"```\n(.*?)```", TUTORIAL.read_text(), re.S)
    found = [shlex.split(line) for block in blocks for line in block.splitlines() if line.startswith(prefix)]
    return [argv[len(shlex.split(prefix)):] for argv in found]


def placed(argv: list[str], folders: dict[str, Path]) -> list[str]:
    """The command with the tutorial's folder names replaced by the test's (longest name first)."""
    out = []
    for a in argv:
        for name in sorted(folders, key=len, reverse=True):
            a = a.replace(name, str(folders[name]))
        out.append(a)
    return out


def card_of(run: Path) -> dict:
    return json.loads((run / "weights.json").read_text())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tutorial")
    items = photos(10, seed=5)
    yolo = write_yolo(root / "yolo", items)
    voc = write_voc(root / "voc", items, image_sets=False)
    images, _ = write_coco(root / "coco", items)
    val = write_yolo(root / "yolo_val", photos(4, seed=6))
    return {"yolo": yolo, "voc": voc, "coco": images.parent, "val": val}


def test_the_tutorial_names_two_training_commands():
    train = commands("python -m train ")
    assert [a[:2] for a in train] == [["--data", "my_photos"], ["--data", "my_photos/images"]]
    assert "--ann-file" in train[1]


@pytest.mark.parametrize("layout", ["yolo", "voc", "coco"])
def test_each_format_trains_to_a_measured_model_the_app_serves_without_a_warning(tmp_path, data, layout, caplog):
    from train.__main__ import cli

    plain, coco = commands("python -m train ")
    argv = coco if layout == "coco" else plain
    run = tmp_path / "runs" / "mine"
    folders = {"my_photos": data[layout], "runs/mine": run}
    assert cli(placed(argv, folders) + SHORT) == 0
    card = card_of(run)
    assert card["complete"] and card["val"]["images"] == 1 and "map_area" in card["val"]
    assert card["classes"] == ["cat", "dog"] and "VOC" not in card["config"]["name"]

    (evaluate,) = commands("python -m train.evaluate ")
    from train.evaluate import main as evaluate_main

    assert evaluate_main(placed(evaluate, {"my_photos_val": data["val"], "runs/mine": run})) == 0

    # The tutorial's last step serves it (SSD_WEIGHTS=runs/mine/weights.safetensors python app.py): the page
    # loads and its teaching tabs open on this model's own terms, with nothing in the log.
    from tests.page_visit import opened
    from ui.demo_models import DemoModel

    visit, warned = opened(DemoModel.load(run / "weights.safetensors", "torch"), caplog)
    assert warned == []


def test_a_run_stopped_by_its_time_budget_still_leaves_a_measured_model_and_says_how_to_finish(tmp_path, data):
    from ssd import Detector
    from train.__main__ import cli

    (plain, _) = commands("python -m train ")
    run = tmp_path / "runs" / "mine"
    argv = placed(plain, {"my_photos": data["yolo"], "runs/mine": run}) + SHORT[2:] + ["--max-steps", "50"]
    assert cli(argv + ["--time-budget-s", "0.001"]) == 0
    card = card_of(run)
    assert not card["complete"] and "map_area" in card["val"] and "score_threshold" in card
    assert card["progress"]["stopped_by"] == "the time budget" and "the same command finishes it" in card["status"]
    assert Detector.load(run / "weights.safetensors").score_threshold == card["score_threshold"]
