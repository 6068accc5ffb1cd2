"""DICOM input (runtime.inputs.dicom): pixels as pydicom's own LUT functions make them, every mode a
chest X-ray comes in, one-line refusals, and no header field in anything gapcam writes."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime import CamSession
from runtime.errors import CamError
from runtime.evaluation.datasets import image_folder
from runtime.inputs import dicom
from runtime.inputs.image import IMAGE_SUFFIXES, collect_images, image_size, load_image, preprocess

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.pixels import apply_modality_lut, apply_voi_lut  # noqa: E402
from pydicom.sequence import Sequence as DicomSequence  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEGLossless, RLELossless, SecondaryCaptureImageStorage, generate_uid  # noqa: E402

# Identifiers planted in every file: none may appear in anything gapcam writes or prints.
PLANTED = {
    "PatientName": "ZEBULON^QUIXOTE",
    "PatientID": "PID-73310-XQ",
    "PatientBirthDate": "19311224",
    "StudyDate": "20190607",
    "AccessionNumber": "ACC9981772",
    "InstitutionName": "SAINT PLANTED HOSPITAL",
    "ReferringPhysicianName": "DR^WHOMEVER",
}
NEEDLES = [*PLANTED.values(), "ZEBULON", "QUIXOTE", "73310", "1931-12-24", "2019-06-07", "PLANTED HOSPITAL"]


def make_dicom(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits: int = 12,
    signed: bool = False,
    frames: int = 1,
    **fields,
) -> Dataset:
    """A DX-like dataset holding `pixels` (HxW, or HxWx3 for RGB), with the planted identifiers."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    for key, value in PLANTED.items():
        setattr(ds, key, value)
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if pixels.ndim == 3 and pixels.shape[-1] == 3 else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    if photometric == "RGB":
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    for key, value in fields.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(f"{'i' if signed else 'u'}{ds.BitsAllocated // 8}").tobytes()
    return ds


def write(ds: Dataset, path: Path, preamble: bool = True) -> Path:
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:  # no preamble, no magic, no file meta: implicit VR little endian, as older tools write
        del ds.file_meta
        ds.save_as(path, implicit_vr=True, little_endian=True)
    return path


def expected_pixels(ds: Dataset, low: float, high: float, index: int | None = 0) -> np.ndarray:
    """The anchor: pydicom's apply_modality_lut then apply_voi_lut, then docs/dicom.md's mapping
    round(255 (v - low) / (high - low)) with halves up, clipped; MONOCHROME1 inverted last."""
    values = apply_modality_lut(ds.pixel_array, ds)
    if index is not None:
        values = apply_voi_lut(values, ds, index=index)
    out = np.floor(np.clip((values.astype(np.float64) - low) / (high - low) * 255.0, 0, 255) + 0.5).astype(np.uint8)
    return 255 - out if ds.PhotometricInterpretation == "MONOCHROME1" else out


@pytest.fixture()
def rng():
    return np.random.default_rng(7)


def loaded(path: Path, window: int | None = 0) -> np.ndarray:
    image = load_image(path, dicom_window=window)
    assert image.mode == "L" and not image.info  # nothing of the header rides along
    return np.asarray(image)


def test_12_bit_with_rescale_and_window_equals_pydicom(tmp_path, rng):
    stored = rng.integers(0, 4096, (40, 30))
    ds = make_dicom(stored, bits=12, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=600, WindowWidth=1500)
    path = write(ds, tmp_path / "a.dcm")
    # A window maps onto what pydicom's apply_windowing maps outside it: the rescaled 12-bit range.
    assert np.array_equal(loaded(path), expected_pixels(ds, -1024, 4095 - 1024))
    assert 0 < loaded(path).mean() < 255


