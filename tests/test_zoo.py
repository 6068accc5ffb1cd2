"""zoo: pack -> verify -> publish -> fetch -> CamSession(name), the bundled model, Triton, and every refusal."""

import functools
import hashlib
import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import onnx
import pytest
from PIL import Image

from fixtures import copy_package, rewrite_manifest
from runtime import CamSession
from runtime.formats.package import Package
from runtime.formats.store import BUNDLED, DEFAULT_INDEX, store_path
from zoo import ZooError, fetch, pack, publish, read_index, triton_repository, verify

pytestmark = pytest.mark.usefixtures("private_store")


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; /broken/NAME sends half of NAME and hangs up; /silent/ never answers."""

    def do_GET(self):
        if self.path.startswith("/broken/"):
            data = (self.directory_path / self.path[len("/broken/") :]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path.startswith("/silent/"):
            time.sleep(3)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(Handler, directory=str(root))
    Handler.directory_path = root
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def store_is_empty(home):
    packages = home / "packages"
    leftovers = [p for p in home.rglob("*") if p.is_file()] if home.exists() else []
    return not leftovers and (not packages.exists() or not any(packages.rglob("*.onnx")))


def test_pack_writes_folder_and_archive(packed):
    assert packed.folder.name == "tiny-0.1.0" and packed.archive.name == "tiny-0.1.0.zip"
    names = sorted(Package(packed.archive).names())
    assert names == sorted(Package(packed.folder).names())
    assert {"manifest.json", "model.onnx", "README.md", "test_vectors.npz", "samples/00.png", "samples/01.png"} <= set(names)
    manifest = packed.manifest
    assert manifest.labels == ["circle", "square", "triangle", "star", "cross"]
    assert manifest.input["shape"][1:] == [3, 64, 64] and [o["name"] for o in manifest.outputs] == ["logits", "features", "cams"]
    assert manifest.metrics["note_accuracy"] == 0.5 and "val_accuracy" in manifest.metrics
    assert manifest.parity["passed"] and manifest.license == "MIT"
    for key in ("checkpoint_sha256", "torch", "onnx", "onnxruntime", "opset", "created", "packed_by_gapcam"):
        assert manifest.provenance[key] not in ("", None), key
    card = (packed.folder / "README.md").read_text()
    assert "# tiny 0.1.0" in card and "circle, square, triangle, star, cross" in card
    with zipfile.ZipFile(packed.archive) as archive:
        assert all(not info.filename.startswith(("/", "..")) for info in archive.infolist())


def test_pack_without_images_still_has_vectors_and_samples(tiny_onnx, tmp_path):
    result = pack(tiny_onnx, "bare", "1.0.0", tmp_path)
    names = Package(result.archive).names()
    assert "test_vectors.npz" in names and sum(n.startswith("samples/") for n in names) == 4
    assert verify(result.archive).passed


def test_pack_refuses_bad_names_and_existing_packages(packed, tiny_onnx):
    with pytest.raises(ZooError, match="--name"):
        pack(tiny_onnx, "Bad Name", "1.0.0", packed.folder.parent)
    with pytest.raises(ZooError, match="--version"):
        pack(tiny_onnx, "tiny", "1.0", packed.folder.parent)
    with pytest.raises(ZooError, match="exists"):
        pack(tiny_onnx, "tiny", "0.1.0", packed.folder.parent)


@pytest.mark.parametrize("which", ["folder", "archive"])
def test_verify_passes_on_a_fresh_package(packed, which):
    report = verify(getattr(packed, which))
    assert report.passed, report.checks
    assert [c.name for c in report.checks] == ["checksums and manifest", "model", "test vectors"]


def test_pack_verify_publish_fetch_session_over_http(packed, server, private_store, shape_images):
    root, base = server
    shutil.copy(packed.archive, root / packed.archive.name)
    index = root / "index.json"
    entry = publish(root / packed.archive.name, index)
    assert entry["url"] == "tiny-0.1.0.zip" and entry["sha256"] == hashlib.sha256(packed.archive.read_bytes()).hexdigest()
    path = fetch("tiny", f"{base}/index.json", progress=False)
    assert path == store_path("tiny", "0.1.0") and (path / "model.onnx").is_file()
    session = CamSession("tiny")
    assert session.package.manifest.version == "0.1.0"
    reference = CamSession(packed.folder).run(shape_images.images[0])[0]
    np.testing.assert_array_equal(session.run(shape_images.images[0])[0].logits, reference.logits)
    # cached: a second fetch reuses the verified copy without the server
    assert fetch("tiny@0.1.0", f"{base}/index.json", progress=False) == path
    assert not (private_store / "downloads").exists() or not any((private_store / "downloads").iterdir())


def serve_index(packed, server, **changes):
    """Publish the tiny archive on the test server under an index entry with `changes` applied."""
    root, base = server
    shutil.copy(packed.archive, root / "tiny.zip")
    data = packed.archive.read_bytes()
    entry = {"name": "tiny", "version": "0.1.0", "url": "tiny.zip", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (root / "index.json").write_text(json.dumps({"format": "gapcam-index", "format_version": 1, "packages": [{**entry, **changes}]}))
    return f"{base}/index.json"


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"sha256": "0" * 64}, "does not match the index"),
        ({"size": 1000}, "index allows 1000"),
        ({"url": "broken/tiny.zip"}, "truncated download|download failed"),  # the server hangs up halfway
    ],
)
def test_fetch_refusals_leave_nothing_in_the_store(packed, server, private_store, changes, message):
    with pytest.raises(ZooError, match=message):
        fetch("tiny", serve_index(packed, server, **changes), progress=False)
    assert store_is_empty(private_store)


def test_fetch_times_out(packed, server, private_store):
    index = serve_index(packed, server, url="silent/tiny.zip")
    started = time.time()
    with pytest.raises(ZooError, match="download failed"):
        fetch("tiny", index, timeout=0.5, progress=False)
    assert time.time() - started < 3
    assert store_is_empty(private_store)


def test_test_vectors_catch_a_different_model(packed, tmp_path, tiny_onnx):
    folder = copy_package(packed, tmp_path)
    model = onnx.load(folder / "model.onnx")
    bias = next(
        init
        for init in model.graph.initializer
        if init.name.endswith("fc.bias") or "bias" in init.name and len(init.dims) == 1 and init.dims[0] == 5
    )
    values = onnx.numpy_helper.to_array(bias) + 0.5
    bias.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), bias.name))
    onnx.save(model, folder / "model.onnx")
    data = (folder / "model.onnx").read_bytes()
    rewrite_manifest(
        folder, lambda m: m["files"].__setitem__("model.onnx", {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    )
    report = verify(folder)
    assert [c.passed for c in report.checks] == [True, True, False]


def test_bundled_shapes_package_verifies_and_runs_offline(private_store, shape_images):
    archive = BUNDLED / "shapes-1.1.0.zip"
    report = verify(archive)
    assert report.passed, report.checks
    session = CamSession("shapes")
    assert session.package.path == archive and session.labels == ["circle", "square", "triangle", "star", "cross"]
    metrics = session.package.manifest.metrics
    assert metrics["heldout_classification_accuracy"] >= 0.95 and metrics["heldout_localization_accuracy"] > 0.5
    results = session.run(list(shape_images.images))
    assert np.mean([r.classes[0] == y for r, y in zip(results, shape_images.labels, strict=True)]) >= 0.75
    assert archive.stat().st_size < 5_000_000
    entries = read_index(DEFAULT_INDEX)
    assert [(e["name"], e["version"]) for e in entries] == [("fer2013-minixception", "1.0.0"), ("shapes", "1.1.0")]


def test_fetch_from_the_default_index_uses_the_bundled_archive(private_store):
    path = fetch("shapes", progress=False)
    assert path == store_path("shapes", "1.1.0")
    assert CamSession("shapes@1.1.0").package.path == path  # the store wins over the bundled copy


def test_triton_repository_layout(packed, tmp_path):
    model_dir = triton_repository(packed.archive, tmp_path / "repo", max_batch_size=16)
    assert model_dir == tmp_path / "repo" / "tiny"
    assert (model_dir / "1" / "model.onnx").read_bytes() == (packed.folder / "model.onnx").read_bytes()
    assert (model_dir / "labels.txt").read_text().split() == packed.manifest.labels
    config = (model_dir / "config.pbtxt").read_text()
    graph = onnx.load(model_dir / "1" / "model.onnx").graph
    for value in [*graph.input, *graph.output]:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim[1:]]
        assert f'name: "{value.name}"' in config
        assert f"dims: [ {', '.join(map(str, dims))} ]" in config
    assert 'platform: "onnxruntime_onnx"' in config and "max_batch_size: 16" in config
    assert "dynamic_batching" in config and 'label_filename: "labels.txt"' in config
    assert 'name: "cams"' in config  # the class maps, so a Triton client need not fetch the features
    with pytest.raises(ZooError, match="not a bare .onnx"):
        triton_repository(packed.folder / "model.onnx", tmp_path / "repo2")


def test_zoo_cli(packed, tmp_path, private_store):
    def zoo(*args):
        return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True, timeout=300)

    listed = zoo("list")
    assert listed.returncode == 0 and "shapes" in listed.stdout and "1.1.0" in listed.stdout
    info = zoo("info", "shapes")
    assert json.loads(info.stdout)["name"] == "shapes"
    ok = zoo("verify", packed.archive)
    assert ok.returncode == 0 and "all checks passed" in ok.stdout
    folder = copy_package(packed, tmp_path)
    (folder / "model.onnx").write_bytes(b"tampered")
    bad = zoo("verify", folder)
    assert bad.returncode == 1 and "FAIL checksums and manifest" in bad.stdout
    assert "verification failed at 'checksums and manifest'" in bad.stderr and "Traceback" not in bad.stderr


def test_index_format_and_version_are_checked(tmp_path):
    from zoo.index import parse_index

    with pytest.raises(ZooError, match="format version 2 is not supported"):
        parse_index(json.dumps({"format": "gapcam-index", "format_version": 2, "packages": []}), "idx.json")
    with pytest.raises(ZooError, match="idx.json: not a gapcam index"):
        parse_index(json.dumps({"packages": []}), "idx.json")


def test_zoo_functions_raise_zoo_errors_only(tmp_path, tiny_onnx, packed):
    """What the runtime refuses inside pack, publish and triton reaches the caller as a ZooError."""
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ZooError, match="junk.onnx: not a loadable ONNX model"):
        pack(tmp_path / "junk.onnx", "junk", "1.0.0", tmp_path)
    cut = tmp_path / "cut.zip"
    cut.write_bytes(packed.archive.read_bytes()[:3000])
    with pytest.raises(ZooError, match="cut.zip"):
        publish(cut, tmp_path / "index.json")
    with pytest.raises(ZooError, match="cut.zip"):
        triton_repository(cut, tmp_path / "triton")


def test_a_triton_client_gets_the_same_results_through_explain_outputs(packed, shape_images, tmp_path):
    """docs/serving.md's client for `zoo triton` + Triton's onnxruntime backend, with onnxruntime on the
    repository's own model.onnx standing in for the server (the backend runs that file as it is)."""
    import onnxruntime

    from runtime import explain_outputs, load_image, preprocess

    model_dir = triton_repository(packed.archive, tmp_path / "repo")
    info = CamSession(packed.archive).info  # the client's copy of labels, preprocessing, fc weights, threshold
    pictures = [load_image(Image.fromarray(p).resize((90 + 10 * i, 70))) for i, p in enumerate(shape_images.images[:3])]
    batch = preprocess(pictures, info.preprocess)
    server = onnxruntime.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, cams = server.run(["logits", "cams"], {"input": batch})
    results = explain_outputs(info, logits, [(p.height, p.width) for p in pictures], class_maps=cams, topk=2)
    expected = CamSession(packed.archive).run(pictures, topk=2)
    for got, want in zip(results, expected, strict=True):
        assert np.array_equal(got.classes, want.classes) and np.array_equal(got.boxes, want.boxes)
        np.testing.assert_allclose(got.cams_raw, want.cams_raw, rtol=1e-5, atol=1e-6)
