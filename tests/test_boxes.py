"""runtime.maps.boxes: connected components, the paper's box, IoU, MaxBoxAcc and MaxBoxAccV2 sweeps."""

import numpy as np
import pytest
from scipy import ndimage

from runtime import CamError
from runtime.maps.boxes import (
    box_accuracy_curve,
    box_iou,
    box_ious,
    cam_box,
    component_boxes,
    largest_component_box,
    threshold_grid,
    threshold_ious,
)


def scipy_boxes(mask):
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    boxes = [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(labels)]
    return boxes, sizes


@pytest.mark.parametrize("seed", range(4))
def test_component_boxes_match_scipy_8_connectivity(seed):
    rng = np.random.default_rng(seed)
    for trial in range(40):
        mask = rng.random(tuple(rng.integers(1, 40, 2))) < rng.uniform(0.05, 0.8)
        expected, sizes = scipy_boxes(mask)
        boxes = component_boxes(mask)
        assert sorted(map(tuple, boxes.tolist())) == sorted(expected), trial
        if len(expected):  # the first box is one of the largest components
            assert tuple(boxes[0]) in [expected[i] for i in np.flatnonzero(sizes == sizes.max())]


def test_components_follow_long_snakes_and_diagonals():
    snake = np.zeros((21, 21), bool)  # one path that runs right, down, left, down, ...
    for turn, row in enumerate(range(0, 21, 4)):
        snake[row, 1:20] = True
        if row + 4 < 21:
            snake[row : row + 5, 19 if turn % 2 == 0 else 1] = True
    assert component_boxes(snake).tolist() == [[1, 0, 20, 21]]
    diagonal = np.eye(6, dtype=bool)
    diagonal[5, 0] = True
    assert component_boxes(diagonal).tolist() == [[0, 0, 6, 6], [0, 5, 1, 6]]
    assert largest_component_box(np.zeros((4, 4), bool)) is None
    assert component_boxes(np.zeros((3, 0), bool)).shape == (0, 4)


def test_cam_box_thresholds_at_share_of_max():
    cam = np.zeros((20, 30), np.float32)
    cam[5:10, 4:12] = 1.0  # strong blob, 40 pixels
    cam[12:18, 20:28] = 0.3  # weak but larger blob, 48 pixels
    assert cam_box(cam, 0.2) == (20, 12, 28, 18)
    assert cam_box(cam, 0.5) == (4, 5, 12, 10)
    assert cam_box(np.zeros((6, 8), np.float32)) == (0, 0, 8, 6)
    with pytest.raises(CamError, match="threshold must be within"):
        cam_box(cam, 1.5)


def test_box_iou_by_hand():
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 2, 2), (3, 3, 4, 4)) == 0.0
    assert box_iou((0, 0, 10, 10), np.array([[20, 20, 30, 30], [0, 0, 10, 5]])) == pytest.approx(0.5)
    np.testing.assert_allclose(
        box_ious(np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([[0, 0, 10, 5], [20, 20, 30, 30]])), [0.5, 1.0]
    )


def two_blob_cam():
    """A strong small blob and a weaker larger one: the true object is the small one."""
    cam = np.zeros((20, 30), np.float32)
    cam[2:6, 2:6] = 1.0  # 16 pixels, the object
    cam[10:18, 10:26] = 0.4  # 128 pixels, a distractor
    return cam


def test_v2_takes_the_best_of_all_contours_where_the_paper_takes_the_largest():
    cam, truth = two_blob_cam(), np.array([[2, 2, 6, 6]])
    largest, best = threshold_ious(cam, truth, [0.3, 0.5])
    # at 0.3 both blobs survive: the largest (the distractor) misses the object, the best of all hits it
    assert largest[0] == 0.0 and best[0] == 1.0
    # at 0.5 only the object survives: both rules give it
    assert largest[1] == 1.0 and best[1] == 1.0


def test_v2_with_three_contours_and_two_true_boxes():
    cam = np.zeros((30, 30), np.float32)
    cam[1:5, 1:5] = 0.9  # A, 16 px
    cam[10:14, 10:16] = 0.8  # B, 24 px
    cam[20:29, 20:29] = 0.6  # C, 81 px, the largest
    truth = np.array([[10, 10, 16, 12], [1, 1, 5, 3]])  # half of B, half of A
    largest, best = threshold_ious(cam, truth, [0.5, 0.7, 0.85])
    # 0.5: A, B and C; the largest is C (IoU 0); the best is A or B with IoU 0.5 each
    # 0.7: A and B; the largest is B (IoU 0.5), the best 0.5
    # 0.85: A alone (IoU 0.5)
    np.testing.assert_allclose(largest, [0.0, 0.5, 0.5])
    np.testing.assert_allclose(best, [0.5, 0.5, 0.5])


def test_threshold_sweep_equals_box_by_box():
    rng = np.random.default_rng(5)
    for _ in range(20):
        cam = rng.random((17, 23)).astype(np.float32) ** 3
        truth = np.array([[3, 2, 12, 9], [10, 8, 20, 16]])
        grid = threshold_grid(0.05)
        largest, best = threshold_ious(cam, truth, grid)
        for t, threshold in enumerate(grid):
            boxes = component_boxes(cam >= threshold * cam.max())
            ious = [box_iou(box, truth) for box in boxes]
            assert largest[t] == pytest.approx(ious[0]) and best[t] == pytest.approx(max(ious))
            assert tuple(boxes[0]) == cam_box(cam, threshold)


def test_box_accuracy_curve_and_grid():
    ious = np.array([[0.6, 0.4, 0.0], [0.5, 0.7, 0.2]])
    np.testing.assert_allclose(box_accuracy_curve(ious, 0.5), [1.0, 0.5, 0.0])
    np.testing.assert_allclose(box_accuracy_curve(ious, 0.3), [1.0, 1.0, 0.0])
    assert len(threshold_grid()) == 100 and threshold_grid()[0] == 0.0 and threshold_grid()[-1] == 0.99
    with pytest.raises(CamError, match="threshold step"):
        threshold_grid(0)
