"""Why the validator rejected a clip: one code per reason, as the registry records it in BatchSettled."""

from __future__ import annotations

from enum import IntEnum


class Reason(IntEnum):
    UNREADABLE = 1
    BAD_SIGNATURE = 2
    FILE_MISMATCH = 3
    DEVICE_REJECTED = 4
    DUPLICATE_CID = 5
    DUPLICATE_VIDEO = 6

    @property
    def text(self) -> str:
        return _TEXTS[self]

    @classmethod
    def describe(cls, code: int) -> str:
        """The sentence for a code read from the chain; a code this version does not know is named as such."""
        try:
            return cls(code).text
        except ValueError:
            return f"rejected (reason code {code})"


_TEXTS = {
    Reason.UNREADABLE: "unreadable: the clip could not be fetched or decoded by its CID",
    Reason.BAD_SIGNATURE: "bad signature: the manifest is not signed by the submitting device",
    Reason.FILE_MISMATCH: "file mismatch: a file's sha256 differs from the manifest",
    Reason.DEVICE_REJECTED: "not accepted by the device's own policy",
    Reason.DUPLICATE_CID: "duplicate: the same CID was submitted before",
    Reason.DUPLICATE_VIDEO: "duplicate: the same video was submitted before under another clip id",
}
