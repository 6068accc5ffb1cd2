"""What `gapcam run` does with each kind of input: a folder run's images (decoded ahead, explained
in batches, written behind) and each video or live stream (frames decoded ahead, explained in
batches, the annotated video written atomically). Both write into one `ResultLog` and report."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from PIL import Image

from runtime.errors import CamError
from runtime.evaluation.faithfulness import FaithfulnessSettings, explained_curves
from runtime.faces.detect import HaarFaceDetector
from runtime.faces.session import Face, FaceSession, face_overlay
from runtime.formats.files import atomic_path
from runtime.inference.session import CamSession
from runtime.maps.results import CamResult
from runtime.pipeline import BoundedWriter, prefetched_batches
from runtime.reports.report import HtmlReport, ResultLog, face_report_card, report_card
from runtime.video.frames import VideoSource
from runtime.video.stream import FrameResult, annotate, stream
from runtime.video.window import Window
from runtime.video.writer import FOURCC, VideoWriter


@dataclass
class RunOptions:
    """The choices of one `gapcam run` that every input shares."""

    session: CamSession
    faces: FaceSession | None  # set: find faces first and explain each
    topk: int | None = None
    method: str = "cam"
    batch_size: int = 32
    alpha: float = 0.5
    colormap: str = "jet"
    every: int = 1
    fps: float | None = None
    smooth: float = 0.0
    curves: FaithfulnessSettings | None = None  # set: each image's card shows its deletion and insertion curves (--deletion-curves)


def unique_names(inputs: Sequence[str], suffix: Callable[[str], str]) -> list[str]:
    """One output name per input, from its file name and `suffix(input)`; repeated names get their
    position as a prefix."""
    names = [Path(item).stem + suffix(item) for item in inputs]
    return [name if names.count(name) == 1 else f"{i:04d}_{name}" for i, name in enumerate(names)]


def video_suffix(source: str) -> str:
    """An annotated video keeps its container where OpenCV writes it (.mp4, .avi, .mov, .mkv), else .mp4."""
    suffix = Path(source).suffix.lower()
    return suffix if suffix in FOURCC else ".mp4"


def explain_images(
    options: RunOptions, paths: list[str], out: Path, log: ResultLog, report: HtmlReport, skipped: list[tuple[str, str]]
) -> tuple[list[str], int]:
    """Overlay PNGs, results and report cards for every image: (the lines of the printed table, the
    number of images where faces were looked for and none was found)."""
    names = unique_names(paths, lambda _: ".png")
    session = options.session

    def write(
        index: int, picture: Image.Image, answer: CamResult | list[Face], curves: dict[str, Any] | None
    ) -> tuple[dict[str, Any], str]:
        if isinstance(answer, CamResult):
            shown = session.overlay(
                picture, answer.cams_scaled[0], alpha=options.alpha, colormap=options.colormap, box=answer.box, label=answer.label
            )
            record, card = answer.to_dict(), report_card(paths[index], picture, shown, answer, curves, session.info.multilabel)
            record.update({} if curves is None else {"curves": curves})
        else:
            shown = face_overlay(picture, answer, alpha=options.alpha, colormap=options.colormap)
            record, card = {"faces": [face.to_dict() for face in answer]}, face_report_card(paths[index], picture, shown, answer)
        with atomic_path(out / names[index]) as tmp:
            shown.save(tmp, format="PNG", compress_level=1)  # 3x faster to write than the default level 6
        return {"file": paths[index], "overlay": names[index], **record}, card

    def keep(written: tuple[dict[str, Any], str]) -> None:
        log.add(written[0])
        report.add(written[1])

    table: list[str] = []  # printed once the progress bar (on stderr) is done, so that the two never interleave
    faceless = 0
    with (
        click.progressbar(length=len(paths), label="explaining", file=sys.stderr) as bar,
        BoundedWriter(keep, limit=2 * options.batch_size) as writer,
    ):
        for batch in prefetched_batches(paths, options.batch_size, session.load_image):
            kept: list[int] = []
            pictures: list[Image.Image] = []
            for index, decoded in batch:
                try:
                    pictures.append(decoded.result())
                    kept.append(index)
                except CamError as err:
                    skipped.append((paths[index], str(err)))
            answers: Sequence[CamResult | list[Face]] = []
            curves: list[dict[str, Any] | None] = [None] * len(pictures)
            if pictures and options.faces is not None:
                answers = options.faces.run(pictures, topk=options.topk, method=options.method)
            elif pictures:
                answers = results = session.run(pictures, topk=options.topk, method=options.method)
                if options.curves is not None:
                    found = explained_curves(session, pictures, results, options.curves)
                    curves = [found.image(i) for i in range(len(results))]
            for index, picture, answer, curve in zip(kept, pictures, answers, curves, strict=True):
                writer.submit(write, index, picture, answer, curve)
                table.append(f"{paths[index]:<40} {summary(answer, session.info.multilabel)}")
                faceless += answer == []
            bar.update(len(batch))
    return table, faceless


def summary(answer: CamResult | list[Face], multilabel: bool = False) -> str:
    """One table line's answer: label, probability and box, or each face's, or a multi-label model's findings."""
    if isinstance(answer, CamResult) and multilabel:
        found = ", ".join(answer.positive_labels) or "no finding above its threshold"
        explained = "; ".join(
            f"{label} {answer.probs[c]:.3f} at {list(box)}"
            for c, label, box in zip(answer.classes, answer.labels, answer.boxes.tolist(), strict=True)
        )
        return f"findings: {found}  |  {explained}"
    if isinstance(answer, CamResult):
        return f"{answer.label:<16} {answer.prob:>6.3f}  {answer.box}"
    if not answer:
        return "no face"
    return "; ".join(f"{face.label} {face.prob:.3f} at {face.face_box}" for face in answer)


