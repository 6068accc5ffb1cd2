"""`gapcam serve MODEL`: a Triton Inference Server, started through NVIDIA's PyTriton, with a
`CamSession` inside.

Clients send encoded image files (any size, any format Pillow reads) and get back, per image, the
class probabilities, the top-k classes, their boxes in the image's own pixels and the raw
low-resolution CAMs. Triton's dynamic batcher merges concurrent requests into one inference call;
an image that does not decode fails alone (its `error` says why), never the requests batched with it.

The Triton model (named after the gapcam model: its package name, or the file's stem):
    input   images   BYTES [-1, 1]       one encoded image file per row
    output  probs    FP32  [-1, C]       softmax over the C labels (multi-label models: each label's sigmoid)
            positive BOOL  [-1, C]       the classes the model finds present: the top class, or a multi-label
                                         model's classes at or above their thresholds
            classes  INT64 [-1, k]       the k most probable classes, best first; without --topk a multi-label
                                         model's positive classes (its most probable where none is), then -1
            boxes    INT64 [-1, k, 4]    x0, y0, x1, y1 per class, end-exclusive, in the image's pixels
            cams     FP32  [-1, k, h, w] each class's raw map at feature resolution, of the method
                                         `--method` chose (scale with runtime.explain_outputs or as you like)
            error    BYTES [-1, 1]       empty where the image ran; else why it did not (then its probs
                                         are 0, classes and boxes -1, cams 0)

Stopping (SIGTERM, what Kubernetes, systemd and Docker send, or SIGINT): the model is unloaded
first, through Triton's own repository API, so readiness turns false at once, new requests are
refused, and Triton finishes the ones in flight (`--drain-timeout` bounds the wait); then
tritonserver stops, PyTriton's proxy ends and every shared-memory segment and the workspace go.
A second signal stops at once.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import signal
import sysconfig
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import click
import numpy as np
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from runtime.cli import cli_errors
from runtime.errors import CamError, first_line
from runtime.inference.session import CamSession
from runtime.inputs.image import load_image
from runtime.maps.methods import METHODS, get_method

DRAIN_TIMEOUT_S = 5.0  # how long a stop waits for the requests in flight (--drain-timeout)
# What tritonserver may wait, once the model is unloaded, for clients' keep-alive connections to close:
# they never close on their own, and Triton's one exit timeout (default 30 s) is spent on them first.
CONNECTION_WAIT_S = 1


@dataclass(frozen=True)
class Endpoints:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002

    @property
    def local_host(self) -> str:
        """The address this process reaches the HTTP endpoint at (a wildcard listens on loopback too)."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)


def triton_model_name(session: CamSession) -> str:
    """The package's name, else the model file's stem, in the characters Triton allows."""
    name = session.package.manifest.name if session.package else Path(str(session.path)).stem
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "model"


class CamInference:
    """PyTriton's inference callable: the requests Triton batched together -> one response each.

    Each image is decoded on its own; all that decode run as one `CamSession.run` call. PyTriton
    can fail only a whole call (every request Triton batched together), so an image that does not
    decode is answered in its own `error` row instead, and the others get their results.
    """

    def __init__(self, session: CamSession, topk: int | None, method: str = "cam"):
        self.session, self.topk, self.method = session, topk, get_method(method).name
        self.slots = explained_slots(session, topk)
        probe = session.run(np.zeros((*session.input_size, session.preprocessing.channels), np.uint8), topk=topk, method=self.method)
        self.map_size = probe[0].cams_raw.shape[1:]  # the size a failed image's (zero) maps get

    def __call__(self, requests: list) -> list[dict[str, np.ndarray]]:
        counts, pictures = [], []  # the images that decoded, in order
        errors: list[str | None] = []  # per image: None where it decoded, else why it did not
        for request in requests:
            encoded = np.asarray(request["images"]).reshape(-1)
            counts.append(len(encoded))
            for item in encoded:
                try:
                    pictures.append(load_image(bytes(item)))
                    errors.append(None)
                except CamError as err:
                    errors.append(first_line(err))
        results = iter(self.session.run(pictures, topk=self.topk, method=self.method) if pictures else [])
        rows = [self._row(next(results)) if error is None else self._failed_row(error) for error in errors]
        responses, start = [], 0
        for count in counts:
            part = rows[start : start + count]
            start += count
            responses.append({name: np.stack([row[name] for row in part]) for name in OUTPUT_NAMES})
        return responses

    def _row(self, result) -> dict[str, np.ndarray]:
        """One image's outputs; explained classes fewer than the slots (a multi-label model's
        positives) are followed by class -1, box -1 and a zero map, as a failed image's are."""
        row = self._failed_row("")
        count = len(result.classes)
        row["probs"] = result.probs.astype(np.float32)
        row["positive"][result.positives] = True
        row["classes"][:count] = result.classes
        row["boxes"][:count] = result.boxes
        row["cams"][:count] = result.cams_raw
        return row

    def _failed_row(self, error: str) -> dict[str, np.ndarray]:
        return {
            "probs": np.zeros(len(self.session.labels), np.float32),
            "positive": np.zeros(len(self.session.labels), np.bool_),
            "classes": np.full(self.slots, -1, np.int64),
            "boxes": np.full((self.slots, 4), -1, np.int64),
            "cams": np.zeros((self.slots, *self.map_size), np.float32),
            "error": np.array([error.encode()], dtype=np.object_),
        }


