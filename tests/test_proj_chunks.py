"""The GRU forward's input projections in chunks (csrc/pipeline.h `proj_chunk_steps`): a serial
forward over more than 2048 rows projects ≥ 2048 rows at a time into one chunk-sized buffer, and
the recurrence addresses each step's rows in it relative to the chunk's first. Here T·B = 2800
rows: chunks of 52 steps (52 + 18) at B = 40, in both directions (a reverse run's chunks start at
the high time indices), with lengths and packed (chunk rows then follow the batch sizes), both
reset forms; one thread (serial; with two the pipeline keeps whole-sequence projections at this
size), against the reference path."""

from __future__ import annotations

import pytest
import torch
from conftest import gru_outputs_and_grads, num_threads, tol

import rnnlab
from rnnlab import kernels

pytestmark = pytest.mark.skipif(
    not kernels.AVAILABLE, reason=f"fused extension not built: {kernels.LOAD_ERROR}"
)


@pytest.fixture
def one_thread():
    with num_threads(1):
        yield


@pytest.mark.parametrize("form", ["dense", "lengths", "packed"])
@pytest.mark.parametrize("reset", ["after", "before"])
def test_gru_projection_chunks_match_reference(form, reset, one_thread):
    torch.manual_seed(0)
    layer = rnnlab.GRU(3, 5, bidirectional=True, reset=reset, dtype=torch.float64)
    x = torch.randn(70, 40, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 40, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.randint(1, 71, (40,))
    lengths[3] = 70
    fused = gru_outputs_and_grads(layer, x, h0, form, lengths)
    with kernels.use_reference():
        reference = gru_outputs_and_grads(layer, x, h0, form, lengths)
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, b, **tol(torch.float64))
