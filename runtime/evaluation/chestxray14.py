"""NIH ChestX-ray14 as it ships, and the published protocol for scoring a model on it.

The files (read with the standard library and numpy, so that `runtime` evaluates and `train` trains
on the one reading of them):
- `Data_Entry_2017_v2020.csv` or `Data_Entry_2017.csv` (either may be gzipped): `Image Index`,
  `Finding Labels` (findings joined by `|`, `No Finding` for none) and `Patient ID`, by header name.
- `train_val_list.txt` and `test_list.txt`: one image name a line; no patient is in both.
- `images/` or `images_001/images/` ... `images_012/images/`: the PNGs.
- `BBox_List_2017.csv` (optional): `Image Index,Finding Label,Bbox [x,y,w,h]` and empty columns,
  boxes in the 1024x1024 images' pixels; it spells Infiltration `Infiltrate`.

The protocol (`evaluate_chestxray14`), after Wang et al., "ChestX-ray8", CVPR 2017, Table 4: for
each image and boxed finding, the CAM of that finding at image size is thresholded at 60 and 180 of
[0, 255] and every connected component of either mask is a detected box. A true box is found at
T(IoBB) when a detected box's intersection with it over the detected box's area exceeds T (likewise
T(IoU)); a detected box that finds no true box of its finding on its image is a false positive.
Accuracy = true boxes found / true boxes; AFP = false positives / images, per finding. Beside it,
per-finding AUROC on the test list (CheXNet, Rajpurkar et al. 2017, reports it for DenseNet-121).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from runtime.errors import CamError
from runtime.evaluation.multilabel import roc_auc
from runtime.formats.files import atomic_path, write_text_atomic
from runtime.inference.session import CamSession
from runtime.maps.activations import activate
from runtime.maps.boxes import box_ious, component_boxes
from runtime.reports.plot import line_chart

FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)  # the usual order (Wang et al., CheXNet)
BOXED_FINDINGS = FINDINGS[:8]  # the findings BBox_List_2017.csv has boxes for
NO_FINDING = "No Finding"
ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")  # the first found wins, either maybe .gz
LIST_FILES = ("train_val_list.txt", "test_list.txt")
BOX_FILE = "BBox_List_2017.csv"
ENTRY_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
BOX_COLUMNS = 6  # Image Index, Finding Label, x, y, w, h; the file's header and rows may add empty columns
NIH_SIDE = 1024  # the released PNGs' side: the box file's pixels
BOX_LEVELS = (60 / 255, 180 / 255)  # Wang et al.: heatmaps "normalized to [0, 255] and then thresholded by {60, 180}"
OVERLAP_THRESHOLDS = (0.1, 0.25, 0.5, 0.75, 0.9)  # T(IoBB) and T(IoU) of Table 4
_ALIASES = {"infiltrate": "infiltration"}  # the box file's spelling
_KEYS = {name.lower(): index for index, name in enumerate(FINDINGS)}


def finding_index(label: str) -> int | None:
    """The index in FINDINGS of a finding named as NIH's files or a model name it (case, spaces for
    underscores and the box file's `Infiltrate` allowed), or None."""
    key = label.strip().lower().replace(" ", "_")
    return _KEYS.get(_ALIASES.get(key, key))


@contextmanager
def _text(path: Path) -> Iterator[io.TextIOBase]:
    """A text file, gunzipped when its name ends in .gz; every read error as one CamError line."""
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") if path.suffix == ".gz" else open(path, encoding="utf-8", newline="") as f:
            yield f
    except (OSError, UnicodeDecodeError, csv.Error, EOFError) as err:
        raise CamError(f"{path}: unreadable ({err.__class__.__name__}: {err})") from None


@dataclass(frozen=True)
class Entries:
    """The rows of Data_Entry_2017*.csv: image names, findings, patients, and where each row is."""

    path: Path
    names: list[str]
    findings: npt.NDArray[np.bool_]  # [N, 14] in FINDINGS order
    patients: list[str]
    lines: list[int]  # the file line of each row
    index: dict[str, int]  # image name -> row

    def where(self, row: int) -> str:
        return f"{self.path}, line {self.lines[row]}"


