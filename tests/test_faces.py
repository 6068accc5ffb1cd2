"""Faces first (issue 19): every face of a photo found, cropped as FER crops are, classified in one
inference call, and mapped back onto the photo; real faces from scikit-image, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face_scenes import ASTRONAUT_FACE, astronaut, astronaut_face, batch_sizes, lfw_face, scene
from runtime import CamSession
from runtime.errors import CamError
from runtime.faces import DEFAULT_MARGIN, FaceSession, HaarFaceDetector, face_crop_box
from runtime.maps.boxes import box_iou
from runtime.maps.methods import METHODS
from runtime.optional import require

FER = "fer2013-minixception"


@pytest.fixture(scope="module")
def faces():
    return FaceSession(FER)


def test_the_astronauts_face_is_found_cropped_as_fer_crops_are_and_happy(faces):
    (face,) = faces.run(astronaut())[0]
    assert box_iou(face.crop_box, ASTRONAUT_FACE) > 0.8  # the detector's box widened by the margin is a FER-style crop
    x0, y0, x1, y1 = face.crop_box
    assert x1 - x0 == y1 - y0 and x0 <= face.face_box[0] and face.face_box[2] <= x1
    assert face.label == "happy" and face.prob > 0.95
    assert face.cam.shape == (y1 - y0, x1 - x0)  # the CAM at the face's size
    bx0, by0, bx1, by1 = face.box  # the CAM box in the whole photo's pixels: inside the crop
    assert x0 <= bx0 < bx1 <= x1 and y0 <= by0 < by1 <= y1
    assert np.array_equal(face.boxes[0], np.asarray(face.result.boxes[0]) + [x0, y0, x0, y0])


def test_several_faces_at_several_sizes_are_all_found_and_classified_in_one_inference_call(faces, monkeypatch):
    planted = [(lfw_face(0, 64), (30, 40)), (lfw_face(1, 96), (250, 300)), (astronaut_face(150), (440, 60)), (lfw_face(5, 128), (60, 300))]
    image, boxes = scene((640, 480), planted)
    calls = batch_sizes(faces.session, monkeypatch)
    found = faces.run([image, astronaut()])
    assert calls == [5]  # four faces in the scene and the astronaut's: one call
    assert len(found[0]) == 4 and len(found[1]) == 1
    for box in boxes:  # each planted face is found (its crop covers it best)
        assert max(box_iou(face.crop_box, box) for face in found[0]) > 0.5
    areas = [(f.face_box[2] - f.face_box[0]) * (f.face_box[3] - f.face_box[1]) for f in found[0]]
    assert areas == sorted(areas, reverse=True)  # largest first
    alone = faces.session.run([image.crop(face.crop_box) for face in found[0]])  # the same crops one by one agree
    for face, result in zip(found[0], alone, strict=True):
        assert face.label == result.label and np.allclose(face.probs, result.probs, atol=1e-6)


def test_no_face_is_an_empty_list_never_a_whole_frame_guess(faces):
    plain, _ = scene((320, 240), [])
    not_faces, _ = scene((320, 240), [(lfw_face(150, 96), (100, 60))])  # lfw_subset's non-face patches
    assert faces.run([plain, not_faces]) == [[], []]


def test_max_faces_bounds_the_batch_a_crowd_can_make():
    image, _ = scene((640, 480), [(lfw_face(i, 96), (20 + 200 * (i % 3), 40 + 220 * (i // 3))) for i in range(6)])
    few = FaceSession(FER, max_faces=2).run(image)[0]
    assert len(few) == 2
    with pytest.raises(CamError, match="max_faces"):
        FaceSession(FER, max_faces=0)


def test_a_face_is_cropped_square_inside_the_image_and_widened_by_the_margin():
    assert face_crop_box((100, 100, 200, 200), (480, 640), 0.0) == (100, 100, 200, 200)
    assert face_crop_box((100, 100, 200, 200), (480, 640), 0.2) == (80, 80, 220, 220)
    assert face_crop_box((100, 100, 200, 160), (480, 640), 0.0) == (100, 80, 200, 180)  # square around the centre
    assert face_crop_box((0, 0, 100, 100), (480, 640), 0.25) == (0, 0, 150, 150)  # moved inside, not padded
    assert face_crop_box((540, 380, 640, 480), (480, 640), 0.25) == (490, 330, 640, 480)
    assert face_crop_box((10, 10, 90, 90), (100, 300), 1.0) == (0, 0, 100, 100)  # shrunk to the image where it must
    for margin in (-0.1, 2.5):
        with pytest.raises(CamError, match="margin"):
            face_crop_box((0, 0, 10, 10), (20, 20), margin)
    with pytest.raises(CamError, match="not inside"):
        face_crop_box((0, 0, 30, 10), (20, 20), DEFAULT_MARGIN)


def test_the_overlay_is_the_whole_photo_with_heat_only_inside_the_faces(faces):
    image, _ = scene((640, 480), [(astronaut_face(150), (100, 100)), (lfw_face(1, 96), (420, 260))])
    found = faces.run(image)[0]
    shown = faces.overlay(image, found)
    assert shown.size == image.size
    before, after = np.asarray(image), np.asarray(shown)
    inside = np.zeros(before.shape[:2], bool)
    for face in found:
        x0, y0, x1, y1 = face.crop_box
        inside[y0:y1, x0:x1] = True
    assert np.array_equal(before[~inside], after[~inside])  # nothing drawn outside the crops
    assert (before[inside] != after[inside]).any(axis=-1).mean() > 0.9  # the heatmap covers them
    assert faces.overlay(image, []).tobytes() == image.tobytes()


def test_results_record_each_face_as_the_issue_specifies(faces):
    (face,) = faces.run(astronaut(), topk=2)[0]
    record = json.loads(json.dumps(face.to_dict()))
    assert record["face_box"] == list(face.face_box) and record["box"] == list(face.box)
    assert record["label"] == "happy" and record["prob"] == pytest.approx(face.prob)
    assert [entry["box"] for entry in record["explained"]] == face.boxes.tolist()  # image pixels, not crop pixels
    assert len(record["explained"]) == 2 and len(record["probs"]) == 7


def test_the_haar_detector_refuses_bad_settings_and_files_in_one_line(tmp_path):
    with pytest.raises(CamError, match="scale_factor"):
        HaarFaceDetector(scale_factor=1.0)
    bogus = tmp_path / "cascade.xml"
    bogus.write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(CamError, match="not an OpenCV cascade"):
        HaarFaceDetector(bogus)


def test_a_large_photo_is_searched_at_a_bounded_size_and_boxes_come_back_in_its_pixels():
    big = astronaut().resize((2560, 2560), Image.Resampling.BILINEAR)
    searched = HaarFaceDetector(max_side=640).detect(big.resize((640, 640), Image.Resampling.BILINEAR))
    found = HaarFaceDetector(max_side=640).detect(big)
    assert len(found) == len(searched) >= 1
    assert np.abs(found / 4 - searched).max() <= 2  # found at 640 a side, reported in the photo's pixels


def test_without_opencv_face_detection_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` fail
    with pytest.raises(CamError, match=r"pip install 'gapcam\[faces\]'"):
        require("faces")
    with pytest.raises(CamError, match="opencv-python-headless"):
        HaarFaceDetector()


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "runtime", *args], capture_output=True, text=True, cwd=cwd)


def test_gapcam_run_finds_faces_for_a_face_model_and_writes_them_to_results(tmp_path):
    image, _ = scene((640, 480), [(astronaut_face(150), (60, 80)), (lfw_face(1, 96), (420, 260))])
    image.save(tmp_path / "group.png")
    plain, _ = scene((200, 150), [])
    plain.save(tmp_path / "empty.png")
    done = run_cli(FER, "group.png", "empty.png", "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = {Path(r["file"]).name: r for r in json.loads((tmp_path / "out" / "results.json").read_text())["results"]}
    assert [face["label"] for face in results["group.png"]["faces"]][0] == "happy"
    assert len(results["group.png"]["faces"]) == 2 and results["empty.png"]["faces"] == []
    assert "label" not in results["empty.png"]  # no whole-frame guess
    assert Image.open(tmp_path / "out" / "group.png").size == (640, 480)
    assert "no face" in done.stdout
    assert "note: no face found in 1 of 2 images; if they are face crops already, --no-faces" in done.stderr


def test_no_faces_reads_the_whole_image_and_faces_works_for_any_model(tmp_path, tiny_onnx):
    astronaut().save(tmp_path / "astronaut.png")
    whole = run_cli(FER, "astronaut.png", "--no-faces", "--out", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    (record,) = json.loads((tmp_path / "whole" / "results.json").read_text())["results"]
    assert "faces" not in record and record["explained"][0]["box"] == [0, 0, 512, 512]
    assert "--no-faces reads each whole image as one face" in whole.stderr
    own = run_cli(
        str(tiny_onnx), "astronaut.png", "--faces", "--out", "own", cwd=tmp_path
    )  # a model of your own, told its inputs are faces
    assert own.returncode == 0, own.stderr
    (record,) = json.loads((tmp_path / "own" / "results.json").read_text())["results"]
    assert len(record["faces"]) == 1 and record["faces"][0]["label"] in CamSession(str(tiny_onnx)).labels


def test_opencv_loads_only_when_faces_or_frames_are_looked_for():
    code = "import sys, runtime, runtime.faces, runtime.video, runtime.__main__; print('cv2' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_registered_method_explains_faces(faces, method):
    (face,) = faces.run(astronaut(), method=method)[0]
    assert face.label == "happy" and face.cam.shape == (face.crop_box[3] - face.crop_box[1],) * 2


def test_the_faces_of_a_12_megapixel_group_photo_are_all_found():
    image, boxes = scene((4000, 3000), [(astronaut_face(150), (300 + 1200 * (i % 3), 500 + 1200 * (i // 3))) for i in range(6)])
    found = HaarFaceDetector().detect(image)
    assert len(found) == 6 and all(max(box_iou(f, box) for f in found) > 0.3 for box in boxes)


class Detector:
    def __init__(self, boxes):
        self.boxes = boxes

    def detect(self, image):
        return self.boxes


def test_a_detector_of_your_own_is_checked_clipped_and_sorted():
    image = astronaut()
    (face,) = FaceSession(FER, Detector([[150.4, 40.0, 300.6, 190.2]])).run(image)[0]
    assert face.face_box == (150, 40, 301, 190)
    crossing = FaceSession(FER, Detector([[-30, -20, 100, 90], [400, 400, 400, 480], [200, 100, 480, 600]])).run(image)[0]
    assert [f.face_box for f in crossing] == [(200, 100, 480, 512), (0, 0, 100, 90)]  # clipped, empty dropped, largest first
    assert FaceSession(FER, Detector([])).run(image) == [[]]
    for bad in ([[1, 2, 3, 4, 0.9]], [[0, 0, float("nan"), 10]], None, [[1, 2], [3]]):
        with pytest.raises(CamError, match=r"face detector: expected finite boxes \[n, 4\]"):
            FaceSession(FER, Detector(bad)).run(image)