def test_16_bit_signed_second_window_and_no_window(tmp_path, rng):
    stored = rng.integers(-3000, 12000, (16, 24))
    ds = make_dicom(stored, bits=16, signed=True, RescaleSlope=2, RescaleIntercept=10, WindowCenter=[100, 8000], WindowWidth=[400, 20000])
    path = write(ds, tmp_path / "b.dcm")
    low, high = -(2**15) * 2 + 10, (2**15 - 1) * 2 + 10
    assert np.array_equal(loaded(path, 1), expected_pixels(ds, low, high, index=1))
    assert np.array_equal(loaded(path, 0), expected_pixels(ds, low, high, index=0))
    assert not np.array_equal(loaded(path, 0), loaded(path, 1))
    rescaled = stored * 2.0 + 10  # window None: the image's own range, min to 0, max to 255
    assert np.array_equal(loaded(path, None), expected_pixels(ds, rescaled.min(), rescaled.max(), index=None))
    with pytest.raises(CamError, match=r"b\.dcm: dicom_window 2 asked for, the file has 2"):
        load_image(path, dicom_window=2)


def test_hand_computed_linear_window_and_monochrome1(tmp_path):
    stored = np.array([[0, 99, 199, 200, 4095]])
    mono2 = write(make_dicom(stored, WindowCenter=100, WindowWidth=201), tmp_path / "m2.dcm")
    mono1 = write(make_dicom(stored, photometric="MONOCHROME1", WindowCenter=100, WindowWidth=201), tmp_path / "m1.dcm")
    # LINEAR (PS3.3 C.11.2.1.2.1): (x - 99.5) / 200 + 0.5 of the range; 0 -> 0.6375, 99 -> 126.86, 199 -> 254.36
    assert loaded(mono2).tolist() == [[1, 127, 254, 255, 255]]
    assert loaded(mono1).tolist() == [[254, 128, 1, 0, 0]]  # bone white, as in MONOCHROME2


def test_16_bit_monochrome1_without_window_uses_the_image_range(tmp_path, rng):
    stored = rng.integers(300, 60000, (20, 20))
    ds = make_dicom(stored, photometric="MONOCHROME1", bits=16)
    path = write(ds, tmp_path / "c.dcm")
    assert np.array_equal(loaded(path), expected_pixels(ds, stored.min(), stored.max(), index=None))
    assert loaded(path)[stored == stored.min()].tolist() == [255]  # the least attenuating: black in MONOCHROME1, inverted
    with pytest.raises(CamError, match="dicom_window 1 asked for, the file has 0"):
        load_image(path, dicom_window=1)


def test_voi_lut_sequence_is_preferred_to_the_window(tmp_path, rng):
    stored = rng.integers(0, 4096, (12, 10))
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 0, 12])
    item.add_new("LUTData", "US", [int(v) for v in np.sqrt(np.arange(4096) / 4095) * 4095])
    ds = make_dicom(stored, WindowCenter=2048, WindowWidth=100, VOILUTSequence=DicomSequence([item]))
    path = write(ds, tmp_path / "lut.dcm")
    assert np.array_equal(loaded(path), expected_pixels(ds, 0, 4095))  # a VOI LUT's range: 0 .. 2**12 - 1


def test_rgb_and_deep_rgb(tmp_path, rng):
    rgb = rng.integers(0, 256, (9, 11, 3))
    image = load_image(write(make_dicom(rgb, photometric="RGB", bits=8), tmp_path / "rgb.dcm"))
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), rgb.astype(np.uint8))
    deep = rng.integers(0, 1024, (5, 6, 3))
    image = load_image(write(make_dicom(deep, photometric="RGB", bits=10), tmp_path / "rgb10.dcm"))
    assert np.array_equal(np.asarray(image), np.floor(deep / 1023 * 255 + 0.5).astype(np.uint8))


def test_rle_compressed_decodes_as_uncompressed(tmp_path, rng):
    stored = rng.integers(0, 4096, (32, 16))
    plain = write(make_dicom(stored, WindowCenter=2000, WindowWidth=3000), tmp_path / "plain.dcm")
    ds = make_dicom(stored, WindowCenter=2000, WindowWidth=3000)
    ds.compress(RLELossless)
    packed = write(ds, tmp_path / "rle.dcm")
    assert pydicom.dcmread(packed).file_meta.TransferSyntaxUID == RLELossless
    assert np.array_equal(loaded(packed), loaded(plain))


