"""gapcam's JavaScript module (web/) and `gapcam web`: the site, its verified onnxruntime-web, and the module's
answers in headless Chromium against CamSession's on the same files.

The browser tests (marker browser) need Chromium (`make chromium`) and onnxruntime-web's npm tarball in
.venv/downloads (`make onnxruntime-web`); the tarball reaches `gapcam web` through a registry served on
127.0.0.1, never the internet. One Chromium run answers every step of the module's harness (web/test/).
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import urllib.request
import zipfile
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fixtures import chromium_binary, headless_chromium, multilabel_copy
from gapcam.cli import main as gapcam_main
from gapcam.web import ORT_FILES, ORT_VERSION, REGISTRY_VARIABLE, WEB, SiteHandler, WebError, site_server, tarball_name, write_site
from runtime import CamSession
from runtime.errors import CamError
from runtime.evaluation.shapes import render_split
from runtime.formats.store import BUNDLED

ROOT = Path(__file__).resolve().parent.parent
TARBALL = ROOT / ".venv" / "downloads" / tarball_name()
SCREENSHOT = ROOT / "build" / "browser.png"  # `make browser-screenshot` copies it to docs/browser.png
FER = next(BUNDLED.glob("fer2013-minixception-*.zip"))
SHAPES = next(BUNDLED.glob("shapes-*.zip"))
TOLERANCE = 1e-4  # probabilities, and maps as a share of their range
SWIFTSHADER_WEBGPU = [  # WebGPU without a GPU: Chromium's Vulkan on the CPU (SwiftShader)
    "--enable-unsafe-webgpu",
    "--enable-features=Vulkan",
    "--use-vulkan=swiftshader",
    "--use-webgpu-adapter=swiftshader",
    "--disable-vulkan-surface",
]


@contextmanager
def serving(handler, root: Path):
    """An HTTP server of `root` on a free 127.0.0.1 port, in a thread, stopped on exit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@contextmanager
def registry(tmp_path: Path, tarball: bytes):
    """`tarball` served as the npm registry's onnxruntime-web tarball, with a fresh GAPCAM_HOME."""
    root = tmp_path / "registry"
    (root / "onnxruntime-web" / "-").mkdir(parents=True)
    (root / "onnxruntime-web" / "-" / tarball_name()).write_bytes(tarball)
    saved = {name: os.environ.get(name) for name in (REGISTRY_VARIABLE, "GAPCAM_HOME")}
    with serving(QuietHandler, root) as url:
        os.environ.update({REGISTRY_VARIABLE: url, "GAPCAM_HOME": str(tmp_path / "home")})
        try:
            yield url
        finally:
            for name, value in saved.items():
                os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def real_tarball() -> bytes:
    if not TARBALL.is_file():
        pytest.skip(f"{TARBALL} is missing: `make onnxruntime-web` (a step of `make test`) downloads it with npm")
    return TARBALL.read_bytes()


def test_site_holds_page_module_model_and_verified_onnxruntime(tmp_path):
    with registry(tmp_path, real_tarball()):
        site = write_site(FER, tmp_path / "site")
        both = write_site(FER, tmp_path / "both", webgpu=True)
        cached = tmp_path / "home" / "npm" / tarball_name()
        assert cached.read_bytes() == TARBALL.read_bytes()
    assert json.loads((site / "site.json").read_text()) == {
        "model": "model.onnx",
        "name": "fer2013-minixception",
        "backends": ["wasm"],
        "onnxruntime_web": ORT_VERSION,
    }
    assert CamSession(site / "model.onnx").labels == CamSession(FER).labels
    assert sorted(p.name for p in (site / "gapcam").iterdir()) == sorted(p.name for p in (WEB / "src").iterdir())
    with tarfile.open(TARBALL) as tar:
        for name in ORT_FILES["wasm"]:
            assert (site / "ort" / name).read_bytes() == tar.extractfile(f"package/dist/{name}").read()
    assert '"onnxruntime-web": "./ort/ort.wasm.min.mjs"' in (site / "index.html").read_text()
    assert json.loads((both / "site.json").read_text())["backends"] == ["wasm", "webgpu"]
    assert sorted(p.name for p in (both / "ort").iterdir()) == sorted(ORT_FILES["wasm"] + ORT_FILES["webgpu"])
    assert '"onnxruntime-web": "./ort/ort.webgpu.min.mjs"' in (both / "index.html").read_text()  # it runs WebAssembly too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["both", "home", "registry", "site"]  # no build folder left behind


