"""The page never shows stale numbers: every view that was computed from a photo, its ground truth, the
thresholds or the model is cleared (or computed again) when they change, a failed upload leaves nothing of the
photo before, and one value reads the same in every view. The tabs' handlers, called as the page calls them, on two
small random-weight models; what only a browser shows is in tests/test_browser.py."""

from __future__ import annotations

import os
import re

import pytest

from bench.app_server import export_random_weights, received_dir
from visualize.examples import example_image

gr = pytest.importorskip("gradio")

from ui.demo_models import DemoModels  # noqa: E402

A, B = "random_a", "random_b"
SCORE = 0.05  # random weights score every class near 1/21: plenty of detections above this


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    weights = export_random_weights(d, seed=0, name=A), export_random_weights(d, seed=1, name=B, score_threshold=0.2)
    return DemoModels.load(os.pathsep.join(str(w) for w in weights), "torch")


@pytest.fixture(scope="module")
def uploads():
    """Files as Gradio receives them (the page's handlers read only its upload folder): two photos, a non-image."""
    d = received_dir("consistency")
    example_image("astronaut").save(d / "astronaut.jpg")
    example_image("cat").save(d / "cat.jpg")
    (d / "notes.png").write_text("not an image")
    return {name: {"path": str(d / name), "orig_name": name} for name in ("astronaut.jpg", "cat.jpg", "notes.png")}


def row(i: int):
    """A click on row `i` of a table."""
    return gr.SelectData(None, {"index": [i, 0], "value": None})


def skipped(values) -> bool:
    return all(v == gr.skip() for v in values)


# ------------------------------------------------------------------------------------------ Matching: the loss
def test_the_loss_section_is_cleared_when_the_photo_its_ground_truth_or_the_model_changes(models, uploads):
    """The astronaut once said "9 positives" above a loss of the motorbike's N = 24 with its horse and cow rows."""
    from ui.matching_tab import MatchingTab

    matching = MatchingTab(models)
    state, rows, *_ = matching.load_example("motorcycle")

    def loss(state, rows, threshold=0.5, model=A):
        text, positives, negatives = matching.loss_view(state, rows, threshold, None, model)
        assert "N = " in text and positives
        return text

    def loss_section(state, rows, threshold=0.5, show_negatives=False, model=A):
        """The loss section's outputs of the refresh that follows an action (the last three of the refresh)."""
        return matching.refresh(state, rows, threshold, show_negatives, None, None, None, None, None, model)[-3:]

    def cleared(section) -> bool:
        text, positives, negatives = section
        return "N = " not in (text or "") and not positives and not negatives

    loss(state, rows)
    # What changes neither the photo, its ground truth, the threshold nor the model leaves the loss as it is.
    assert skipped(loss_section(state, rows, show_negatives=True))
    assert skipped(loss_section(state, [list(r) for r in rows]))  # the same rows, sent again
    # Another example photo.
    astronaut, astronaut_rows, *_ = matching.load_example("astronaut")
    assert cleared(loss_section(astronaut, astronaut_rows))
    # One's own photo.
    loss(astronaut, astronaut_rows)
    mine, mine_rows, *_ = matching.load_upload(uploads["cat.jpg"])
    assert cleared(loss_section(mine, mine_rows))
    # The other model (its own forward pass), then back.
    loss(astronaut, astronaut_rows)
    assert cleared(loss_section(astronaut, astronaut_rows, model=B))
    loss(astronaut, astronaut_rows)
    assert cleared(loss_section(astronaut, astronaut_rows, model=A)) is False
    # Its ground truth: a box added, the table cleared, detections used as ground truth; and the IoU threshold.
    for other_rows in (astronaut_rows + [["dog", 10, 10, 100, 100]], []):
        loss(astronaut, astronaut_rows)
        assert cleared(loss_section(astronaut, other_rows))
    loss(astronaut, astronaut_rows)
    assert cleared(loss_section(astronaut, astronaut_rows, threshold=0.6))


