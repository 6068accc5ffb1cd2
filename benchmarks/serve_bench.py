"""`gapcam serve` measured: start-up time, memory and requests per second with concurrent clients.

    .venv/bin/python benchmarks/serve_bench.py [MODEL]     (default: the bundled shapes package)

Starts `python -m gapcam serve MODEL` on free 127.0.0.1 ports, times it from launch to the model
being ready, sums the resident memory of its process tree (Python with the CamSession, tritonserver,
the Python-backend stub), then runs 1, 4, 16 and 64 concurrent HTTP clients (each its own
connection), each sending one 480x640 JPEG per request for a fixed time, and reports requests per
second and latency percentiles; then sends SIGTERM with a keep-alive client still connected and
times the stop (the figure an orchestrator's grace period must cover). Prints Markdown.
"""

from __future__ import annotations

import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from process_tree import tree_memory_mb
from test_serve import free_ports

DURATION_S = 15
CLIENTS = (1, 4, 16, 64)


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def load(port: int, name: str, clients: int, images: list[bytes]) -> tuple[float, list[float]]:
    def worker(index: int) -> list[float]:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        latencies, end = [], time.monotonic() + DURATION_S
        i = index
        try:
            while time.monotonic() < end:
                data = np.array([images[i % len(images)]], dtype=np.object_).reshape(1, 1)
                tensor = httpclient.InferInput("images", [1, 1], "BYTES")
                tensor.set_data_from_numpy(data)
                start = time.perf_counter()
                client.infer(name, [tensor])
                latencies.append(time.perf_counter() - start)
                i += clients
        finally:
            client.close()
        return latencies

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [t for part in pool.map(worker, range(clients)) for t in part]
    return len(latencies) / (time.monotonic() - started), latencies


def main(model: str) -> None:
    http, grpc, metrics = free_ports(3)
    name = Path(model).stem if Path(model).exists() else model
    with tempfile.TemporaryDirectory() as home:
        launched = time.monotonic()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gapcam",
                "serve",
                model,
                "--http-port",
                str(http),
                "--grpc-port",
                str(grpc),
                "--metrics-port",
                str(metrics),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTRITON_HOME": home},
        )
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
        while True:
            try:
                if client.is_model_ready(name):
                    break
            except Exception:
                pass
            if process.poll() is not None:
                raise SystemExit("the server exited while starting")
            time.sleep(0.1)
        client.close()
        startup = time.monotonic() - launched
        idle = tree_memory_mb(process.pid)
        images = [jpeg(seed) for seed in range(16)]
        rows = []
        for clients in CLIENTS:
            rate, latencies = load(http, name, clients, images)
            ms = sorted(t * 1e3 for t in latencies)
            rows.append(
                f"| {clients} | {rate:.1f} | {statistics.median(ms):.1f} | {ms[int(0.99 * (len(ms) - 1))]:.1f} "
                f"| {tree_memory_mb(process.pid):.0f} MB |"
            )
        kept_alive = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
        kept_alive.is_server_live()  # a connection still open when the signal arrives, as a load balancer keeps one
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
        stop = time.monotonic() - stopped
        kept_alive.close()
    print(
        f"Model `{model}`; start-up (launch to model ready) {startup:.1f} s; memory of the process tree when idle "
        f"{idle:.0f} MB; SIGTERM after the traffic, a client still connected, to exit {stop:.1f} s (exit code {code}). "
        f"One 480x640 JPEG per request, {DURATION_S} s per row.\n"
    )
    print("| concurrent clients | requests/s | p50 latency ms | p99 latency ms | memory after |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "shapes")
