"""On-device labeling: ONNX models label each clip, blur faces, measure quality and decide accept/reject."""
from collector.labeling.labeler import LabelError, Labeled, Labeler

__all__ = ["LabelError", "Labeled", "Labeler"]
