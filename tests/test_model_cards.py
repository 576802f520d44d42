"""Model cards are checked against the real model: every difference is named."""

import pytest

from collector.config import Device
from collector.labeling.cards import CardError, load_card
from collector.labeling.models import Classifier, open_model
from collector.labeling.runtime import OnnxModel
from tests.conftest import write_colour_classifier


def test_a_matching_card_loads_and_its_model_runs(tmp_path):
    import numpy as np

    card = load_card(write_colour_classifier(tmp_path))
    model = open_model(card, Device.CPU, 1)
    assert model.provider == "CPUExecutionProvider"
    red = np.zeros((48, 48, 3), np.uint8)
    red[..., 0] = 255
    scores = Classifier(card, model, batch_size=4).scores([red] * 5)
    assert scores.shape == (5, 3)
    assert (scores.argmax(axis=1) == 0).all()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"input_name": "pixels"}, "input 'pixels' is not in the model, whose inputs are 'image'"),
        ({"input_shape": "[-1, 3, 128, 128]"}, "input 'image' has shape [-1, 3, 64, 64] in the model, the card says [-1, 3, 128, 128]"),
        ({"output_name": "logits_out"}, "output 'logits_out' (scores) is not in the model"),
        ({"output_shape": "[-1, 3, 1]"}, "output 'probs' has shape [-1, 3] in the model, the card says [-1, 3, 1]"),
        ({"labels": '"a", "b"'}, "the card has 2 labels but output 'probs' has 3 scores"),
        ({"sha256": "0" * 64}, "colour.onnx has sha256"),
    ],
)
def test_a_card_that_does_not_match_its_model_is_refused_with_the_difference(tmp_path, change, message):
    card = load_card(write_colour_classifier(tmp_path, **change))
    with pytest.raises(CardError) as error:
        open_model(card, Device.CPU, 1)
    assert message in str(error.value)
    assert str(card.path) in str(error.value)


def test_every_difference_is_listed_at_once(tmp_path):
    card = load_card(write_colour_classifier(tmp_path, input_shape="[-1, 3, 32, 32]", output_name="nope"))
    with pytest.raises(CardError) as error:
        open_model(card, Device.CPU, 1)
    assert "input 'image' has shape" in str(error.value) and "output 'nope'" in str(error.value)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"task": "segmentation"}, "task = 'segmentation' is not valid: expected one of"),
        ({"input_shape": "[-1, 1, 64, 64]"}, "is not a NCHW colour image"),
        ({"labels": ""}, "a classifier card needs labels"),
    ],
)
def test_malformed_cards_are_refused_when_read(tmp_path, change, message):
    with pytest.raises(CardError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_card(write_colour_classifier(tmp_path, **change))


def test_missing_and_unreadable_cards(tmp_path):
    with pytest.raises(CardError, match="does not exist"):
        load_card(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("name = ")
    with pytest.raises(CardError, match="not readable TOML"):
        load_card(tmp_path / "bad.toml")


def test_a_file_that_is_not_onnx_is_named(tmp_path):
    card_path = write_colour_classifier(tmp_path)
    (tmp_path / "colour.onnx").write_bytes(b"not a model")
    with pytest.raises(CardError, match="is not a loadable ONNX model"):
        open_model(load_card(card_path), Device.CPU, 1, OnnxModel)


def test_shipped_cards_match_their_models():
    from collector.labeling.models import MODELS_DIR, SHIPPED, shipped_card

    for task in SHIPPED:
        assert load_card(shipped_card(task)).task == task
    cards = sorted(MODELS_DIR.glob("*.toml"))
    assert len(cards) == 4  # the short-range face model ships too: it verifies face candidates (and serves close-up cameras)
    for path in cards:
        card = load_card(path)
        assert card.licence == "Apache-2.0" and "mediapipe 0.10.14" in card.source
        assert open_model(card, Device.CPU, 1).inputs[card.input.name][0][0] == -1  # batches of any size
