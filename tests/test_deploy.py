"""The deployment examples of docs/serving.md: the Kubernetes manifest against Kubernetes' own schema,
the systemd unit with systemd-analyze, and both against what `gapcam serve` really offers."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVING = ROOT / "docs" / "serving.md"
KUBERNETES_VERSION = "1.30.0"  # a version every maintained cluster runs or exceeds


def code_block(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", SERVING.read_text(), re.S)
    assert len(blocks) == 1, f"docs/serving.md should hold one {language} block, has {len(blocks)}"
    return blocks[0]


def manifests() -> list[dict]:
    yaml = pytest.importorskip("yaml")
    return [doc for doc in yaml.safe_load_all(code_block("yaml")) if doc]


def test_the_kubernetes_manifest_is_valid_against_kubernetes_schema():
    validator = pytest.importorskip("kubernetes_validate")
    documents = manifests()
    assert [d["kind"] for d in documents] == ["Deployment", "Service"]
    for document in documents:
        validator.validate(document, KUBERNETES_VERSION, strict=True)  # raises ValidationError naming the field


def test_the_kubernetes_manifest_uses_what_gapcam_serve_offers():
    deployment = manifests()[0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    model = container["args"][2]
    assert container["args"][:2] == ["gapcam", "serve"]
    assert container["readinessProbe"]["httpGet"]["path"] == container["startupProbe"]["httpGet"]["path"] == f"/v2/models/{model}/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    drain = float(container["args"][container["args"].index("--drain-timeout") + 1])
    pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])  # sleep N: the endpoints update first
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 10  # the stop after the drain takes a few seconds
    assert {"requests"} <= set(container["resources"]) and any(m["mountPath"] == "/dev/shm" for m in container["volumeMounts"])
    pytest.importorskip("pytriton")
    from click.testing import CliRunner

    from gapcam.serve import main

    help_text = CliRunner().invoke(main, ["--help"]).output
    assert all(option in help_text for option in container["args"] if option.startswith("--"))


def test_the_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = code_block("ini")
    command = re.search(r"^ExecStart=(\S+)", unit, re.M).group(1)
    assert command.endswith("/bin/gapcam")
    gapcam = Path(sys.executable).with_name("gapcam")  # the same entry point, where this test can find it
    path = tmp_path / "gapcam-serve.service"
    path.write_text(unit.replace(command, str(gapcam)))
    done = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if "gapcam-serve.service" in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr
    assert int(re.search(r"^TimeoutStopSec=(\d+)", unit, re.M).group(1)) >= 15
    assert re.search(r"^KillMode=mixed$", unit, re.M)  # SIGTERM to gapcam alone: the default signals tritonserver too
