"""Training under torchrun with DistributedDataParallel: 2 processes on the CPU (gloo)."""
import subprocess
import sys

from export import export_checkpoint
from runtime import CamSession
from train import load_checkpoint


def test_two_processes_train_a_checkpoint_that_exports(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "train", "shapes", "--samples", "64", "--epochs", "2", "--batch-size", "16", "--cam-channels", "8", "--out", "ddp.pt"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("epoch 2/2") == 1  # rank 0 alone reports
    checkpoint = load_checkpoint(tmp_path / "ddp.pt")
    assert checkpoint.provenance["processes"] == 2
    assert not any(key.startswith("module.") for key in checkpoint.model)
    session = CamSession(export_checkpoint(tmp_path / "ddp.pt").path)
    assert session.labels[0] == "circle"
