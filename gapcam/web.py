"""`gapcam web MODEL --out site/`: a static, offline web page that runs a gapcam model in the browser.

The site holds the page (`web/site/`), gapcam's JavaScript module (`web/src/`), the model and the
onnxruntime-web files it needs, taken from the npm tarball of `ORT_VERSION`: downloaded once from the
npm registry (`$GAPCAM_NPM_REGISTRY`, default registry.npmjs.org), checked against the registry's
sha512 integrity recorded here, and cached in $GAPCAM_HOME/npm. `--serve` serves the site on
127.0.0.1 with the cross-origin isolation headers that let onnxruntime-web use threads.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path
from site import getuserbase

import click

from runtime.cli import cli_errors
from runtime.errors import GapcamError
from runtime.formats.package import MODEL
from runtime.formats.store import gapcam_home
from runtime.inference.session import CamSession

ORT_VERSION = "1.22.0"  # the one onnxruntime-web the module is tested with (web/package.json pins it too)
# The registry's integrity hash of its tarball: `npm view onnxruntime-web@1.22.0 dist.integrity`.
ORT_INTEGRITY = "sha512-Ud/+EBo6mhuaQWt/OjaOk0iNWjXqJoeeMFr6xQEERZdIZH2OWpGzuujz7lfuOBjUa6TEE/sc4nb7Da5dNL34fg=="
REGISTRY = "https://registry.npmjs.org"
REGISTRY_VARIABLE = "GAPCAM_NPM_REGISTRY"  # another registry or mirror (tests serve the tarball locally)
# The onnxruntime-web files a site needs: its ES module (the import map names it) and the WebAssembly runtime it loads.
ORT_FILES = {
    "wasm": ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"),
    "webgpu": ("ort.webgpu.min.mjs", "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm"),
}


def web_folder() -> Path:
    """The JavaScript module (src/) and the page (site/): web/ in a source tree, else where the wheel
    installs them (under sys.prefix, or the user base for `pip install --user`); the source tree's
    place where neither holds them (`write_site` then says so)."""
    source = Path(__file__).resolve().parent.parent / "web"
    installed = [Path(base) / "share" / "gapcam" / "web" for base in (sys.prefix, getuserbase())]
    return next((folder for folder in (source, *installed) if (folder / "src" / "index.js").is_file()), source)


WEB = web_folder()
SITE_FILE = "site.json"  # what every site gapcam web writes holds: the model's name, the backends, onnxruntime-web's version
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


class WebError(GapcamError):
    """A site that cannot be written: a tarball that fails its integrity check, an output in the way."""


def tarball_name(version: str = ORT_VERSION) -> str:
    return f"onnxruntime-web-{version}.tgz"


def integrity(data: bytes) -> str:
    """npm's integrity string (Subresource Integrity form) of `data`."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def ort_tarball() -> bytes:
    """The pinned onnxruntime-web tarball: from the cache, else downloaded into it. Raises WebError when
    the registry cannot be reached or what it sends fails the recorded integrity check."""
    cache = gapcam_home() / "npm" / tarball_name()
    if cache.is_file() and integrity(data := cache.read_bytes()) == ORT_INTEGRITY:
        return data
    registry = os.environ.get(REGISTRY_VARIABLE, REGISTRY).rstrip("/")
    url = f"{registry}/onnxruntime-web/-/{tarball_name()}"
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as err:  # ValueError: a registry that is no URL
        raise WebError(f"{url}: cannot download onnxruntime-web {ORT_VERSION} ({getattr(err, 'reason', err)})") from None
    if integrity(data) != ORT_INTEGRITY:
        raise WebError(f"{url}: refused: its sha512 is not npm's integrity hash of onnxruntime-web {ORT_VERSION} (wrong or damaged)")
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache.parent, delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, cache)
    return data


def ort_files(backends: tuple[str, ...]) -> dict[str, bytes]:
    """name -> bytes of the onnxruntime-web files the backends need, from the verified tarball."""
    wanted = {name for backend in backends for name in ORT_FILES[backend]}
    with tarfile.open(fileobj=io.BytesIO(ort_tarball()), mode="r:gz") as tar:
        files = {}
        for name in sorted(wanted):
            try:
                member = tar.extractfile(f"package/dist/{name}")
            except KeyError:
                member = None
            if member is None:
                raise WebError(f"{tarball_name()}: has no dist/{name}")
            files[name] = member.read()
    return files


def model_bytes(model: str | os.PathLike[str]) -> tuple[bytes, str]:
    """(the ONNX file's bytes, a name for the page) of a model CamSession opens (and checks)."""
    session = CamSession(model, providers=["CPUExecutionProvider"])
    data = session.package.read(MODEL) if session.package else Path(session.path).read_bytes()
    name = session.package.manifest.name if session.package else Path(session.path).stem
    return data, name


