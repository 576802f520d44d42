"""The detectors' geometry on numbers: anchors, box decoding, suppression, letterboxing and hand crops."""

import math

import numpy as np
import pytest

from collector.labeling.cards import InputSpec
from collector.labeling.detection import Roi, apply_affine, crop_roi, decode_ssd, fit, palm_roi, place, roi_matrix, ssd_anchors, tiles, to_tensor, weighted_nms
from collector.labeling.privacy import blur

PALM = {"input_size": 192, "strides": [8, 16, 16, 16], "anchor_offset": 0.5, "box_scale": 192.0}


def test_anchor_counts_match_mediapipe():
    assert len(ssd_anchors(PALM)) == 2016
    assert len(ssd_anchors({"input_size": 128, "strides": [8, 16, 16, 16]})) == 896
    assert len(ssd_anchors({"input_size": 192, "strides": [4], "interpolated_scale_aspect_ratio": 0.0})) == 2304
    anchors = ssd_anchors(PALM)
    assert anchors[0].tolist() == pytest.approx([0.5 / 24, 0.5 / 24])
    assert anchors[1].tolist() == anchors[0].tolist()  # two anchors per cell on the first grid
    assert anchors[1152].tolist() == pytest.approx([0.5 / 12, 0.5 / 12])


def test_box_decoding_relative_to_the_anchor():
    anchors = ssd_anchors(PALM)
    boxes = np.zeros((1, 2016, 18), np.float32)
    scores = np.full((1, 2016, 1), -10.0, np.float32)
    boxes[0, 300, :4] = [19.2, -9.6, 38.4, 19.2]  # +0.1, -0.05 from the anchor; 0.2 x 0.1
    boxes[0, 300, 4:6] = [0.0, 0.0]
    scores[0, 300] = 2.0
    rows = decode_ssd(boxes, scores, anchors, PALM, threshold=0.5)[0]
    assert len(rows) == 1
    cx, cy = anchors[300] + [0.1, -0.05]
    assert rows[0, :4].tolist() == pytest.approx([cx - 0.1, cy - 0.05, cx + 0.1, cy + 0.05], abs=1e-6)
    assert rows[0, 4] == pytest.approx(1 / (1 + math.exp(-2)))
    assert rows[0, 5:7].tolist() == pytest.approx(anchors[300].tolist())


def test_weighted_nms_merges_overlapping_boxes_and_keeps_separate_ones():
    rows = np.array(
        [
            [0.0, 0.0, 10.0, 10.0, 0.9],
            [1.0, 1.0, 11.0, 11.0, 0.6],
            [50.0, 50.0, 60.0, 60.0, 0.7],
        ]
    )
    merged = weighted_nms(rows, 0.3)
    assert len(merged) == 2
    assert merged[0, 4] == 0.9
    assert merged[0, 0] == pytest.approx(0.6 / 1.5)
    assert merged[1, :4].tolist() == pytest.approx([50.0, 50.0, 60.0, 60.0])


def test_letterbox_placement_maps_input_back_to_frame_pixels():
    spec = InputSpec(name="x", shape=(1, 192, 192, 3), layout="NHWC")
    frame = np.zeros((480, 640, 3), np.uint8)
    image, placement = fit(frame, spec)
    assert image.shape == (192, 192, 3)
    # 640 wide -> 192: scale 0.3, 144 rows of picture, 24 rows of padding above.
    assert placement.to_frame(np.array([[0.0, 24 / 192], [1.0, 168 / 192]])).ravel().tolist() == pytest.approx([0, 0, 640, 480], abs=1e-6)
    _, tile = fit(frame, spec, (320, 0, 640, 480))
    assert placement.to_frame(np.array([[0.5, 0.5]]))[0].tolist() == pytest.approx([320, 240])
    assert tile.to_frame(np.array([[0.5, 0.5]]))[0].tolist() == pytest.approx([480, 240])
    rows = place(np.array([[0.25, 0.25, 0.75, 0.75, 0.9, 0.5, 0.5]]), placement)
    assert rows[0, [0, 2, 4, 5]].tolist() == pytest.approx([160, 480, 0.9, 320])


def test_tensor_layout_and_range_follow_the_card():
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 0] = 255
    nchw = to_tensor([image], InputSpec(name="x", shape=(1, 3, 2, 2), layout="NCHW", range=(-1.0, 1.0)))
    assert nchw.shape == (1, 3, 2, 2) and nchw[0, 0, 0, 0] == 1.0 and nchw[0, 1, 0, 0] == -1.0
    bgr = to_tensor([image], InputSpec(name="x", shape=(1, 2, 2, 3), layout="NHWC", color="BGR"))
    assert bgr[0, 0, 0].tolist() == [0.0, 0.0, 1.0]