def test_missing_decoder_names_the_plugin(tmp_path, rng):
    from pydicom.encaps import encapsulate
    from pydicom.pixels.decoders.base import get_decoder

    if get_decoder(JPEGLossless).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    ds = make_dicom(rng.integers(0, 4096, (8, 8)))
    ds.file_meta.TransferSyntaxUID = JPEGLossless
    ds.PixelData = encapsulate([b"\xff\xd8not really a jpeg\xff\xd9"])
    path = tmp_path / "jpegll.dcm"
    ds.save_as(path)
    with pytest.raises(CamError) as err:
        load_image(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "pylibjpeg-libjpeg" in message and "gdcm" in message and "JPEG Lossless" in message


def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, rng, monkeypatch):
    stored = rng.integers(0, 4096, (20, 20))
    truncated = make_dicom(stored)
    truncated.PixelData = truncated.PixelData[:300]
    multi = make_dicom(rng.integers(0, 4096, (3, 8, 8)), frames=3)
    huge = make_dicom(stored)
    huge.Rows = huge.Columns = 60000  # 3.6 gigapixels declared over 800 bytes of pixel data
    no_pixels = make_dicom(stored)
    del no_pixels.PixelData
    palette = make_dicom(rng.integers(0, 256, (4, 4)), photometric="PALETTE COLOR", bits=8)
    cases = {
        "truncated.dcm": (truncated, "pixel data does not decode"),
        "multi.dcm": (multi, "multi-frame DICOM \\(3 frames\\)"),
        "huge.dcm": (huge, "3600 megapixels, more than gapcam's limit"),
        "empty.dcm": (no_pixels, "without pixel data"),
        "palette.dcm": (palette, "PALETTE COLOR with 1 samples a pixel is not supported"),
    }
    decoded = []
    original = Dataset.pixel_array
    monkeypatch.setattr(Dataset, "pixel_array", property(lambda ds: (decoded.append(1), original.fget(ds))[1]))
    for name, (ds, pattern) in cases.items():
        path = write(ds, tmp_path / name)
        decoded.clear()
        with pytest.raises(CamError, match=f"^{re.escape(str(path))}: .*{pattern}") as err:
            load_image(path)
        assert "\n" not in str(err.value) and not any(n in str(err.value) for n in NEEDLES)
        if name != "truncated.dcm":
            assert not decoded, name  # refused from the header, before any pixel is decoded
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + bytes(range(256)) * 4)
    noise = tmp_path / "noise.dcm"
    noise.write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    for path in (garbage, noise):
        with pytest.raises(CamError, match=f"^{re.escape(str(path))}: (not a readable DICOM file|a DICOM file without pixel data)"):
            load_image(path)


def test_a_huge_declared_image_is_refused_in_bounded_memory(tmp_path, rng):
    from fixtures import bounded_python

    huge = make_dicom(rng.integers(0, 4096, (20, 20)))
    huge.Rows = huge.Columns = 30000
    path = write(huge, tmp_path / "huge.dcm")
    code = f"from runtime.inputs.image import load_image\ntry:\n    load_image({str(path)!r})\nexcept Exception as e:\n    print(e)"
    done = bounded_python(code, 600 * 2**20)
    assert "megapixels, more than gapcam's limit" in done.stdout, done.stderr


def test_dicom_is_found_by_suffix_by_preamble_and_in_bytes(tmp_path, rng):
    stored = rng.integers(0, 4096, (10, 14))
    ds = make_dicom(stored, WindowCenter=2000, WindowWidth=2000)
    named = write(ds, tmp_path / "x.DCM")
    bare = tmp_path / "IM000001"  # PACS exports often have no suffix
    bare.write_bytes(named.read_bytes())
    headless = write(make_dicom(stored, WindowCenter=2000, WindowWidth=2000), tmp_path / "old.dicom", preamble=False)
    reference = loaded(named)
    assert np.array_equal(loaded(bare), reference) and np.array_equal(loaded(headless), reference)
    assert np.array_equal(np.asarray(load_image(named.read_bytes())), reference)
    assert image_size(named) == image_size(bare) == image_size(named.read_bytes()) == (14, 10)
    with pytest.raises(CamError, match="not a readable image"):
        load_image(b"\x00" * 132 + b"neither an image nor a DICOM file")