def read_entries(path: Path) -> Entries:
    """Data_Entry_2017*.csv (or .csv.gz), its columns found by header name.

    Raises CamError naming the file and line for a missing column, a short row, an empty image
    name or patient, a finding ChestX-ray14 does not have, `No Finding` beside a finding, or an
    image listed twice.
    """
    names: list[str] = []
    rows: list[npt.NDArray[np.bool_]] = []
    patients: list[str] = []
    lines: list[int] = []
    index: dict[str, int] = {}
    with _text(path) as handle:
        reader = csv.reader(handle)
        header = [field.strip() for field in next(reader, [])]
        missing = [column for column in ENTRY_COLUMNS if column not in header]
        if missing:
            raise CamError(f"{path}, line 1: not a ChestX-ray14 Data_Entry file (no columns {missing})")
        name_at, labels_at, patient_at = (header.index(column) for column in ENTRY_COLUMNS)
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if not any(field.strip() for field in row):
                continue
            if len(row) <= max(name_at, labels_at, patient_at):
                raise CamError(f"{where}: {len(row)} columns, expected {len(header)}")
            name, labels, patient = row[name_at].strip(), row[labels_at].strip(), row[patient_at].strip()
            if not name or not patient:
                raise CamError(f"{where}: empty Image Index or Patient ID")
            if name in index:
                raise CamError(f"{where}: {name} is listed twice (first on line {lines[index[name]]})")
            found = np.zeros(len(FINDINGS), dtype=bool)
            parts = [part.strip() for part in labels.split("|")]
            if parts != [NO_FINDING]:
                for part in parts:
                    column = _KEYS.get(part.lower())
                    if column is None:
                        raise CamError(f"{where}: finding {part!r} is not one of ChestX-ray14's {list(FINDINGS)} or {NO_FINDING!r}")
                    found[column] = True
            index[name] = len(names)
            names.append(name)
            rows.append(found)
            patients.append(patient)
            lines.append(reader.line_num)
    if not names:
        raise CamError(f"{path}: no rows")
    return Entries(path, names, np.array(rows, dtype=bool).reshape(-1, len(FINDINGS)), patients, lines, index)


def read_list(path: Path, entries: Entries) -> tuple[npt.NDArray[np.intp], list[int]]:
    """(entry rows, file lines) of the images named in train_val_list.txt or test_list.txt.

    Raises CamError naming the file and line for an image not in the Data_Entry file or named twice.
    """
    rows: list[int] = []
    lines: list[int] = []
    seen: dict[str, int] = {}
    with _text(path) as handle:
        for number, line in enumerate(handle, 1):
            name = line.strip()
            if not name:
                continue
            if name not in entries.index:
                raise CamError(f"{path}, line {number}: {name} is not in {entries.path.name}")
            if name in seen:
                raise CamError(f"{path}, line {number}: {name} is listed twice (first on line {seen[name]})")
            seen[name] = number
            rows.append(entries.index[name])
            lines.append(number)
    return np.array(rows, dtype=np.intp), lines


@dataclass(frozen=True)
class Boxes:
    """The rows of BBox_List_2017.csv: one true box each."""

    path: Path
    rows: npt.NDArray[np.intp]  # [M] the entry row of each box's image
    findings: npt.NDArray[np.intp]  # [M] index in FINDINGS
    boxes: npt.NDArray[np.float64]  # [M, 4] x0, y0, x1, y1 in the 1024x1024 images' pixels, end-exclusive
    lines: list[int]


