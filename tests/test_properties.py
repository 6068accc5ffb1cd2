"""Property tests (Hypothesis): whatever images and metadata values come in, the runtime either
works or says one clear CamError; nothing else escapes."""

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from runtime import CamError, ModelInfo
from runtime.inputs.image import Preprocess, preprocess

SHAPES = st.one_of(
    st.tuples(st.integers(0, 40), st.integers(0, 40)),
    st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(1, 5)),
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
)
DTYPES = st.sampled_from([np.uint8, np.uint16, np.float32, np.int64, np.bool_])


@settings(max_examples=150, deadline=None)
@given(arrays(DTYPES, SHAPES), st.sampled_from(["L", "RGB"]))
def test_any_array_is_a_batch_or_a_clear_error(array, color):
    spec = Preprocess(8, 8, color, (0.5,) * (1 if color == "L" else 3), (0.25,) * (1 if color == "L" else 3))
    try:
        batch = preprocess(array, spec)
    except CamError as err:
        assert str(err).startswith("image array")
        return
    assert array.dtype == np.uint8 and array.size > 0
    assert batch.shape == (1, spec.channels, 8, 8) and batch.dtype == np.float32 and np.isfinite(batch).all()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**9), 10**9) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["labels", "preprocess", "fc_weight", "fc_bias", "pool", "box_threshold", "format_version", "architecture"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIELDS), JSON)
def test_any_metadata_value_loads_or_is_a_clear_error(valid_props, field, value):
    props = dict(valid_props)
    props[f"gapcam.{field}"] = json.dumps(value)
    try:
        info = ModelInfo.from_props(props, source="m.onnx")
    except CamError as err:
        assert str(err).startswith("m.onnx:"), err
        return
    assert np.isfinite(info.fc_weight).all() and 0.0 <= info.box_threshold <= 1.0
    assert info.fc_weight.shape[0] == len(info.labels) == info.fc_bias.shape[0]
