"""train.data: the streaming pipeline gives the runtime's pixels, and the same batches whatever the
number of workers and whether images come from the files or from the pixel cache."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures import write_image_folder
from runtime.inputs.image import Preprocess, preprocess
from train.data import Augment, ImageSet, batches_per_epoch, check_batch_size, fingerprint, loader, training_sampler
from train.errors import TrainError
from train.readers import class_folders

SPEC = Preprocess(height=48, width=40, color="RGB", mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("folder"), per_class=4, test=0, boxes=False)


@pytest.fixture(scope="module")
def files(folder):
    from runtime.evaluation.shapes import CLASSES

    return class_folders(folder / "train", CLASSES)


def epoch_batches(images: ImageSet, workers: int, epoch: int = 1, rank: int = 0, world: int = 1) -> list:
    sampler = training_sampler(images, seed=7, rank=rank, world=world)
    sampler.set_epoch(epoch)
    images.epoch = epoch
    return list(loader(images, 6, workers, sampler))


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.index, y.index) and torch.equal(x.y, y.y) and torch.equal(x.x, y.x)


def test_a_sample_without_augmentation_is_runtime_preprocess(files):
    images = ImageSet(files.images, files.labels, SPEC)
    for index in (0, 5, len(images) - 1):
        one = images[index]
        assert one.y.tolist() == [files.labels[index]] and one.index.tolist() == [index]
        np.testing.assert_array_equal(one.x.numpy(), preprocess(files.images[index], SPEC))
    batch = images.__getitems__([3, 1, 4])  # what a DataLoader asks for, once per batch
    np.testing.assert_array_equal(batch.x.numpy(), preprocess([files.images[i] for i in (3, 1, 4)], SPEC))


@pytest.mark.parametrize(
    "shape,color", [((48, 40, 3), "RGB"), ((48, 40), "L"), ((48, 40, 1), "L"), ((48, 40, 4), "RGB"), ((60, 40, 3), "RGB")]
)
def test_arrays_in_memory_give_the_runtime_pixels(shape, color):
    """Arrays already at model size skip the decode round trip; the pixels stay the runtime's."""
    spec = Preprocess(
        height=48, width=40, color=color, mean=SPEC.mean[: 1 if color == "L" else 3], std=SPEC.std[: 1 if color == "L" else 3]
    )
    arrays = np.random.default_rng(2).integers(0, 256, (3, *shape), dtype=np.uint8)
    batch = ImageSet(arrays, np.zeros(3, np.int64), spec).__getitems__([0, 1, 2])
    np.testing.assert_array_equal(batch.x.numpy(), preprocess(list(arrays), spec))


def test_batches_do_not_depend_on_the_number_of_workers(files):
    images = ImageSet(files.images, files.labels, SPEC, Augment(hflip=True, shift=3, crop_scale=(0.3, 1.0)), seed=7)
    serial = epoch_batches(images, workers=0)
    assert_same_batches(serial, epoch_batches(images, workers=2))
    assert sorted(torch.cat([b.index for b in serial]).tolist()) == list(range(len(images)))
    other_epoch = epoch_batches(images, workers=0, epoch=2)
    assert not torch.equal(torch.cat([b.index for b in serial]), torch.cat([b.index for b in other_epoch]))


def test_the_cache_gives_the_pixels_the_files_give(files, tmp_path):
    images = ImageSet(files.images, files.labels, SPEC, Augment(hflip=True, crop_scale=(0.5, 1.0)), seed=7)
    cached, keep, errors = images.with_cache(tmp_path, workers=2, desc="train")
    assert keep.tolist() == list(range(len(images))) and errors == []
    assert cached.cache.shape == (len(images), 48, 40, 3) and cached.cache[len(images) - 1].shape == (48, 40, 3)
    assert_same_batches(epoch_batches(images, workers=0), epoch_batches(cached, workers=2))