def read_boxes(path: Path, entries: Entries) -> Boxes:
    """BBox_List_2017.csv (or .csv.gz): image, finding, x, y, width, height (trailing empty columns allowed).

    Raises CamError naming the file and line for a short row, a non-empty extra column, a finding
    ChestX-ray14 does not have, an image not in the Data_Entry file or whose labels lack the finding,
    and coordinates that are not finite numbers with a positive width and height.
    """
    rows, findings, boxes, lines = [], [], [], []
    with _text(path) as handle:
        reader = csv.reader(handle)
        header = [field.strip() for field in next(reader, [])]
        if header[:2] != ["Image Index", "Finding Label"]:
            raise CamError(f"{path}, line 1: not a ChestX-ray14 box list (expected Image Index,Finding Label,Bbox [x,y,w,h])")
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if not any(field.strip() for field in row):
                continue
            if len(row) < BOX_COLUMNS or any(field.strip() for field in row[BOX_COLUMNS:]):
                raise CamError(f"{where}: expected image, finding, x, y, w, h (then only empty columns)")
            name, label = row[0].strip(), row[1].strip()
            finding = finding_index(label)
            if finding is None:
                raise CamError(f"{where}: finding {label!r} is not one of ChestX-ray14's {list(FINDINGS)}")
            if name not in entries.index:
                raise CamError(f"{where}: a box for {name}, which is not in {entries.path.name}")
            if not entries.findings[entries.index[name], finding]:
                raise CamError(f"{where}: a box of {FINDINGS[finding]} on {name}, whose Finding Labels lack it")
            try:
                x, y, width, height = (float(value) for value in row[2:BOX_COLUMNS])
            except ValueError:
                raise CamError(f"{where}: box x, y, w, h must be numbers") from None
            if not all(math.isfinite(v) for v in (x, y, width, height)) or width <= 0 or height <= 0:
                raise CamError(f"{where}: box needs finite x, y and a positive width and height")
            rows.append(entries.index[name])
            findings.append(finding)
            boxes.append((x, y, x + width, y + height))
            lines.append(reader.line_num)
    return Boxes(path, np.array(rows, dtype=np.intp), np.array(findings, dtype=np.intp), np.array(boxes).reshape(-1, 4), lines)


@dataclass(frozen=True)
class ChestXray14:
    """A ChestX-ray14 tree: its entries, the official lists (entry rows) and the boxes (or None)."""

    root: Path
    entries: Entries
    train_val: npt.NDArray[np.intp]
    train_val_lines: list[int]  # train_val_list.txt's line of each of its rows
    test: npt.NDArray[np.intp]
    test_lines: list[int]  # test_list.txt's line of each test row
    boxes: Boxes | None


def _find(root: Path, names: Sequence[str]) -> Path | None:
    """The first of `names` (or its .gz) that is a file in `root`."""
    return next((root / n for name in names for n in (name, name + ".gz") if (root / n).is_file()), None)


def is_chestxray14(folder: Path) -> bool:
    """Whether `folder` is laid out as ChestX-ray14 ships (a Data_Entry file beside test_list.txt)."""
    return folder.is_dir() and _find(folder, ENTRY_FILES) is not None and (folder / LIST_FILES[1]).is_file()


def read_chestxray14(root: Path) -> ChestXray14:
    """Every label file of the tree at `root` (`BBox_List_2017.csv` where present).

    Raises CamError naming the folder when a file is missing, the file and line of any bad row
    (see `read_entries`, `read_list`, `read_boxes`), and the line of test_list.txt whose patient
    also has an image in train_val_list.txt.
    """
    entries_path = _find(root, ENTRY_FILES)
    if entries_path is None:
        raise CamError(f"{root}: no {' or '.join(ENTRY_FILES)} (ChestX-ray14 as it ships)")
    for name in LIST_FILES:
        if not (root / name).is_file():
            raise CamError(f"{root}: no {name} (ChestX-ray14 as it ships)")
    entries = read_entries(entries_path)
    train_val, train_val_lines = read_list(root / LIST_FILES[0], entries)
    test, test_lines = read_list(root / LIST_FILES[1], entries)
    training_patients = {entries.patients[row] for row in train_val}
    for row, line in zip(test, test_lines, strict=True):
        if entries.patients[row] in training_patients:
            raise CamError(
                f"{root / LIST_FILES[1]}, line {line}: patient {entries.patients[row]} ({entries.names[row]}) "
                f"also has images in {LIST_FILES[0]}"
            )
    box_path = _find(root, [BOX_FILE])
    return ChestXray14(root, entries, train_val, train_val_lines, test, test_lines, read_boxes(box_path, entries) if box_path else None)


