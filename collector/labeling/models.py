"""The shipped detectors and operators' extra classifiers, each behind its card, run on batches of frames."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from collector.config import Device, LabelerConfig
from collector.labeling.cards import CardError, ModelCard, check_card, load_card
from collector.labeling.detection import (
    Placement,
    apply_affine,
    crop_roi,
    decode_ssd,
    dim,
    fit,
    iou,
    landmark_roi,
    lifted,
    palm_roi,
    place,
    ssd_anchors,
    tiles,
    to_tensor,
    weighted_nms,
)
from collector.labeling.runtime import Model, OnnxModel, default_cache_dir

log = logging.getLogger("knack.labeler")

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
# The full-range face model, not the short-range one: it finds faces small in a bench camera's frame from the
# whole frame in one run, where the short-range model needs tiles and then mistakes shirts for faces.
SHIPPED = {"palm_detection": "palm_detection_lite.toml", "hand_landmarks": "hand_landmark_lite.toml", "face_detection": "face_detection_full_range.toml"}
# The second opinion on a face candidate: the short-range face model, trained apart from the full-range one,
# on a square crop around the candidate, where a real face fills its input (see FaceVerifier).
VERIFIER = "face_detection_short_range.toml"
# Windows each detector looks through, as (columns, rows) grids over the frame: the whole frame finds large
# hands, four overlapping tiles find the small ones that a letterboxed full frame shrinks below the model's reach.
GRIDS = {"palm_detection": ((1, 1), (2, 2)), "face_detection": ((1, 1),)}
TILE_OVERLAP = 0.25
# A hand followed by its landmarks alone is dropped after this many sampled frames (0.25 s at 4 fps) unless the
# palm detector finds it again: it bridges a moment the detector misses a hand; longer leashes (2-3 samples)
# grew false hands on a kitten's face past the policy's 50% in the evaluation set.
FOLLOW_SAMPLES = 1


@dataclass(frozen=True)
class Hand:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels (around the landmarks)
    score: float  # hand presence from the landmark model
    landmarks: np.ndarray  # (21, 2) frame pixels


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray | None = None  # (6, 2) frame pixels: right eye, left eye, nose, mouth, right ear, left ear


def shipped_card(task: str) -> Path:
    return MODELS_DIR / SHIPPED[task]


def open_model(card: ModelCard, device: Device, threads: int, loader: Callable[..., Model] = OnnxModel) -> Model:
    """Loads the model behind a card and refuses it, naming every difference, if the card does not describe it."""
    if not card.model_path.is_file():
        raise CardError(f"model card {card.path}: its model file {card.model_path} does not exist")
    try:
        model = loader(card.model_path, device, threads, default_cache_dir())
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise CardError(f"{card.model_path} is not a loadable ONNX model: {str(exc).splitlines()[0]}") from None
    problems = check_card(card, getattr(model, "inputs", {}), getattr(model, "outputs", {}))
    if problems:
        raise CardError(f"model card {card.path} does not match {card.model_path.name}: " + "; ".join(problems))
    return model


def _batched(model: Model, card: ModelCard, images: list[np.ndarray], batch_size: int) -> list[dict[str, np.ndarray]]:
    """Runs images (already at the input size) in batches, one at a time when the model's batch is fixed at 1."""
    step = batch_size if card.input.shape[0] == -1 else 1
    results = []
    for start in range(0, len(images), step):
        chunk = images[start : start + step]
        outputs = model.run({card.input.name: to_tensor(chunk, card.input)})
        results += [{name: value[i : i + 1] for name, value in outputs.items()} for i in range(len(chunk))]
    return results


