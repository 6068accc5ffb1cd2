"""Training under torchrun with DistributedDataParallel: 2 processes on the CPU (gloo), each
streaming its share of every epoch through DistributedSampler."""

import subprocess
import sys

import torch

from export import export_checkpoint
from runtime import CamSession
from train import SamplerState, load_checkpoint


def torchrun(cwd, *args):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "train", *args]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_two_processes_train_a_checkpoint_that_exports_and_resumes_exactly(tmp_path):
    settings = ["shapes", "--samples", "64", "--epochs", "2", "--batch-size", "16", "--cam-channels", "8", "--workers", "1"]
    done = torchrun(tmp_path, *settings, "--out", "ddp.pt")
    assert done.stdout.count("epoch 2/2") == 1  # rank 0 alone reports
    checkpoint = load_checkpoint(tmp_path / "ddp.pt")
    assert checkpoint.provenance.processes == 2
    assert not any(key.startswith("module.") for key in checkpoint.model)
    session = CamSession(export_checkpoint(tmp_path / "ddp.pt").path)
    assert session.labels[0] == "circle"

    torchrun(tmp_path, *settings, "--out", "split.pt", "--stop-after", "1")
    torchrun(tmp_path, "shapes", "--resume", "split.last.pt", "--workers", "0")
    straight, resumed = load_checkpoint(tmp_path / "ddp.last.pt"), load_checkpoint(tmp_path / "split.last.pt")
    assert resumed.training.sampler == SamplerState(seed=0, epoch=2, processes=2)
    for key, value in straight.model.items():
        assert torch.equal(value, resumed.model[key]), key
