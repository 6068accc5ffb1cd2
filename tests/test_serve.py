"""`gapcam serve`: a real Triton Inference Server on 127.0.0.1, queried from this process with
tritonclient, compared with CamSession, loaded by many clients and hostile requests, and stopped by
SIGTERM or SIGINT after traffic, with clients connected, quickly and with nothing left behind."""

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pytriton", reason="gapcam serve needs the serve extra (nvidia-pytriton)")
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from fixtures import multilabel_copy, write_png_bomb
from process_tree import tree_memory_mb
from runtime import CamSession

pytestmark = pytest.mark.serve  # starts tritonserver: not in make test-fast
TOPK = 2
START_TIMEOUT_S = 180
STOP_WITHIN_S = 10  # what an orchestrator's grace period must cover (Kubernetes' default is 30 s)
FAILURES_LOGGED = ("exited with failure", "Exit timeout expired", "leaked shared_memory", "Non-graceful termination", "Traceback")


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

    def __init__(self, model, home: Path, *options, new_session: bool = False, topk: int | None = TOPK):
        self.http, self.grpc, self.metrics = free_ports(3)
        self.home, self.shm_before = home, shared_memory()
        self.log = open(home / "server.log", "w+")
        # PyTriton's sockets live under PYTRITON_HOME, and a Unix socket path has at most 107 characters.
        self.pytriton_home = Path(tempfile.mkdtemp(prefix="pytriton-"))
        env = {**os.environ, "PYTRITON_HOME": str(self.pytriton_home)}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gapcam",
                "serve",
                str(model),
                *(["--topk", str(topk)] if topk is not None else []),
                "--http-port",
                str(self.http),
                "--grpc-port",
                str(self.grpc),
                "--metrics-port",
                str(self.metrics),
                *map(str, options),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=new_session,  # its own process group, as a shell's foreground job
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

    def counters(self, *names) -> dict[str, float]:
        """Triton's Prometheus counters for the model, from the metrics endpoint."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=10) as response:
            lines = response.read().decode().splitlines()
        found = {}
        for line in lines:
            key, _, value = line.rpartition(" ")
            metric = key.split("{")[0]
            if metric in names and f'model="{self.name}"' in key:
                found[metric] = found.get(metric, 0.0) + float(value)
        return found

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self, signum) -> int:
        self.process.send_signal(signum)
        return self.wait()

    def wait(self) -> int:
        try:
            return self.process.wait(timeout=90)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.log.flush()
            self.workspaces = list(self.pytriton_home.glob("workspace_*"))
            shutil.rmtree(self.pytriton_home, ignore_errors=True)

    def assert_stopped_cleanly(self, code: int, seconds: float) -> None:
        """Exit 0 within STOP_WITHIN_S, nothing failing in the log, no workspace or shared memory left."""
        output = self.output()
        assert code == 0, output[-3000:]
        assert seconds < STOP_WITHIN_S, f"the stop took {seconds:.1f} s: {output[-3000:]}"
        assert "stopped in" in output and not [f for f in FAILURES_LOGGED if f in output], output[-3000:]
        assert not self.workspaces, "PyTriton's workspace was left behind"
        assert shared_memory() <= self.shm_before, "shared memory was left behind"


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
    """One server for the module's tests; its stop after all their traffic is checked as an operator would."""
    running = Server(tiny_onnx, tmp_path_factory.mktemp("serve"))
    yield running
    with running.client() as kept_alive:  # a client still connected (keep-alive) when SIGTERM arrives
        assert kept_alive.is_server_live()
        started = time.monotonic()
        code = running.stop(signal.SIGTERM)
    running.assert_stopped_cleanly(code, time.monotonic() - started)


@pytest.fixture(scope="module")
def images(shape_images):
    """Encoded images of several sizes and formats: model size, larger, smaller, JPEG and PNG."""
    pictures = [
        np.asarray(Image.fromarray(p).resize(size))
        for p, size in zip(shape_images.images, [(64, 64), (200, 150), (40, 30), (333, 101)] * 2, strict=True)
    ]
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
        ("probs", "TYPE_FP32", [labels]),
        ("positive", "TYPE_BOOL", [labels]),
        ("classes", "TYPE_INT64", [TOPK]),
        ("boxes", "TYPE_INT64", [TOPK, 4]),
        ("cams", "TYPE_FP32", [TOPK, -1, -1]),
        ("error", "TYPE_STRING", [1]),
    ]


OUTPUTS = ("probs", "classes", "boxes", "cams")


def answers(result):
    return {n: result.as_numpy(n) for n in (*OUTPUTS, "error")}


