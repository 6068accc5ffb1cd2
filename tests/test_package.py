"""runtime.package: the one package reader refuses hostile, tampered and inconsistent packages."""
import hashlib

import onnx
import pytest

from fixtures import copy_package, rewrite_manifest, rezip
from runtime import CamError, CamSession
from runtime.package import Package
from zoo import verify


@pytest.mark.parametrize("name,mode,message", [
    ("../evil.txt", 0o100644, "escapes"),
    ("/etc/evil.txt", 0o100644, "escapes"),
    ("samples/../../evil.txt", 0o100644, "escapes"),
    ("samples/link", 0o120777, "link"),
])
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
