"""`gapcam serve MODEL`: a Triton Inference Server, started through NVIDIA's PyTriton, with a
`CamSession` inside.

Clients send encoded image files (any size, any format Pillow reads) and get back, per image, the
class probabilities, the top-k classes, their boxes in the image's own pixels and the raw
low-resolution CAMs. Triton's dynamic batcher merges concurrent requests into one inference call.

The Triton model (named after the gapcam model: its package name, or the file's stem):
    input   images   BYTES [-1, 1]       one encoded image file per row
    output  probs    FP32  [-1, C]       softmax over the C labels
            classes  INT64 [-1, k]       the k most probable classes, best first
            boxes    INT64 [-1, k, 4]    x0, y0, x1, y1 per class, end-exclusive, in the image's pixels
            cams     FP32  [-1, k, h, w] each class's raw map at feature resolution, of the method
                                         `--method` chose (scale with runtime.explain_outputs or as you like)
"""
from __future__ import annotations

import logging
import os
import re
import signal
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from runtime.cli import cli_errors
from runtime.errors import CamError
from runtime.inference.session import CamSession
from runtime.maps.methods import METHODS, get_method


@dataclass(frozen=True)
class Endpoints:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002


def triton_model_name(session: CamSession) -> str:
    """The package's name, else the model file's stem, in the characters Triton allows."""
    name = session.package.manifest.name if session.package else Path(str(session.path)).stem
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "model"


class CamInference:
    """PyTriton's inference callable: the requests Triton batched together -> one response each.

    All images of all requests run as one `CamSession.run` call. An image that does not decode
    fails the call, so Triton returns that error for the requests of this batch (PyTriton reports
    errors per call, not per request); the server goes on serving.
    """

    def __init__(self, session: CamSession, topk: int, method: str = "cam"):
        self.session, self.topk, self.method = session, topk, get_method(method).name

    def __call__(self, requests: list) -> list[dict[str, np.ndarray]]:
        counts, images = [], []
        for request in requests:
            encoded = np.asarray(request["images"]).reshape(-1)
            counts.append(len(encoded))
            images += [bytes(item) for item in encoded]
        results = self.session.run(images, topk=self.topk, method=self.method)
        responses, start = [], 0
        for count in counts:
            part = results[start : start + count]
            start += count
            responses.append({
                "probs": np.stack([r.probs for r in part]).astype(np.float32),
                "classes": np.stack([r.classes for r in part]).astype(np.int64),
                "boxes": np.stack([r.boxes for r in part]).astype(np.int64),
                "cams": np.stack([r.cams_raw for r in part]).astype(np.float32),
            })
        return responses


def stub_library_path() -> str:
    """LD_LIBRARY_PATH with this interpreter's libpython first.

    The Python backend's stub that PyTriton's tritonserver starts links `libpython3.x` by name: left
    to the system's, a Python built elsewhere (pyenv, conda, uv) then runs its own standard library
    on another libpython, and loading the model fails with "'_thread.RLock' object has no attribute
    '_recursion_count'".
    """
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    current = os.environ.get("LD_LIBRARY_PATH", "")
    return os.pathsep.join(part for part in (libdir, current) if part)


def _stop_on_sigterm() -> None:
    """SIGTERM ends the server the way Ctrl-C does: PyTriton stops Triton and cleans its workspace."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def serve(
    model: str, endpoints: Endpoints, topk: int = 1, max_batch_size: int = 32, max_queue_delay_us: int = 2000, log=print, method: str = "cam",
) -> None:
    """Load `model` into a CamSession and serve it until SIGINT or SIGTERM, explaining with `method`."""
    get_method(method)
    session = CamSession(model)
    if not 1 <= topk <= len(session.labels):
        raise CamError(f"--topk {topk}: the model has {len(session.labels)} classes")
    name = triton_model_name(session)
    os.environ["LD_LIBRARY_PATH"] = stub_library_path()  # the server and its stubs inherit it
    _stop_on_sigterm()
    config = TritonConfig(
        http_address=endpoints.host, http_port=endpoints.http_port,
        grpc_address=endpoints.host, grpc_port=endpoints.grpc_port,
        metrics_address=endpoints.host, metrics_port=endpoints.metrics_port,
        exit_on_error=True,
    )
    outputs = [
        Tensor(name="probs", dtype=np.float32, shape=(len(session.labels),)),
        Tensor(name="classes", dtype=np.int64, shape=(topk,)),
        Tensor(name="boxes", dtype=np.int64, shape=(topk, 4)),
        Tensor(name="cams", dtype=np.float32, shape=(topk, -1, -1)),
    ]
    batching = ModelConfig(max_batch_size=max_batch_size, batcher=DynamicBatcher(max_queue_delay_microseconds=max_queue_delay_us))
    try:
        with Triton(config=config) as triton:  # leaving the block stops Triton and removes its workspace
            triton.bind(
                model_name=name, infer_func=CamInference(session, topk, method), inputs=[Tensor(name="images", dtype=np.bytes_, shape=(1,))],
                outputs=outputs, config=batching, strict=True,
            )
            log(f"serving {session.path} as Triton model {name!r} ({', '.join(session.providers)}): "
                f"HTTP {endpoints.host}:{endpoints.http_port}, gRPC {endpoints.host}:{endpoints.grpc_port}, "
                f"metrics {endpoints.host}:{endpoints.metrics_port}; Ctrl-C or SIGTERM stops it")
            triton.serve()  # returns on Ctrl-C or SIGTERM once serving
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while starting
        pass
    log("stopped")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.option("--host", default=Endpoints.host, show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--http-port", type=click.IntRange(1, 65535), default=Endpoints.http_port, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=Endpoints.grpc_port, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=Endpoints.metrics_port, show_default=True)
@click.option("--topk", type=click.IntRange(min=1), default=1, show_default=True, help="Classes (with boxes and CAMs) returned per image.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Most images in one inference call.")
@click.option("--method", type=click.Choice(list(METHODS)), default="cam", show_default=True, help="Which map `cams` returns (runtime.maps.methods).")
@click.option("--max-queue-delay-us", type=click.IntRange(min=0), default=2000, show_default=True, help="How long Triton may hold a request to batch it with others.")
@cli_errors
def main(model, host, http_port, grpc_port, metrics_port, topk, max_batch_size, method, max_queue_delay_us) -> None:
    """Serve MODEL (an .onnx file, a package or a package name) on a Triton Inference Server.

    Input `images`: BYTES [-1, 1], encoded image files. Outputs: `probs` FP32 [-1, C], `classes`
    INT64 [-1, k], `boxes` INT64 [-1, k, 4] in each image's pixels, `cams` FP32 [-1, k, h, w].
    """
    logging.basicConfig(level=logging.WARNING)
    serve(model, Endpoints(host, http_port, grpc_port, metrics_port), topk, max_batch_size, max_queue_delay_us, log=click.echo, method=method)


if __name__ == "__main__":
    main()