def test_one_onnxruntime_web_version_is_pinned():
    """web/package.json's dependency is gapcam/web.py's version (the Makefile reads it from there too)."""
    package = json.loads((WEB / "package.json").read_text())
    assert package["dependencies"] == {"onnxruntime-web": ORT_VERSION}


def test_wrong_tarball_is_refused_in_one_line_and_nothing_is_written(tmp_path):
    with registry(tmp_path, b"not onnxruntime-web"):
        with pytest.raises(WebError, match=r"^http://127\.0\.0\.1:\d+/onnxruntime-web/-/onnxruntime-web-.*: refused: its sha512") as caught:
            write_site("tests/data/tiny.onnx", tmp_path / "site")
        result = CliRunner().invoke(gapcam_main, ["web", "tests/data/tiny.onnx", "--out", str(tmp_path / "site")])
    assert "\n" not in str(caught.value)
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "refused" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry"]  # no site, no build folder, nothing cached


def test_a_file_that_is_not_a_model_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "notes.onnx").write_text("not a model")
    with pytest.raises(CamError):
        write_site(tmp_path / "notes.onnx", tmp_path / "site")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("")
    with pytest.raises(WebError, match="exists and is not an empty folder"):
        write_site("tests/data/tiny.onnx", tmp_path / "taken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.onnx", "taken"]


def test_overwrite_replaces_only_an_earlier_site(tmp_path, monkeypatch):
    """--overwrite replaces a folder gapcam web wrote (its site.json says so), never another folder,
    and never the current folder or one that holds it."""
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "notes.txt").write_text("mine")
    with registry(tmp_path, real_tarball()):
        with pytest.raises(WebError, match=r"documents: exists and is not an empty folder \(--overwrite replaces only a site"):
            write_site(FER, tmp_path / "documents", overwrite=True)
        monkeypatch.chdir(tmp_path / "documents")
        for here in (".", tmp_path):
            with pytest.raises(WebError, match="is the current folder or holds it"):
                write_site(FER, here, overwrite=True)
        site = write_site(FER, tmp_path / "site")
        (site / "stale.txt").write_text("from before")
        again = write_site(SHAPES, tmp_path / "site", overwrite=True)
    assert (tmp_path / "documents" / "notes.txt").read_text() == "mine"
    assert again == site and not (site / "stale.txt").exists() and json.loads((site / "site.json").read_text())["name"] == "shapes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["documents", "home", "registry", "site"]  # nothing left aside


def test_serve_sends_the_isolation_headers_and_stops_on_ctrl_c(tmp_path):
    """`gapcam web MODEL --serve`: a temporary site on 127.0.0.1 (onnxruntime-web from the cache), removed on exit."""
    (tmp_path / "home" / "npm").mkdir(parents=True)
    (tmp_path / "home" / "npm" / tarball_name()).write_bytes(real_tarball())
    env = {
        **os.environ,
        "GAPCAM_HOME": str(tmp_path / "home"),
        REGISTRY_VARIABLE: "http://127.0.0.1:9/unreachable",
        "TMPDIR": str(tmp_path),
    }
    command = [sys.executable, "-m", "gapcam", "web", "tests/data/tiny.onnx", "--serve", "--port", "0"]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        written, serving_line = server.stdout.readline(), server.stdout.readline()
        url = serving_line.split()[1]
        with urllib.request.urlopen(url) as page, urllib.request.urlopen(url + "ort/ort-wasm-simd-threaded.wasm") as wasm:
            assert page.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert page.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert wasm.headers["Content-Type"] == "application/wasm" and wasm.read()[:4] == b"\0asm"
            assert b"gapcam-result" in page.read()
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    assert "MB (onnxruntime-web" in written
    assert not list(tmp_path.glob("gapcam-web-*"))  # the temporary site is gone


# The browser suite: the files the harness reads, the steps it runs, and CamSession's answers to compare.


def rewritten(source: Path, out: Path, change) -> Path:
    """A copy of an ONNX model with `change(props, model)` applied to its metadata (a dict) and graph."""
    import onnx

    model = onnx.load(source)
    props = {p.key: p.value for p in model.metadata_props}
    change(props, model)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, out)
    return out