def patient_split(tree: ChestXray14, fraction: float, seed: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(train, val) entry rows of train_val_list.txt: a seeded `fraction` of its patients (at least
    one) with all their images is the validation split. Raises CamError for fewer than two patients."""
    patients = sorted({tree.entries.patients[row] for row in tree.train_val})
    if len(patients) < 2:
        raise CamError(f"{tree.root / LIST_FILES[0]}: needs images of at least two patients to carve a validation split")
    order = np.random.default_rng(seed).permutation(len(patients))
    chosen = {patients[i] for i in order[: max(1, round(len(patients) * fraction))]}
    val = np.array([tree.entries.patients[row] in chosen for row in tree.train_val], dtype=bool)
    return tree.train_val[~val], tree.train_val[val]


def multi_hot(
    entries: Entries, rows: npt.ArrayLike, labels: Sequence[str], whose: str, ignore_others: bool = False
) -> npt.NDArray[np.float32]:
    """Float32 [len(rows), len(labels)] 0/1: each row's findings in the order of `labels`.

    Raises CamError for a label that is not a ChestX-ray14 finding, and, naming the Data_Entry file
    and line, for a row with a finding that `labels` (`whose` labels: "the model's") lack, unless
    `ignore_others` (scoring a model of fewer findings: each of its classes is judged on its own).
    """
    columns = [finding_index(label) for label in labels]
    unknown = [label for label, column in zip(labels, columns, strict=True) if column is None]
    if unknown:
        raise CamError(f"{whose} labels {unknown} are not ChestX-ray14 findings {list(FINDINGS)}")
    rows = np.asarray(rows, dtype=np.intp)
    found = entries.findings[rows]
    others = np.setdiff1d(np.arange(len(FINDINGS)), np.array(columns, dtype=np.intp))
    lacking = np.flatnonzero(found[:, others].any(axis=1))
    if len(lacking) and not ignore_others:
        row = int(rows[lacking[0]])
        names = [FINDINGS[c] for c in others if entries.findings[row, c]]
        raise CamError(f"{entries.where(row)}: finding {names[0]} of {entries.names[row]} is not one of {whose} labels {list(labels)}")
    hot: npt.NDArray[np.float32] = found[:, np.array(columns, dtype=np.intp)].astype(np.float32)
    return hot  # annotated: numpy types fancy indexing's result as Any


def find_images(root: Path, wanted: Sequence[tuple[str, str]]) -> list[Path]:
    """The paths of images named in (name, where) pairs, under root/images/ or root/images_NNN/images/.

    Raises CamError naming `where` (a file and line) for an image in neither.
    """
    folders = [root / "images", *sorted(root.glob("images_[0-9][0-9][0-9]/images"))]
    found: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            with os.scandir(folder) as listing:
                for item in listing:
                    found.setdefault(item.name, Path(item.path))
    paths = []
    for name, where in wanted:
        if name not in found:
            raise CamError(f"{where}: image {name} is not in {root}/images/ or {root}/images_NNN/images/")
        paths.append(found[name])
    return paths


def detected_boxes(cam: npt.NDArray[np.floating[Any]], levels: Sequence[float] = BOX_LEVELS) -> npt.NDArray[np.int64]:
    """[d, 4] the distinct boxes of the connected components of `cam >= level`, for each level, of a
    [0, 1]-scaled map (Wang et al.'s box generation)."""
    found = [component_boxes(cam >= level) for level in levels]
    return np.unique(np.concatenate(found), axis=0) if found else np.zeros((0, 4), dtype=np.int64)


def overlaps(detected: npt.ArrayLike, true_boxes: npt.ArrayLike) -> dict[str, npt.NDArray[np.float64]]:
    """{"iobb", "iou"}: [t, d] of each true box with each detected box. IoBB is the intersection
    over the detected box's area, from box_ious's IoU: intersection = IoU (A_d + A_t) / (1 + IoU)."""
    found = np.asarray(detected, dtype=np.float64).reshape(-1, 4)
    true = np.asarray(true_boxes, dtype=np.float64).reshape(-1, 4)
    area = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
    iou = np.array([box_ious(found, box[None]) for box in true]).reshape(len(true), len(found))
    true_area = ((true[:, 2] - true[:, 0]) * (true[:, 3] - true[:, 1]))[:, None]
    intersection = iou * (area[None] + true_area) / (1 + iou)
    return {"iobb": intersection / np.where(area > 0, area, 1.0)[None], "iou": iou}


METRICS = ("iobb", "iou")


@dataclass
class FindingScore:
    """One finding's running counts over its boxed images, per metric and overlap threshold."""

    thresholds: npt.NDArray[np.float64]  # [T]
    images: int = 0
    boxes: int = 0
    found: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)  # metric -> [T] true boxes found
    false_positives: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)  # metric -> [T] boxes that found none

    def __post_init__(self) -> None:
        for metric in METRICS:
            self.found[metric] = np.zeros(len(self.thresholds), dtype=np.int64)
            self.false_positives[metric] = np.zeros(len(self.thresholds), dtype=np.int64)

    def add(self, detected: npt.NDArray[np.int64], true_boxes: npt.NDArray[np.float64]) -> None:
        """Count one image: its detected boxes against its true boxes of this finding."""
        self.images += 1
        self.boxes += len(true_boxes)
        for metric, values in overlaps(detected, true_boxes).items():
            hit = values[None] > self.thresholds[:, None, None]  # [T, true, detected]
            self.found[metric] += hit.any(axis=2).sum(axis=1)
            self.false_positives[metric] += (~hit.any(axis=1)).sum(axis=1)

    def table(self) -> dict[str, Any]:
        """This finding's JSON: its counts, and per metric the accuracy and AFP at each threshold."""
        out: dict[str, Any] = {"images": self.images, "boxes": self.boxes}
        for metric in METRICS:
            keys = [str(float(t)) for t in self.thresholds]
            out[metric] = {
                "accuracy": {k: float(v) / self.boxes if self.boxes else None for k, v in zip(keys, self.found[metric], strict=True)},
                "afp": {
                    k: float(v) / self.images if self.images else None for k, v in zip(keys, self.false_positives[metric], strict=True)
                },
            }
        return out