def test_ordinary_images_are_never_sniffed(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.new("L", (8, 8), 77).save(path)

    def no(*args):
        raise AssertionError("an image Pillow reads was looked at for DICOM")

    monkeypatch.setattr(dicom, "has_preamble", no)
    monkeypatch.setattr("runtime.inputs.image.has_preamble", no)
    monkeypatch.setattr("runtime.inputs.image.read_dicom", no)
    assert np.asarray(load_image(path)).mean() == 77 and image_size(path) == (8, 8)


def test_without_pydicom_the_error_names_the_extra(tmp_path, rng, monkeypatch):
    path = write(make_dicom(rng.integers(0, 4096, (4, 4))), tmp_path / "a.dcm")
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(CamError, match=r"reading DICOM files needs pydicom, which is not installed: pip install 'gapcam\[dicom\]'"):
        load_image(path)


def test_folders_eval_and_session_take_dicom(tmp_path, rng, tiny_onnx):
    folder = tmp_path / "scans"
    folder.mkdir()
    stored = rng.integers(0, 4096, (48, 40))
    path = write(make_dicom(stored, photometric="MONOCHROME1", WindowCenter=1500, WindowWidth=2500), folder / "chest.dcm")
    assert {".dcm", ".dicom"} <= IMAGE_SUFFIXES
    assert collect_images([str(folder)])[0] == [str(path)]
    assert image_folder(folder, ["a", "b"]).images == [path]
    session = CamSession(tiny_onnx, providers=["CPUExecutionProvider"])
    gray = np.asarray(session.load_image(path))
    assert np.array_equal(session.to_batch(path), preprocess(Image.fromarray(gray), session.preprocessing))
    result = session.run(path)[0]
    assert result.image_size == (48, 40)
    shown = np.asarray(session.overlay(path, result.cams_scaled[0], alpha=0.0))  # the windowed image, in gray
    assert np.array_equal(shown, np.repeat(gray[:, :, None], 3, axis=2))
    unwindowed = CamSession(tiny_onnx, providers=["CPUExecutionProvider"], dicom_window=None)
    assert not np.array_equal(np.asarray(unwindowed.load_image(path)), gray)
    with pytest.raises(CamError, match="dicom_window: expected a window index"):
        CamSession(tiny_onnx, dicom_window=-1)


def every_text(data: bytes, name: str) -> list[tuple[str, bytes]]:
    """`data` and what it holds: zip members and base64 data URIs decoded; a PNG must have no text chunk."""
    found = [(name, data)]
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                found += every_text(archive.read(member), f"{name}!{member}")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        at = 8
        while at < len(data):
            length, kind = int.from_bytes(data[at : at + 4], "big"), data[at + 4 : at + 8]
            body = data[at + 8 : at + 8 + length]
            assert kind not in (b"tEXt", b"zTXt", b"iTXt", b"eXIf"), f"{name}: a PNG {kind!r} chunk ({body[:40]!r})"
            at += 12 + length
    for encoded in re.findall(rb"base64,([A-Za-z0-9+/=]+)", data):
        found += every_text(base64.b64decode(encoded), f"{name}#data-uri")
    return found


def test_patient_data_never_leaves_the_file(tmp_path, rng, tiny_onnx):
    folder = tmp_path / "in"
    folder.mkdir()
    files = [
        write(
            make_dicom(rng.integers(0, 4096, (64, 56)), WindowCenter=2048, WindowWidth=3000, RescaleSlope=1, RescaleIntercept=-1024),
            folder / "a.dcm",
        ),
        write(make_dicom(rng.integers(0, 65536, (50, 60)), photometric="MONOCHROME1", bits=16), folder / "b.dcm"),
        write(make_dicom(rng.integers(0, 256, (40, 40, 3)), photometric="RGB", bits=8), folder / "c.dcm"),
        write(make_dicom(rng.integers(0, 4096, (2, 8, 8)), frames=2), folder / "d_multi.dcm"),
    ]
    truncated = make_dicom(rng.integers(0, 4096, (30, 30)))
    truncated.PixelData = truncated.PixelData[:100]
    files.append(write(truncated, folder / "e_truncated.dcm"))
    huge = make_dicom(rng.integers(0, 4096, (8, 8)))
    huge.Rows = huge.Columns = 50000
    files.append(write(huge, folder / "f_huge.dcm"))
    rle = make_dicom(rng.integers(0, 4096, (32, 32)), WindowCenter=1000, WindowWidth=1000)
    rle.compress(RLELossless)
    files.append(write(rle, folder / "g_rle.dcm"))
    bare = folder / "IM0001"
    bare.write_bytes(files[0].read_bytes())
    assert all(needle.encode() in files[0].read_bytes() for needle in PLANTED.values())  # planted, and findable
    out, pack_out = tmp_path / "out", tmp_path / "zoo"
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "gapcam", "run", str(tiny_onnx), str(folder), str(bare), "--out", str(out)],
        capture_output=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr.decode()
    packed = subprocess.run(
        [sys.executable, "-m", "zoo", "pack", str(tiny_onnx), "--name", "xray", "--version", "0.1.0", "-o", str(pack_out)]
        + [arg for path in (files[0], files[1], files[2], bare) for arg in ("--images", str(path))],
        capture_output=True,
        timeout=300,
    )
    assert packed.returncode == 0, packed.stderr.decode()
    elapsed = time.perf_counter() - started
    results = json.loads((out / "results.json").read_text())
    skipped = {Path(s["file"]).name for s in results["skipped"]}
    assert skipped == {"d_multi.dcm", "e_truncated.dcm", "f_huge.dcm"}
    assert len(list(out.glob("*.png"))) == 5  # a, b, c, g_rle and IM0001
    assert sorted(p.name for p in (pack_out / "xray-0.1.0" / "samples").iterdir())[:4] == ["00.png", "01.png", "02.png", "03.png"]
    outputs = [("stdout+stderr", run.stdout + run.stderr + packed.stdout + packed.stderr)]
    outputs += [(str(p), p.read_bytes()) for root in (out, pack_out) for p in sorted(root.rglob("*")) if p.is_file()]
    searched = [item for name, data in outputs for item in every_text(data, name)]
    assert len(searched) > 20 and elapsed < 120
    leaks = [(name, needle) for name, data in searched for needle in NEEDLES if needle.encode().lower() in data.lower()]
    assert not leaks


