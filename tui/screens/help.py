"""The help screen: every key, and where each action lives on the command line."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# Knack — keys

| key | where | does | on the command line |
| --- | --- | --- | --- |
| `1`..`5` | anywhere | Record, Clips, Rewards, Devices, Log | |
| `ctrl+p` | anywhere | command palette: every action below by name | |
| `?` / `f1` | anywhere | this help | |
| `q` | anywhere | quit (seals the open clip, finishes labeling) | Ctrl-C in `knack record` |
| `r` | Record | start a clip | `knack record` |
| `s` | Record | stop the clip | Ctrl-C |
| `x` | Record | split: end this clip, start the next | `recorder.clip_seconds` cuts on time |
| `m` | Record | mark a moment in the clip (kept in the manifest) | |
| `t` | Record | name the task being done: enter sets it (a clip being recorded is split there), escape leaves | `knack record --task`, `recorder.task` |
| `↑` `↓` | Clips | select a clip: its manifest, CID, transaction and reward on the right | `knack clips CLIP_ID` |
| `t` | Clips | retry the selected clip's upload now | `knack retry CLIP_ID` |
| `l` | Clips | label the selected clip again | `knack label CLIP_DIR` |
| `d` | Clips | discard the selected clip (not once it is pinned) | `knack discard CLIP_ID` |
| `f` | Clips | filter by outbox state | `knack clips --state STATE` |
| `v` | Clips | review the selected clip in Rerun: writes `<data_dir>/reviews/<clip_id>.rrd`, and opens the viewer where there is a display | `knack review CLIP_ID --spawn` |
| `S` | anywhere | submit pinned clips now (every few seconds anyway) | `knack submit` |
| `a` | Rewards | type a contributor's address (enter reads it, escape leaves the field) | `knack rewards ADDRESS` |
| `g` | Rewards, Devices | read again | `knack rewards ADDRESS`, `knack devices`, `knack doctor` |

## How a clip moves

Press `r` on the Record screen: while recording, clips are cut every `recorder.clip_seconds` (and by `x`
and `s`). Each sealed clip is **recorded**, then labeled in the background (hands, faces blurred,
quality) and **accepted** or **rejected** with the reason in words; an accepted clip is **pinned** by its
CID, **submitted** to the registry on chain in a batch, and **settled** by the validator, which mints the
reward. The Clips screen (`2`) shows each step; the Rewards screen (`3`) shows the balance. In
`knack tui --demo` this device is its own validator, so clips settle within seconds.

The Rewards screen reads any address typed into it: a contributor can check theirs on any device.

Capture runs in its own threads: nothing on these screens can make it wait.
Press `escape` to close.
"""


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
