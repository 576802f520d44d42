"""The dataset card (README.md, the Hugging Face dataset card format): what is in the dataset, where every
episode came from, who recorded it, under which licence, and how anyone re-verifies an episode against the
chain without trusting whoever handed them the dataset."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from collector.sample import SAMPLE_VIDEO
from knack.dataset.lerobot import CODEBASE_VERSION

# The bundled sample's footage (collector/sample/ATTRIBUTION.md): recorded by others, under their licence.
SAMPLE_LICENCE = (
    "MIT, Copyright (c) 2023 Yuzhe Qin (dexsuite/dex-retargeting, example/vector_retargeting/data/human_hand_video.mp4; see collector/sample/ATTRIBUTION.md)"
)


def _camera_licences(outcomes) -> list[str]:
    sample, files = 0, Counter()
    for o in outcomes:
        for cam in o.cameras:
            source = str(cam.get("source") or "")
            if cam.get("source_kind") == "file" and Path(source).name == SAMPLE_VIDEO.name:
                sample += 1
            elif cam.get("source_kind") == "file":
                # A manifest's words from elsewhere: only a plain file name reaches the card, never markup.
                files[re.sub(r"[^A-Za-z0-9._-]", "_", Path(source).name)[:80]] += 1
    lines = [f"- {sample} camera recording(s) replayed knack's bundled sample video: {SAMPLE_LICENCE}"] if sample else []
    lines += [
        f"- {n} camera recording(s) replayed the file `{name}`: its licence is its author's; check it before you publish" for name, n in sorted(files.items())
    ]
    return lines


def write_card(out: Path, result, options, network, fps: int) -> None:
    included = result.included
    tasks = Counter(o.task for o in included)
    contributors = Counter(o.contributor for o in included)
    info = result.info or {}
    licence = options.license
    lines = [
        "---",
        f"license: {licence}",
        "task_categories:",
        "- robotics",
        "tags:",
        "- LeRobot",
        "- knack",
        "configs:",
        "- config_name: default",
        "  data_files: data/*/*.parquet",
        "---",
        "",
        f"# {options.name or 'Knack dataset'}",
        "",
        f"A [LeRobot](https://github.com/huggingface/lerobot) dataset (format {CODEBASE_VERSION}) built by `knack dataset build` from "
        + (
            f"clips accepted and paid on chain {network[0]}, registry `{network[1]}`."
            if network
            else "local clip directories (device-signed, not checked against a chain)."
        ),
        "",
        f"- episodes: {result.episodes} (one per clip), frames: {result.frames}, {fps} fps",
        f"- features: {', '.join(f'`{k}`' for k in info.get('features', {}))}",
        f"- left out: {len(result.left_out)} clip(s), each with its reason in `knack-build-report.json`",
        "",
        "## Tasks",
        "",
        *[f"- {task!r}: {n} episode(s)" for task, n in tasks.most_common()],
        "",
        "## How the episodes were made",
        "",
        f"- Frames stand on an exact 1/{fps} s grid from each clip's first frame; each grid point takes the captured frame nearest to it by"
        " capture time (`frames.parquet`). The largest distance per episode is in the build report; a clip where it exceeded half a"
        " frame was left out.",
        "- `observation.state` names each channel `<stream>.<channel>`: a robot arm's joint state is its last reading at or before the"
        " frame; IMU and other serial channels are interpolated linearly at the frame time (device timestamps moved onto the"
        " recorder's clock where the device stamps its samples).",
        "- `action` exists only for robot arms: the joint state at the next frame (the last frame holds its own). Human hands have no"
        " commanded action, so a dataset of hands has none; learn it from the state or the video.",
        "- Videos: AV1, yuv420p, a keyframe every 2 frames, one file per episode; faces were blurred on the device before the clip left it.",
        "",
        "## Contributors",
        "",
        *[f"- `{c}`: {n} episode(s)" for c, n in contributors.most_common()],
        "",
        "## Licences",
        "",
        f"- The dataset as a whole: `{licence}` (`knack dataset build --license`).",
        *_camera_licences(included),
        "",
        "## Sources",
        "",
        "| episode | clip | CID | batch | contributor | quality |",
        "| --- | --- | --- | --- | --- | --- |",
        *[
            f"| {o.episode_index} | {o.clip_id} | `{o.provenance.get('cid')}` | {o.provenance.get('batch')} | `{o.contributor}` | {o.provenance.get('quality'):.4f} |"
            for o in included
        ],
        "",
        "## Re-verify an episode",
        "",
        "Every episode's row in `meta/episodes/chunk-000/file-000.parquet` carries its provenance: `knack/clip_id`, `knack/cid`,"
        " `knack/batch`, `knack/batch_index`, `knack/batch_root`, `knack/merkle_proof`, `knack/contributor`, `knack/device`,"
        " `knack/quality`. To check one without trusting this copy:",
        "",
        "1. `knack dataset verify <this directory>` re-checks every episode: the Merkle proof against the batch root the registry"
        " stores (and the registry's own `verify(batchId, index, digest, proof)`), the bundle fetched by CID and hashed back to it,"
        " the device signature and every file hash.",
        "2. By hand: `ipfs get <cid>` (any IPFS node or gateway) gives the signed clip bundle; `ipfs add -r -n --cid-version=1"
        " --raw-leaves` of it gives the same CID; `knack verify <dir>` checks its signature and files; and"
        " `ClipRegistry.verify(batch, batch_index, sha256-digest-of-the-CID, merkle_proof)` on the chain answers true.",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))
