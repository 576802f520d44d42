"""Face tracks: confirmed before they are blurred, never on a hand, followed between detections (pure logic)."""

from dataclasses import dataclass

import numpy as np

from collector.labeling.tracking import FaceTracker, TrackerConfig, face_shaped, on_a_hand


@dataclass
class Det:
    box: tuple
    score: float
    keypoints: np.ndarray | None = None


def face(x: float, y: float, size: float = 40.0, score: float = 0.9) -> Det:
    """A detection with keypoints where a face has them: eyes in the upper half, nose, mouth below."""
    box = (x, y, x + size, y + size)
    kps = np.array([[x + 0.3 * size, y + 0.35 * size], [x + 0.7 * size, y + 0.35 * size], [x + 0.5 * size, y + 0.55 * size], [x + 0.5 * size, y + 0.75 * size]])
    return Det(box, score, kps)


def hand_at(x: float, y: float, size: float = 80.0) -> np.ndarray:
    """21 landmarks spread over a square (an open hand seen flat)."""
    rng = np.random.default_rng(0)
    return np.array([x, y]) + rng.uniform(0, size, (21, 2))


def track(frames, fps=30.0, config=None):
    tracker = FaceTracker(fps, 640, 480, config or TrackerConfig())
    out = [tracker.update(i, faces, hands) for i, (faces, hands) in enumerate(frames)]
    for index, box in tracker.take_backfill():
        out[index].append(box)
    return out, tracker


def test_a_sure_face_is_blurred_from_its_first_frame():
    out, _ = track([([face(100, 100)], [])] + [([face(100 + i, 100)], []) for i in range(1, 5)])
    assert all(len(boxes) == 1 for boxes in out)
    x1, y1, x2, y2 = out[0][0]
    assert x1 <= 100 and y1 <= 100 and x2 >= 140 and y2 >= 140  # the face and its margin


def test_a_middling_face_needs_to_persist_and_then_its_first_frame_is_blurred_too():
    once, _ = track([([face(100, 100, score=0.65)], [])] + [([], [])] * 20)
    assert not any(once)  # seen once at 0.65: not sure enough to blur
    twice, _ = track([([face(100, 100, score=0.65)], []), ([face(102, 100, score=0.5)], [])])
    assert all(twice)  # seen again: blurred, including the frame where it first appeared


def test_a_face_on_a_hand_is_never_blurred():
    hand = hand_at(90, 90, 80)
    out, tracker = track([([face(110, 110, score=0.9)], [hand])] * 10)
    assert not any(out)
    assert tracker.rejected_as_hands == 10


def test_a_face_beside_a_hand_is_still_blurred():
    hand = hand_at(300, 300, 80)
    out, _ = track([([face(100, 100)], [hand])] * 5)
    assert all(out)


def test_a_lost_face_stays_blurred_for_the_hold_then_is_dropped():
    frames = [([face(100, 100)], [])] * 3 + [([], [])] * 30
    out, _ = track(frames, fps=30.0, config=TrackerConfig(hold_s=0.5))
    assert all(out[:18])  # 3 seen + 15 held (0.5 s at 30 fps)
    assert not any(out[19:])


def test_frames_the_model_did_not_look_at_keep_the_track_without_ageing_its_evidence():
    frames = [([face(100, 100)], [])] + [(None, [])] * 5 + [([face(104, 100)], [])]
    out, _ = track(frames)
    assert all(out)


def test_keypoints_must_form_a_face():
    good = face(100, 100)
    assert face_shaped(good.box, good.keypoints)
    flat = good.keypoints.copy()
    flat[3] = flat[0] + [5, 1]  # mouth beside an eye
    assert not face_shaped(good.box, flat)
    outside = good.keypoints + [200, 0]
    assert not face_shaped(good.box, outside)
    assert face_shaped(good.box, None)  # a detector without keypoints is not second-guessed


def test_on_a_hand_needs_eyes_nose_and_mouth_inside_the_hand():
    hand = hand_at(90, 90, 80)
    inside = face(110, 110)
    assert on_a_hand(inside.keypoints, inside.box, [hand])
    assert not on_a_hand(inside.keypoints, inside.box, [])
    far = face(400, 400)
    assert not on_a_hand(far.keypoints, far.box, [hand])


def test_a_middling_detection_counts_only_when_a_second_model_calls_it_a_face():
    plate = [([face(100, 100, score=0.7)], [])] * 10
    tracker = FaceTracker(30.0, 640, 480, TrackerConfig())
    refused = [tracker.update(i, faces, hands, verify=lambda box: 0.4) for i, (faces, hands) in enumerate(plate)]
    assert not any(refused)
    assert 1 <= tracker.verifications <= 10  # asked only while the track is not yet at a face's score
    tracker = FaceTracker(30.0, 640, 480, TrackerConfig())
    confirmed = [tracker.update(i, faces, hands, verify=lambda box: 0.9) for i, (faces, hands) in enumerate(plate)]
    assert all(confirmed[1:])
    assert tracker.verifications == 1
    # A sure detection is asked too (the face model is sure of shirts in dark, noisy pictures).
    shirt = FaceTracker(30.0, 640, 480, TrackerConfig())
    assert not shirt.update(0, [face(100, 100, score=0.95)], [], verify=lambda box: 0.7)
    sure = FaceTracker(30.0, 640, 480, TrackerConfig())
    assert sure.update(0, [face(100, 100, score=0.95)], [], verify=lambda box: 0.9)
