"""NIH ChestX-ray14 as it ships (real label rows from torchxrayvision's wheel, images made here) and
Wang et al.'s localization protocol with the test list's AUROC (runtime.evaluation.chestxray14)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from runtime.errors import CamError
from runtime.evaluation import chestxray14 as nih
from runtime.evaluation.multilabel import roc_auc

ROOT = Path(__file__).resolve().parent.parent
TXV_WHEEL = Path(os.environ.get("GAPCAM_TXV_WHEEL", ROOT / ".venv" / "downloads" / "torchxrayvision-1.5.7-py3-none-any.whl"))
ENTRY_MEMBER = "torchxrayvision/data/Data_Entry_2017_v2020.csv.gz"
BOX_MEMBER = "torchxrayvision/data/BBox_List_2017.csv.gz"
SIDE = 1024  # the stub session's maps are at the released images' size


def wheel_text(member: str) -> str:
    if not TXV_WHEEL.is_file():
        pytest.skip(f"{TXV_WHEEL}: the torchxrayvision wheel (the real NIH label files) is missing; `make install` downloads it")
    with zipfile.ZipFile(TXV_WHEEL) as wheel:
        return gzip.decompress(wheel.read(member)).decode("utf-8")


@pytest.fixture(scope="module")
def real_files():
    """(Data_Entry lines, BBox_List lines) of the real files, as they are."""
    return wheel_text(ENTRY_MEMBER).splitlines(), wheel_text(BOX_MEMBER).splitlines()


def write_tree(root: Path, real_files, layout: str = "split", per_finding: int = 3) -> Path:
    """An NIH tree in the shipped layout with real rows: the boxed images of the first `per_finding`
    images of each boxed finding (all their boxes) plus 40 unboxed rows in test_list.txt, and the
    first 150 rows of other patients in train_val_list.txt; gray PNGs in images_001/images and
    images_002/images (`layout="split"`) or images/ (`"flat"`), 32x32 (the real ones are 1024x1024)."""
    entry_lines, box_lines = real_files
    entries = {line.split(",", 1)[0]: line for line in entry_lines[1:]}
    patient = {name: line.split(",")[3] for name, line in entries.items()}
    chosen: dict[str, list[str]] = {}
    counts = dict.fromkeys(nih.BOXED_FINDINGS, 0)
    for line in box_lines[1:]:
        name, label = line.split(",")[:2]
        finding = nih.FINDINGS[nih.finding_index(label)]
        if counts[finding] < per_finding and name not in chosen:
            counts[finding] += 1
            chosen[name] = []
    for line in box_lines[1:]:
        if line.split(",")[0] in chosen:
            chosen[line.split(",")[0]].append(line)
    test_patients = {patient[name] for name in chosen}
    others = [name for name in entries if patient[name] not in test_patients]
    train_val = others[:150]
    test = [*chosen, *[n for n in others[150:] if patient[n] not in {patient[t] for t in train_val}][:40]]
    root.mkdir(parents=True, exist_ok=True)
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join([entry_lines[0], *(entries[n] for n in [*train_val, *test])]) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    (root / "BBox_List_2017.csv").write_text("\n".join([box_lines[0], *(line for rows in chosen.values() for line in rows)]) + "\n")
    rng = np.random.default_rng(0)
    for index, name in enumerate([*train_val, *test]):
        folder = root / "images" if layout == "flat" else root / f"images_{1 + index % 2:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(folder / name)
    return root


@pytest.fixture()
def tree(tmp_path, real_files):
    return write_tree(tmp_path / "ChestX-ray14", real_files)


def edit(path: Path, change) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(change(lines)) + "\n")


# --- the real files ---


def test_the_real_label_files_parse_as_published(tmp_path, real_files):
    entry_lines, box_lines = real_files
    (tmp_path / "entries.csv").write_text("\n".join(entry_lines) + "\n")
    entries = nih.read_entries(tmp_path / "entries.csv")
    assert len(entries.names) == 112120 and len(set(entries.patients)) == 30805
    first = entries.index["00000001_001.png"]
    assert [nih.FINDINGS[c] for c in np.flatnonzero(entries.findings[first])] == ["Cardiomegaly", "Emphysema"]
    assert entries.lines[first] == 3
    assert not entries.findings[entries.index["00000002_000.png"]].any()  # No Finding
    (tmp_path / "boxes.csv").write_text("\n".join(box_lines) + "\n")
    boxes = nih.read_boxes(tmp_path / "boxes.csv", entries)
    assert len(boxes.rows) == 984 and len(set(boxes.rows.tolist())) == 880
    per_finding = {name: int((boxes.findings == i).sum()) for i, name in enumerate(nih.FINDINGS) if (boxes.findings == i).any()}
    assert per_finding == {
        "Atelectasis": 180,
        "Cardiomegaly": 146,
        "Effusion": 153,
        "Infiltration": 123,  # spelt Infiltrate in the file
        "Mass": 85,
        "Nodule": 79,
        "Pneumonia": 120,
        "Pneumothorax": 98,
    }
    x, y, w, h = (float(v) for v in box_lines[1].split(",")[2:6])
    np.testing.assert_allclose(boxes.boxes[0], [x, y, x + w, y + h])


def test_gzipped_files_and_trailing_empty_box_columns_read_as_plain_ones(tmp_path, real_files):
    plain = write_tree(tmp_path / "plain", real_files)
    packed = write_tree(tmp_path / "packed", real_files)
    for name in ("Data_Entry_2017_v2020.csv", "BBox_List_2017.csv"):
        (packed / (name + ".gz")).write_bytes(gzip.compress((packed / name).read_bytes()))
        (packed / name).unlink()
    a, b = nih.read_chestxray14(plain), nih.read_chestxray14(packed)
    assert a.entries.names == b.entries.names and np.array_equal(a.boxes.boxes, b.boxes.boxes)
    edit(plain / "BBox_List_2017.csv", lambda lines: [lines[0], *(line + ",,," for line in lines[1:])])  # as NIH's own copy
    np.testing.assert_array_equal(nih.read_chestxray14(plain).boxes.boxes, a.boxes.boxes)


def test_either_entry_file_is_read_and_v2020_wins(tree):
    (tree / "Data_Entry_2017_v2020.csv").rename(tree / "Data_Entry_2017.csv")
    assert nih.read_chestxray14(tree).entries.path.name == "Data_Entry_2017.csv"
    (tree / "Data_Entry_2017_v2020.csv").write_text("Image Index,Finding Labels,Patient ID\n")
    with pytest.raises(CamError, match=r"Data_Entry_2017_v2020.csv: no rows"):
        nih.read_chestxray14(tree)


def test_the_tree_is_detected_only_in_its_shipped_layout(tree, tmp_path):
    assert nih.is_chestxray14(tree)
    (tree / "test_list.txt").rename(tree / "test.txt")
    assert not nih.is_chestxray14(tree) and not nih.is_chestxray14(tmp_path / "absent")


# --- splits and labels ---


def test_validation_is_carved_by_patient_seeded(tree):
    data = nih.read_chestxray14(tree)
    train, val = nih.patient_split(data, 0.25, seed=0)
    patients = data.entries.patients
    assert sorted([*train, *val]) == sorted(data.train_val) and len(val) > 0
    assert not {patients[r] for r in train} & {patients[r] for r in val}
    all_patients = {patients[r] for r in data.train_val}
    assert len({patients[r] for r in val}) == round(len(all_patients) * 0.25)
    again, other = nih.patient_split(data, 0.25, seed=0), nih.patient_split(data, 0.25, seed=1)
    assert np.array_equal(again[1], val) and not np.array_equal(other[1], val)


def test_labels_are_multi_hot_float32_in_the_order_asked(tree):
    data = nih.read_chestxray14(tree)
    hot = nih.multi_hot(data.entries, data.train_val, nih.FINDINGS, "the model's")
    assert hot.dtype == np.float32 and hot.shape == (len(data.train_val), 14) and set(np.unique(hot)) <= {0.0, 1.0}
    row = list(data.train_val).index(data.entries.index["00000001_001.png"])
    assert [nih.FINDINGS[c] for c in np.flatnonzero(hot[row])] == ["Cardiomegaly", "Emphysema"]
    reordered = nih.multi_hot(
        data.entries,
        data.train_val,
        ["emphysema", "Pleural Thickening", *nih.FINDINGS[:3], *nih.FINDINGS[4:10], "Fibrosis", "Infiltrate", "Hernia"],
        "x",
    )
    assert reordered[row].tolist()[0] == 1.0 and reordered[:, 1].sum() == hot[:, 12].sum()


def test_a_finding_the_labels_lack_names_the_entry_line(tree):
    data = nih.read_chestxray14(tree)
    without = [f for f in nih.FINDINGS if f != "Emphysema"]
    row = data.entries.index["00000001_001.png"]
    with pytest.raises(
        CamError, match=rf"Data_Entry_2017_v2020.csv, line {data.entries.lines[row]}: finding Emphysema .* not one of the model's"
    ):
        nih.multi_hot(data.entries, data.train_val, without, "the model's")
    with pytest.raises(CamError, match=r"\['Lungs'\] are not ChestX-ray14 findings"):
        nih.multi_hot(data.entries, data.train_val, [*nih.FINDINGS, "Lungs"], "the model's")


# --- bad input: one line naming the file and line ---


def first_line_with(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        (
            "Data_Entry_2017_v2020.csv",
            lambda lines: [lines[0], lines[1].replace("Cardiomegaly", "Cardiomegally", 1), *lines[2:]],
            r"line 2: finding 'Cardiomegally'",
        ),
        ("Data_Entry_2017_v2020.csv", lambda lines: [lines[0], "00000001_000.png", *lines[2:]], r"line 2: 1 columns"),
        (
            "Data_Entry_2017_v2020.csv",
            lambda lines: [lines[0], lines[1], lines[1], *lines[2:]],
            r"line 3: 00000001_000.png is listed twice",
        ),
        (
            "Data_Entry_2017_v2020.csv",
            lambda lines: [lines[0], lines[1].replace("Cardiomegaly", "Cardiomegaly|No Finding", 1), *lines[2:]],
            "line 2: finding 'No Finding'",
        ),
        (
            "Data_Entry_2017_v2020.csv",
            lambda lines: ["Image Index,Labels,Patient ID", *lines[1:]],
            r"line 1: not a ChestX-ray14 Data_Entry file",
        ),
        (
            "train_val_list.txt",
            lambda lines: [lines[0], "99999999_000.png", *lines[1:]],
            r"train_val_list.txt, line 2: 99999999_000.png is not in",
        ),
        ("test_list.txt", lambda lines: [lines[0], lines[0], *lines[1:]], r"test_list.txt, line 2: .* is listed twice"),
        (
            "BBox_List_2017.csv",
            lambda lines: [lines[0], "99999999_000.png" + lines[1][lines[1].index(",") :], *lines[2:]],
            r"line 2: a box for 99999999_000.png, which is not in",
        ),
        (
            "BBox_List_2017.csv",
            lambda lines: [lines[0], lines[1].rsplit(",", 1)[0] + ",wide", *lines[2:]],
            r"line 2: box x, y, w, h must be numbers",
        ),
        (
            "BBox_List_2017.csv",
            lambda lines: [lines[0], lines[1].rsplit(",", 1)[0] + ",-3", *lines[2:]],
            r"line 2: box needs .* positive width and height",
        ),
        ("BBox_List_2017.csv", lambda lines: [lines[0], lines[1] + ",7", *lines[2:]], r"line 2: expected image, finding, x, y, w, h"),
        (
            "BBox_List_2017.csv",
            lambda lines: [lines[0], lines[1].replace(",", ",Lung Lesion,", 1).replace(lines[1].split(",")[1] + ",", "", 1), *lines[2:]],
            r"line 2: finding 'Lung Lesion'",
        ),
    ],
)
def test_a_bad_line_is_one_error_naming_its_file_and_line(tree, file, change, message):
    edit(tree / file, change)
    with pytest.raises(CamError, match=message) as raised:
        nih.read_chestxray14(tree)
    assert str(raised.value).startswith(str(tree / file)) and "\n" not in str(raised.value)


def test_a_box_of_a_finding_its_image_lacks_is_refused(tree):
    line = (tree / "BBox_List_2017.csv").read_text().splitlines()[1]
    other = "Cardiomegaly" if line.split(",")[1] != "Cardiomegaly" else "Nodule"
    edit(
        tree / "BBox_List_2017.csv",
        lambda lines: [lines[0], lines[1].replace("," + lines[1].split(",")[1] + ",", f",{other},", 1), *lines[2:]],
    )
    with pytest.raises(CamError, match=rf"BBox_List_2017.csv, line 2: a box of {other} on .*, whose Finding Labels lack it"):
        nih.read_chestxray14(tree)


def test_a_patient_in_both_lists_names_the_test_list_line(tree):
    names = (tree / "train_val_list.txt").read_text().split()
    edit(tree / "test_list.txt", lambda lines: [*lines[:3], names[0], *lines[3:]])
    with pytest.raises(CamError, match=r"test_list.txt, line 4: patient 1 \(00000001_000.png\) also has images in train_val_list.txt"):
        nih.read_chestxray14(tree)


def test_a_missing_image_names_the_line_that_lists_it(tree):
    name = (tree / "test_list.txt").read_text().split()[-1]
    next(tree.glob(f"images_*/images/{name}")).unlink()
    data = nih.read_chestxray14(tree)
    number = first_line_with(tree / "test_list.txt", name)
    with pytest.raises(CamError, match=rf"test_list.txt, line {number}: image {name} is not in"):
        nih.find_images(tree, [(name, f"{tree / 'test_list.txt'}, line {number}")])
    with pytest.raises(CamError, match=rf"test_list.txt, line {number}: image {name}"):
        nih.plan_chestxray14(StubSession(data), data)


def test_images_are_found_in_either_layout(tmp_path, real_files):
    for layout in ("flat", "split"):
        root = write_tree(tmp_path / layout, real_files, layout=layout)
        data = nih.read_chestxray14(root)
        paths = nih.find_images(root, [(data.entries.names[r], "here") for r in data.test])
        assert all(p.is_file() and p.name == data.entries.names[r] for p, r in zip(paths, data.test, strict=True))


# --- the protocol's parts ---


def test_overlaps_are_iou_and_intersection_over_the_detected_box():
    values = nih.overlaps([[0, 0, 10, 10], [100, 100, 110, 120]], [[5, 5, 25, 25]])
    np.testing.assert_allclose(values["iou"], [[25 / 475, 0.0]])
    np.testing.assert_allclose(values["iobb"], [[0.25, 0.0]])
    inside = nih.overlaps([[10, 10, 20, 20]], [[0, 0, 40, 40]])  # a small box inside a large finding: IoBB 1
    np.testing.assert_allclose([inside["iobb"][0, 0], inside["iou"][0, 0]], [1.0, 100 / 1600])


def test_detected_boxes_box_each_component_at_each_level_once():
    cam = np.zeros((40, 60), np.float32)
    cam[2:10, 3:20] = 1.0  # above both levels
    cam[20:30, 40:55] = 0.5  # above 60/255 only
    found = nih.detected_boxes(cam)
    assert sorted(found.tolist()) == [[3, 2, 20, 10], [40, 20, 55, 30]]
    assert nih.detected_boxes(cam, levels=(0.9,)).tolist() == [[3, 2, 20, 10]]
    assert nih.detected_boxes(np.zeros((8, 8), np.float32)).shape == (0, 4)


def test_auroc_is_scikit_learns_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    for _ in range(20):
        labels = rng.integers(0, 2, 200)
        scores = np.round(rng.random(200) + 0.3 * labels, 1)  # many ties
        assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert roc_auc([0.1, 0.2, 0.3], [0, 0, 0]) != roc_auc([0.1, 0.2, 0.3], [0, 0, 0])  # NaN: no positives
    assert roc_auc([0.5, 0.5], [0, 1]) == 0.5 and roc_auc([0.2, 0.9], [0, 1]) == 1.0
    with pytest.raises(CamError, match="3 scores for 2 labels"):
        roc_auc([1, 2, 3], [0, 1])


# --- the protocol end to end, with a session whose maps are known ---

PERFECT, MISS, TWO, NOTHING, LEVELS = "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass"


class StubSession:
    """Maps made to a plan per finding, at 1024x1024, and probabilities that follow the labels with
    noise; it records how many images each run call got."""

    def __init__(self, tree: nih.ChestXray14, labels=nih.FINDINGS):
        self.tree, self.labels, self.calls = tree, list(labels), []
        self.path, self.info = Path("stub.onnx"), SimpleNamespace(activation="sigmoid")

    def true_box(self, name: str, finding: str) -> list[int]:
        boxes = self.tree.boxes
        chosen = (boxes.rows == self.tree.entries.index[name]) & (boxes.findings == nih.FINDINGS.index(finding))
        return np.rint(boxes.boxes[chosen][0]).astype(int).tolist()

    def cam(self, name: str, finding: str) -> np.ndarray:
        cam = np.zeros((SIDE, SIDE), np.float32)
        x0, y0, x1, y1 = self.true_box(name, finding)
        if finding not in (MISS, NOTHING):
            cam[y0:y1, x0:x1] = 0.5 if finding == LEVELS else 1.0
        if finding in (MISS, TWO, LEVELS):  # a 40-pixel square in a corner the true box does not reach
            fx, fy = next((x, y) for x in (0, SIDE - 40) for y in (0, SIDE - 40) if x >= x1 or x + 40 <= x0 or y >= y1 or y + 40 <= y0)
            cam[fy : fy + 40, fx : fx + 40] = 1.0
        return cam

    def probs(self, name: str) -> np.ndarray:
        truth = self.tree.entries.findings[self.tree.entries.index[name]]
        return (0.4 * truth + np.random.default_rng(int(name[:8])).random(14)).astype(np.float32)

    def run(self, images, classes=None, topk=None, method="cam"):
        self.calls.append(len(images))
        return [SimpleNamespace(cam=self.cam(Path(path).name, self.labels[int(c[0])])) for path, c in zip(images, classes, strict=True)]

    def to_batch(self, images):
        self.calls.append(len(images))
        return [Path(path).name for path in images]

    def logits(self, names):
        """Scores whose sigmoid orders the images as `probs` does (AUROC reads only the order)."""
        columns = [nih.FINDINGS.index(label) for label in self.labels]
        return np.stack([self.probs(name)[columns] for name in names])


def test_the_protocol_counts_hits_and_false_positives_per_finding(tree):
    data = nih.read_chestxray14(tree)
    session = StubSession(data)
    metrics = nih.evaluate_chestxray14(session, nih.plan_chestxray14(session, data), batch_size=5)
    table = metrics["localization"]
    assert list(table) == list(nih.BOXED_FINDINGS)
    low = ["0.1", "0.25", "0.5", "0.75"]  # a box rounded to pixels keeps IoU and IoBB above these
    for finding in (PERFECT, "Nodule", "Pneumothorax"):
        for metric in ("iobb", "iou"):
            assert [table[finding][metric]["accuracy"][t] for t in low] == [1.0] * 4
            assert [table[finding][metric]["afp"][t] for t in low] == [0.0] * 4
    assert set(table[MISS]["iobb"]["accuracy"].values()) == {0.0} and set(table[MISS]["iobb"]["afp"].values()) == {1.0}
    assert [table[TWO]["iou"]["accuracy"][t] for t in low] == [1.0] * 4 and set(table[TWO]["iou"]["afp"].values()) == {1.0}
    assert set(table[NOTHING]["iobb"]["accuracy"].values()) == {0.0} and set(table[NOTHING]["iobb"]["afp"].values()) == {0.0}
    assert table[LEVELS]["iobb"]["accuracy"]["0.5"] == 1.0 and table[LEVELS]["iobb"]["afp"]["0.5"] == 1.0  # far box once, not twice
    counts = {f: int((data.boxes.findings == nih.FINDINGS.index(f)).sum()) for f in nih.BOXED_FINDINGS}
    assert {f: table[f]["boxes"] for f in table} == counts and metrics["boxed_images_outside_test_list"] == 0
    plan = nih.plan_chestxray14(session, data)
    pairs = len(plan.pairs)
    assert sum(session.calls) == plan.runs == pairs + len(data.test) and max(session.calls) <= 5
    assert len(session.calls) == -(-pairs // 5) + -(-len(data.test) // 5)  # one run per batch


def test_the_auroc_is_the_test_lists_and_skips_absent_findings(tree):
    from sklearn.metrics import roc_auc_score

    data = nih.read_chestxray14(tree)
    session = StubSession(data)
    metrics = nih.evaluate_chestxray14(session, nih.plan_chestxray14(session, data), batch_size=64)
    truth = nih.multi_hot(data.entries, data.test, nih.FINDINGS, "the model's")
    probs = np.array([session.probs(data.entries.names[row]) for row in data.test])
    assert metrics["test_images"] == len(data.test) and metrics["positives"]["Cardiomegaly"] == int(truth[:, 1].sum())
    for index, finding in enumerate(nih.FINDINGS):
        if truth[:, index].min() == truth[:, index].max():
            assert metrics["auroc"][finding] is None
        else:
            assert metrics["auroc"][finding] == pytest.approx(roc_auc_score(truth[:, index], probs[:, index]), abs=1e-9)
    finite = [v for v in metrics["auroc"].values() if v is not None]
    assert len(finite) >= 8 and metrics["mean_auroc"] == pytest.approx(np.mean(finite))


def test_a_model_without_the_boxed_findings_is_refused_and_one_of_fewer_is_scored(tree):
    data = nih.read_chestxray14(tree)
    with pytest.raises(CamError, match=r"stub.onnx: the model has no class for the boxed findings \['Nodule'\]"):
        nih.plan_chestxray14(StubSession(data, [f for f in nih.FINDINGS if f != "Nodule"]), data)
    column = next(c for c in range(8, 14) if data.entries.findings[data.test, c].any())  # an unboxed finding of a test image
    row = next(r for r in data.test if data.entries.findings[r, column])
    assert row in data.test
    fewer = StubSession(data, nih.FINDINGS[:8])  # ChestX-ray8's findings: scored on its own classes
    metrics = nih.evaluate_chestxray14(fewer, nih.plan_chestxray14(fewer, data))
    assert list(metrics["auroc"]) == list(nih.FINDINGS[:8]) and nih.FINDINGS[column] not in metrics["positives"]


def test_the_report_holds_the_table_beside_the_published_figures(tree, tmp_path):
    data = nih.read_chestxray14(tree)
    session = StubSession(data)
    metrics = nih.evaluate_chestxray14(session, nih.plan_chestxray14(session, data))
    written = nih.write_chestxray14_report(metrics, tmp_path / "out", "stub")
    assert [p.name for p in written] == ["chestxray14.json", "chestxray14.png"]
    saved = json.loads(written[0].read_text())  # strict JSON: no NaN
    assert saved["published"]["wang2017_table4_iobb"]["Cardiomegaly"]["accuracy"]["0.1"] == 0.9931
    assert saved["published"]["wang2017_table4_iobb"]["Nodule"]["accuracy"]["0.1"] == 0.1645
    assert saved["published"]["chexnet_auroc"]["Pneumonia"] == 0.7680 and saved["published"]["chexnet_auroc"]["mean"] == 0.841
    assert set(saved["localization"]["Mass"]) == {"images", "boxes", "iobb", "iou"}
    with Image.open(written[1]) as figure:
        assert figure.size == (4 * nih.PANEL[0], 28 + 2 * nih.PANEL[1])
    lines = nih.summary_lines(saved)
    assert lines[1].startswith("Atelectasis") and "0.728" in lines[1] and lines[-1].startswith("mean")


# --- the command line ---


def run_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime", "eval", *args], capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_eval_refuses_a_model_without_the_findings_and_writes_nothing(tree, tiny_onnx, tmp_path):
    done = run_eval(str(tiny_onnx), str(tree), "--out", str(tmp_path / "out"))
    assert done.returncode != 0 and "has no class for the boxed findings" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_eval_of_a_bad_tree_writes_nothing(tree, tiny_onnx, tmp_path):
    edit(tree / "BBox_List_2017.csv", lambda lines: [lines[0], "99999999_000.png" + lines[1][lines[1].index(",") :], *lines[2:]])
    done = run_eval(str(tiny_onnx), str(tree), "--out", str(tmp_path / "out"))
    assert done.returncode != 0 and "BBox_List_2017.csv, line 2: a box for 99999999_000.png" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_eval_of_a_14_finding_model_writes_the_table_and_figure(tree, tmp_path):
    from export.onnx_export import export_model
    from fixtures import small_gapcam

    model, info = small_gapcam(num_classes=14, cam_channels=16)
    info.labels = list(nih.FINDINGS)
    onnx_path = export_model(model, info, tmp_path / "nih.onnx").path
    done = run_eval(str(onnx_path), str(tree), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "out" / "chestxray14.json").read_text())
    assert list(metrics["localization"]) == list(nih.BOXED_FINDINGS) and list(metrics["auroc"]) == list(nih.FINDINGS)
    assert metrics["test_images"] == len((tree / "test_list.txt").read_text().split())
    for table in metrics["localization"].values():
        for metric in ("iobb", "iou"):
            assert list(table[metric]["accuracy"]) == ["0.1", "0.25", "0.5", "0.75", "0.9"]
            assert all(0.0 <= v <= 1.0 for v in table[metric]["accuracy"].values())
    assert "T(IoBB)" in done.stdout and (tmp_path / "out" / "chestxray14.png").is_file()


@pytest.mark.slow
def test_the_training_reader_gives_multi_hot_labels_and_boxes_by_patient(tree):
    from train.errors import TrainError
    from train.readers import VAL_FRACTION, read_chestxray14

    recipe, options = SimpleNamespace(labels=nih.FINDINGS, data_path=lambda options: tree), SimpleNamespace(seed=0)
    parts = {split: read_chestxray14(recipe, options, split) for split in ("train", "val", "test")}
    data = nih.read_chestxray14(tree)
    assert all(p.labels.dtype == np.float32 and p.labels.shape == (len(p.images), 14) for p in parts.values())
    patient = {name: data.entries.patients[row] for name, row in data.entries.index.items()}
    train, val = ({patient[Path(p).name] for p in parts[s].images} for s in ("train", "val"))
    assert not train & val and len(val) == max(1, round(len(train | val) * VAL_FRACTION))
    assert parts["train"].boxes is None and parts["val"].boxes is None  # the boxed images are all test images
    test = parts["test"]
    boxed = [i for i, b in enumerate(test.boxes) if b is not None]
    assert len(boxed) == len(set(data.boxes.rows.tolist()))
    first = data.boxes.rows[0]
    where = [Path(p).name for p in test.images].index(data.entries.names[first])
    np.testing.assert_allclose(test.boxes[where][0], data.boxes.boxes[0] * 32 / 1024)  # in the 32-pixel image's pixels
    assert "no patient in both" in parts["train"].notes[0]
    edit(tree / "Data_Entry_2017_v2020.csv", lambda lines: [lines[0], lines[1].replace("Cardiomegaly", "Cardiomegally", 1), *lines[2:]])
    with pytest.raises(TrainError, match=r"Data_Entry_2017_v2020.csv, line 2: finding 'Cardiomegally'"):
        read_chestxray14(recipe, options, "train")


def test_the_gz_reader_reads_text_as_the_files_hold_it(tmp_path):
    path = tmp_path / "list.txt.gz"
    path.write_bytes(gzip.compress(b"a.png\n\nb.png\n"))
    entries = nih.Entries(tmp_path / "e.csv", ["a.png", "b.png"], np.zeros((2, 14), bool), ["1", "2"], [2, 3], {"a.png": 0, "b.png": 1})
    rows, lines = nih.read_list(path, entries)
    assert rows.tolist() == [0, 1] and lines == [1, 3]
    path.write_bytes(b"\x1f\x8b broken")
    with pytest.raises(CamError, match=r"list.txt.gz: unreadable"):
        nih.read_list(path, entries)


@pytest.mark.slow
def test_the_recipe_trains_a_multilabel_model_that_exports_and_evaluates(tree, tmp_path):
    """`python -m train chestxray14` end to end on the tree (a small backbone at 64x64 here; the
    recipe's default is DenseNet-121 at 224): sigmoid outputs, 14 calibrated thresholds, parity,
    and the protocol's eval of the exported model."""
    from export import export_checkpoint
    from train.checkpoint import load_checkpoint
    from train.loop import TrainConfig, fit
    from train.recipes import get_recipe

    recipe = get_recipe("chestxray14")
    assert recipe.multilabel and recipe.architecture.backbone == "densenet121" and recipe.preprocess.size == (224, 224)
    out = tmp_path / "nih.pt"
    settings = {"epochs": 1, "batch_size": 16, "backbone": "small_cnn", "cam_channels": 16, "width": 64, "height": 64, "pretrained": False}
    fit(TrainConfig(recipe="chestxray14", data=str(tree), out=str(out), **settings), log=lambda line: None)
    checkpoint = load_checkpoint(out)
    assert checkpoint.activation == "sigmoid" and checkpoint.labels == list(nih.FINDINGS) and len(checkpoint.thresholds) == 14
    exported = export_checkpoint(out)
    assert exported.parity["passed"]
    done = run_eval(str(exported.path), str(tree), "--out", str(tmp_path / "eval"))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "eval" / "chestxray14.json").read_text())
    assert set(metrics["auroc"]) == set(nih.FINDINGS)