# ------------------------------------------------------------------------------------ Detect: the journey
def test_the_journey_and_the_nms_view_are_cleared_when_their_detections_change(models, uploads):
    """A cat's journey (its default box, its NMS) stayed on screen after a switch to the other model and after a
    failed upload."""
    from ui.detect_tab import DetectTab

    tab = DetectTab(models)
    photo, cat, bad = uploads["astronaut.jpg"], uploads["cat.jpg"], uploads["notes.png"]

    def journey_shown(nms_open=True):
        out = tab.detect_page(nms_open, None, photo, SCORE, 0.45, 200, [], A)
        state = out[4]
        text, picture, bars, picked = tab.journey_view(state, SCORE, 0.45, 200, [], row(0))
        assert "Default box d = #" in text and picture is not None and bars and picked is not None
        return state

    def journey_cleared(out, nms_open=True):
        """The outputs of an action on the page: (picture, table, data, summary, state, NMS text, rows, class,
        journey text, picture, scores, the picked detection)."""
        text, picture, bars, picked = out[8:12]
        assert "Default box d = #" not in text and picture is None and not bars and picked is None
        nms_text, nms_rows = out[5:7]
        if nms_open:  # computed again for the new detections
            assert "kept by NMS" in nms_text
        else:  # nothing of the old detections stays behind the closed accordion
            assert not nms_text and not nms_rows

    journey_shown()
    journey_cleared(tab.detect_page(True, None, cat, SCORE, 0.45, 200, [], A))  # another photo
    journey_shown()
    journey_cleared(tab.detect_page(True, None, photo, SCORE, 0.45, 200, [], A))  # Detect pressed again
    # The other model: its own detections of the same photo, the old journey and NMS view gone.
    journey_shown()
    out = tab.on_model(False, None, photo, 0.45, 200, [], B)
    assert out[4].model == B
    journey_cleared(out, nms_open=False)
    # A file that is not an image: one message where the summary was, nothing of the photo before.
    journey_shown()
    out = tab.detect_page(True, None, bad, SCORE, 0.45, 200, [], A)
    picture, table, data, summary, state = out[:5]
    assert picture is None and not table and data is None and state is None
    assert "is not an image this demo can read" in summary
    text, picture, bars, picked = out[8:12]
    assert "Default box d = #" not in text and picture is None and not bars and picked is None
    assert "kept by NMS" not in (out[5] or "") and not out[6]


def test_the_sliders_keep_the_journey_of_the_same_detection_or_clear_it(models, uploads):
    from ui.detect_tab import DetectTab

    tab = DetectTab(models)
    out = tab.detect_page(False, None, uploads["astronaut.jpg"], SCORE, 0.45, 200, [], A)
    state, table = out[4], out[1]
    second = table[1]
    *_, picked = tab.journey_view(state, SCORE, 0.45, 200, [], row(1))
    # Only the best detection's class left: the second row's detection is now another row, or gone.
    moved = tab.on_sliders(state, False, None, SCORE, 0.45, 200, [second[1]], picked)
    rows = moved[1]
    text, picture, bars, picked_again = moved[7:11]
    same = [r for r in rows if r[-1] == second[-1]]  # its default box
    assert same, "the class filter keeps the detection's own class"
    number = rows.index(same[0]) + 1
    assert text.startswith(f"**Detection #{number}: {second[1]}**") and picture is not None
    assert picked_again == picked
    # A score threshold above every detection: the journey's detection is gone, and so is the journey.
    gone = tab.on_sliders(state, False, None, 0.99, 0.45, 200, [], picked)
    text, picture, bars, picked_again = gone[7:11]
    assert not gone[1] and "Default box d = #" not in text and picture is None and picked_again is None
    assert skipped(tab.on_sliders(None, False, None, 0.5, 0.45, 200, [], None))


def test_a_new_image_that_the_page_reports_twice_runs_the_network_once(models, uploads, monkeypatch):
    """Gradio's image input fires its change event twice for an upload after the first: the second, for the
    photo and model whose detections are already shown, changes nothing (and a failed upload says so once, in the
    summary, instead of raising twice)."""
    from ui.detect_tab import DetectTab

    tab = DetectTab(models)
    model = models.get(A)
    calls = []
    real = model.predict
    monkeypatch.setattr(model, "predict", lambda *a, **k: calls.append(1) or real(*a, **k))
    photo = uploads["astronaut.jpg"]
    out = tab.on_image(None, False, None, photo, SCORE, 0.45, 200, [], A)
    state = out[4]
    assert len(calls) == 1 and state is not None
    assert skipped(tab.on_image(state, False, None, photo, SCORE, 0.45, 200, [], A))
    assert len(calls) == 1
    # Another photo, or the same photo through the other model, runs a network.
    assert tab.on_image(state, False, None, uploads["cat.jpg"], SCORE, 0.45, 200, [], A)[4].model == A
    assert tab.on_image(state, False, None, photo, SCORE, 0.45, 200, [], B)[4].model == B
    bad = tab.on_image(state, False, None, uploads["notes.png"], SCORE, 0.45, 200, [], A)
    assert bad[4] is None and "is not an image" in bad[3]


# ------------------------------------------------------------------------------- one box, one number
def test_one_box_reads_the_same_in_the_table_the_journey_the_nms_view_and_the_api(models, uploads):
    """The astronaut's table said 32, 16, 371, 505, the journey and the NMS table 370, the API 370.5. The rule:
    pixel coordinates to one decimal, rounded once from the detection's box, as the API returns them."""
    from ui.detect_tab import DetectTab

    tab = DetectTab(models)
    picture, table, data, *_ = tab.detect(uploads["astronaut.jpg"], SCORE, 0.45, 200, [], A)
    out = tab.detect_page(True, None, uploads["astronaut.jpg"], SCORE, 0.45, 200, [], A)
    state, nms_rows = out[4], out[6]
    best = data["detections"][0]
    want = ", ".join(f"{v:.1f}" for v in best["box"])
    assert [round(v, 1) for v in best["box"]] == best["box"]
    assert table[0][3] == want == out[1][0][3]
    text = tab.journey_view(state, SCORE, 0.45, 200, [], row(0))[0]
    assert f"box = ({want}) px" in text
    kept = [r for r in nms_rows if r[3] == f"#{best['prior_index']}"]
    assert kept and kept[0][2] == want
    assert tab.nms_api(uploads["astronaut.jpg"], best["label"], SCORE, 0.45, A)["candidates"][0]["box"] == best["box"]
    # Every detection's box, in every row.
    for r, d in zip(table, data["detections"]):
        assert r[3] == ", ".join(f"{v:.1f}" for v in d["box"])


