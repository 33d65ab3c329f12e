"""Smoke: tritonserver's python backend answers model_repo/smoke_double (2 * x) over HTTP and gRPC."""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

pytestmark = pytest.mark.triton

MODEL = "smoke_double"


def _fresh_input() -> np.ndarray:
    rng = np.random.default_rng()  # unseeded: fresh values every run
    rows, cols = rng.integers(1, 5), rng.integers(1, 33)
    return rng.standard_normal((rows, cols)).astype(np.float32)


def test_triton_smoke_double_http(triton_urls):
    client = httpclient.InferenceServerClient(triton_urls.http)
    assert client.is_model_ready(MODEL), f"{MODEL} not ready on {triton_urls.http}"
    x = _fresh_input()
    inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(MODEL, [inp], outputs=[httpclient.InferRequestedOutput("OUTPUT0")])
    y = result.as_numpy("OUTPUT0")
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_array_equal(y, 2 * x)  # doubling is exact in fp32


def test_triton_smoke_double_grpc(triton_urls):
    client = grpcclient.InferenceServerClient(triton_urls.grpc)
    assert client.is_model_ready(MODEL), f"{MODEL} not ready on {triton_urls.grpc}"
    x = _fresh_input()
    inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(MODEL, [inp], outputs=[grpcclient.InferRequestedOutput("OUTPUT0")])
    y = result.as_numpy("OUTPUT0")
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_array_equal(y, 2 * x)
