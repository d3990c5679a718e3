"""Shared fixtures of the infllm Python tests.

Devices: cpu always; cuda when torch sees a GPU and the loaded libinfllm.so has the cuda backend
(build/cuda/libinfllm.so through INFLLM_LIB), otherwise its cases skip saying why.
INFLLM_TEST_DEVICES=cpu,cuda (default both) narrows the list.
"""

import os

import pytest

import infllm

# A config small enough for short test sequences to run sparse with several dynamic blocks:
# blocks of 16 tokens, fine keys 16/8, coarse keys 32/16, window 32 (2 blocks), topk 3.
SMALL = infllm.SparseConfig(block_size=16, kernel_size=16, kernel_stride=8, coarse_kernel_size=32,
                            coarse_kernel_stride=16, init_blocks=1, window=32, topk=3, dense_len=-1)


def _cuda_reason():
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    if not infllm.backend_available("cuda"):
        return "%s was built without CUDA=1 (set INFLLM_LIB=build/cuda/libinfllm.so)" % infllm.LIBRARY_PATH
    return None


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        wanted = os.environ.get("INFLLM_TEST_DEVICES", "cpu,cuda").split(",")
        metafunc.parametrize("device", [d for d in ("cpu", "cuda") if d in wanted], indirect=True)


@pytest.fixture
def device(request):
    if request.param == "cuda":
        why = _cuda_reason()
        if why:
            pytest.skip("cuda: " + why)
    return request.param


@pytest.fixture
def cuda():
    """For tests that only make sense on a GPU: "cuda", or a skip saying why not."""
    why = _cuda_reason()
    if why or "cuda" not in os.environ.get("INFLLM_TEST_DEVICES", "cpu,cuda").split(","):
        pytest.skip("cuda: " + (why or "not in INFLLM_TEST_DEVICES"))
    return "cuda"
