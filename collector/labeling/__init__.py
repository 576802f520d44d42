"""Labeling on the device: models (hands, faces), quality metrics, privacy blur and the accept/reject policy.

The labeler (OpenCV, onnxruntime) loads when it is first named, so importing a light part of this package
(its model cards, the policy) does not pay for it."""

__all__ = ["FrameDetections", "LabelError", "Labeled", "Labeler"]


def __getattr__(name: str):
    if name in __all__:
        from collector.labeling import labeler

        return getattr(labeler, name)
    raise AttributeError(f"module 'collector.labeling' has no attribute {name!r}")
