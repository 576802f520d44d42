"""The accept/reject policy: each threshold gives its own machine-readable reason and a sentence."""

import pytest

from collector.config import PolicyConfig
from collector.labeling.policy import decide, decision
from collector.labeling.quality import quality_score, stream_quality

GOOD_CAMERA = {
    "sampled_frames": 50,
    "hand_fraction": 0.95,
    "edge_blur_px": 1.6,
    "luma_mean": 120.0,
    "frozen_fraction": 0.0,
    "underexposed_fraction": 0.01,
    "overexposed_fraction": 0.0,
    "hands_overexposed_fraction": 0.02,
}
GOOD = {
    "duration_s": 10.0,
    "cameras": {"cam": GOOD_CAMERA},
    "streams": {
        "cam": {"kind": "camera", "frame_drop_fraction": 0.0, "longest_gap_s": 0.0},
        "imu": {"kind": "serial", "sample_loss_fraction": 0.0, "parse_error_rate": 0.0, "longest_gap_s": 0.0},
    },
    "privacy": {"faces": 0, "largest_area": 0.0, "blurred": True},
}


def facts(**changes):
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in GOOD.items()}
    out["cameras"] = {"cam": dict(GOOD_CAMERA, **changes.pop("camera", {}))}
    out["streams"] = {k: dict(v) for k, v in GOOD["streams"].items()}
    for name, change in changes.pop("streams", {}).items():
        out["streams"][name].update(change)
    out.update(changes)
    return out


def test_a_white_backdrop_behind_well_exposed_hands_is_not_over_exposure():
    backdrop = {"luma_mean": 200.0, "overexposed_fraction": 0.5, "hands_luma_mean": 150.0, "hands_overexposed_fraction": 0.05}
    assert decide(facts(camera=backdrop), PolicyConfig()) == []
    black = {"luma_mean": 28.0, "underexposed_fraction": 0.6, "hands_luma_mean": 120.0, "hands_underexposed_fraction": 0.01}
    assert decide(facts(camera=black), PolicyConfig()) == []
    blown = dict(backdrop, overexposed_fraction=0.7)
    assert [r.message for r in decide(facts(camera=blown), PolicyConfig())] == [
        "over-exposed: 70% of the picture is blown out to white around the hands (limit 55%)"
    ]
    dim_hands = dict(black, hands_luma_mean=25.0)
    assert [r.message for r in decide(facts(camera=dim_hands), PolicyConfig())] == ["too dark: mean luma of the hands 25 < 40"]


def test_a_good_clip_is_accepted():
    result = decision(decide(facts(), PolicyConfig()))
    assert result == {"status": "accepted", "accepted": True, "reasons": [], "summary": "accepted: every check passed"}


@pytest.mark.parametrize(
    "change, code, message",
    [
        ({"camera": {"hand_fraction": 0.18}}, "no_hands", "no hands in 82% of frames"),
        ({"camera": {"luma_mean": 23.0}}, "too_dark", "too dark: mean luma of the picture 23 < 40"),
        ({"camera": {"luma_mean": 240.0}}, "too_bright", "too bright: mean luma of the picture 240 > 220"),
        ({"camera": {"edge_blur_px": 5.2}}, "blurry", "too blurry: edges are smeared over 5.2 px at 480 px wide (limit 3.2 px)"),
        (
            {"camera": {"overexposed_fraction": 0.52, "hands_overexposed_fraction": None}},
            "too_bright",
            "over-exposed: 52% of the picture is blown out to white (limit 40%)",
        ),
        (
            {"camera": {"hands_luma_mean": 190.0, "hands_overexposed_fraction": 0.61}},
            "too_bright",
            "over-exposed hands: 61% of the hands is blown out to white (limit 30%)",
        ),
        ({"camera": {"underexposed_fraction": 0.7}}, "too_dark", "too dark: 70% of the picture is crushed to black (limit 50%)"),
        ({"camera": {"frozen_fraction": 0.35}}, "frozen", "35% of frames repeat the one before"),
        ({"streams": {"cam": {"frame_drop_fraction": 0.08}}}, "frame_drops", "camera cam dropped 8% of its frames"),
        ({"streams": {"imu": {"sample_loss_fraction": 0.07}}}, "sample_loss", "sensor imu lost 7% of its samples"),
        ({"streams": {"imu": {"parse_error_rate": 0.09}}}, "parse_errors", "sensor imu: 9% of what it sent did not parse"),
        ({"streams": {"imu": {"longest_gap_s": 2.3}}}, "stream_gap", "imu was missing for 2.3 s"),
        ({"duration_s": 0.6}, "too_short", "too short: 0.6 s < 1 s"),
        ({"privacy": {"faces": 1, "largest_area": 0.3, "blurred": True}}, "face_unblurrable", "a face region covers 30% of the frame"),
        ({"privacy": {"faces": 2, "largest_area": 0.0, "blurred": False}}, "faces_not_blurred", "2 face(s) seen and face blurring is off"),
        ({"cameras": {}}, "no_video", "no video"),
    ],
)
def test_each_threshold_gives_its_reason(change, code, message):
    reasons = decide(facts(**change), PolicyConfig())
    assert [r.code for r in reasons] == [code]
    assert message in reasons[0].message
    result = decision(reasons)
    assert result["accepted"] is False and result["status"] == "rejected"
    assert result["reasons"][0]["code"] == code and message in result["summary"]


def test_several_reasons_are_all_given():
    reasons = decide(facts(camera={"hand_fraction": 0.0, "luma_mean": 10.0}), PolicyConfig())
    assert [r.code for r in reasons] == ["no_hands", "too_dark"]


def test_thresholds_come_from_config():
    assert decide(facts(camera={"luma_mean": 50.0}), PolicyConfig(min_luma=60.0))[0].code == "too_dark"
    assert decide(facts(camera={"hand_fraction": 0.3}), PolicyConfig(min_hand_fraction=0.2)) == []


def test_stream_quality_from_the_recorders_counts():
    manifest = {
        "streams": [
            {"name": "cam", "kind": "camera", "count": 95, "dropped": 3, "late": 2, "gaps": []},
            {
                "name": "imu",
                "kind": "serial",
                "count": 900,
                "lost": 100,
                "dropped": 0,
                "parse_errors": {"garbage": 10},
                "gaps": [{"start_ns": 0, "end_ns": 1_500_000_000, "reason": "unplugged"}],
            },
        ]
    }
    q = stream_quality(manifest)
    assert q["cam"] == {"kind": "camera", "longest_gap_s": 0.0, "frame_drop_fraction": 0.05}
    assert q["imu"] == {"kind": "serial", "longest_gap_s": 1.5, "sample_loss_fraction": 0.1, "parse_error_rate": 0.011}


def test_quality_score_is_high_for_a_good_clip_and_falls_with_each_fault():
    policy = PolicyConfig()
    good = quality_score(0.95, GOOD_CAMERA, GOOD["streams"], policy)
    assert 0.9 < good <= 1.0
    assert quality_score(0.3, GOOD_CAMERA, GOOD["streams"], policy) < good
    assert quality_score(0.95, dict(GOOD_CAMERA, edge_blur_px=3.2), GOOD["streams"], policy) < good
    assert quality_score(0.95, dict(GOOD_CAMERA, luma_mean=45.0), GOOD["streams"], policy) < good
    assert quality_score(0.0, GOOD_CAMERA, GOOD["streams"], policy) == 0.0
