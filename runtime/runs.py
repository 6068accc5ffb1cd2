"""What `gapcam run` does with each kind of input: a folder run's images (decoded ahead, explained
in batches, written behind) and each video or live stream (frames decoded ahead, explained in
batches, the annotated video written atomically). Both write into one `ResultLog` and report."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from PIL import Image

from runtime.errors import CamError
from runtime.faces.detect import HaarFaceDetector
from runtime.faces.session import Face, FaceSession, face_overlay
from runtime.formats.files import atomic_path
from runtime.inference.session import CamSession
from runtime.inputs.image import load_image
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
    topk: int = 1
    method: str = "cam"
    batch_size: int = 32
    alpha: float = 0.5
    colormap: str = "jet"
    every: int = 1
    fps: float | None = None
    smooth: float = 0.0


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

    def write(index: int, picture: Image.Image, answer: CamResult | list[Face]) -> tuple[dict[str, Any], str]:
        if isinstance(answer, CamResult):
            shown = session.overlay(
                picture, answer.cams_scaled[0], alpha=options.alpha, colormap=options.colormap, box=answer.box, label=answer.label
            )
            record, card = answer.to_dict(), report_card(paths[index], picture, shown, answer)
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
        for batch in prefetched_batches(paths, options.batch_size, load_image):
            kept: list[int] = []
            pictures: list[Image.Image] = []
            for index, decoded in batch:
                try:
                    pictures.append(decoded.result())
                    kept.append(index)
                except CamError as err:
                    skipped.append((paths[index], str(err)))
            answers: Sequence[CamResult | list[Face]] = []
            if pictures and options.faces is not None:
                answers = options.faces.run(pictures, topk=options.topk, method=options.method)
            elif pictures:
                answers = session.run(pictures, topk=options.topk, method=options.method)
            for index, picture, answer in zip(kept, pictures, answers, strict=True):
                writer.submit(write, index, picture, answer)
                table.append(f"{paths[index]:<40} {summary(answer)}")
                faceless += answer == []
            bar.update(len(batch))
    return table, faceless


def summary(answer: CamResult | list[Face]) -> str:
    """One table line's answer: label, probability and box, or each face's."""
    if isinstance(answer, CamResult):
        return f"{answer.label:<16} {answer.prob:>6.3f}  {answer.box}"
    if not answer:
        return "no face"
    return "; ".join(f"{face.label} {face.prob:.3f} at {face.face_box}" for face in answer)


def explain_video(options: RunOptions, source: str, target: Path, log: ResultLog, *, live: bool = False) -> tuple[int, str | None]:
    """Explain every kept frame of a video file (or a live source) and write the annotated video to
    `target`, atomically: (frames written, the one-line error where decoding stopped early, else None).

    A live source runs until it ends, the window is closed, or Ctrl-C; what was seen is kept.
    """
    faces = options.faces
    model = options.session if faces is None else FaceSession(faces.session, HaarFaceDetector.for_streams(), margin=faces.margin)
    with VideoSource(source, every=options.every, fps=options.fps, live=live or None) as frames:
        rate = frames.fps / options.every if options.fps is None else min(options.fps, frames.fps / options.every)
        window = Window.open(f"gapcam: {frames.name}") if frames.live else None
        error: str | None = None
        with VideoWriter(target, rate, frames.size) as video:
            closed = False  # the user closed the window

            def draw(frame: FrameResult) -> tuple[dict[str, Any], Image.Image]:
                return {"file": source, **frame.to_dict()}, annotate(frame, alpha=options.alpha, colormap=options.colormap)

            def keep(drawn: tuple[dict[str, Any], Image.Image]) -> None:
                nonlocal closed
                video.write(drawn[1])
                log.add(drawn[0])
                closed = closed or (window is not None and not window.show(drawn[1]))

            total = max(1, frames.frame_count // options.every) if frames.frame_count else 0  # 0: a bar without an end
            results = stream(model, frames, batch_size=options.batch_size, smooth=options.smooth, topk=options.topk, method=options.method)
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
                if window is not None:
                    window.close()
        return video.frames, error
