"""The FER2013 and chest X-ray recipes on small files in the real formats, end to end."""

import numpy as np
import pytest
import torch

import train.loop
from export import export_checkpoint
from fixtures import FER_LABELS, write_chest_xray, write_fer_csv, write_fer_folders
from runtime import CamSession
from train import TrainError
from train.checkpoint import load_checkpoint
from train.data import loader
from train.loop import TrainConfig, fit
from train.objectives import SingleLabel
from train.readers import read_chest_xray, read_fer, stratified_split
from train.recipes import CHEST_XRAY, FER, DataOptions


@pytest.fixture(scope="module")
def fer_csv(tmp_path_factory):
    return write_fer_csv(tmp_path_factory.mktemp("fer") / "fer2013.csv")


@pytest.fixture(scope="module")
def fer_folders(tmp_path_factory):
    return write_fer_folders(tmp_path_factory.mktemp("fer_folders"))


@pytest.fixture(scope="module")
def chest(tmp_path_factory):
    return write_chest_xray(tmp_path_factory.mktemp("xray"))


def test_recipe_labels_and_inputs():
    assert FER.labels == FER_LABELS  # FER2013's index order
    assert (FER.preprocess.height, FER.preprocess.width, FER.preprocess.channels) == (48, 48, 1)
    assert (CHEST_XRAY.preprocess.width, CHEST_XRAY.preprocess.height) == (256, 200)  # 256 wide x 200 high
    assert CHEST_XRAY.labels == ("NORMAL", "PNEUMONIA") and CHEST_XRAY.class_weighted


def test_fer_csv_splits_by_usage(fer_csv):
    train = read_fer(fer_csv, "train", FER.labels, 0)
    val, test = read_fer(fer_csv, "val", FER.labels, 0), read_fer(fer_csv, "test", FER.labels, 0)
    assert (len(train.images), len(val.images), len(test.images)) == (140, 35, 35)
    assert train.images[0].shape == (48, 48) and train.images[0].dtype == np.uint8
    assert set(train.labels.tolist()) == set(range(7))
    assert read_fer(fer_csv.parent, "train", FER.labels, 0).labels.tolist() == train.labels.tolist()  # folder holding the CSV


def test_fer_csv_errors_name_the_file_and_line(tmp_path):
    (tmp_path / "cols.csv").write_text("label,pixels\n1,2 3\n")
    with pytest.raises(TrainError, match="cols.csv: not a fer2013.csv"):
        read_fer(tmp_path / "cols.csv", "train", FER.labels, 0)
    (tmp_path / "short.csv").write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    with pytest.raises(TrainError, match="short.csv, line 2"):
        read_fer(tmp_path / "short.csv", "train", FER.labels, 0)


def test_fer_folders_carve_a_stratified_validation_split(fer_folders):
    train = read_fer(fer_folders, "train", FER.labels, 0)
    val = read_fer(fer_folders, "val", FER.labels, 0)
    test = read_fer(fer_folders, "test", FER.labels, 0)
    assert len(train.images) + len(val.images) == 70 and len(test.images) == 35
    assert np.bincount(val.labels, minlength=7).tolist() == [1] * 7  # stratified: 10% of 10 per class
    assert not set(map(str, train.images)) & set(map(str, val.images))
    assert any("stratified" in note for note in val.notes)
    assert [str(p) for p in read_fer(fer_folders, "val", FER.labels, 0).images] == [str(p) for p in val.images]


def test_stratified_split_keeps_class_shares():
    labels = np.array([0] * 30 + [1] * 90)
    keep, carved = stratified_split(labels, 0.1, seed=1)
    assert np.bincount(labels[carved]).tolist() == [3, 9]
    assert sorted(np.concatenate([keep, carved]).tolist()) == list(range(120))


def test_chest_xray_pools_official_val_and_carves(chest):
    train = read_chest_xray(chest, "train", CHEST_XRAY.labels, 0)
    val = read_chest_xray(chest, "val", CHEST_XRAY.labels, 0)
    test = read_chest_xray(chest, "test", CHEST_XRAY.labels, 0)
    pool = 8 + 25 + 2 + 2  # train (with one broken file) + official val
    assert len(train.images) + len(val.images) == pool and len(test.images) == 12
    assert any("official val" in note for note in train.notes)
    assert read_chest_xray(chest / "chest_xray", "test", CHEST_XRAY.labels, 0).labels.tolist() == test.labels.tolist()


@pytest.mark.parametrize("cache", ["on", "off"])
def test_chest_xray_decodes_every_size_and_mode_and_skips_broken_files(chest, cache, tmp_path):
    """Cached, the broken file is found (and left out) while decoding once; streamed, each epoch meets it."""
    data = CHEST_XRAY.load(DataOptions(chest, seed=0), cache=cache, cache_dir=tmp_path)
    batches = list(loader(data.train, 8, 0)) + list(loader(data.val, 8, 0))
    assert {tuple(b.x.shape[1:]) for b in batches if len(b.y)} == {(1, 200, 256)}
    found = [note for note in data.notes if "skipped 1 unreadable" in note] + [e for b in batches for e in b.errors]
    assert len(found) == 1 and "broken.jpeg" in found[0]
    assert sum(len(b.y) for b in batches) == 8 + 25 + 2 + 2 - 1


def test_class_weights_balance_the_classes():
    weights = SingleLabel().class_weights(torch.tensor([0] * 10 + [1] * 30), 2)
    torch.testing.assert_close(weights, torch.tensor([2.0, 2 / 3]))
    assert float((weights * torch.tensor([10.0, 30.0])).std()) == 0  # each class weighs the same in total
    with pytest.warns(DeprecationWarning, match=r"train.loop.inverse_frequency_weights is deprecated; use train.objectives"):
        torch.testing.assert_close(train.loop.inverse_frequency_weights(torch.tensor([0] * 10 + [1] * 30), 2), weights)


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(TrainError, match="fer needs --data PATH"):
        fit(TrainConfig(recipe="fer", out=str(tmp_path / "fer.pt")), log=lambda s: None)
    with pytest.raises(TrainError, match="missing folder"):
        read_chest_xray(tmp_path, "train", CHEST_XRAY.labels, 0)


@pytest.mark.parametrize("recipe,data", [("fer", "fer_csv"), ("fer", "fer_folders"), ("chest-xray", "chest")])
def test_recipe_end_to_end(recipe, data, request, tmp_path):
    path = request.getfixturevalue(data)
    out = tmp_path / f"{recipe}.pt"
    fit(TrainConfig(recipe=recipe, out=str(out), data=str(path), epochs=1, cam_channels=32, batch_size=16), log=lambda s: None)
    checkpoint = load_checkpoint(out)
    assert checkpoint.provenance.recipe == recipe
    for suffix in (".val.metrics.json", ".val.confusion.png", ".curves.png"):
        assert (tmp_path / f"{recipe}{suffix}").is_file()
    session = CamSession(export_checkpoint(out).path)
    expected = {"fer": (list(FER.labels), (48, 48)), "chest-xray": (list(CHEST_XRAY.labels), (200, 256))}[recipe]
    assert (session.labels, session.input_size) == expected
    assert session.preprocessing.channels == 1
