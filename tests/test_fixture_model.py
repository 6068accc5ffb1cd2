"""The fast tier's committed model (tests/data/tiny.onnx) is a gapcam model of the current format and
stays small: a change of the ONNX contract fails here until `make test-fixture` rebuilds it. (The
`packed` fixture packs it; tests/test_zoo.py verifies that package and replays its test vectors.)"""

import json

from runtime import CamSession
from runtime.evaluation.shapes import CLASSES
from runtime.formats.onnx_model import FORMAT, FORMAT_VERSION

REBUILD = "tests/data/tiny.onnx is of another format: rebuild it with `make test-fixture`"


def test_the_committed_model_is_of_the_current_format(tiny_onnx, valid_props):
    assert json.loads(valid_props["gapcam.format"]) == FORMAT, REBUILD
    assert json.loads(valid_props["gapcam.format_version"]) == FORMAT_VERSION, REBUILD
    session = CamSession(tiny_onnx, providers=["CPUExecutionProvider"])  # checks the metadata against the graph
    assert session.labels == list(CLASSES) and session.input_size == (64, 64) and session.has_class_maps
    assert 8 <= session.info.fc_weight.shape[1] <= 32  # K
    assert tiny_onnx.stat().st_size < 200_000  # tens of KB: it is committed