def write_site(model: str | os.PathLike[str], out: str | os.PathLike[str], *, webgpu: bool = False, overwrite: bool = False) -> Path:
    """Write the static site for `model` into `out`, whole or not at all (built beside it, then renamed).
    `overwrite` replaces a site an earlier `gapcam web` wrote there, never another folder.

    Raises CamError for a model CamSession refuses, WebError for an `out` in the way or a bad tarball.
    """
    target = Path(out).resolve()
    if target == Path.cwd().resolve() or target in Path.cwd().resolve().parents:
        raise WebError(f"{out}: is the current folder or holds it; give a folder of its own for the site")
    if target.exists():
        earlier_site = target.is_dir() and (target / SITE_FILE).is_file()
        if not target.is_dir() or (any(target.iterdir()) and not (overwrite and earlier_site)):
            why = "--overwrite replaces only a site gapcam web wrote" if overwrite else "--overwrite replaces a site gapcam web wrote"
            raise WebError(f"{out}: exists and is not an empty folder ({why})")
    if not (WEB / "src" / "index.js").is_file():
        raise WebError(f"{WEB}: gapcam's JavaScript module is not installed there (reinstall gapcam)")
    data, name = model_bytes(model)
    backends = ("wasm", "webgpu") if webgpu else ("wasm",)
    files = ort_files(backends)
    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        page = (WEB / "site" / "index.html").read_text(encoding="utf-8")
        (build / "index.html").write_text(page.replace("ORT_MODULE", ORT_FILES[backends[-1]][0]), encoding="utf-8")
        shutil.copy(WEB / "site" / "app.js", build / "app.js")
        shutil.copytree(WEB / "src", build / "gapcam")
        (build / "ort").mkdir()
        for file, content in files.items():
            (build / "ort" / file).write_bytes(content)
        (build / "model.onnx").write_bytes(data)
        site = {"model": "model.onnx", "name": name, "backends": list(backends), "onnxruntime_web": ORT_VERSION}
        (build / SITE_FILE).write_text(json.dumps(site, indent=2) + "\n", encoding="utf-8")
        build.chmod(0o755)
        replaced = target.with_name(f"{build.name}.old")
        if target.exists():
            os.replace(target, replaced)  # aside first: the new site is in place before the old one goes
        os.replace(build, target)
        shutil.rmtree(replaced, ignore_errors=True)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return target


def site_size(site: Path) -> int:
    """Bytes of every file in a site."""
    return sum(path.stat().st_size for path in site.rglob("*") if path.is_file())


class SiteHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with the headers that make a page cross-origin isolated (onnxruntime-web's threads)."""

    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
    }

    def end_headers(self) -> None:
        for header, value in ISOLATION_HEADERS.items():
            self.send_header(header, value)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per file would bury the address


def site_server(site: Path, port: int = 0) -> http.server.ThreadingHTTPServer:
    """An HTTP server of `site` on 127.0.0.1 (port 0: a free one), not yet serving."""
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), partial(SiteHandler, directory=str(site)))


@click.command()
@click.argument("model")
@click.option("--out", type=click.Path(file_okay=False), help="Folder to write the site to (default with --serve: a temporary one).")
@click.option("--serve", is_flag=True, help="Serve the site on 127.0.0.1, cross-origin isolated (WebAssembly threads).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port for --serve (0: a free one).")
@click.option("--webgpu", is_flag=True, help="Include onnxruntime-web's WebGPU build as well (about 22 MB more).")
@click.option("--overwrite", is_flag=True, help="Replace an existing site folder.")
@cli_errors
def main(model: str, out: str | None, serve: bool, port: int, webgpu: bool, overwrite: bool) -> None:
    """A static web page that runs MODEL (an .onnx file, package or package name) in the browser, offline."""
    if out is None and not serve:
        raise click.UsageError("give --out FOLDER, --serve, or both")
    with tempfile.TemporaryDirectory(prefix="gapcam-web-") as scratch:
        site = write_site(model, out or Path(scratch) / "site", webgpu=webgpu, overwrite=overwrite)
        click.echo(f"{site}: {site_size(site) / 1e6:.1f} MB (onnxruntime-web {ORT_VERSION})")
        if serve:
            with site_server(site, port) as server:
                click.echo(f"serving http://127.0.0.1:{server.server_address[1]}/ (Ctrl+C stops)")
                try:
                    server.serve_forever()
                except KeyboardInterrupt:
                    pass