OUTPUT_NAMES = ("probs", "positive", "classes", "boxes", "cams", "error")


def explained_slots(session: CamSession, topk: int | None) -> int:
    """How many classes each image's `classes`, `boxes` and `cams` hold: `topk`; without it one, or
    every class for a multi-label model (whose positive classes are any number)."""
    if topk is not None:
        return topk
    return len(session.labels) if session.info.multilabel else 1


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


UNIX_SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux


def check_socket_path(name: str) -> None:
    """PyTriton talks to its Python stub over a Unix socket in its workspace under PYTRITON_HOME; a
    path beyond the kernel's limit fails only at the first request. Raises CamError before starting."""
    from pytriton.constants import PYTRITON_HOME

    longest = PYTRITON_HOME / "workspace_xxxxxxxx" / f"{name}_0_0-server.sock"
    if len(str(longest)) > UNIX_SOCKET_PATH_MAX:
        raise CamError(
            f"PYTRITON_HOME {PYTRITON_HOME} is too long for PyTriton's sockets ({len(str(longest))} > "
            f"{UNIX_SOCKET_PATH_MAX} characters with model {name!r}); set PYTRITON_HOME to a shorter folder"
        )


class StopSignals:
    """SIGTERM and SIGINT as events the main thread polls; the handler only records (one that raised
    could cut any step of the stop in half). The first sets `requested`: drain, then stop. The second
    sets `immediate`: the drain ends now, and tritonserver gets its short exit timeout only."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested, self.immediate = threading.Event(), threading.Event()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        self._previous = {signum: signal.getsignal(signum) for signum in self.SIGNALS}
        for signum in self.SIGNALS:
            signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]  # what getsignal returned

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        (self.immediate if self.requested.is_set() else self.requested).set()


def _status(endpoints: Endpoints, token: str, method: str, path: str, timeout_s: float) -> int:
    """The HTTP status Triton's API on this machine answers (PyTriton restricts the repository API to its token)."""
    connection = http.client.HTTPConnection(endpoints.local_host, endpoints.http_port, timeout=timeout_s)
    try:
        connection.request(method, path, body=b"" if method == "POST" else None, headers={"triton-access-token": token})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def drain(endpoints: Endpoints, token: str, name: str, timeout_s: float, immediate: threading.Event) -> str:
    """Unload model `name` through Triton's repository API and wait, at most `timeout_s`, until it is.

    From the unload on, the model is not ready (`/v2/models/NAME/ready` fails, so does a readiness
    probe) and Triton refuses new requests for it while it finishes the ones in flight; the model's
    Python stub then ends cleanly and frees its shared memory. Triton's strict readiness (PyTriton
    turns it on) is false while a model unloads and true again once no model is left unloading:
    that is the end of the drain. Returns how it ended: "drained", "timed out" (after `timeout_s`),
    "interrupted" (`immediate` was set) or "server gone" (tritonserver stopped first: Ctrl-C in a
    terminal signals the whole process group, tritonserver too, which then stops on its own).
    """
    deadline = time.monotonic() + timeout_s
    try:
        unload = _status(endpoints, token, "POST", f"/v2/repository/models/{name}/unload", max(timeout_s, 1.0))
        if unload != 200:
            raise CamError(f"Triton refused to unload {name!r} (HTTP {unload})")
        while _status(endpoints, token, "GET", "/v2/health/ready", max(timeout_s, 1.0)) != 200:
            if immediate.wait(0.05):
                return "interrupted"
            if time.monotonic() >= deadline:
                return "timed out"
    except OSError:  # the server is already stopping: nothing is left to drain through it
        return "server gone"
    return "drained"