class SsdDetector:
    """A MediaPipe-style single-shot detector (palm or face) run over the whole frame and overlapping tiles."""

    def __init__(self, card: ModelCard, model: Model, grids, batch_size: int):
        self.card, self.model, self.grids, self.batch_size = card, model, grids, batch_size
        self.decode = dict(card.decode, input_size=card.input.size[0])
        self.anchors = ssd_anchors(self.decode)
        boxes = card.output("boxes")
        if boxes.shape[-2] not in (-1, len(self.anchors)):
            raise CardError(f"model card {card.path}: [decode] makes {len(self.anchors)} anchors but output {boxes.name!r} has {boxes.shape[-2]}")
        self.threshold = float(card.decode.get("score_threshold", 0.5))

    def detect(self, frames: list[np.ndarray], threshold: float | None = None) -> list[np.ndarray]:
        """Per RGB frame, merged detections in frame pixels: rows of [x1, y1, x2, y2, score, keypoints...]."""
        threshold = self.threshold if threshold is None else threshold
        inputs: list[np.ndarray] = []
        where: list[tuple[int, Placement]] = []
        for f, frame in enumerate(frames):
            h, w = frame.shape[:2]
            for grid in self.grids:
                for window in tiles(w, h, grid, TILE_OVERLAP):
                    image, placement = fit(frame, self.card.input, window)
                    inputs.append(image)
                    where.append((f, placement))
        per_frame: list[list[np.ndarray]] = [[] for _ in frames]
        boxes, scores = self.card.output("boxes").name, self.card.output("scores").name
        for (f, placement), out in zip(where, _batched(self.model, self.card, inputs, self.batch_size)):
            rows = decode_ssd(out[boxes], out[scores], self.anchors, self.decode, threshold)[0]
            per_frame[f].append(place(rows, placement))
        iou_threshold = float(self.card.decode.get("nms_iou", 0.3))
        return [weighted_nms(np.concatenate(rows), iou_threshold) for rows in per_frame]


class HandDetector:
    """Palms found by the palm detector, confirmed and outlined by the hand-landmark model on a crop of each."""

    def __init__(self, palm: SsdDetector, landmark_card: ModelCard, landmark_model: Model, max_hands: int, batch_size: int):
        self.palm, self.card, self.model = palm, landmark_card, landmark_model
        self.max_hands, self.batch_size = max_hands, batch_size
        self.size = landmark_card.input.size[0]
        self.presence_threshold = float(landmark_card.decode.get("presence_threshold", 0.5))
        # A followed hand needs the same presence as a new one (MediaPipe's min_tracking_confidence): at 0.3 it
        # bridged hands 60% behind a tool (~0.35) but also grew false hands on a kitten's face.
        self.track_threshold = float(landmark_card.decode.get("track_presence_threshold", 0.5))
        self.sigmoid = landmark_card.decode.get("presence_activation", "sigmoid") == "sigmoid"
        self.scale = float(landmark_card.decode.get("landmark_scale", self.size))

    def detect(self, frames: list[np.ndarray], follow: list[tuple[np.ndarray, int]] | None = None) -> list[list[Hand]]:
        """Hands per RGB frame. `follow`: (landmarks, samples since the palm detector confirmed it) of the hands
        in the frame before `frames[0]` (the previous sampled frame), updated in place to the last frame's: a
        hand that the palm detector misses now (behind a tool, in a glove, turned) is looked for where it was,
        from its landmarks, as MediaPipe tracks hands, and kept if the landmark model sees a hand there again;
        for at most FOLLOW_SAMPLES samples without the palm detector, so a false hand cannot live on."""
        out = []
        for frame, rows in zip(frames, self.palm.detect(frames)):
            carried = [] if follow is None else follow  # None: every frame on its own
            found = [h for h in self._landmarks([crop_roi(frame, palm_roi(row, self.palm.card.decode), self.size) for row in rows[: self.max_hands * 2]]) if h]
            seen = {id(h): 0 for h in found}  # frames since the palm detector last confirmed each hand
            lost = [(lm, age) for lm, age in carried if age < FOLLOW_SAMPLES and not any(_same_hand(lm, h.landmarks) for h in found)]
            rois = [landmark_roi(lm, self.card.decode) for lm, _ in lost[: self.max_hands]]
            for (_, age), hand in zip(lost, self._landmarks([crop_roi(frame, roi, self.size) for roi in rois], self.track_threshold)):
                if hand is not None:
                    found.append(hand)
                    seen[id(hand)] = age + 1
            hands = _distinct(found, self.max_hands)
            carried[:] = [(h.landmarks, seen[id(h)]) for h in hands]
            out.append(hands)
        return out

    def _landmarks(self, crops: list[tuple[np.ndarray, np.ndarray]], threshold: float | None = None) -> list[Hand | None]:
        """The landmark model on (crop, inverse matrix) pairs: a Hand in frame pixels, or None where its presence
        score is under `threshold` (the card's by default)."""
        threshold = self.presence_threshold if threshold is None else threshold
        landmarks, presence = self.card.output("landmarks").name, self.card.output("presence").name
        out: list[Hand | None] = []
        for (_, inverse), result in zip(crops, _batched(self.model, self.card, [c for c, _ in crops], self.batch_size)):
            score = float(np.ravel(result[presence])[0])
            if self.sigmoid:
                score = float(1 / (1 + np.exp(-score)))
            if score < threshold:
                out.append(None)
                continue
            points = np.ravel(result[landmarks]).reshape(-1, 3)[:, :2] * (self.size / self.scale)
            points = apply_affine(inverse, points)
            out.append(Hand(tuple(float(v) for v in (*points.min(axis=0), *points.max(axis=0))), score, points))
        return out