def test_hostile_images_fail_alone_and_the_server_goes_on(server, tiny_onnx, images, tmp_path):
    """Garbage, an empty file and a decompression bomb in one request beside good images: each bad
    image gets its own one-line error, the good ones their results."""
    bomb = write_png_bomb(tmp_path / "bomb.png", 20000, 20000).read_bytes()  # 400 megapixels in a few hundred KB
    sent = [images[0], b"this is not an image", images[1], b"", bomb]
    with server.client() as client:
        got = answers(client.infer(server.name, request(sent)))
        assert client.is_server_live() and client.is_model_ready(server.name)
    errors = [e.decode() for e in got["error"].reshape(-1)]
    assert errors[0] == errors[2] == "" and "not a readable image" in errors[1] and "not a readable image" in errors[3]
    assert "megapixels" in errors[4] or "decompression bomb" in errors[4]
    assert all(len(e.splitlines()) == 1 for e in errors if e)
    expected = CamSession(tiny_onnx).run([images[0], images[1]], topk=TOPK)
    check_against_session({n: got[n][[0, 2]] for n in OUTPUTS}, expected)
    bad = [1, 3, 4]
    assert (
        (got["classes"][bad] == -1).all() and (got["boxes"][bad] == -1).all() and not got["probs"][bad].any() and not got["cams"][bad].any()
    )


def test_a_multilabel_model_serves_its_positive_findings(tiny_onnx, images, tmp_path):
    """Without --topk a multi-label model answers every class's sigmoid, which are positive, and a
    box and map for each positive (its most probable class where none is), then -1 and zeros."""
    single = CamSession(tiny_onnx)
    sigmoids = 1 / (1 + np.exp(-np.stack([r.logits for r in single.run(images)]).astype(np.float64)))
    thresholds = np.percentile(sigmoids, 80, axis=0).tolist()  # images differ in how many classes reach them
    model = multilabel_copy(tiny_onnx, tmp_path / "multi.onnx", thresholds)
    expected = CamSession(model).run(images)
    running = Server(model, tmp_path, topk=None)
    try:
        with running.client() as client:
            result = client.infer(running.name, request(images))
            got, positive = answers(result), result.as_numpy("positive")
    finally:
        running.assert_stopped_cleanly(running.stop(signal.SIGTERM), 0.0)
    labels = len(expected[0].probs)
    assert got["classes"].shape == (len(images), labels) and positive.dtype == np.bool_
    np.testing.assert_allclose(got["probs"], np.stack([r.probs for r in expected]), atol=1e-5)
    for i, result in enumerate(expected):
        count = len(result.classes)
        assert positive[i].nonzero()[0].tolist() == sorted(result.positives.tolist())
        assert got["classes"][i, :count].tolist() == result.classes.tolist() and (got["classes"][i, count:] == -1).all()
        assert np.array_equal(got["boxes"][i, :count], result.boxes) and (got["boxes"][i, count:] == -1).all()
        np.testing.assert_allclose(got["cams"][i, :count], result.cams_raw, rtol=1e-4, atol=1e-5)
        assert not got["cams"][i, count:].any()
    assert len({len(r.classes) for r in expected}) > 1  # the images differ in how many findings they have


def test_a_batch_at_the_limit_runs_and_one_above_is_refused(server, tiny_onnx, images):
    full = [images[i % len(images)] for i in range(32)]  # --max-batch-size 32 (the default)
    with server.client() as client:
        got = answers(client.infer(server.name, request(full)))
        with pytest.raises(InferenceServerException, match="batch"):
            client.infer(server.name, request(full + images[:1]))
        assert client.is_model_ready(server.name)
    check_against_session({n: got[n] for n in OUTPUTS}, CamSession(tiny_onnx).run(full, topk=TOPK))


def test_sixteen_clients_get_their_own_answers(server, tiny_onnx, images):
    """16 clients, each on its own connection, 320 requests of 1-3 images: no failure, each answer its own."""
    expected = CamSession(tiny_onnx).run(images, topk=TOPK)

    def client_session(worker):
        with server.client() as client:
            for i in range(20):
                chosen = [(worker + i + j) % len(images) for j in range(1 + (worker + i) % 3)]
                got = answers(client.infer(server.name, request([images[c] for c in chosen])))
                assert not any(got["error"].reshape(-1))
                check_against_session({n: got[n] for n in OUTPUTS}, [expected[c] for c in chosen])
        return True

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(client_session, range(16)))


MEMORY_GROWTH_MB = 64  # bound on the server's growth over 2,000 requests after a warm-up of 200


def test_memory_stays_bounded_over_thousands_of_requests(server, images):
    if not Path(f"/proc/{server.process.pid}/smaps_rollup").exists():
        pytest.skip("needs Linux's /proc/PID/smaps_rollup")

    def send(count, workers=4):
        def client_session(_):
            with server.client() as client:
                for i in range(count // workers):
                    client.infer(server.name, request([images[i % len(images)]]))

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(client_session, range(workers)))

    send(200)
    before = tree_memory_mb(server.process.pid, "Pss")
    send(2000)
    after = tree_memory_mb(server.process.pid, "Pss")
    assert after - before < MEMORY_GROWTH_MB, f"the server's process tree grew from {before:.0f} MB to {after:.0f} MB"