def test_tiles_overlap_and_cover_the_frame():
    windows = tiles(640, 480, (2, 2), 0.25)
    assert len(windows) == 4
    assert windows[0][0] == 0 and windows[-1][2] == 640 and windows[-1][3] == 480
    assert windows[1][0] < windows[0][2]  # they overlap


def test_palm_roi_points_the_fingers_up():
    # Wrist (kp 0) below middle-finger base (kp 2): already upright, so no rotation, shifted up by half the box.
    upright = np.array([100, 100, 140, 140, 0.9, 120, 140, 0, 0, 120, 100] + [0] * 8, float)
    roi = palm_roi(upright, {})
    assert roi.angle == pytest.approx(0.0) and (roi.cx, roi.cy) == pytest.approx((120, 100)) and roi.size == pytest.approx(104)
    # Fingers pointing right: turned by 90 degrees, shifted right.
    sideways = np.array([100, 100, 140, 140, 0.9, 100, 120, 0, 0, 140, 120] + [0] * 8, float)
    roi = palm_roi(sideways, {})
    assert roi.angle == pytest.approx(math.pi / 2) and (roi.cx, roi.cy) == pytest.approx((140, 120))


def test_rotated_crop_and_its_inverse_agree():
    frame = np.zeros((200, 200, 3), np.uint8)
    frame[90:110, 150:170] = 255  # a bright patch right of the centre
    crop, inverse = crop_roi(frame, Roi(100, 100, 200, math.pi / 2), 100)
    ys, xs = np.nonzero(crop[..., 0] > 128)
    assert ys.mean() < 40 and abs(xs.mean() - 50) < 3  # turned to point up
    assert apply_affine(inverse, np.array([[xs.mean(), ys.mean()]]))[0].tolist() == pytest.approx([160, 100], abs=1.5)


def test_blur_changes_only_the_boxes():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)
    before = frame.copy()
    blur(frame, [(10, 10, 50, 50)])
    changed = np.abs(frame.astype(int) - before).sum(axis=2) > 0
    assert changed[10:50, 10:50].mean() > 0.9
    changed[10:50, 10:50] = False
    assert not changed.any()
    assert frame[10:50, 10:50].std() < before[10:50, 10:50].std() / 4


def test_a_tracked_hand_is_cropped_upright_around_its_landmarks():
    from collector.labeling.detection import landmark_roi

    rng = np.random.default_rng(0)
    # A hand pointing left: wrist at (300, 200), middle-finger base at (250, 200), fingers spreading leftwards.
    hand = np.column_stack([300 - rng.uniform(0, 100, 21), 200 + rng.uniform(-30, 30, 21)])
    hand[0], hand[9] = (300, 200), (250, 200)
    roi = landmark_roi(hand, {"track_roi_scale": 2.0, "track_roi_shift_y": -0.1})
    assert math.degrees(roi.angle) == pytest.approx(-90.0)
    inside = apply_affine(roi_matrix(roi, 224), hand)
    assert (inside >= 0).all() and (inside <= 224).all()  # the whole hand is in the crop
    wrist, middle = inside[0], inside[9]
    assert wrist[1] > middle[1] and abs(wrist[0] - middle[0]) < 1e-6  # turned upright: fingers up
    assert roi.cx < 300  # shifted towards the fingers


def test_a_dim_frame_is_brightened_for_the_face_model_and_a_well_exposed_one_is_left_alone():
    from collector.labeling.detection import LIFT_BELOW, LIFT_MAX_GAIN, LIFT_TO, lifted

    rng = np.random.default_rng(2)
    scene = rng.integers(0, 200, (120, 160, 3), dtype=np.uint8)
    assert lifted(scene) is scene  # mean about 100: as it is
    dim = (scene * 0.16).astype(np.uint8)
    bright = lifted(dim)
    assert bright.mean() == pytest.approx(LIFT_TO, rel=0.1)
    assert np.corrcoef(bright.ravel(), scene.ravel())[0, 1] > 0.99  # the same picture, not a new one
    black = np.full((40, 40, 3), 2, np.uint8)
    assert lifted(black).max() == int(2 * LIFT_MAX_GAIN)  # noise in the dark is not made a picture
    assert float(lifted(np.full((8, 8, 3), LIFT_BELOW, np.uint8)).mean()) == LIFT_BELOW