def without_class_maps(props, model):
    del model.graph.output[2]  # the features path: maps from the fc weights


def contradicting(props, model):
    props["gapcam.preprocess"] = props["gapcam.preprocess"].replace('"height": 64', '"height": 32')


def tampered(archive: Path, out: Path) -> Path:
    """A package archive whose model.onnx no longer matches the manifest's sha256."""
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, data[:-1] + bytes([data[-1] ^ 1]) if item.filename == "model.onnx" else data)
    return out


def sample_images(folder: Path) -> list[str]:
    """PNG and JPEG files of several sizes and modes: the model size, up- and downscaled, grayscale, RGBA, large."""
    with zipfile.ZipFile(SHAPES) as package:
        shapes = [Image.open(io.BytesIO(package.read(f"samples/0{i}.png"))).convert("RGB") for i in range(4)]
    with zipfile.ZipFile(FER) as package:
        face = Image.open(io.BytesIO(package.read("samples/00.png")))
    pictures = {
        "shape64.png": shapes[0],
        "shape37x53.png": shapes[1].resize((37, 53)),
        "shape300x200.png": shapes[2].resize((300, 200), Image.Resampling.BICUBIC),
        "gray120x90.png": shapes[3].convert("L").resize((120, 90)),
        "rgba80.png": shapes[0].resize((80, 80)).convert("RGBA"),
        "large1000x700.png": shapes[3].resize((1000, 700)),
        "face.png": face,
        "photo.jpg": shapes[2].resize((300, 200), Image.Resampling.BICUBIC),
        "gray.jpg": shapes[3].convert("L").resize((120, 90)),
    }
    for name, picture in pictures.items():
        picture.save(folder / name, quality=90)
    return list(pictures)


RESIZES = [
    ((97, 61), (64, 64)),
    ((97, 61), (13, 29)),
    ((40, 30), (64, 64)),
    ((500, 333), (224, 224)),
    ((48, 48), (48, 20)),
    ((1000, 700), (48, 48)),
    ((7, 5), (224, 160)),
]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """(the folder the harness ran in, its steps, their answers): one headless Chromium run of every step."""
    browser = chromium_binary()
    tmp = tmp_path_factory.mktemp("web")
    tiny = ROOT / "tests" / "data" / "tiny.onnx"
    with registry(tmp, real_tarball()):
        site = write_site("tests/data/tiny.onnx", tmp / "site")
        write_site(multilabel_copy(tiny, tmp / "multilabel.onnx", [0.2, 0.9, 0.2, 0.9, 0.2]), site / "multilabel")  # a second page
    images = sample_images(site)
    models = {
        "model.onnx": tiny,
        "fer.zip": shutil.copy(FER, site / "fer.zip"),
        "nocams.onnx": rewritten(tiny, site / "nocams.onnx", without_class_maps),
        "multilabel.onnx": multilabel_copy(tiny, site / "multilabel.onnx", [0.2, 0.9, 0.2, 0.9, 0.2]),
    }
    steps = [{"kind": "run", "model": name, "images": images, "options": {"topk": 2}} for name in models]
    steps.append({"kind": "run", "model": "multilabel.onnx", "images": images[:2], "options": {}})
    steps.append({"kind": "run", "model": "model.onnx", "images": images[:1], "options": {"classes": ["star", 0]}})
    steps.append({"kind": "sources", "model": "fer.zip", "image": "shape300x200.png"})
    steps.append({"kind": "video", "model": "model.onnx", "image": "shape300x200.png"})
    rng = np.random.default_rng(0)
    for i, (size, out_size) in enumerate(RESIZES):
        rng.integers(0, 256, size[0] * size[1], dtype=np.uint8).tofile(site / f"plane{i}.bin")
        for method in ("bilinear", "bicubic", "nearest", "lanczos"):
            steps.append(
                {"kind": "resize", "pixels": f"plane{i}.bin", "width": size[0], "height": size[1], "size": out_size, "method": method}
            )
    (site / "notes.onnx").write_text("not a model")
    (site / "broken.png").write_text("not an image")
    rewritten(tiny, site / "nometa.onnx", lambda props, model: props.clear())
    rewritten(tiny, site / "contradicting.onnx", contradicting)
    tampered(FER, site / "tampered.zip")
    errors = ["notes.onnx", "nometa.onnx", "contradicting.onnx", "tampered.zip"]
    steps += [{"kind": "error", "model": name} for name in errors]
    steps.append({"kind": "error", "model": "model.onnx", "image": "broken.png"})
    steps.append({"kind": "page", "url": "index.html?image=shape300x200.png"})
    steps.append({"kind": "page", "url": "index.html?image=broken.png"})
    steps.append({"kind": "page", "url": "multilabel/index.html?image=../shape300x200.png"})
    steps.append({"kind": "page", "url": "index.html", "click": "camera"})
    return site, models, steps, run_harness(browser, site, steps, tmp / "profile")