def test_the_cache_leaves_out_unreadable_files(files, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    images = ImageSet([files.images[0], broken, files.images[2]], files.labels[[0, 1, 2]], SPEC)
    cached, keep, errors = images.with_cache(tmp_path, workers=0, desc="val")
    assert keep.tolist() == [0, 2] and len(errors) == 1 and "broken.jpg: not a readable image" in errors[0]
    assert len(cached) == 2 and cached.labels.tolist() == files.labels[[0, 2]].tolist()
    np.testing.assert_array_equal(cached[1].x.numpy(), preprocess(files.images[2], SPEC))
    streamed = list(loader(images, 8, 0))[0]
    assert streamed.index.tolist() == [0, 2] and streamed.errors == errors  # streamed, the batch leaves it out


def test_process_shares_cover_the_epoch_once(files):
    images = ImageSet(files.images, files.labels, SPEC, Augment(), seed=7)
    shares = [torch.cat([b.index for b in epoch_batches(images, 0, rank=rank, world=2)]).tolist() for rank in (0, 1)]
    assert not set(shares[0]) & set(shares[1]) and sorted(shares[0] + shares[1]) == list(range(len(images)))
    assert batches_per_epoch(len(images), 12, 2) == len(epoch_batches(images, 0, rank=1, world=2))  # a global 12 is 6 a process
    with pytest.raises(TrainError, match="--batch-size 7 must be a multiple of the 2 processes"):
        check_batch_size(7, 2)


def test_augmentation_keeps_size_and_is_seeded():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
    augment = Augment(hflip=True, shift=4, crop_scale=(0.25, 1.0))
    out = augment(pixels, np.random.default_rng(1), "bilinear")
    assert out.shape == pixels.shape and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, augment(pixels, np.random.default_rng(1), "bilinear"))
    whole = Augment(hflip=False, crop_scale=(1.0, 1.0), crop_ratio=(50 / 30, 50 / 30))  # the whole image, resized to itself
    np.testing.assert_array_equal(whole(pixels, rng, "bilinear"), pixels)
    gray = Augment(hflip=False, crop_scale=(0.5, 0.5))(pixels[:, :, :1], rng, "bilinear")
    assert gray.shape == (30, 50, 1)
    padded = np.pad(pixels, ((4, 4), (4, 4), (0, 0)), mode="edge")  # the shift: a window of the edge-padded image
    shifted = [Augment(hflip=False, shift=4)(pixels, np.random.default_rng(seed), "bilinear") for seed in range(30)]
    windows = {(dy, dx): padded[dy : dy + 30, dx : dx + 50] for dy in range(9) for dx in range(9)}
    assert all(any(np.array_equal(s, w) for w in windows.values()) for s in shifted)
    assert len({next(k for k, w in windows.items() if np.array_equal(s, w)) for s in shifted}) > 10
    flips = [Augment(hflip=True)(pixels, np.random.default_rng(seed), "bilinear") for seed in range(20)]
    assert any(np.array_equal(f, pixels[:, ::-1]) for f in flips) and any(np.array_equal(f, pixels) for f in flips)


def test_fingerprint_reads_names_and_sizes_not_pixels(files, tmp_path):
    arrays = np.zeros((2, 4, 4), np.uint8)
    assert fingerprint((arrays, np.array([0, 1]))) != fingerprint((arrays + 1, np.array([0, 1])))
    assert fingerprint((files.images, files.labels)) == fingerprint((list(files.images), files.labels.copy()))
    assert fingerprint((files.images, files.labels)) != fingerprint((files.images[:-1], files.labels[:-1]))


def test_fingerprint_takes_every_image_a_reader_may_return(files):
    """PIL images and encoded bytes (a custom recipe's reader may return them) fingerprint by their content;
    a PIL image opened from a file fingerprints as that file, without reading its pixels."""
    from PIL import Image

    labels = np.array([0, 1])
    black, white = Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4), "white")
    assert fingerprint(([black, white], labels)) == fingerprint(([black.copy(), white.copy()], labels))
    assert fingerprint(([black, white], labels)) != fingerprint(([black, black], labels))
    encoded = [Path(path).read_bytes() for path in files.images[:2]]
    assert fingerprint((encoded, labels)) == fingerprint(([bytearray(e) for e in encoded], labels))
    assert fingerprint((encoded, labels)) != fingerprint((encoded[::-1], labels))
    opened = [Image.open(path) for path in files.images[:2]]
    assert fingerprint((opened, labels)) == fingerprint((list(files.images[:2]), labels))


def subprocess_reads(cache, pixels) -> str:
    """Fork two readers of `cache` that read every image many times at once; 'ok' if all were right."""
    import multiprocessing

    def read_all(queue):
        right = all(np.array_equal(cache[i % len(cache)], pixels[i % len(cache)]) for i in range(3000))
        queue.put(right)

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    readers = [context.Process(target=read_all, args=(queue,)) for _ in range(2)]
    for reader in readers:
        reader.start()
    results = [queue.get(timeout=60) for _ in readers]
    for reader in readers:
        reader.join(timeout=60)
    return "ok" if all(results) else "a forked reader read wrong pixels"


def test_the_pixel_cache_reads_each_image_and_refuses_what_it_does_not_hold(tmp_path):
    from train.data import PixelCache
    from train.errors import TrainError

    pixels = np.arange(3 * 4 * 5 * 2, dtype=np.uint8).reshape(3, 4, 5, 2)
    (tmp_path / "c.u8").write_bytes(pixels.tobytes())
    cache = PixelCache(tmp_path / "c.u8", pixels.shape)
    for i in range(3):
        np.testing.assert_array_equal(cache[i], pixels[i])
    cache[0][0, 0, 0] = 255  # a copy: the next read is unchanged
    assert cache[0][0, 0, 0] == 0 and len(cache) == 3
    import pickle

    np.testing.assert_array_equal(pickle.loads(pickle.dumps(cache))[2], pixels[2])  # a spawned worker opens its own handle
    forked = subprocess_reads(cache, pixels)  # a forked one too, after the parent has read
    assert forked == "ok"
    with pytest.raises(IndexError):
        cache[3]
    short = PixelCache(tmp_path / "c.u8", (4, 4, 5, 2))
    with pytest.raises(TrainError, match="shorter than its 4 images"):
        short[3]