def serve(
    model: str,
    endpoints: Endpoints,
    topk: int | None = None,
    max_batch_size: int = 32,
    max_queue_delay_us: int = 2000,
    log: Callable[[str], None] = print,
    method: str = "cam",
    drain_timeout_s: float = DRAIN_TIMEOUT_S,
) -> None:
    """Load `model` into a CamSession and serve it, explaining with `method`, until SIGTERM or SIGINT
    (then drain for at most `drain_timeout_s` and stop; a second signal stops at once)."""
    get_method(method)
    with StopSignals() as stop:  # from the start: a signal while the model loads stops too
        session = CamSession(model)
        if topk is not None and not 1 <= topk <= len(session.labels):
            raise CamError(f"--topk {topk}: the model has {len(session.labels)} classes")
        name = triton_model_name(session)
        check_socket_path(name)
        os.environ["LD_LIBRARY_PATH"] = stub_library_path()  # the server and its stubs inherit it
        triton, launched = Triton(config=_triton_config(endpoints)), False
        try:
            triton.bind(
                model_name=name,
                infer_func=CamInference(session, topk, method),
                inputs=[Tensor(name="images", dtype=np.bytes_, shape=(1,))],
                outputs=_outputs(len(session.labels), explained_slots(session, topk)),
                config=ModelConfig(max_batch_size=max_batch_size, batcher=DynamicBatcher(max_queue_delay_microseconds=max_queue_delay_us)),
                strict=True,
            )
            if not stop.requested.is_set():
                launched = True
                triton.run()  # starts tritonserver and loads the model
                log(
                    f"serving {session.path} as Triton model {name!r} ({', '.join(session.providers)}): "
                    f"HTTP {endpoints.host}:{endpoints.http_port}, gRPC {endpoints.host}:{endpoints.grpc_port}, "
                    f"metrics {endpoints.host}:{endpoints.metrics_port}; SIGTERM or Ctrl-C stops it"
                )
            while not stop.requested.wait(timeout=1.0):
                if not triton.is_alive():
                    raise CamError("Triton Inference Server exited on its own; see its log above")
            started = time.monotonic()
            if not stop.immediate.is_set():
                log(f"stopping: draining the requests in flight (at most {drain_timeout_s:g} s)")
                ended = (
                    drain(endpoints, triton.get_access_token(), name, drain_timeout_s, stop.immediate)
                    if triton.is_alive()
                    else "server gone"
                )
                if ended == "timed out":
                    log(f"stopping: requests still in flight after {drain_timeout_s:g} s are cut")
                elif ended == "server gone":
                    log("stopping: tritonserver was signalled too (its process group) and stopped on its own, without the drain")
        finally:
            if launched:
                triton.stop()  # tritonserver, then PyTriton's proxy and shared memory, then the workspace
        if stop.immediate.is_set():
            log("stopped at once, without draining (a second signal)")
            raise SystemExit(1)
        log(f"stopped in {time.monotonic() - started:.1f} s")


def _triton_config(endpoints: Endpoints) -> TritonConfig:
    return TritonConfig(
        http_address=endpoints.host,
        http_port=endpoints.http_port,
        grpc_address=endpoints.host,
        grpc_port=endpoints.grpc_port,
        metrics_address=endpoints.host,
        metrics_port=endpoints.metrics_port,
        exit_on_error=True,
        exit_timeout_secs=CONNECTION_WAIT_S,
    )


def _outputs(classes: int, topk: int) -> list[Tensor]:
    return [
        Tensor(name="probs", dtype=np.float32, shape=(classes,)),
        Tensor(name="positive", dtype=np.bool_, shape=(classes,)),
        Tensor(name="classes", dtype=np.int64, shape=(topk,)),
        Tensor(name="boxes", dtype=np.int64, shape=(topk, 4)),
        Tensor(name="cams", dtype=np.float32, shape=(topk, -1, -1)),
        Tensor(name="error", dtype=np.bytes_, shape=(1,)),
    ]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.option("--host", default=Endpoints.host, show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--http-port", type=click.IntRange(1, 65535), default=Endpoints.http_port, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=Endpoints.grpc_port, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=Endpoints.metrics_port, show_default=True)
@click.option(
    "--topk",
    type=click.IntRange(min=1),
    help="Classes (with boxes and CAMs) returned per image [default: 1; multi-label models: their positive classes].",
)
@click.option("--max-batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Most images in one inference call.")
@click.option(
    "--method", type=click.Choice(list(METHODS)), default="cam", show_default=True, help="Which map `cams` returns (runtime.maps.methods)."
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=DRAIN_TIMEOUT_S,
    show_default=True,
    help="On SIGTERM or SIGINT: seconds to wait for the requests in flight before stopping.",
)
@click.option(
    "--max-queue-delay-us",
    type=click.IntRange(min=0),
    default=2000,
    show_default=True,
    help="How long Triton may hold a request to batch it with others.",
)
@cli_errors
def main(model, host, http_port, grpc_port, metrics_port, topk, max_batch_size, method, drain_timeout, max_queue_delay_us) -> None:
    """Serve MODEL (an .onnx file, a package or a package name) on a Triton Inference Server.

    Input `images`: BYTES [-1, 1], encoded image files. Outputs: `probs` FP32 [-1, C], `classes`
    INT64 [-1, k], `boxes` INT64 [-1, k, 4] in each image's pixels, `cams` FP32 [-1, k, h, w],
    `error` BYTES [-1, 1] (empty, or why that image did not run). Health: GET /v2/health/live and
    /v2/models/NAME/ready (false from the moment a stop begins).
    """
    logging.basicConfig(level=logging.WARNING)
    serve(
        model,
        Endpoints(host, http_port, grpc_port, metrics_port),
        topk,
        max_batch_size,
        max_queue_delay_us,
        log=click.echo,
        method=method,
        drain_timeout_s=drain_timeout,
    )


if __name__ == "__main__":
    main()