def run_harness(
    browser: str, site: Path, steps: list[dict], profile: Path, query: str = "", timeout: float = 120, gpu: bool = False
) -> list:
    """The answers of web/test/harness.js to `steps`, run in headless Chromium on `site` served cross-origin isolated
    (with `gpu`, WebGPU on SwiftShader, Chromium's CPU implementation of Vulkan)."""
    backends = json.loads((site / "site.json").read_text())["backends"]
    page = (WEB / "test" / "harness.html").read_text().replace("ORT_MODULE", ORT_FILES[backends[-1]][0])  # as write_site
    (site / "harness.html").write_text(page)
    shutil.copy(WEB / "test" / "harness.js", site)
    (site / "cases.json").write_text(json.dumps(steps))
    reports = []
    arrived = threading.Event()

    class Harness(SiteHandler):
        def do_POST(self):
            reports.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()
            arrived.set()

    with serving(Harness, site) as url, chromium(browser, profile, f"{url}/harness.html{query}", gpu):
        arrived.wait(timeout=timeout)
    assert reports, f"the harness sent no report within {timeout} s"
    answers = reports[0]
    assert "harness_error" not in answers[-1], answers[-1]
    assert len(answers) == len(steps)
    return answers


@contextmanager
def chromium(browser: str, profile: Path, url: str, gpu: bool = False):
    """Headless Chromium on `url` until the block ends (the process and its children stopped then)."""
    command = headless_chromium(
        browser,
        profile,
        *(SWIFTSHADER_WEBGPU if gpu else ["--disable-gpu"]),
        "--use-fake-device-for-media-stream",  # a camera exists, and the user refuses it
        "--deny-permission-prompts",
        url,
    )
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def floats(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


def answers_of(harness, kind):
    _, _, steps, answers = harness
    return [(step, answer) for step, answer in zip(steps, answers, strict=False) if step["kind"] == kind]


def assert_camsession_answers(site: Path, steps: list[dict], answers: list) -> None:
    """Each run step's answers against CamSession.run on the same files: classes, boxes, probabilities, maps."""
    for step, answer in zip(steps, answers, strict=True):
        session = CamSession(site / step["model"])
        expected = session.run([str(site / name) for name in step["images"]], **step["options"])
        for name, js, py in zip(step["images"], answer, expected, strict=True):
            where = f"{step['model']} {name} {step['options']}"
            assert [e["class"] for e in js["explained"]] == [int(c) for c in py.classes], where
            assert [e["box"] for e in js["explained"]] == py.boxes.tolist(), where
            assert js["label"] == py.label and js.get("positive") == py.to_dict().get("positive", js.get("positive")), where
            np.testing.assert_allclose(js["probs"], py.probs, atol=TOLERANCE, err_msg=where)
            assert js["map_size"] == list(py.cams_raw.shape[1:]), where
            for raw, scaled, py_raw, py_scaled in zip(js["cams_raw"], js["cams_scaled"], py.cams_raw, py.cams_scaled, strict=True):
                spread = max(float(np.ptp(py_raw)), 1e-12)
                assert np.abs(floats(raw) - py_raw.ravel()).max() <= TOLERANCE * spread, where
                assert np.abs(floats(scaled) - py_scaled.ravel()).max() <= TOLERANCE, where
            assert np.abs(floats(js["cam"]) - py.cam.ravel()).max() <= TOLERANCE, where


@pytest.mark.browser
def test_module_gives_camsession_answers(harness):
    site, _, _, _ = harness
    assert_camsession_answers(site, *zip(*answers_of(harness, "run"), strict=True))


def floor_pooling(props, model):
    """MaxPool's ceil_mode off: onnxruntime-web's WebGPU has no ceil_mode; for tiny.onnx's 2x2, stride-2 pools of
    even-sized maps (64, 32, 16) ceil and floor give the same output, so the model computes the same."""
    for node in model.graph.node:
        for attribute in node.attribute:
            if node.op_type == "MaxPool" and attribute.name == "ceil_mode":
                attribute.i = 0


@pytest.mark.browser
def test_webgpu_backend_gives_camsession_answers(tmp_path):
    """The --webgpu site's module on WebGPU (SwiftShader here): the same answers, to the same tolerances; a model
    WebGPU cannot run (MaxPool with ceil_mode: the bundled shapes and FER models) rejects in one line."""
    browser = chromium_binary()
    with registry(tmp_path, real_tarball()):
        site = write_site("tests/data/tiny.onnx", tmp_path / "site", webgpu=True)
    images = sample_images(site)[:4]
    rewritten(site / "model.onnx", site / "floor.onnx", floor_pooling)
    steps = [{"kind": "error", "model": "floor.onnx"}, {"kind": "run", "model": "floor.onnx", "images": images, "options": {"topk": 2}}]
    steps.append({"kind": "error", "model": "model.onnx", "image": images[0]})
    answers = run_harness(browser, site, steps, tmp_path / "profile", query="?backend=webgpu", gpu=True)
    if answers[0]["message"]:
        pytest.skip(f"no WebGPU adapter in this Chromium, even SwiftShader's: {answers[0]['message']}")
    assert_camsession_answers(site, steps[1:2], answers[1:2])
    assert answers[2]["message"] == "model.onnx: using ceil() in shape computation is not yet supported for MaxPool"


@pytest.mark.browser
def test_img_imagebitmap_canvas_and_imagedata_give_the_same_answer(harness):
    site, _, _, _ = harness
    ((step, answer),) = answers_of(harness, "sources")
    expected = CamSession(site / step["model"]).run(str(site / step["image"]))[0].to_dict()
    for source, result in zip(("<img>", "ImageBitmap", "canvas", "ImageData"), answer, strict=True):
        assert result["explained"][0]["class"] == expected["explained"][0]["class"], source
        assert result["explained"][0]["box"] == expected["explained"][0]["box"], source
        np.testing.assert_allclose(result["probs"], expected["probs"], atol=TOLERANCE, err_msg=source)


@pytest.mark.browser
def test_a_video_frame_runs(harness):
    """A <video> element's current frame (of a canvas stream: its colors pass through video encoding, so no equality)."""
    ((_, answer),) = answers_of(harness, "video")
    x0, y0, x1, y1 = answer["explained"][0]["box"]
    assert answer["image_size"] == [200, 300] and 0 <= x0 < x1 <= 300 and 0 <= y0 < y1 <= 200
    assert abs(sum(answer["probs"]) - 1) < 1e-5


@pytest.mark.browser
def test_preprocessing_and_overlays_are_bit_exact(harness):
    site, _, _, _ = harness
    for step, answer in answers_of(harness, "run"):
        session = CamSession(site / step["model"])
        for name, js in zip(step["images"], answer, strict=True):
            where = f"{step['model']} {name}"
            assert np.array_equal(floats(js["batch"]), session.to_batch(str(site / name)).ravel()), where
            result = session.run(str(site / name), **step["options"])[0]
            shown = np.asarray(session.overlay(str(site / name), result.cams_scaled[0]))
            drawn = np.frombuffer(base64.b64decode(js["overlay"]), np.uint8).reshape(*shown.shape[:2], 4)
            assert np.array_equal(drawn[..., :3], shown), f"{where}: {np.count_nonzero(drawn[..., :3] != shown)} values differ"


@pytest.mark.browser
def test_resampling_equals_pillow(harness):
    """Bilinear, bicubic and nearest match Pillow bit for bit; Lanczos too here (its sin() may differ by an ulp elsewhere)."""
    site, _, _, _ = harness
    methods = {
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "nearest": Image.Resampling.NEAREST,
        "lanczos": Image.Resampling.LANCZOS,
    }
    for step, answer in answers_of(harness, "resize"):
        width, height = step["width"], step["height"]
        plane = Image.frombytes("L", (width, height), (site / step["pixels"]).read_bytes())
        expected = np.asarray(plane.resize(tuple(step["size"]), methods[step["method"]])).ravel()
        got = np.frombuffer(base64.b64decode(answer), np.uint8)
        assert np.array_equal(got, expected), f"{step}: {np.count_nonzero(got != expected)} of {got.size} pixels differ"


@pytest.mark.browser
def test_bad_inputs_reject_with_one_line_messages(harness):
    site, _, _, _ = harness
    messages = {(step["model"], step.get("image")): answer["message"] for step, answer in answers_of(harness, "error")}
    assert all(message and "\n" not in message for message in messages.values()), messages
    assert messages[("notes.onnx", None)].startswith("notes.onnx: not an ONNX model")
    assert messages[("tampered.zip", None)] == "tampered.zip: model.onnx does not match its sha256 in the manifest (checksum check failed)"
    assert messages[("model.onnx", "broken.png")] == "broken.png: not a readable image"
    for name in ("nometa.onnx", "contradicting.onnx"):  # CamSession's own words after the file's name
        with pytest.raises(CamError) as python:
            CamSession(site / name)
        assert messages[(name, None)] == f"{name}: {str(python.value).split(': ', 1)[1]}"
    for name in ("notes.onnx", "tampered.zip"):
        with pytest.raises(CamError):
            CamSession(site / name)


@pytest.mark.browser
def test_page_writes_results_and_shows_failures(harness):
    site, _, _, _ = harness
    (good, _), (broken, _), (multilabel, _), (camera, _) = ((a, s) for s, a in answers_of(harness, "page"))
    expected = CamSession(site / "model.onnx").run(str(site / "shape300x200.png"), topk=3)[0].to_dict()
    result = json.loads(good["result"])
    assert good["error"] == "" and result["file"] == "shape300x200.png"
    assert [e["class"] for e in result["explained"]] == [e["class"] for e in expected["explained"]]
    assert [e["box"] for e in result["explained"]] == [e["box"] for e in expected["explained"]]
    np.testing.assert_allclose(result["probs"], expected["probs"], atol=TOLERANCE)
    assert broken["error"] == "broken.png: not a readable image" and broken["visible"]
    assert json.loads(broken["result"]) == {"file": "broken.png", "error": "broken.png: not a readable image"}
    assert camera["error"].startswith("camera: permission refused (NotAllowedError") and camera["visible"], camera
    # a multi-label model's page explains its positive findings, as gapcam run does (no topk)
    expected = CamSession(site / "multilabel" / "model.onnx").run(str(site / "shape300x200.png"))[0].to_dict()
    result = json.loads(multilabel["result"])
    assert result["positive"] == expected["positive"]
    assert [e["class"] for e in result["explained"]] == [e["class"] for e in expected["explained"]]


@pytest.mark.browser
def test_screenshot_of_the_page_with_a_real_result(tmp_path):
    """The page with a shapes scene's result, saved to build/browser.png (`make browser-screenshot` copies it to docs/)."""
    browser = chromium_binary()
    with registry(tmp_path, real_tarball()):
        site = write_site(SHAPES, tmp_path / "site")
    Image.fromarray(render_split(3, seed=7, split="test", size=192).images[2]).save(site / "sample.png")  # a cross
    SCREENSHOT.parent.mkdir(exist_ok=True)
    with site_server(site) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html?image=sample.png"
        flags = ["--virtual-time-budget=30000", "--window-size=900,640", "--hide-scrollbars"]
        command = headless_chromium(browser, tmp_path / "profile", "--disable-gpu", *flags)
        dom = subprocess.run([*command, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        subprocess.run([*command, f"--screenshot={SCREENSHOT}", url], capture_output=True, timeout=120, check=True)
        server.shutdown()
    assert '"label":"' in dom and 'id="gapcam-error" role="alert"></p>' in dom, dom[-2000:]
    picture = np.asarray(Image.open(SCREENSHOT).convert("RGB"))
    assert picture.shape == (640, 900, 3) and len(np.unique(picture.reshape(-1, 3), axis=0)) > 100  # an overlay, not a blank page