def test_scores_and_probabilities_have_one_number_of_decimals_per_column(models, uploads):
    """An NMS score read 0.4 beside 0.901."""
    from ui.detect_tab import DetectTab
    from visualize.nms import Candidate, nms_table

    rows = nms_table([Candidate(1, 7, 0.901, [0, 0, 0.5, 0.5], True), Candidate(2, 8, 0.4, [0, 0, 0.5, 0.5], False, 1,
                                                                                  0.5)], 100, 100)
    assert [r[1] for r in rows] == ["0.901", "0.400"]
    assert rows[1][-1] == "suppressed by #1 (IoU 0.50)"
    tab = DetectTab(models)
    out = tab.detect_page(True, None, uploads["astronaut.jpg"], SCORE, 0.45, 200, [], A)
    scores = [r[2] for r in out[1]] + [r[1] for r in out[6]]
    assert scores and all(re.fullmatch(r"\d\.\d{3}", s) for s in scores), scores
    bars = tab.journey_view(out[4], SCORE, 0.45, 200, [], row(0))[2]
    assert all(re.fullmatch(r"\d\.\d{3}", r[1]) for r in bars), bars


def test_counts_agree_with_their_nouns(models, uploads):
    """ "1 are person" in the NMS view."""
    from ui.detect_tab import DetectTab

    tab = DetectTab(models)
    out = tab.detect_page(True, None, uploads["astronaut.jpg"], SCORE, 0.45, 1, [], A)  # top-k 1: one detection
    assert re.search(r"Of the 1 detection shown \(top-k 1 over all classes\), 1 is \w+\.", out[5]), out[5]


def test_the_loss_tables_fit_the_page(models):
    """The positives' table had 14 columns and its p(class) and CE were cut off: the default box is one column
    (as in the Detect table), the four smooth-L1 terms another; every number with a fixed number of decimals."""
    from ui.matching_tab import MatchingTab
    from visualize.loss import NEGATIVE_HEADERS, POSITIVE_HEADERS

    assert len(POSITIVE_HEADERS) <= 8 and POSITIVE_HEADERS[-2:] == ["p(class)", "CE"]
    assert len(NEGATIVE_HEADERS) <= 6
    matching = MatchingTab(models)
    state, rows, *_ = matching.load_example("astronaut")
    _, positives, negatives = matching.loss_view(state, rows, 0.5, None, A)
    for r in positives:
        assert len(r) == len(POSITIVE_HEADERS)
        assert re.fullmatch(r"(\d+\.\d{3}, ){3}\d+\.\d{3}", r[4]), r
    assert all(len(r) == len(NEGATIVE_HEADERS) for r in negatives)


# ------------------------------------------------------------------------------- Default boxes: the cell
def test_a_cell_beyond_the_feature_map_shows_the_cell_drawn():
    """Row 99 typed into "Cell row i" of a 24x24 map: the picture used row 23, and the box kept saying 99."""
    import ssd
    from ui import priors_tab

    f = ssd.SSD300_VOC.feature_maps[1]
    caption = priors_tab.priors_view("SSD300", 1, 99, -3, ["1"], True, "cat")[3]
    assert f"Cell ({f - 1}, 0)" in caption
    assert priors_tab.on_cell("SSD300", 1, 99) == f - 1 and priors_tab.on_cell("SSD300", 1, -3) == 0
    assert priors_tab.on_cell("SSD300", 1, 7.0) == gr.skip()  # a cell of the map stays as it is


# ------------------------------------------------------------------------------- Augmentation
def test_the_zoom_out_ratio_says_it_is_not_used_while_the_zoom_out_is_random():
    from ui.augment_tab import expand_slider

    random_slider, chosen = expand_slider(True), expand_slider(False)
    assert random_slider.interactive is False and "random" in random_slider.label
    assert chosen.interactive is True and "random" not in chosen.label


def test_the_augmentation_steps_are_numbered_pictures_in_order(models):
    """Six pictures, one per step, each named by its number and step, in the page's reading order (a gallery
    showed them as a collection of thumbnails)."""
    import app
    from ui.augment_tab import STEP_NAMES

    demo = app.build_demo(models)
    steps = [b for b in demo.blocks.values() if str(getattr(b, "elem_id", "")).startswith("augment-step-")]
    assert [b.elem_id for b in steps] == [f"augment-step-{i}" for i in range(6)]
    assert [b.label for b in steps] == [f"{i} · {n}" for i, n in enumerate(STEP_NAMES)]
    assert not any(isinstance(b, gr.Gallery) and b.visible for b in demo.blocks.values()
                   if str(getattr(b, "elem_id", "")).startswith("augment"))