def _same_hand(a: np.ndarray, b: np.ndarray) -> bool:
    """Two landmark sets of one hand: their centres closer than half the hand's size."""
    size = max(float(np.ptp(a, axis=0).max()), 1.0)
    return float(np.linalg.norm(a.mean(axis=0) - b.mean(axis=0))) < 0.5 * size


def _distinct(hands: list[Hand], limit: int) -> list[Hand]:
    """One hand per place: palms seen in two tiles lead to the same hand twice."""
    kept: list[Hand] = []
    for hand in sorted(hands, key=lambda h: -h.score):
        if all(iou(np.array(hand.box), np.array([k.box]))[0] < 0.5 for k in kept):
            kept.append(hand)
    return kept[:limit]


class FaceDetector:
    def __init__(self, detector: SsdDetector):
        self.detector = detector

    @property
    def threshold(self) -> float:
        return self.detector.threshold

    def detect(self, frames: list[np.ndarray], threshold: float | None = None) -> list[list[Face]]:
        """Faces per RGB frame scoring at least `threshold` (the card's by default); a dim frame is looked at
        brightened (see `lifted`)."""
        return [
            [Face(tuple(float(v) for v in row[:4]), float(row[4]), row[5:].reshape(-1, 2) if len(row) > 5 else None) for row in rows]
            for rows in self.detector.detect([lifted(f) for f in frames], threshold)
        ]


class FaceVerifier:
    """Scores a face candidate with a second face model on a square crop centred on it (`crop` times its size):
    real faces, profiles included, score 0.8-0.95 there, while the plates, fur, wrists and hands that the
    full-range model sometimes takes for faces score 0.25-0.6 (measured on the evaluation set, bench/label_eval.py)."""

    def __init__(self, detector: FaceDetector, crop: float = 1.8, dim_crop: float = 2.4):
        self.detector, self.crop, self.dim_crop = detector, crop, dim_crop

    def score(self, frame: np.ndarray, box, bgr: bool = True) -> float:
        """In a dim frame the crop is brightened as the whole frame is for the detector (a crop's own mean would
        brighten it differently) and widened to `dim_crop`: noise and compression leave a small face's own pixels
        too little to go on (a 55-pixel face at a third of the light scored 0.6-0.7 at 1.8, 0.75-0.8 at 2.4), and
        its surroundings help. Not in good light: there a wider crop took a skull printed on a shirt for a face."""
        x1, y1, x2, y2 = box
        crop = self.crop
        if dim(frame):
            frame, crop = lifted(frame), self.dim_crop
        cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, crop * max(x2 - x1, y2 - y1)
        h, w = frame.shape[:2]
        region = frame[max(0, int(cy - side / 2)) : min(h, int(cy + side / 2)), max(0, int(cx - side / 2)) : min(w, int(cx + side / 2))]
        if region.shape[0] < 4 or region.shape[1] < 4:
            return 0.0
        rgb = cv2.cvtColor(region, cv2.COLOR_BGR2RGB) if bgr else region
        return max((f.score for f in self.detector.detect([rgb], 0.1)[0]), default=0.0)