TXV_WHEEL = Path(__file__).resolve().parent.parent / ".venv" / "downloads" / "torchxrayvision-1.5.7-py3-none-any.whl"


@pytest.fixture()
def read_xray_dcm(monkeypatch):
    """torchxrayvision's own `utils.read_xray_dcm`, loaded from its wheel (`make install` downloads it; it is
    not installed: its pandas would upgrade numpy). Its module imports `requests` for downloads only: stubbed."""
    import importlib.util
    import types

    if not TXV_WHEEL.is_file():
        pytest.skip(f"{TXV_WHEEL}: the torchxrayvision wheel is missing; `make install` downloads it")
    pytest.importorskip("torch", reason="torchxrayvision's utils module imports torch")
    pytest.importorskip("skimage", reason="torchxrayvision's utils module imports scikit-image")
    monkeypatch.setitem(sys.modules, "requests", sys.modules.get("requests") or types.ModuleType("requests"))
    with zipfile.ZipFile(TXV_WHEEL) as wheel:
        source = wheel.read("torchxrayvision/utils.py").decode()
    spec = importlib.util.spec_from_loader("txv_utils", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, "torchxrayvision/utils.py", "exec"), module.__dict__)
    return module.read_xray_dcm


@pytest.mark.slow  # torchxrayvision's utils module imports torch
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_windowed_pixels_equal_torchxrayvisions_reader(tmp_path, rng, read_xray_dcm, photometric):
    """The second anchor the issue names: torchxrayvision's read_xray_dcm (VOI LUT on, MONOCHROME1 fixed)
    scales the windowed image to [-1024, 1024] by the stored bits' range; gapcam maps the same range to
    [0, 255]. Without a rescale the two agree to rounding (one gray level)."""
    stored = rng.integers(0, 4096, (30, 40))
    path = write(make_dicom(stored, photometric=photometric, WindowCenter=1800, WindowWidth=2500), tmp_path / "x.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its MONOCHROME1 conversion warns
        theirs = read_xray_dcm(path, voi_lut=True)
    expected = (theirs.astype(np.float64) + 1024) / 2048 * 255
    ours = loaded(path).astype(np.float64)
    assert np.abs(ours - expected).max() <= 0.5 + 1e-3
    unwindowed = stored / 4095 * 255 if photometric == "MONOCHROME2" else 255 - stored / 4095 * 255
    assert np.abs(ours - unwindowed).max() > 30  # the window changed the pixels: the comparison is of windowing