def explain_video(options: RunOptions, source: str, target: Path, log: ResultLog, *, live: bool = False) -> tuple[int, str | None]:
    """Explain every kept frame of a video file (or a live source) and write the annotated video to
    `target`, atomically: (frames explained, the one-line error where decoding stopped early, else None).

    A file's video is written at the rate `--every` and `--fps` keep; a live source's at its own
    rate, each annotated frame held until the next (frames dropped to keep up are not lost time).
    A live source runs until it ends, the window is closed, or Ctrl-C; what was seen is kept.
    """
    faces = options.faces
    model: CamSession | FaceSession = options.session
    if faces is not None:  # video frames: the detector's stream settings (docs/faces.md)
        model = FaceSession(faces.session, HaarFaceDetector.for_streams(), margin=faces.margin, max_faces=faces.max_faces)
    with VideoSource(source, every=options.every, fps=options.fps, live=live or None) as frames:
        window = Window.open(f"gapcam: {frames.name}") if frames.live else None
        error: str | None = None
        explained = 0
        try:
            with VideoWriter(target, frames.fps if frames.live else frames.kept_rate, frames.size) as video:
                closed, last = False, -1  # the user closed the window; the last source frame written

                def draw(frame: FrameResult) -> tuple[FrameResult, dict[str, Any], Image.Image]:
                    return frame, {"file": frames.name, **frame.to_dict()}, annotate(frame, alpha=options.alpha, colormap=options.colormap)

                def keep(drawn: tuple[FrameResult, dict[str, Any], Image.Image]) -> None:
                    nonlocal closed, last, explained
                    frame, record, shown = drawn
                    for _ in range(frame.frame.index - last if frames.live and last >= 0 else 1):
                        video.write(shown)
                    last, explained = frame.frame.index, explained + 1
                    log.add(record)
                    closed = closed or (window is not None and not window.show(shown))

                total = math.ceil(frames.frame_count * frames.kept_rate / frames.fps) if frames.frame_count else 0  # 0: no end
                results = stream(
                    model, frames, batch_size=options.batch_size, smooth=options.smooth, topk=options.topk, method=options.method
                )
                try:
                    with (
                        click.progressbar(length=total, label=frames.name, file=sys.stderr) as bar,
                        BoundedWriter(keep, limit=2 * options.batch_size) as writer,
                    ):
                        try:
                            for frame in results:
                                writer.submit(draw, frame)
                                bar.update(1)
                                if closed:
                                    break
                        except CamError as err:
                            if frames.error is None or str(err) != frames.error:
                                raise
                            error = frames.error  # the frames decoded before it are written
                        except KeyboardInterrupt:
                            if not frames.live:
                                raise  # a file's run stopped half-way writes no video
                finally:
                    results.close()
                if explained == 0:
                    raise CamError(error or f"{frames.name}: no frames {'received' if frames.live else 'decoded'}")
        finally:
            if window is not None:
                window.close()
        return explained, error