class Classifier:
    """An operator's extra model: per frame class scores, averaged over the clip by the labeler."""

    def __init__(self, card: ModelCard, model: Model, batch_size: int):
        self.card, self.model, self.batch_size = card, model, batch_size
        self.activation = card.decode.get("activation", "softmax")

    def scores(self, frames: list[np.ndarray]) -> np.ndarray:
        images = [fit(frame, self.card.input)[0] for frame in frames]
        name = self.card.output("scores").name
        raw = np.concatenate([np.asarray(out[name], np.float64).reshape(1, -1) for out in _batched(self.model, self.card, images, self.batch_size)])
        if self.activation == "softmax":
            raw = np.exp(raw - raw.max(axis=1, keepdims=True))
            raw = raw / raw.sum(axis=1, keepdims=True)
        elif self.activation == "sigmoid":
            raw = 1 / (1 + np.exp(-raw))
        return raw


class Models:
    """Every model the labeler runs, each session created once and reused for every clip."""

    def __init__(self, config: LabelerConfig, loader: Callable[..., Model] = OnnxModel):
        def load(card_path: Path) -> tuple[ModelCard, Model]:
            card = load_card(card_path)
            return card, open_model(card, config.device, config.threads, loader)

        palm_card, palm_model = load(Path(config.hand_card) if config.hand_card else shipped_card("palm_detection"))
        if palm_card.task != "palm_detection":
            raise CardError(f"labeler.hand_card: {palm_card.path} is a {palm_card.task} model, expected a palm_detection model")
        landmark_card, landmark_model = load(
            palm_card.path.parent / palm_card.decode["landmark_card"] if "landmark_card" in palm_card.decode else shipped_card("hand_landmarks")
        )
        face_card, face_model = load(Path(config.face_card) if config.face_card else shipped_card("face_detection"))
        if face_card.task != "face_detection":
            raise CardError(f"labeler.face_card: {face_card.path} is a {face_card.task} model, expected a face_detection model")
        self.hands = HandDetector(
            SsdDetector(palm_card, palm_model, GRIDS["palm_detection"], config.batch_size), landmark_card, landmark_model, config.max_hands, config.batch_size
        )
        self.faces = FaceDetector(SsdDetector(face_card, face_model, GRIDS["face_detection"], config.batch_size))
        verifier_card, verifier_model = load(MODELS_DIR / VERIFIER)
        self.verifier = FaceVerifier(FaceDetector(SsdDetector(verifier_card, verifier_model, ((1, 1),), 1)))
        self.extra: list[Classifier] = []
        for path in config.extra_cards:
            card, model = load(Path(path))
            if card.task != "classifier":
                raise CardError(f"labeler.extra_cards: {card.path} is a {card.task} model; extra models must be classifiers")
            self.extra.append(Classifier(card, model, config.batch_size))
        self.cards = [palm_card, landmark_card, face_card, verifier_card] + [c.card for c in self.extra]
        self._models = [palm_model, landmark_model, face_model, verifier_model] + [c.model for c in self.extra]
        self.provider = palm_model.provider
        self.notes = sorted({getattr(m, "note", None) for m in self._models} - {None})
        for note in self.notes:
            log.warning("labeler: %s", note) if config.device is not Device.AUTO else log.info("labeler: %s", note)
        log.info("labeler: models run on %s", ", ".join(sorted({m.provider for m in self._models})))

    def describe(self) -> list[dict]:
        return [dict(card.summary(), provider=model.provider) for card, model in zip(self.cards, self._models)]
