"""Video files and live streams (issue 19): decoding, batching, tracking, smoothing, the annotated
video and its results, and bad files; real faces moving through videos made here, no torch."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face_scenes import astronaut_face, batch_sizes, scene
from runtime.errors import CamError
from runtime.faces import FaceSession
from runtime.maps.boxes import box_iou
from runtime.optional import require
from runtime.video import FaceTracker, Smoother, VideoSource, VideoWriter, annotate, is_video, stream
from runtime.video import frames as frames_module
from runtime.video.stream import FrameExplainer

FER = "fer2013-minixception"
cv2 = require("video")
SIZE, FPS, FRAMES, SIDE = (320, 240), 10.0, 24, 100


def face_at(index: int) -> tuple[int, int]:
    """Where the moving face is in frame `index`: left to right across the frame."""
    return 8 * index, 70


def write_clip(path: Path, frames: int = FRAMES, fps: float = FPS) -> list[tuple[int, int, int, int]]:
    """A video of the astronaut's face moving across a plain scene; each frame's true face box."""
    face = astronaut_face(SIDE)
    boxes = []
    with VideoWriter(path, fps, SIZE) as video:
        for i in range(frames):
            image, (box,) = scene(SIZE, [(face, face_at(i))])
            video.write(image)
            boxes.append(box)
    return boxes


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    return path, write_clip(path)


@pytest.fixture(scope="module")
def faces():
    return FaceSession(FER)


def test_a_video_decodes_with_its_frame_count_rate_size_and_timestamps(clip):
    path, _ = clip
    with VideoSource(path) as source:
        frames = list(source)
        assert (source.fps, source.size, source.frame_count, source.error) == (FPS, SIZE, FRAMES, None)
    assert [f.index for f in frames] == list(range(FRAMES))
    assert [f.time for f in frames] == pytest.approx([i / FPS for i in range(FRAMES)])
    assert all(f.image.size == SIZE and f.image.mode == "RGB" for f in frames)


def test_a_stream_s_frames_are_timed_by_the_clock(clip, monkeypatch):
    """A camera or stream (live, no frame count) declares a rate it may not keep: its frames' times are
    the clock's since the source opened, here slower than the clip's (a paced stand-in stream)."""
    path, _ = clip
    clock = iter(np.arange(0.0, 100.0, 0.5))  # the clock moves half a second a frame: a 2 fps stream declaring FPS
    with VideoSource(path, live=True) as source:
        source.frame_count = 0  # as OpenCV says of cameras and URLs: no count, no pacing to the container
        monkeypatch.setattr(frames_module.time, "monotonic", lambda: float(next(clock)))
        frames = list(source)
    assert source.error is None and len(frames) > 1
    # at least half a second a grabbed frame (anything else that reads the clock meanwhile adds to it)
    for earlier, later in zip(frames, frames[1:], strict=False):
        assert later.time - earlier.time >= 0.5 * (later.index - earlier.index) - 1e-9
    assert frames[-1].time > frames[-1].index / FPS  # not the index over the declared rate


def test_every_and_fps_subsample_frames(clip):
    path, _ = clip
    with VideoSource(path, every=3) as source:
        assert [f.index for f in source] == list(range(0, FRAMES, 3))
    with VideoSource(path, fps=2.5) as source:  # one frame in four of a 10 fps video
        assert [f.index for f in source] == list(range(0, FRAMES, 4)) and source.kept_rate == 2.5
    with VideoSource(path, fps=4) as source:  # at most 4 a second: one in three, 3.33 a second
        assert [f.index for f in source] == list(range(0, FRAMES, 3)) and source.kept_rate == pytest.approx(10 / 3)
    with VideoSource(path, every=2, fps=100) as source:
        assert source.kept_rate == 5.0
    with pytest.raises(CamError, match="every"):
        VideoSource(path, every=0)
    with pytest.raises(CamError, match="fps"):
        VideoSource(path, fps=0)


def test_the_decoder_runs_ahead_only_as_far_as_its_queue(clip):
    path, _ = clip
    with VideoSource(path, ahead=4) as source:
        frames = iter(source)
        next(frames)
        deadline = time.monotonic() + 10
        while not source._queue.full() and time.monotonic() < deadline:  # the decoder fills its queue...
            time.sleep(0.01)
        time.sleep(0.3)  # ...then waits for room
        assert source._queue.full() and source.decoded == 1 + 4  # the frame taken and the queue's; the next waits for room


def test_a_consumer_that_stops_early_stops_the_decoder(clip):
    path, _ = clip
    source = VideoSource(path, ahead=2)
    for _ in source:
        break
    source._thread.join(timeout=5)
    assert not source._thread.is_alive()
    source.close()


def test_a_failure_inside_the_decoder_ends_the_stream_with_one_line_naming_the_frame(clip, faces, monkeypatch):
    path, _ = clip
    decoded = iter(range(10**6))
    to_image = frames_module.Image.fromarray

    def failing(pixels):
        if next(decoded) == 5:
            raise MemoryError("out of memory")
        return to_image(pixels)

    monkeypatch.setattr(frames_module.Image, "fromarray", failing)
    seen = []
    with pytest.raises(CamError, match=r"clip.mp4: decoding failed at frame 5: out of memory"):
        for result in stream(faces, path):
            seen.append(result.frame.index)
    assert seen == [0, 1, 2, 3, 4]


def test_the_moving_face_is_found_in_every_frame_and_keeps_its_track(clip, faces):
    path, truth = clip
    results = list(stream(faces, path, batch_size=5))
    assert len(results) == FRAMES
    for result, box in zip(results, truth, strict=True):
        (face,) = result.faces
        assert box_iou(face.crop_box, box) > 0.6
        assert face.track == 0 and face.label == "happy"
    line = results[3].to_dict()
    assert line["frame"] == 3 and line["time"] == pytest.approx(0.3) and len(line["faces"]) == 1


def test_frames_are_batched_into_inference_calls(clip, faces, monkeypatch):
    path, _ = clip
    sizes = batch_sizes(faces.session, monkeypatch)
    assert len(list(stream(faces, path, batch_size=8))) == FRAMES
    assert sizes == [8, 8, 8]


def test_smoothing_is_a_moving_average_of_each_tracks_outputs_off_by_default(clip, faces):
    path, _ = clip
    plain = list(stream(faces, path, batch_size=4))
    smoothed = list(stream(faces, path, batch_size=4, smooth=0.6))
    expected_logits = plain[0].faces[0].result.logits.astype(np.float64)
    for raw, smooth in zip(plain[1:], smoothed[1:], strict=True):
        expected_logits = 0.6 * expected_logits + 0.4 * raw.faces[0].result.logits
        assert np.allclose(smooth.faces[0].result.logits, expected_logits, atol=1e-4)
    # the smoothed map is the moving average of the raw maps: the CAM identity logit = mean(map) + bias holds
    info = faces.session.info
    for frame in smoothed:
        result = frame.faces[0].result
        assert np.allclose(result.cams_raw[0].mean() + info.fc_bias[result.classes[0]], result.logits[result.classes[0]], atol=1e-4)
    assert not np.allclose([r.faces[0].prob for r in plain], [r.faces[0].prob for r in smoothed])
    with pytest.raises(CamError, match="smooth"):
        Smoother(1.0)


def test_the_tracker_keeps_ids_through_motion_and_ends_lost_tracks():
    tracker = FaceTracker(patience=2)
    assert tracker.update([(0, 0, 50, 50), (200, 0, 250, 50)]) == [0, 1]
    assert tracker.update([(205, 2, 255, 52), (5, 0, 55, 50)]) == [1, 0]  # order of detection does not matter
    assert tracker.update([(10, 0, 60, 50)]) == [0]  # track 1 unseen once
    assert tracker.update([(15, 0, 65, 50), (400, 0, 450, 50)]) == [0, 2]  # a new face, a new id
    assert tracker.update([(210, 0, 260, 50)]) == [3]  # track 1 ended after `patience` frames
    assert 1 not in tracker.tracks


def test_a_whole_frame_model_explains_each_frame_and_the_annotation_is_drawn(clip, session):
    path, _ = clip
    results = list(stream(session, path, every=6))
    assert [r.frame.index for r in results] == [0, 6, 12, 18]
    assert all(r.faces is None and r.result is not None for r in results)
    assert set(results[0].to_dict()) >= {"frame", "time", "label", "explained", "probs"}
    assert annotate(results[0]).size == SIZE


def test_a_gif_is_a_video_with_its_own_frame_times(tmp_path, faces):
    frames = [scene(SIZE, [(astronaut_face(SIDE), face_at(i))])[0] for i in range(4)]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=[100, 200, 100, 300], loop=0)
    still = tmp_path / "still.gif"
    frames[0].save(still)
    assert is_video(gif) and not is_video(still) and is_video(tmp_path / "any.mp4")
    results = list(stream(faces, gif))
    assert [r.frame.time for r in results] == pytest.approx([0.0, 0.1, 0.3, 0.4])
    assert all(len(r.faces) == 1 for r in results)


def truncated_avi(tmp_path: Path) -> Path:
    path = tmp_path / "cut.avi"
    write_clip(path, frames=40)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # its index is gone and half its frames
    return path


def test_a_truncated_video_yields_what_was_decoded_then_says_where_it_stopped(tmp_path, faces):
    path = truncated_avi(tmp_path)
    seen = []
    with pytest.raises(CamError, match=r"cut.avi: decoding stopped at frame \d+ of 40"):
        for result in stream(faces, path):
            seen.append(result.frame.index)
    assert 5 < len(seen) < 40 and seen == list(range(len(seen)))


def test_a_file_that_is_no_video_and_a_camera_that_cannot_open_are_one_line(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video " * 100)
    with pytest.raises(CamError, match="garbage.mp4: not a video OpenCV can decode"):
        VideoSource(garbage)
    with pytest.raises(CamError, match="no such video file"):
        VideoSource(tmp_path / "missing.mp4")
    with pytest.raises(CamError, match="camera 97: cannot be opened"):
        VideoSource(97)


def test_a_live_source_drops_frames_rather_than_fall_behind(tmp_path, faces):
    path = tmp_path / "live.mp4"
    write_clip(path, frames=30, fps=30.0)  # one second, delivered in its own time
    seen = []
    with VideoSource(path, live=True) as source:
        assert source.live
        for result in stream(faces, source):
            seen.append(result.frame.index)
            time.sleep(0.1)  # a consumer three frames slower than the source
    assert seen == sorted(set(seen)) and len(seen) < 20  # the newest frame each time, never a backlog
    assert seen[-1] == 29  # and the stream's last frame is never dropped


def test_the_writer_leaves_nothing_behind_when_a_run_fails(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError), VideoWriter(target, 10, SIZE) as video:
        video.write(Image.new("RGB", SIZE))
        raise RuntimeError("stopped")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CamError, match="frame 0 is"), VideoWriter(target, 10, SIZE) as video:
        video.write(Image.new("RGB", (10, 10)))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CamError, match="write videos as"):
        VideoWriter(tmp_path / "out.gif", 10, SIZE)
    with pytest.raises(CamError, match="no frames to write"), VideoWriter(target, 10, SIZE):
        pass
    assert list(tmp_path.iterdir()) == []
    video = VideoWriter(target, 10, SIZE)
    video.write(Image.new("RGB", SIZE))
    video.commit()
    with pytest.raises(CamError, match="written already"):
        video.write(Image.new("RGB", SIZE))


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "runtime", *args], capture_output=True, text=True, cwd=cwd)


def test_gapcam_run_writes_the_annotated_video_and_one_results_line_per_frame(tmp_path, clip):
    path, truth = clip
    done = run_cli(FER, str(path), "--out", "out", "--every", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with VideoSource(tmp_path / "out" / "clip.mp4") as annotated:
        frames = list(annotated)
        assert annotated.size == SIZE and annotated.fps == pytest.approx(FPS / 2)
    assert len(frames) == FRAMES // 2
    lines = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(0, FRAMES, 2))
    assert [line["time"] for line in lines] == pytest.approx([i / FPS for i in range(0, FRAMES, 2)])
    for line in lines:
        (face,) = line["faces"]
        assert box_iou(face["crop_box"], truth[line["frame"]]) > 0.6 and face["label"] == "happy"
    # the annotation is there: the face box's white outline where the face was found
    x0, y0, x1, y1 = lines[0]["faces"][0]["face_box"]
    drawn = np.asarray(frames[0].image, dtype=int)
    assert drawn[y0 + 20 : y1 - 20, x0 : x0 + 2].mean(axis=(0, 1)).min() > 200  # its left edge, white


def test_gapcam_run_on_a_truncated_video_keeps_what_was_decoded_and_fails_in_one_line(tmp_path):
    path = truncated_avi(tmp_path)
    done = run_cli(FER, str(path), "--out", "out", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"Error: {path}: decoding stopped at frame")
    with VideoSource(tmp_path / "out" / "cut.avi") as written:
        assert 5 < written.frame_count < 40
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == written.frame_count
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary files


def test_gapcam_run_refuses_an_unreadable_video_before_writing_anything(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 2048)
    done = run_cli(FER, "bad.mp4", "--out", "out", cwd=tmp_path)
    assert (
        done.returncode == 1
        and done.stderr.strip() == "Error: bad.mp4: not a video OpenCV can decode (unknown format, or truncated before its index)"
    )
    assert not (tmp_path / "out").exists()
    camera = run_cli(FER, "--camera", "97", "--out", "out", cwd=tmp_path)
    assert camera.returncode == 1 and camera.stderr.strip() == "Error: camera 97: cannot be opened"


def test_a_camera_stands_in_as_a_file_read_live_and_its_video_is_kept(tmp_path):
    path = tmp_path / "cam.mp4"
    write_clip(path, frames=20, fps=20.0)
    done = run_cli(FER, "--camera", str(path), "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with VideoSource(tmp_path / "out" / "camera.mp4") as written:
        assert 1 <= written.frame_count <= 20


def test_frame_explainer_without_faces_in_a_batch_makes_no_inference_call(faces, monkeypatch):
    monkeypatch.setattr(faces.session, "infer", lambda *a, **k: pytest.fail("no faces, no inference"))
    from runtime.video.frames import Frame

    empty = [Frame(i, i / 10, Image.new("RGB", SIZE, (90, 90, 90))) for i in range(3)]
    assert [r.faces for r in FrameExplainer(faces).explain(empty)] == [[], [], []]


def test_gapcam_run_writes_at_the_rate_it_keeps_so_the_video_lasts_as_long_as_its_source(tmp_path, clip):
    path, _ = clip
    done = run_cli(FER, str(path), "--out", "out", "--fps", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with VideoSource(tmp_path / "out" / "clip.mp4") as annotated:
        assert annotated.fps == pytest.approx(10 / 3, rel=1e-3) and annotated.frame_count == 8  # 2.4 s, as the source


def test_gapcam_run_refuses_a_camera_and_a_video_without_frames_before_writing_anything(tmp_path):
    astronaut_face(64).save(tmp_path / "face.png")
    camera = run_cli(FER, "face.png", "--camera", "97", "--out", "out", cwd=tmp_path)
    assert camera.returncode == 1 and camera.stderr.strip() == "Error: camera 97: cannot be opened"
    assert not (tmp_path / "out").exists()
    empty_video = cv2.VideoWriter(str(tmp_path / "empty.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, SIZE)
    empty_video.release()
    empty = run_cli(FER, "empty.avi", "--out", "out", cwd=tmp_path)
    assert empty.returncode == 1 and empty.stderr.strip().splitlines()[-1] in (
        "Error: empty.avi: no frames decoded",
        "Error: empty.avi: not a video OpenCV can decode (unknown format, or truncated before its index)",
    )
    assert not (tmp_path / "out" / "empty.avi").exists()


def test_smoothing_refuses_methods_that_rerun_the_model(tmp_path, clip, faces):
    path, _ = clip
    with pytest.raises(CamError, match="smooth: scorecam runs the model"):
        next(stream(faces, path, smooth=0.5, method="scorecam"))
    done = run_cli(FER, str(path), "--smooth", "0.5", "--method", "scorecam", "--out", "out", cwd=tmp_path)
    assert done.returncode == 1 and "--smooth" not in done.stderr and "smooth: scorecam runs the model" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_stream_url_is_shown_without_its_credentials():
    from runtime.video.frames import without_credentials

    assert without_credentials("rtsp://admin:secret@10.0.0.5:554/stream") == "rtsp://10.0.0.5:554/stream"
    assert without_credentials("http://cam.local/live.mjpg") == "http://cam.local/live.mjpg"


def test_ctrl_c_stops_a_live_run_cleanly_and_keeps_what_was_seen(tmp_path):
    path = tmp_path / "cam.mp4"
    write_clip(path, frames=150, fps=25.0)  # six seconds, delivered in their own time
    run = subprocess.Popen(
        [sys.executable, "-m", "runtime", FER, "--camera", str(path), "--out", "out"], cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not list((tmp_path / "out").glob(".camera.mp4.*")) and time.monotonic() < deadline:  # the video is being written
            time.sleep(0.05)
        time.sleep(1.0)
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 0, stderr
    with VideoSource(tmp_path / "out" / "camera.mp4") as written:
        assert 10 <= written.frame_count < 150
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert 1 <= len(lines) <= written.frame_count and json.loads(lines[-1])["faces"]
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left
