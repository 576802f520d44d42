"""Why the validator rejected a clip: one code per reason, as the registry records it in BatchSettled.

Codes are part of the chain's record: never renumber one. `STRIKES` are the reasons that count against the
device that submitted the clip (a claim the content contradicts, content already paid): the registry is
deployed with them as its strike mask."""

from __future__ import annotations

from enum import IntEnum


class Reason(IntEnum):
    UNREADABLE = 1
    BAD_SIGNATURE = 2
    FILE_MISMATCH = 3
    DEVICE_REJECTED = 4
    DUPLICATE_CID = 5
    DUPLICATE_VIDEO = 6
    MALFORMED = 7
    NO_VIDEO = 8
    POLICY_REJECTED = 9
    CLAIM_MISMATCH = 10
    NEAR_DUPLICATE_VIDEO = 11
    NEAR_DUPLICATE_SENSORS = 12
    DUPLICATE_SENSORS = 13

    @property
    def text(self) -> str:
        return _TEXTS[self]

    @property
    def strike(self) -> bool:
        return self in STRIKES

    @classmethod
    def describe(cls, code: int) -> str:
        """The sentence for a code read from the chain; a code this version does not know is named as such."""
        try:
            return cls(code).text
        except ValueError:
            return f"rejected (reason code {code})"


STRIKES = frozenset(
    {
        Reason.DUPLICATE_CID,
        Reason.DUPLICATE_VIDEO,
        Reason.DUPLICATE_SENSORS,
        Reason.CLAIM_MISMATCH,
        Reason.NEAR_DUPLICATE_VIDEO,
        Reason.NEAR_DUPLICATE_SENSORS,
    }
)


def strike_mask(reasons=STRIKES) -> int:
    """The registry's strike mask: bit r set when reason code r counts against the device."""
    return sum(1 << int(r) for r in reasons)


_TEXTS = {
    Reason.UNREADABLE: "unreadable: the clip could not be fetched or decoded by its CID",
    Reason.BAD_SIGNATURE: "bad signature: the manifest is not signed by the submitting device for this network",
    Reason.FILE_MISMATCH: "file mismatch: the clip's files differ from its manifest or from the bundle format",
    Reason.DEVICE_REJECTED: "not accepted by the device's own policy",
    Reason.DUPLICATE_CID: "duplicate: the same CID was paid before",
    Reason.DUPLICATE_VIDEO: "duplicate: the same video was paid before",
    Reason.MALFORMED: "malformed: the manifest or a file cannot be read as the bundle format says",
    Reason.NO_VIDEO: "no video: the clip has no camera video to check",
    Reason.POLICY_REJECTED: "rejected by the network's policy when the validator labeled the clip itself",
    Reason.CLAIM_MISMATCH: "claim mismatch: the device's labels or quality differ from what the validator measured",
    Reason.NEAR_DUPLICATE_VIDEO: "near duplicate: the video is a copy (re-encoded, trimmed, cropped or retimed) of a paid clip",
    Reason.NEAR_DUPLICATE_SENSORS: "near duplicate: the sensor log is a copy of a paid clip's",
    Reason.DUPLICATE_SENSORS: "duplicate: the same sensor log was paid before",
}
