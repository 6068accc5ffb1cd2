"""`gapcam serve`: a real Triton Inference Server on 127.0.0.1, queried from this process with
tritonclient, compared with CamSession, and stopped by SIGTERM or SIGINT with nothing left behind."""
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pytriton", reason="gapcam serve needs the serve extra (nvidia-pytriton)")
import tritonclient.grpc as grpcclient  # noqa: E402  (installed with nvidia-pytriton)
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from fixtures import write_png_bomb  # noqa: E402
from runtime import CamSession  # noqa: E402

TOPK = 2
START_TIMEOUT_S = 180


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def shared_memory():
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")} if os.path.isdir("/dev/shm") else set()


class Server:
    """`python -m gapcam serve MODEL` in a subprocess, with its own PyTriton home."""

    def __init__(self, model, home: Path):
        self.http, self.grpc, self.metrics = free_ports(3)
        self.home, self.shm_before = home, shared_memory()
        self.log = open(home / "server.log", "w+")
        env = {**os.environ, "PYTRITON_HOME": str(home / "pytriton")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gapcam", "serve", str(model), "--topk", str(TOPK), "--http-port", str(self.http),
             "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        self.name = Path(model).stem
        with self.client() as client:
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    if client.is_model_ready(self.name):
                        return
                except Exception:
                    pass
                time.sleep(0.5)
        self.stop(signal.SIGKILL)
        raise AssertionError(f"server did not start: {self.output()[-3000:]}")

    @contextlib.contextmanager
    def client(self, protocol=httpclient):
        """A tritonclient that closes its connections after use: Triton waits for open ones at exit."""
        client = protocol.InferenceServerClient(f"127.0.0.1:{self.http if protocol is httpclient else self.grpc}")
        try:
            yield client
        finally:
            client.close()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self, signum) -> int:
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=90)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.log.flush()


def encoded(pixels, fmt):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def request(images):
    data = np.array(images, dtype=np.object_).reshape(-1, 1)
    tensor = httpclient.InferInput("images", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return [tensor]


@pytest.fixture(scope="module")
def server(tiny_onnx, tmp_path_factory):
    running = Server(tiny_onnx, tmp_path_factory.mktemp("serve"))
    yield running
    code = running.stop(signal.SIGTERM)
    assert code == 0, running.output()[-3000:]
    assert "stopped" in running.output()
    assert not list((running.home / "pytriton").glob("workspace_*")), "PyTriton's workspace was left behind"
    assert shared_memory() <= running.shm_before, "shared memory was left behind"


@pytest.fixture(scope="module")
def images(shape_images):
    """Encoded images of several sizes and formats: model size, larger, smaller, JPEG and PNG."""
    pictures = [np.asarray(Image.fromarray(p).resize(size)) for p, size in zip(shape_images.images, [(64, 64), (200, 150), (40, 30), (333, 101)] * 2)]
    return [encoded(p, "PNG" if i % 2 else "JPEG") for i, p in enumerate(pictures)]


def check_against_session(outputs, expected):
    """Triton's outputs equal CamSession.run's results on the same encoded images."""
    assert outputs["probs"].shape == (len(expected), len(expected[0].probs)) and outputs["probs"].dtype == np.float32
    np.testing.assert_allclose(outputs["probs"], np.stack([r.probs for r in expected]), atol=1e-5)
    assert np.array_equal(outputs["classes"], np.stack([r.classes for r in expected]))
    assert outputs["boxes"].dtype == np.int64 and np.array_equal(outputs["boxes"], np.stack([r.boxes for r in expected]))
    np.testing.assert_allclose(outputs["cams"], np.stack([r.cams_raw for r in expected]), rtol=1e-4, atol=1e-5)


def test_outputs_equal_camsession_over_http_and_grpc(server, tiny_onnx, images):
    expected = CamSession(tiny_onnx).run(images, topk=TOPK)
    with server.client() as client:
        result = client.infer(server.name, request(images))
    check_against_session({n: result.as_numpy(n) for n in ("probs", "classes", "boxes", "cams")}, expected)
    assert max(r.box[2] for r in expected) > 64  # boxes are in each image's own pixels, not the model's
    data = np.array(images[:3], dtype=np.object_).reshape(-1, 1)
    tensor = grpcclient.InferInput("images", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    with server.client(grpcclient) as grpc:
        result = grpc.infer(server.name, [tensor])
    check_against_session({n: result.as_numpy(n) for n in ("probs", "classes", "boxes", "cams")}, expected[:3])


def test_model_configuration(server, tiny_onnx):
    with server.client() as client:
        config = client.get_model_config(server.name)
    assert config["max_batch_size"] == 32 and "dynamic_batching" in config
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [("images", "TYPE_STRING", [1])]
    labels = len(CamSession(tiny_onnx).labels)
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [
        ("probs", "TYPE_FP32", [labels]), ("classes", "TYPE_INT64", [TOPK]), ("boxes", "TYPE_INT64", [TOPK, 4]), ("cams", "TYPE_FP32", [TOPK, -1, -1]),
    ]


def test_a_bad_image_fails_its_request_and_the_server_goes_on(server, images, tmp_path):
    bomb = write_png_bomb(tmp_path / "bomb.png", 20000, 20000).read_bytes()  # 400 megapixels in a few hundred KB
    with server.client() as client:
        with pytest.raises(InferenceServerException, match="not a readable image"):
            client.infer(server.name, request([b"this is not an image"]))
        with pytest.raises(InferenceServerException, match="decompression bomb|megapixels"):
            client.infer(server.name, request([bomb]))
        assert client.infer(server.name, request(images[:1])).as_numpy("classes").shape == (1, TOPK)
        assert client.is_server_live()


def test_concurrent_clients_get_their_own_answers(server, tiny_onnx, images):
    expected = CamSession(tiny_onnx).run(images, topk=TOPK)

    def client_session(worker):
        with server.client() as client:
            for i in range(8):
                chosen = [(worker + i + j) % len(images) for j in range(1 + (worker + i) % 3)]
                result = client.infer(server.name, request([images[c] for c in chosen]))
                check_against_session({n: result.as_numpy(n) for n in ("probs", "classes", "boxes", "cams")}, [expected[c] for c in chosen])
        return True

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(client_session, range(4)))


def test_sigint_stops_cleanly(tiny_onnx, tmp_path):
    running = Server(tiny_onnx, tmp_path)
    assert running.stop(signal.SIGINT) == 0, running.output()[-3000:]
    assert "stopped" in running.output()
    assert not list((tmp_path / "pytriton").glob("workspace_*"))
    assert shared_memory() <= running.shm_before


def test_the_stub_library_path_puts_this_pythons_libpython_first(monkeypatch):
    import sysconfig

    from gapcam.serve import stub_library_path

    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/elsewhere")
    assert stub_library_path().split(os.pathsep) == [sysconfig.get_config_var("LIBDIR"), "/opt/elsewhere"]


def test_topk_larger_than_the_classes_is_refused(tiny_onnx):
    done = subprocess.run([sys.executable, "-m", "gapcam", "serve", str(tiny_onnx), "--topk", "9"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "--topk 9: the model has 5 classes" in done.stderr and "Traceback" not in done.stderr
