"""runtime.formats.package: the one package reader refuses hostile, tampered and inconsistent packages."""

import hashlib

import onnx
import pytest

from fixtures import bounded_python, copy_package, rewrite_manifest, rezip
from runtime import CamError, CamSession
from runtime.formats.package import Package
from zoo import verify


@pytest.mark.parametrize(
    "name,mode,message",
    [
        ("../evil.txt", 0o100644, "escapes"),
        ("/etc/evil.txt", 0o100644, "escapes"),
        ("samples/../../evil.txt", 0o100644, "escapes"),
        ("samples/link", 0o120777, "link"),
    ],
)
def test_hostile_archive_entries_are_refused(packed, tmp_path, name, mode, message):
    archive = rezip(packed.folder, tmp_path / "hostile.zip", [(name, b"/etc/passwd", mode)])
    with pytest.raises(CamError, match=message):
        Package(archive)
    assert not (tmp_path.parent / "evil.txt").exists()
    report = verify(archive)
    assert not report.passed and report.checks[0].name == "checksums and manifest"


def test_tampered_unlisted_and_truncated_files_are_refused(packed, tmp_path):
    folder = copy_package(packed, tmp_path)
    (folder / "samples" / "00.png").write_bytes(b"tampered")
    with pytest.raises(CamError, match="checksum check failed"):
        CamSession(folder)
    folder = copy_package(packed, tmp_path / "b")
    (folder / "extra.bin").write_bytes(b"x")
    with pytest.raises(CamError, match="not in the manifest"):
        Package(folder)
    truncated = tmp_path / "cut.zip"
    truncated.write_bytes(packed.archive.read_bytes()[:5000])
    with pytest.raises(CamError, match="tiny|cut.zip"):
        Package(truncated)


def test_links_in_a_package_folder_are_refused(packed, tmp_path):
    folder = copy_package(packed, tmp_path)
    (folder / "samples" / "00.png").unlink()
    (folder / "samples" / "00.png").symlink_to("/etc/hostname")
    with pytest.raises(CamError, match="is a link"):
        Package(folder)


def test_manifest_that_disagrees_with_the_model_is_refused(packed, tmp_path):
    folder = copy_package(packed, tmp_path)
    rewrite_manifest(folder, lambda m: m["outputs"][1]["shape"].__setitem__(1, 999))
    with pytest.raises(CamError, match="manifest disagrees"):
        CamSession(folder)
    folder = copy_package(packed, tmp_path / "b")
    rewrite_manifest(folder, lambda m: m.__setitem__("labels", ["a", "b", "c", "d", "e"]))
    report = verify(folder)
    assert [c.passed for c in report.checks] == [True, False] and "labels" in report.checks[1].detail


def test_manifest_schema_is_checked(packed, tmp_path):
    for change, message in [
        (lambda m: m.pop("labels"), "'labels'"),
        (lambda m: m.__setitem__("version", "one"), "X.Y.Z"),
        (lambda m: m.__setitem__("format_version", 7), "version 7"),
        (lambda m: m["files"].pop("model.onnx"), "model.onnx"),
    ]:
        folder = copy_package(packed, tmp_path / message.strip("'"))
        rewrite_manifest(folder, change)
        with pytest.raises(CamError, match=message):
            Package(folder)


def test_onnx_with_external_data_is_refused(packed, tmp_path):
    folder = copy_package(packed, tmp_path)
    model = onnx.load(folder / "model.onnx")
    onnx.save_model(model, folder / "model.onnx", save_as_external_data=True, location="weights.bin", size_threshold=0)

    def relist(manifest):
        for name in ("model.onnx", "weights.bin"):
            data = (folder / name).read_bytes()
            manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}

    rewrite_manifest(folder, relist)
    with pytest.raises(CamError, match="external data"):
        CamSession(folder)


def test_an_archive_that_inflates_beyond_its_manifest_is_refused_unread(packed, tmp_path):
    """A zip bomb: an entry declared small in the manifest but huge in the archive."""
    folder = copy_package(packed, tmp_path)
    (folder / "samples" / "00.png").write_bytes(b"\0" * 50_000_000)  # compresses to almost nothing
    archive = rezip(folder, tmp_path / "bomb.zip")
    assert archive.stat().st_size < packed.archive.stat().st_size + 200_000
    with pytest.raises(CamError, match="has 50000000 bytes, the manifest says"):
        Package(archive)