def test_a_bad_image_batched_with_good_requests_fails_only_its_own(tiny_onnx, images, tmp_path):
    """A long queue delay makes Triton batch concurrent requests into one call; only the bad one errs."""
    running = Server(tiny_onnx, tmp_path, "--max-queue-delay-us", 300_000)
    try:

        def send(image):
            with running.client() as client:
                return answers(client.infer(running.name, request([image])))

        with ThreadPoolExecutor(6) as pool:
            sent = [images[0], images[1], b"garbage", images[2], images[3], images[4]]
            got = list(pool.map(send, sent))
        counts = running.counters("nv_inference_count", "nv_inference_exec_count")
        assert counts["nv_inference_exec_count"] < counts["nv_inference_count"], f"Triton did not batch: {counts}"
        assert [bool(g["error"].reshape(-1)[0]) for g in got] == [False, False, True, False, False, False]
        expected = CamSession(tiny_onnx).run([s for s in sent if s != b"garbage"], topk=TOPK)
        for g, e in zip([g for g, s in zip(got, sent, strict=True) if s != b"garbage"], expected, strict=True):
            check_against_session({n: g[n] for n in OUTPUTS}, [e])
    finally:
        started = time.monotonic()
        code = running.stop(signal.SIGTERM)
    running.assert_stopped_cleanly(code, time.monotonic() - started)


def test_a_stop_under_traffic_drains_refuses_new_requests_and_ends_readiness(tiny_onnx, images, tmp_path):
    """SIGINT while 4 clients (keep-alive connections) keep sending: readiness turns false, every
    request is answered (results, or a clear refusal once the stop began), and the stop is clean."""
    running = Server(tiny_onnx, tmp_path)
    stop_sent, outcomes, readiness = threading.Event(), [], []

    def client_session(_):
        with running.client() as client:
            while True:
                try:
                    client.infer(running.name, request(images[:2]))
                    outcomes.append("answered")
                except InferenceServerException as err:
                    assert stop_sent.is_set(), f"refused before the stop: {err}"
                    outcomes.append("refused")
                    return
                except Exception:  # the server closed the connection at the end of the stop
                    assert stop_sent.is_set()
                    return

    def watch_readiness():
        with running.client() as client:
            while running.process.poll() is None:
                try:
                    readiness.append(client.is_model_ready(running.name))
                except Exception:
                    return
                time.sleep(0.05)

    with ThreadPoolExecutor(5) as pool:
        senders = [pool.submit(client_session, i) for i in range(4)]
        time.sleep(2.0)
        watcher = pool.submit(watch_readiness)
        started = time.monotonic()
        stop_sent.set()
        running.process.send_signal(signal.SIGINT)
        code = running.wait()
        seconds = time.monotonic() - started
        for future in (*senders, watcher):
            future.result(timeout=30)
    running.assert_stopped_cleanly(code, seconds)
    assert outcomes.count("answered") > 4 and "refused" in outcomes
    assert readiness and readiness[-1] is False, readiness


def test_a_second_signal_stops_at_once(tiny_onnx, images, tmp_path):
    running = Server(tiny_onnx, tmp_path, "--drain-timeout", 60)
    with running.client() as client:
        client.infer(running.name, request(images[:1]))
        started = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        code = running.stop(signal.SIGTERM)
    assert code == 1 and time.monotonic() - started < STOP_WITHIN_S
    assert "stopped at once" in running.output() and "Traceback" not in running.output()
    assert not running.workspaces and shared_memory() <= running.shm_before


def test_the_stub_library_path_puts_this_pythons_libpython_first(monkeypatch):
    import sysconfig

    from gapcam.serve import stub_library_path

    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/elsewhere")
    assert stub_library_path().split(os.pathsep) == [sysconfig.get_config_var("LIBDIR"), "/opt/elsewhere"]


def test_topk_larger_than_the_classes_is_refused(tiny_onnx):
    done = subprocess.run(
        [sys.executable, "-m", "gapcam", "serve", str(tiny_onnx), "--topk", "9"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "--topk 9: the model has 5 classes" in done.stderr and "Traceback" not in done.stderr


def test_a_pytriton_home_too_long_for_its_sockets_is_refused_before_starting(tiny_onnx, tmp_path):
    deep = tmp_path / ("d" * 100)
    done = subprocess.run(
        [sys.executable, "-m", "gapcam", "serve", str(tiny_onnx)],
        env={**os.environ, "PYTRITON_HOME": str(deep)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "is too long for PyTriton's sockets" in done.stderr and "set PYTRITON_HOME to a shorter folder" in done.stderr


def test_ctrl_c_in_a_terminal_reaches_tritonserver_too_and_the_stop_is_still_clean(tiny_onnx, images, tmp_path):
    """A terminal's Ctrl-C signals the whole foreground process group, tritonserver with gapcam:
    tritonserver then stops on its own while gapcam drains; the stop must still end cleanly."""
    running = Server(tiny_onnx, tmp_path, new_session=True)
    with running.client() as client:
        for _ in range(5):
            client.infer(running.name, request(images[:2]))
        started = time.monotonic()
        os.killpg(running.process.pid, signal.SIGINT)
        code = running.wait()
    seconds = time.monotonic() - started
    output = running.output()
    assert code == 0 and seconds < STOP_WITHIN_S and "Traceback" not in output and "stopped in" in output, output[-3000:]
    assert not running.workspaces and shared_memory() <= running.shm_before
