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
        import runtime.__main__, runtime.localization, runtime.report, zoo.__main__
        from runtime import CamSession
        result = CamSession({str(tiny_onnx)!r}).run(np.load({str(tmp_path / 'image.npy')!r}))[0]
        assert result.cams.shape == (1, 64, 64)
        assert not any(m.startswith(("torch", "onnx.")) or m == "onnx" for m in sys.modules if sys.modules[m] is not None)
        print("ok", result.label)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")
