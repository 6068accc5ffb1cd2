"""`import runtime` and `import zoo` work, and CamSession runs, where torch cannot be imported."""

import subprocess
import sys
import textwrap


def test_runtime_without_torch(tiny_onnx, shape_images, tmp_path):
    import numpy as np

    np.save(tmp_path / "image.npy", shape_images.images[0])
    code = textwrap.dedent(
        f"""
        import sys
        for name in ("torch", "torchvision", "onnx", "train", "export"):
            sys.modules[name] = None  # any import of these now raises ImportError
        import numpy as np
        import runtime, zoo
        import runtime.__main__, runtime.evaluation.localization, runtime.reports.report, zoo.__main__
        from runtime import CamSession
        result = CamSession({str(tiny_onnx)!r}).run(np.load({str(tmp_path / "image.npy")!r}))[0]
        assert result.cams.shape == (1, 64, 64)
        assert not any(m.startswith(("torch", "onnx.")) or m == "onnx" for m in sys.modules if sys.modules[m] is not None)
        print("ok", result.label)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")


def test_gapcam_command_without_torch_or_pytriton(shape_images, tmp_path):
    """`gapcam --help` and `gapcam run` need no torch; `train`, `export` and `serve` name their extra in one line."""
    from PIL import Image

    Image.fromarray(shape_images.images[0]).save(tmp_path / "image.png")
    blocker = tmp_path / "sitecustomize.py"  # runs at interpreter start: torch, onnx and pytriton look uninstalled
    blocker.write_text("import sys\nfor name in ('torch', 'torchvision', 'onnx', 'pytriton'):\n    sys.modules[name] = None\n")
    env = {**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{__import__('os').getcwd()}"}

    def gapcam(*args):
        return subprocess.run([sys.executable, "-m", "gapcam", *args], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)

    listed = gapcam("--help")
    assert listed.returncode == 0 and all(name in listed.stdout for name in ("train", "export", "run", "eval", "explain", "zoo", "serve"))
    ran = gapcam("run", "shapes", "image.png", "--out", "out", "--json")
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "out" / "results.json").is_file()
    for command, module, extra in (("train", "torch", "train"), ("export", "onnx", "train"), ("serve", "pytriton", "serve")):
        done = gapcam(command, "--help")
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip() == f"Error: gapcam {command} needs {module}, which is not installed: pip install 'gapcam[{extra}]'"
    version = gapcam("--version")
    assert version.returncode == 0 and version.stdout.startswith("gapcam ")
    assert "onnxruntime: onnxruntime" in version.stdout and "CPUExecutionProvider" in version.stdout and "torch: " in version.stdout
