"""The same face from frame to frame, and temporal smoothing of what the model says about it.

Per-frame maps flicker: a face's probabilities and map jump between frames that look the same.
`Smoother` keeps an exponential moving average of each track's model outputs (its logits and the
maps its method is made from) before they are explained, so the smoothed label, probabilities, map
and box are one consistent answer (for CAM, the logit is still the map's mean plus the bias).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from runtime.errors import CamError
from runtime.maps.boxes import box_iou

Box = tuple[int, int, int, int]


class FaceTracker:
    """Track ids for each frame's faces: a face takes the id of the unclaimed track whose last box
    overlaps it most (IoU at least `min_iou`), else a new id. A track unseen for `patience` frames ends."""

    def __init__(self, min_iou: float = 0.3, patience: int = 15):
        if not 0.0 < min_iou <= 1.0 or patience < 1:
            raise CamError(f"FaceTracker: needs min_iou in (0, 1] and patience >= 1, got {min_iou}, {patience}")
        self.min_iou, self.patience = min_iou, patience
        self._tracks: dict[int, tuple[Box, int]] = {}  # id -> (last box, frames since seen)
        self._next = 0

    def update(self, boxes: Sequence[Box]) -> list[int]:
        """The track id of each box of the next frame, in the boxes' order."""
        pairs = sorted(
            ((box_iou(box, last), i, track) for i, box in enumerate(boxes) for track, (last, _) in self._tracks.items()),
            reverse=True,
        )
        ids: dict[int, int] = {}  # box index -> track id
        for iou, i, track in pairs:
            if iou < self.min_iou:
                break
            if i not in ids and track not in ids.values():
                ids[i] = track
        for i in range(len(boxes)):
            if i not in ids:
                ids[i], self._next = self._next, self._next + 1
        for track, (box, age) in list(self._tracks.items()):
            if age + 1 >= self.patience:
                del self._tracks[track]
            else:
                self._tracks[track] = (box, age + 1)
        for i, track in ids.items():
            self._tracks[track] = (boxes[i], 0)
        return [ids[i] for i in range(len(boxes))]

    @property
    def tracks(self) -> list[int]:
        """The ids still followed."""
        return list(self._tracks)


class Smoother:
    """Exponential moving averages per track: `state = keep * state + (1 - keep) * new`.

    `keep` in [0, 1): 0 is no smoothing; 0.6 gives the current frame 40 % of the weight. `forget`
    drops the averages of tracks that ended (FaceTracker's ids are never reused).
    """

    def __init__(self, keep: float):
        if not 0.0 <= keep < 1.0:
            raise CamError(f"smooth must be within [0, 1), got {keep}")
        self.keep = keep
        self._state: dict[int, list[npt.NDArray[np.float32]]] = {}

    def update(self, track: int, *outputs: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        """The smoothed outputs of `track` after this frame's `outputs` (one face's arrays)."""
        previous = self._state.get(track)
        if previous is None or [p.shape for p in previous] != [o.shape for o in outputs]:
            smoothed = [np.array(o, dtype=np.float32) for o in outputs]
        else:
            smoothed = [(self.keep * p + (1.0 - self.keep) * o).astype(np.float32) for p, o in zip(previous, outputs, strict=True)]
        self._state[track] = smoothed
        return smoothed

    def forget(self, live_tracks: Sequence[int]) -> None:
        """Drop the averages of tracks that are no longer followed."""
        live = set(live_tracks)
        self._state = {track: state for track, state in self._state.items() if track in live}
