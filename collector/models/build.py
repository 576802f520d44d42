"""Rebuild the pretrained ONNX models shipped in ``collector/models/`` and their TOML cards.

This is a maintainer tool. The ``collector`` package never imports it at run time (the
package only reads the ``.onnx`` files and the ``.toml`` cards). It needs TensorFlow, which
the product does not depend on, so run it in a throwaway virtual environment::

    python3.11 -m venv /tmp/knack-models-venv
    /tmp/knack-models-venv/bin/pip install "tensorflow-cpu==2.21.0" "tf2onnx==1.17.0" \
        "onnx==1.23.2" "onnxruntime==1.32.0" "numpy==2.4.6"
    /tmp/knack-models-venv/bin/python collector/models/build.py

Everything comes from registry packages; no other network access is needed. What it does:

1. ``pip download mediapipe==0.10.14 --no-deps`` (the cp311 manylinux x86-64 wheel; Apache-2.0)
   unless ``--wheel PATH`` names an already downloaded copy, and reads four TFLite files out of
   it (``mediapipe/modules/...``), checking their sha256 against the values pinned below.
2. ``face_detection_full_range_sparse.tflite`` stores its weights as sparse tensors behind
   DENSIFY ops, which neither tf2onnx nor tflite2onnx converts. The TFLite interpreter (without
   the XNNPACK delegate, which would not fill those tensors) computes the dense weights; they are
   written back as ordinary constant buffers and the DENSIFY ops are dropped.
3. Each model is converted with ``python -m tf2onnx.convert --tflite X --output Y --opset 13``.
   The input stays NHWC float32 as in TFLite; all weights are float32.
4. Graph edits: dimension 0 of the input and all outputs becomes the symbolic ``N``; the only
   batch-bound constants in these graphs are the ``Reshape`` targets ``[1, -1, k]`` of the SSD
   heads, which become ``[0, -1, k]`` (0 = copy the input's batch size). Stale intermediate shape
   annotations are dropped, the unused ``ai.onnx.ml`` opset import is removed and the licence and
   origin are written into the model metadata.
5. Checks, for every model: ONNX (batch 1) against the original TFLite interpreter on random
   inputs in the model's value range (relative max difference < 1e-3), and a batch of 4 different
   inputs against 4 single runs (max abs difference < 1e-4). A model that fails the batch check
   is written with its original static batch of 1 instead (none does with the pinned versions).
6. Writes ``<model>.onnx`` and ``<model>.toml`` (the card, with the sha256 of the ``.onnx``),
   parses each card back with ``tomllib``, and copies the wheel's Apache-2.0 licence text to
   ``LICENSE-mediapipe.txt``.

The anchor and decoder values in the cards are MediaPipe 0.10.14's own graph options. The wheel
ships no ``.pbtxt`` files; its ``*_cpu.binarypb`` files only reference the subgraphs
``PalmDetectionCpu``, ``PalmDetectionDetectionToRoi``, ``HandLandmarkCpu``,
``HandLandmarkLandmarksToRoi``, ``FaceDetection``, ``FaceDetectionShortRange`` and
``FaceDetectionFullRange``, which are compiled into ``mediapipe/python/_framework_bindings*.so``
as serialized ``CalculatorGraphConfig`` protos. They were decoded from there with the wheel's
own ``*_pb2`` modules; the values are the same as in upstream's
``mediapipe/modules/palm_detection/palm_detection_cpu.pbtxt``,
``palm_detection_detection_to_roi.pbtxt``, ``hand_landmark/hand_landmark_cpu.pbtxt``,
``hand_landmark_landmarks_to_roi.pbtxt``, ``face_detection/face_detection.pbtxt``,
``face_detection_short_range.pbtxt`` and ``face_detection_full_range.pbtxt``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

MEDIAPIPE_VERSION = "0.10.14"
OPSET = 13
TF2ONNX_VERSION = "1.17.0"
HERE = Path(__file__).resolve().parent

# sha256 of the TFLite files inside the mediapipe 0.10.14 wheel.
TFLITE_SHA256 = {
    "mediapipe/modules/palm_detection/palm_detection_lite.tflite": "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18",
    "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite": "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6",
    "mediapipe/modules/face_detection/face_detection_short_range.tflite": "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite": "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
}

PALM_ROI = (
    "palm -> hand crop (PalmDetectionDetectionToRoi): rect = detection box, rotation = "
    "90 deg - atan2(-(kp2.y - kp0.y), kp2.x - kp0.x) in pixels, shift centre by -0.5 * height "
    "along the rotated y axis, square on the long side, scale 2.6"
)

MODELS = [
    {
        "stem": "palm_detection_lite",
        "tflite": "mediapipe/modules/palm_detection/palm_detection_lite.tflite",
        "name": "mediapipe-palm-detection-lite",
        "task": "palm_detection",
        "range": (0.0, 1.0),
        "description": (
            "MediaPipe BlazePalm (lite) single-shot palm detector: 2016 SSD anchors on a "
            "192x192 RGB input, each with a box and 7 palm keypoints (0 wrist, 1 index MCP, "
            "2 middle MCP, 3 ring MCP, 4 pinky MCP, 5 thumb CMC, 6 thumb MCP) and a logit "
            "score. The palm box seeds the hand-landmark crop."
        ),
        "outputs": {2: ("boxes", 18), 1: ("scores", 1)},  # keyed by last-dim rank, see _roles
        "decode": [
            ("num_layers", 4),
            ("strides", [8, 16, 16, 16]),
            ("anchor_offset", 0.5),
            ("fixed_anchor_size", True),
            ("num_keypoints", 7),
            ("box_scale", 192.0),
            ("score_clip", 100.0),
            ("score_threshold", 0.5),
            ("nms_iou", 0.3),
            ("input_size", 192),
            ("num_boxes", 2016),
            ("num_coords", 18),
            ("min_scale", 0.1484375),
            ("max_scale", 0.75),
            ("aspect_ratios", [1.0]),
            ("interpolated_scale_aspect_ratio", 1.0),
            ("box_coord_order", "xywh"),
            ("keypoint_coord_offset", 4),
            ("score_activation", "sigmoid"),
            ("nms_algorithm", "weighted"),
            ("letterbox", True),
            ("letterbox_border", "zero"),
            ("roi_scale", 2.6),
            ("roi_shift_x", 0.0),
            ("roi_shift_y", -0.5),
            ("roi_square_long", True),
            ("roi_rotation_keypoints", [0, 2]),
            ("roi_rotation_target_degrees", 90.0),
            ("graph", "PalmDetectionCpu + PalmDetectionDetectionToRoi (palm_detection_cpu.pbtxt, palm_detection_detection_to_roi.pbtxt) of mediapipe 0.10.14"),
        ],
    },
    {
        "stem": "hand_landmark_lite",
        "tflite": "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
        "name": "mediapipe-hand-landmark-lite",
        "task": "hand_landmarks",
        "range": (0.0, 1.0),
        "description": (
            "MediaPipe hand landmark model (lite): on a 224x224 RGB crop around one hand "
            "(rotated so the fingers point up) it gives 21 landmarks (x, y in crop pixels, "
            "relative depth z), a hand-presence probability, a handedness probability and 21 "
            "metric world landmarks."
        ),
        "outputs": None,  # four outputs, mapped by name below
        "decode": [
            ("num_landmarks", 21),
            ("presence_threshold", 0.5),
            ("presence_activation", "none"),
            ("landmark_scale", 224.0),
            ("handedness_activation", "none"),
            (
                "handedness",
                "value = MediaPipe's score for label 'Left', which assumes a mirrored "
                "(selfie) image; on an un-mirrored camera image > 0.5 means the "
                "person's right hand",
            ),
            ("landmark_z_scale", "z_norm = z / 224 / 0.4 (normalize_z = 0.4)"),
            ("world_landmark_units", "metres, origin at the hand's centre"),
            ("letterbox", True),
            ("letterbox_border", "replicate"),
            ("roi_scale", 2.6),
            ("roi_shift_x", 0.0),
            ("roi_shift_y", -0.5),
            ("roi_square_long", True),
            ("roi_rotation_keypoints", [0, 2]),
            ("roi_rotation_target_degrees", 90.0),
            ("track_roi_scale", 2.0),
            ("track_roi_shift_y", -0.1),
            (
                "graph",
                "HandLandmarkCpu + PalmDetectionDetectionToRoi + HandLandmarkLandmarksToRoi "
                "(hand_landmark_cpu.pbtxt, palm_detection_detection_to_roi.pbtxt, "
                "hand_landmark_landmarks_to_roi.pbtxt) of mediapipe 0.10.14",
            ),
        ],
    },
    {
        "stem": "face_detection_short_range",
        "tflite": "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "name": "mediapipe-face-detection-short-range",
        "task": "face_detection",
        "range": (-1.0, 1.0),
        "description": (
            "MediaPipe BlazeFace short-range face detector (faces within about 2 m that fill a "
            "good part of the input): 896 SSD anchors on a 128x128 RGB input, each with a box, 6 "
            "keypoints (right eye, left eye, nose tip, mouth, right ear tragion, left ear "
            "tragion; right/left as seen from the person) and a logit score."
        ),
        "outputs": {2: ("boxes", 16), 1: ("scores", 1)},
        "decode": [
            ("num_layers", 4),
            ("strides", [8, 16, 16, 16]),
            ("anchor_offset", 0.5),
            ("fixed_anchor_size", True),
            ("num_keypoints", 6),
            ("box_scale", 128.0),
            ("score_clip", 100.0),
            ("score_threshold", 0.5),
            ("nms_iou", 0.3),
            ("input_size", 128),
            ("num_boxes", 896),
            ("num_coords", 16),
            ("min_scale", 0.1484375),
            ("max_scale", 0.75),
            ("aspect_ratios", [1.0]),
            ("interpolated_scale_aspect_ratio", 1.0),
            ("box_coord_order", "xywh"),
            ("keypoint_coord_offset", 4),
            ("score_activation", "sigmoid"),
            ("nms_algorithm", "weighted"),
            ("letterbox", True),
            ("letterbox_border", "zero"),
            ("graph", "FaceDetectionShortRange + FaceDetection (face_detection_short_range.pbtxt, face_detection.pbtxt) of mediapipe 0.10.14"),
        ],
    },
    {
        "stem": "face_detection_full_range",
        "tflite": "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "name": "mediapipe-face-detection-full-range",
        "task": "face_detection",
        "range": (-1.0, 1.0),
        "description": (
            "MediaPipe BlazeFace full-range face detector (faces up to about 5 m, i.e. small "
            "in the frame): 2304 SSD anchors (48x48 grid) on a 192x192 RGB input, each with a "
            "box, the same 6 keypoints as the short-range model and a logit score. Weights "
            "densified from the upstream sparse model."
        ),
        "outputs": {2: ("boxes", 16), 1: ("scores", 1)},
        "decode": [
            ("num_layers", 1),
            ("strides", [4]),
            ("anchor_offset", 0.5),
            ("fixed_anchor_size", True),
            ("num_keypoints", 6),
            ("box_scale", 192.0),
            ("score_clip", 100.0),
            ("score_threshold", 0.6),
            ("nms_iou", 0.3),
            ("input_size", 192),
            ("num_boxes", 2304),
            ("num_coords", 16),
            ("min_scale", 0.1484375),
            ("max_scale", 0.75),
            ("aspect_ratios", [1.0]),
            ("interpolated_scale_aspect_ratio", 0.0),
            ("box_coord_order", "xywh"),
            ("keypoint_coord_offset", 4),
            ("score_activation", "sigmoid"),
            ("nms_algorithm", "weighted"),
            ("letterbox", True),
            ("letterbox_border", "zero"),
            ("graph", "FaceDetectionFullRange + FaceDetection (face_detection_full_range.pbtxt, face_detection.pbtxt) of mediapipe 0.10.14"),
        ],
    },
]

HAND_OUTPUT_ROLES = {
    "Identity": "landmarks",
    "Identity_1": "presence",
    "Identity_2": "handedness",
    "Identity_3": "world_landmarks",
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def log(msg: str) -> None:
    print(f"[build] {msg}", flush=True)


def fetch_wheel(dest: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            f"mediapipe=={MEDIAPIPE_VERSION}",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--platform",
            "manylinux_2_17_x86_64",
            "-d",
            str(dest),
        ],
        check=True,
    )
    wheels = sorted(dest.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if not wheels:
        raise SystemExit("pip download did not produce a mediapipe wheel")
    return wheels[0]


def extract_tflites(wheel: Path, dest: Path) -> dict[str, Path]:
    out = {}
    with zipfile.ZipFile(wheel) as z:
        for member, want in TFLITE_SHA256.items():
            target = dest / Path(member).name
            target.write_bytes(z.read(member))
            got = sha256(target)
            if got != want:
                raise SystemExit(f"{member}: sha256 {got} != pinned {want}")
            out[member] = target
    return out


def write_licence(wheel: Path, out_dir: Path) -> Path:
    """Copy the Apache-2.0 text from the wheel's LICENSE (the part before its third-party
    notices, which cover C++ code, not these models) next to the models."""
    with zipfile.ZipFile(wheel) as z:
        text = z.read(f"mediapipe-{MEDIAPIPE_VERSION}.dist-info/LICENSE").decode("utf-8")
    apache = text.split("\n=====")[0].rstrip() + "\n"
    if "Apache License" not in apache or "Version 2.0" not in apache:
        raise SystemExit("unexpected LICENSE in the mediapipe wheel")
    target = out_dir / "LICENSE-mediapipe.txt"
    header = (
        f"The .onnx files in this folder are converted from TFLite models in the mediapipe "
        f"{MEDIAPIPE_VERSION} wheel\n(PyPI), Copyright The MediaPipe Authors, licensed as follows "
        f"(mediapipe-{MEDIAPIPE_VERSION}.dist-info/LICENSE).\n\n"
    )
    target.write_text(header + apache, encoding="utf-8")
    return target


def densify_tflite(src: Path, dst: Path) -> int:
    """Replace DENSIFY ops (sparse constant -> dense tensor) by dense constant buffers."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.python.interpreter import OpResolverType
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(src))
    interp = tf.lite.Interpreter(
        model_path=str(src),
        experimental_preserve_all_tensors=True,
        # XNNPACK would consume the sparse weights itself and leave the DENSIFY outputs unset.
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    interp.invoke()
    graph = model.subgraphs[0]
    densify_codes = {i for i, oc in enumerate(model.operatorCodes) if max(oc.builtinCode, oc.deprecatedBuiltinCode) == schema.BuiltinOperator.DENSIFY}
    kept, n = [], 0
    for op in graph.operators:
        if op.opcodeIndex not in densify_codes:
            kept.append(op)
            continue
        sparse_in, dense_out = op.inputs[0], op.outputs[0]
        dense = interp.get_tensor(dense_out)
        tensor = graph.tensors[dense_out]
        if list(tensor.shape) != list(dense.shape):
            raise SystemExit(f"densify: shape mismatch {tensor.shape} vs {dense.shape}")
        buf = schema.BufferT()
        buf.data = np.frombuffer(dense.tobytes(), np.uint8)
        model.buffers.append(buf)
        tensor.buffer = len(model.buffers) - 1
        sparse = graph.tensors[sparse_in]
        model.buffers[sparse.buffer].data = None
        sparse.sparsity = None
        sparse.buffer = 0
        n += 1
    graph.operators = kept
    flatbuffer_utils.write_model(model, str(dst))
    return n


def tf2onnx_convert(tflite: Path, onnx_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "tf2onnx.convert", "--tflite", str(tflite), "--output", str(onnx_path), "--opset", str(OPSET)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # tf2onnx names folded constants in set-iteration order: pin the hash seed so that a
        # rebuild gives byte-identical files.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


def _dims(value_info):
    return [d.dim_param if d.dim_param else d.dim_value for d in value_info.type.tensor_type.shape.dim]


def make_batch_dynamic(model):
    """Return a copy of ``model`` whose batch dimension is the symbol ``N``."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for vi in list(g.input) + list(g.output):
        dim0 = vi.type.tensor_type.shape.dim[0]
        if dim0.dim_value != 1:
            raise ValueError(f"{vi.name}: batch dim is {_dims(vi)}")
        dim0.ClearField("dim_value")
        dim0.dim_param = "N"
    inits = {t.name: t for t in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
    for node in g.node:
        if node.op_type in ("Expand", "Tile", "ConstantOfShape", "Slice", "Gather", "Shape"):
            raise ValueError(f"unreviewed batch-sensitive op {node.op_type} {node.name}")
        if node.op_type != "Reshape":
            continue
        name = node.input[1]
        if name in inits:
            shape = numpy_helper.to_array(inits[name])
        elif name in consts:
            shape = numpy_helper.to_array(consts[name].attribute[0].t)
        else:
            raise ValueError(f"Reshape {node.name}: shape is not a constant")
        if len(shape) < 2 or shape[0] != 1:
            raise ValueError(f"Reshape {node.name}: unexpected target {shape.tolist()}")
        new = shape.copy()
        new[0] = 0  # copy the batch size from the input
        new_name = f"{name}__batch"
        if new_name not in inits:
            t = numpy_helper.from_array(new.astype(np.int64), new_name)
            g.initializer.append(t)
            inits[new_name] = t
        node.input[1] = new_name
    used = {i for n in g.node for i in n.input}
    for t in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(t)
    del g.value_info[:]
    return m


def canonical_names(model):
    """Rename initializers by order of first use and sort them.

    tf2onnx numbers its folded constants (``const_fold_opt__NNN``) in an order that changes from
    run to run; without this a rebuild would not be byte-identical.
    """
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    rename: dict[str, str] = {}
    for node in g.node:
        for name in node.input:
            if name in inits and name not in rename:
                rename[name] = f"const_{len(rename):04d}"
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    kept = sorted((t for t in g.initializer if t.name in rename), key=lambda t: rename[t.name])
    for t in kept:
        t.name = rename[t.name]
    del g.initializer[:]
    g.initializer.extend(kept)
    # tf2onnx also appends counters ("__595") to the names of the nodes it inserts; number them
    # by order of appearance instead.
    numbers: dict[str, str] = {}

    def renum(name: str) -> str:
        return re.sub(r"__(\d+)", lambda m: "__" + numbers.setdefault(m.group(1), str(len(numbers))), name)

    keep = {v.name for v in list(g.input) + list(g.output)}
    for node in g.node:
        node.name = renum(node.name)
        for i, name in enumerate(node.input):
            if name not in keep:
                node.input[i] = renum(name)
        for i, name in enumerate(node.output):
            if name not in keep:
                node.output[i] = renum(name)
    return model


def tidy(model, meta: dict[str, str]):
    import onnx

    canonical_names(model)
    used_domains = {n.domain for n in model.graph.node}
    for op in [o for o in model.opset_import if o.domain not in used_domains and o.domain != ""]:
        model.opset_import.remove(op)
    del model.graph.value_info[:]
    onnx.helper.set_model_props(model, meta)  # replaces any earlier metadata
    model.graph.doc_string = ""  # tf2onnx writes the (temporary) input path here
    return model


def tflite_reference(tflite: Path, x):
    import tensorflow as tf

    it = tf.lite.Interpreter(model_path=str(tflite))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return {o["name"]: it.get_tensor(o["index"]) for o in it.get_output_details()}


def check_against_tflite(model_bytes: bytes, tflite: Path, lo: float, hi: float) -> float:
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [1] + [int(d) for d in inp.shape[1:]]
    rng = np.random.default_rng(1234)
    worst = 0.0
    for k in range(4):
        x = rng.uniform(lo, hi, shape).astype(np.float32)
        if k == 0:
            x[:] = lo
        ref = tflite_reference(tflite, x)
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {inp.name: x})))
        for name, r in ref.items():
            d = float(np.abs(r - got[name]).max()) / (1e-6 + float(np.abs(r).max()))
            worst = max(worst, d)
    return worst


def check_batch(model_bytes: bytes, lo: float, hi: float, n: int = 4) -> float:
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [n] + [int(d) for d in inp.shape[1:]]
    rng = np.random.default_rng(99)
    x = rng.uniform(lo, hi, shape).astype(np.float32)
    x[0] = lo  # one uniform image among the noise
    batched = sess.run(None, {inp.name: x})
    worst = 0.0
    for i in range(n):
        single = sess.run(None, {inp.name: x[i : i + 1]})
        for b, s in zip(batched, single):
            if b.shape[0] != n:
                raise ValueError(f"batched output has shape {b.shape}")
            worst = max(worst, float(np.abs(b[i : i + 1] - s).max()))
    return worst


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(type(value))


def write_card(spec, onnx_path: Path, model, tflite_sha: str, dynamic: bool, extra_source: str) -> Path:
    g = model.graph
    inp = g.input[0]
    in_shape = [-1 if isinstance(d, str) else d for d in _dims(inp)]
    lo, hi = spec["range"]
    lines = [
        f"name = {_toml(spec['name'])}",
        f"version = {_toml(MEDIAPIPE_VERSION)}",
        f"task = {_toml(spec['task'])}",
        f"file = {_toml(onnx_path.name)}",
        f"sha256 = {_toml(sha256(onnx_path))}",
        'licence = "Apache-2.0"',
        "source = "
        + _toml(
            f"mediapipe {MEDIAPIPE_VERSION} wheel (PyPI), {spec['tflite']}, sha256 {tflite_sha}; "
            f"{extra_source}converted with tf2onnx {TF2ONNX_VERSION}, opset {OPSET}; "
            + ("batch dimension made dynamic (N) by collector/models/build.py" if dynamic else "static batch 1")
        ),
        f"description = {_toml(spec['description'])}",
        "",
        "[input]",
        f"name = {_toml(inp.name)}",
        f"shape = {_toml(in_shape)}",
        'layout = "NHWC"',
        'color = "RGB"',
        f"range = {_toml([lo, hi])}",
    ]
    for out in g.output:
        shape = [-1 if isinstance(d, str) else d for d in _dims(out)]
        if spec["outputs"] is None:
            role = HAND_OUTPUT_ROLES[out.name]
        else:
            role = {18: "boxes", 16: "boxes", 1: "scores"}[shape[-1]]
        lines += ["", "[[outputs]]", f"name = {_toml(out.name)}", f"shape = {_toml(shape)}", f"role = {_toml(role)}"]
    lines += ["", "[decode]"]
    lines += [f"{k} = {_toml(v)}" for k, v in spec["decode"]]
    card = onnx_path.with_suffix(".toml")
    card.write_text("\n".join(lines) + "\n", encoding="utf-8")
    parsed = tomllib.loads(card.read_text(encoding="utf-8"))
    assert parsed["sha256"] == sha256(onnx_path)
    return card


def build(out_dir: Path, wheel: Path | None, only: list[str] | None) -> None:
    import onnx

    with tempfile.TemporaryDirectory(prefix="knack-models-") as tmp:
        tmp = Path(tmp)
        if wheel is None:
            log(f"downloading mediapipe=={MEDIAPIPE_VERSION}")
            wheel = fetch_wheel(tmp / "wheel")
        log(f"wheel {wheel.name} sha256 {sha256(wheel)}")
        tflites = extract_tflites(wheel, tmp)
        log(f"wrote {write_licence(wheel, out_dir).name}")
        for spec in MODELS:
            if only and spec["stem"] not in only:
                continue
            src = tflites[spec["tflite"]]
            convert_src, extra = src, ""
            if "sparse" in src.name:
                convert_src = tmp / (spec["stem"] + "_dense.tflite")
                n = densify_tflite(src, convert_src)
                extra = f"its {n} sparse weight tensors (DENSIFY ops) densified with the TFLite interpreter; "
                log(f"{spec['stem']}: densified {n} sparse weight tensors")
            raw_path = tmp / (spec["stem"] + "_raw.onnx")
            tf2onnx_convert(convert_src, raw_path)
            meta = {
                "licence": "Apache-2.0",
                "source": f"mediapipe {MEDIAPIPE_VERSION} wheel, {spec['tflite']}",
                "converter": f"tf2onnx {TF2ONNX_VERSION} opset {OPSET}; collector/models/build.py",
            }
            static = tidy(onnx.load(str(raw_path)), meta)
            lo, hi = spec["range"]
            diff = check_against_tflite(static.SerializeToString(), src, lo, hi)
            log(f"{spec['stem']}: ONNX vs TFLite relative max diff {diff:.2e}")
            if diff > 1e-3:
                raise SystemExit(f"{spec['stem']}: conversion does not match TFLite ({diff})")
            final, dynamic = static, False
            try:
                dyn = tidy(make_batch_dynamic(static), meta)
                onnx.checker.check_model(dyn)
                bdiff = check_batch(dyn.SerializeToString(), lo, hi)
                tdiff = check_against_tflite(dyn.SerializeToString(), src, lo, hi)
                log(f"{spec['stem']}: batch-4 vs single max abs diff {bdiff:.2e}, vs TFLite {tdiff:.2e}")
                if bdiff < 1e-4 and tdiff <= 1e-3:
                    final, dynamic = dyn, True
            except Exception as exc:  # keep the static model
                log(f"{spec['stem']}: dynamic batch rejected: {exc}")
            onnx.checker.check_model(final)
            onnx_path = out_dir / f"{spec['stem']}.onnx"
            onnx_path.write_bytes(final.SerializeToString())
            card = write_card(spec, onnx_path, final, sha256(src), dynamic, extra)
            log(f"wrote {onnx_path.name} ({onnx_path.stat().st_size} bytes, sha256 {sha256(onnx_path)}, batch {'N' if dynamic else 1}) and {card.name}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wheel", type=Path, help="an already downloaded mediapipe 0.10.14 wheel")
    p.add_argument("--out", type=Path, default=HERE, help="output folder (default: next to this file)")
    p.add_argument("--only", nargs="*", help="model stems to build (default: all)")
    a = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    a.out.mkdir(parents=True, exist_ok=True)
    build(a.out, a.wheel, a.only)


if __name__ == "__main__":
    main()