def test_absolute_limits_refuse_before_anything_is_inflated(packed, tmp_path, monkeypatch):
    model_bytes = (packed.folder / "model.onnx").stat().st_size  # limits just under this package's own sizes
    monkeypatch.setenv("GAPCAM_MAX_PACKAGE_FILE_BYTES", str(model_bytes - 1))
    with pytest.raises(CamError, match=rf"model.onnx is declared at {model_bytes} bytes, more than the limit of {model_bytes - 1} a file"):
        Package(packed.archive)
    monkeypatch.setenv("GAPCAM_MAX_PACKAGE_FILE_BYTES", str(10 << 20))
    monkeypatch.setenv("GAPCAM_MAX_PACKAGE_BYTES", str(model_bytes))
    with pytest.raises(CamError, match=rf"the files add up to \d+ bytes, more than the limit of {model_bytes}"):
        Package(packed.folder)
    monkeypatch.setenv("GAPCAM_MAX_PACKAGE_BYTES", "lots")
    with pytest.raises(CamError, match="GAPCAM_MAX_PACKAGE_BYTES must be a whole number"):
        Package(packed.folder)


def test_a_manifest_that_declares_a_huge_file_is_refused_in_bounded_memory(packed, tmp_path):
    """A small zip whose manifest truthfully lists a 1 GiB entry of zeros: refused by size, never inflated."""
    import os
    import zipfile

    size = 1 << 30
    digest, block = hashlib.sha256(), b"\0" * (1 << 20)
    for _ in range(size // len(block)):
        digest.update(block)
    folder = copy_package(packed, tmp_path)
    rewrite_manifest(folder, lambda m: m["files"].__setitem__("samples/huge.bin", {"sha256": digest.hexdigest(), "size": size}))
    archive = tmp_path / "huge.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            out.write(path, path.relative_to(folder).as_posix())
        with out.open("samples/huge.bin", "w", force_zip64=True) as entry:
            for _ in range(size // len(block)):
                entry.write(block)
    assert archive.stat().st_size < 5_000_000
    code = f"""
from zoo import verify
report = verify({str(archive)!r})
peak = next(int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(report.passed, peak, report.checks[0].detail)
"""

    def verify_in_a_process(**limits):
        done = bounded_python(code, 2 << 30, env={**os.environ, **limits})  # a regression fails, it cannot swap
        assert done.returncode == 0, done.stderr
        passed, peak, detail = done.stdout.split(" ", 2)
        return passed == "True", int(peak), detail

    passed, peak, detail = verify_in_a_process()  # the default limit: 512 MiB a file
    assert not passed and "declared at 1073741824 bytes, more than the limit" in detail and peak < 400, (peak, detail)
    # with limits raised, the gigabyte is hashed as it streams: memory stays bounded all the same
    passed, peak, detail = verify_in_a_process(GAPCAM_MAX_PACKAGE_FILE_BYTES=str(2 << 30), GAPCAM_MAX_PACKAGE_BYTES=str(4 << 30))
    assert passed and peak < 400, (peak, detail)


def test_manifest_tensors_of_the_wrong_type_are_refused(packed, tmp_path):
    for change in (lambda m: m.__setitem__("outputs", ["logits", "features"]), lambda m: m["input"].__setitem__("shape", "64x64")):
        folder = copy_package(packed, tmp_path / str(id(change)))
        rewrite_manifest(folder, change)
        with pytest.raises(CamError, match="need a name, a dtype and a shape list"):
            Package(folder)


def test_damaged_test_vectors_are_a_failed_check_not_a_crash(packed, tmp_path):
    folder = copy_package(packed, tmp_path)
    data = b"not an npz archive"
    (folder / "test_vectors.npz").write_bytes(data)
    rewrite_manifest(
        folder, lambda m: m["files"].__setitem__("test_vectors.npz", {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    )
    report = verify(folder)
    assert [c.passed for c in report.checks] == [True, True, False]
    assert "test_vectors.npz is not a readable .npz" in report.checks[2].detail