def model_columns(session: CamSession) -> dict[int, int]:
    """FINDINGS index -> the model's class index. Raises CamError for a model lacking a boxed finding."""
    columns = {}
    for index, label in enumerate(session.labels):
        finding = finding_index(label)
        if finding is not None:
            columns[finding] = index
    missing = [name for i, name in enumerate(BOXED_FINDINGS) if i not in columns]
    if missing:
        raise CamError(f"{session.path}: the model has no class for the boxed findings {missing} (its labels: {session.labels})")
    return columns


def _batches(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


@dataclass(frozen=True)
class Plan:
    """What `evaluate_chestxray14` runs, every input checked: the boxed (image row, finding) pairs
    with their images, the test images and their true findings in the model's label order."""

    tree: ChestXray14
    boxes: Boxes  # the tree's
    columns: dict[int, int]  # FINDINGS index -> the model's class
    pairs: list[tuple[int, int]]  # (entry row, finding) of each boxed image and finding, in box-file order
    pair_paths: list[Path]
    test_paths: list[Path]
    truth: npt.NDArray[np.float32]  # [len(test), num_classes] multi-hot

    @property
    def runs(self) -> int:
        """Images the evaluation runs: each pair, then each test image (a progress bar's length)."""
        return len(self.pairs) + len(self.test_paths)


def plan_chestxray14(session: CamSession, tree: ChestXray14) -> Plan:
    """Check `session`'s labels against the tree and find every image, before any inference.

    Raises CamError for a tree without BBox_List_2017.csv, a model lacking a boxed finding or
    with labels that are not findings, and a missing image (naming the line of the box or test
    list that names it). A model of fewer findings (ChestX-ray8's eight) is scored on its own.
    """
    if tree.boxes is None:
        raise CamError(f"{tree.root}: no {BOX_FILE}: nothing to score localization on")
    columns = model_columns(session)
    truth = multi_hot(tree.entries, tree.test, session.labels, "the model's", ignore_others=True)
    boxes, names = tree.boxes, tree.entries.names
    unknown = sorted({FINDINGS[f] for f in boxes.findings.tolist() if f not in columns})
    if unknown:
        raise CamError(f"{boxes.path}: boxes of {unknown}, which the model has no class for")
    first_line: dict[tuple[int, int], int] = {}  # (entry row, finding) -> its first box's line
    for row, finding, line in zip(boxes.rows.tolist(), boxes.findings.tolist(), boxes.lines, strict=True):
        first_line.setdefault((row, finding), line)
    pairs = list(first_line)
    pair_paths = find_images(tree.root, [(names[r], f"{boxes.path}, line {first_line[(r, f)]}") for r, f in pairs])
    test_list = tree.root / LIST_FILES[1]
    test_paths = find_images(tree.root, [(names[r], f"{test_list}, line {n}") for r, n in zip(tree.test, tree.test_lines, strict=True)])
    return Plan(tree, boxes, columns, pairs, pair_paths, test_paths, truth)


def evaluate_chestxray14(
    session: CamSession,
    plan: Plan,
    *,
    method: str = "cam",
    levels: Sequence[float] = BOX_LEVELS,
    thresholds: Sequence[float] = OVERLAP_THRESHOLDS,
    batch_size: int = 16,
    progress: Callable[[int], None] = lambda done: None,
) -> dict[str, Any]:
    """Wang et al.'s localization table on the plan's boxes and the per-finding AUROC of its test
    list (see the module docstring), for `session`'s CAMs by `method` and its probabilities.

    One `session.run` per batch of images; only one batch's image-size maps are held at a time.
    Raises CamError for an image that does not decode (as `CamSession.run` does).
    """
    tree, boxes = plan.tree, plan.boxes
    scores = {finding: FindingScore(np.array(thresholds, dtype=np.float64)) for finding in sorted({f for _, f in plan.pairs})}
    for part in _batches(len(plan.pairs), batch_size):
        chosen = plan.pairs[part]
        classes = np.array([[plan.columns[finding]] for _, finding in chosen], dtype=np.int64)
        for (row, finding), result in zip(chosen, session.run(plan.pair_paths[part], classes=classes, method=method), strict=True):
            cam = result.cam  # [H, W] the finding's map at image size, [0, 1]
            scale = np.array([cam.shape[1], cam.shape[0]] * 2, dtype=np.float64) / NIH_SIDE
            scores[finding].add(detected_boxes(cam, levels), boxes.boxes[(boxes.rows == row) & (boxes.findings == finding)] * scale)
        progress(len(chosen))
    probs = np.zeros(plan.truth.shape, dtype=np.float32)
    for part in _batches(len(plan.test_paths), batch_size):  # the probabilities alone: no maps, no boxes
        probs[part] = activate(session.logits(session.to_batch(plan.test_paths[part])), session.info.activation)
        progress(part.stop - part.start)
    aurocs = [roc_auc(probs[:, index], plan.truth[:, index]) for index in range(len(session.labels))]
    finite = [value for value in aurocs if not math.isnan(value)]
    return {
        "dataset": "ChestX-ray14",
        "entries_file": tree.entries.path.name,
        "method": method,
        "activation": session.info.activation,
        "box_levels": list(levels),
        "thresholds": list(thresholds),
        "boxed_images": len({row for row, _ in plan.pairs}),
        "boxed_images_outside_test_list": len(set(boxes.rows.tolist()) - set(tree.test.tolist())),
        "localization": {FINDINGS[f]: score.table() for f, score in scores.items()},
        "test_images": len(plan.test_paths),
        "positives": {label: int(plan.truth[:, i].sum()) for i, label in enumerate(session.labels)},
        "auroc": {label: None if math.isnan(value) else value for label, value in zip(session.labels, aurocs, strict=True)},
        "mean_auroc": float(np.mean(finite)) if finite else None,
        "published": PUBLISHED,
        "definitions": DEFINITIONS,
    }


DEFINITIONS = {
    "detected boxes": "per image and boxed finding: the boxes of every 8-connected component of the finding's CAM (at image size, "
    "min-max scaled) at or above each of box_levels (60 and 180 of 255, Wang et al.), duplicates removed",
    "iobb": "intersection of a true box and a detected box over the detected box's area (Wang et al.)",
    "iou": "intersection over union of a true box and a detected box",
    "accuracy": "true boxes with a detected box of their finding on their image whose overlap exceeds T, over true boxes",
    "afp": "detected boxes that exceed T with no true box of their finding on their image, per image with boxes of that finding",
    "auroc": "area under the ROC curve of the model's probability over test_list.txt (Mann-Whitney, ties a half)",
}

# Wang et al., "ChestX-ray8", CVPR 2017, arXiv:1705.02315v5, Table 4 (T(IoBB)); BOXED_FINDINGS order.
WANG_TABLE4 = {
    "accuracy": {
        "0.1": (0.7277, 0.9931, 0.7124, 0.7886, 0.4352, 0.1645, 0.7500, 0.4591),
        "0.25": (0.5500, 0.9794, 0.5424, 0.5772, 0.2823, 0.0506, 0.5583, 0.3469),
        "0.5": (0.2833, 0.8767, 0.3333, 0.4227, 0.1411, 0.0126, 0.3833, 0.1836),
        "0.75": (0.1666, 0.7260, 0.2418, 0.3252, 0.1176, 0.0126, 0.2583, 0.1020),
        "0.9": (0.1333, 0.6849, 0.2091, 0.2520, 0.0588, 0.0126, 0.2416, 0.0816),
    },
    "afp": {
        "0.1": (0.8323, 0.3506, 0.7998, 0.5589, 0.6423, 0.6047, 0.9055, 0.4776),
        "0.25": (0.9167, 0.4553, 0.8598, 0.6077, 0.6707, 0.6158, 0.9614, 0.5000),
        "0.5": (1.0203, 0.5630, 0.9268, 0.6585, 0.6941, 0.6189, 1.0132, 0.5285),
        "0.75": (1.0619, 0.6616, 0.9603, 0.6921, 0.7043, 0.6199, 1.0569, 0.5396),
        "0.9": (1.0752, 0.7226, 0.9797, 0.7124, 0.7144, 0.6199, 1.0732, 0.5437),
    },
}
# Rajpurkar et al., "CheXNet", arXiv:1711.05225, per-finding AUROC (FINDINGS order), as tabulated in
# github.com/arnoweng/CheXNet's README (column "CheXNet"), which gives their mean as 0.841.
CHEXNET_AUROC = (0.8094, 0.9248, 0.8638, 0.7345, 0.8676, 0.7802, 0.7680, 0.8887, 0.7901, 0.8878, 0.9371, 0.8047, 0.8062, 0.9164)
PUBLISHED = {
    "wang2017_table4_iobb": {
        "source": "Wang et al., ChestX-ray8, CVPR 2017 (arXiv:1705.02315v5), Table 4: accuracy and AFP at T(IoBB)",
        "split": "their random 70/10/20 split of ChestX-ray8 (8 findings), not the official lists",
        **{
            finding: {key: {t: values[i] for t, values in table.items()} for key, table in WANG_TABLE4.items()}
            for i, finding in enumerate(BOXED_FINDINGS)
        },
    },
    "chexnet_auroc": {
        "source": "Rajpurkar et al., CheXNet (arXiv:1711.05225), as tabulated in github.com/arnoweng/CheXNet README",
        "split": "a random split of their own (70/10/20, as the README describes it), not the official test list",
        "mean": 0.841,
        **dict(zip(FINDINGS, CHEXNET_AUROC, strict=True)),
    },
}


def summary_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The table as text: accuracy at T(IoBB) per boxed finding beside Wang et al.'s, then AUROC."""
    thresholds = [str(float(t)) for t in metrics["thresholds"]]
    wang = metrics["published"]["wang2017_table4_iobb"]
    lines = [f"{'T(IoBB)':<14}" + "".join(f"{t:>14}" for t in thresholds) + f"{'AFP@0.1':>10}   (gapcam / Wang et al.)"]
    for finding, table in metrics["localization"].items():
        published = wang.get(finding, {}).get("accuracy", {})
        cells = "".join(f"{_cell(table['iobb']['accuracy'][t]):>7}/{_cell(published.get(t)):<6}" for t in thresholds)
        lines.append(f"{finding:<14}{cells}{_cell(table['iobb']['afp'][thresholds[0]]):>10}")
    chexnet = metrics["published"]["chexnet_auroc"]
    lines.append(f"{'AUROC':<20}{'gapcam':>8}{'CheXNet':>9}")
    for label, value in metrics["auroc"].items():
        column = finding_index(label)
        lines.append(f"{label:<20}{_cell(value):>8}{_cell(None if column is None else chexnet[FINDINGS[column]]):>9}")
    lines.append(f"{'mean':<20}{_cell(metrics['mean_auroc']):>8}{_cell(chexnet['mean']):>9}")
    return lines


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


PANEL = (360, 260)


def write_chestxray14_report(metrics: Mapping[str, Any], out_dir: Path, title: str) -> list[Path]:
    """chestxray14.json and chestxray14.png: per boxed finding, accuracy against T(IoBB) and T(IoU)
    beside Wang et al.'s T(IoBB) curve; the mean AUROC beside CheXNet's in the heading."""
    json_path, plot_path = out_dir / "chestxray14.json", out_dir / "chestxray14.png"
    write_text_atomic(json_path, json.dumps(metrics, indent=2))
    thresholds = [float(t) for t in metrics["thresholds"]]
    wang = metrics["published"]["wang2017_table4_iobb"]
    panels = []
    for finding, table in metrics["localization"].items():
        series: dict[str, tuple[Sequence[float], Sequence[float]]] = {
            "IoBB": (thresholds, [v or 0.0 for v in table["iobb"]["accuracy"].values()]),
            "IoU": (thresholds, [v or 0.0 for v in table["iou"]["accuracy"].values()]),
        }
        if finding in wang:
            series["Wang et al. IoBB"] = ([float(t) for t in wang[finding]["accuracy"]], list(wang[finding]["accuracy"].values()))
        panels.append(line_chart(series, title=f"{finding} ({table['boxes']} boxes)", xlabel="T", ylabel="accuracy", size=PANEL))
    columns = 4
    heading = 28
    grid = Image.new("RGB", (PANEL[0] * columns, heading + PANEL[1] * max(1, -(-len(panels) // columns))), "white")
    chexnet = metrics["published"]["chexnet_auroc"]["mean"]
    ImageDraw.Draw(grid).text((8, 8), f"{title}: mean AUROC {_cell(metrics['mean_auroc'])} (CheXNet {chexnet:.3f})", fill="black")
    for index, panel in enumerate(panels):
        grid.paste(panel, ((index % columns) * PANEL[0], heading + (index // columns) * PANEL[1]))
    with atomic_path(plot_path) as tmp:
        grid.save(tmp, format="PNG")
    return [json_path, plot_path]
