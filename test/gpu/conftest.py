"""test/gpu: CUDA-only tests.

Every test here is skipped, with the reason, when CUDA is absent (the only test layer allowed to
skip); benchmarks/gpu_check.sh runs them on a GPU machine.
"""

from __future__ import annotations

import pytest
import torch


# Session scope: set up before the module-scoped CUDA fixtures of the test files.
@pytest.fixture(scope="session", autouse=True)
def _require_cuda():
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available (run benchmarks/gpu_check.sh on a GPU machine)")


@pytest.fixture(scope="session")
def cuda():
    return torch.device("cuda")
