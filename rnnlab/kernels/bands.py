"""Where oneDNN's RNN primitive beats rnnlab's own inference kernel: measured bands, per CPU.

A band is ``(largest hidden size, smallest batch, largest batch)``; the first band whose hidden
size covers a call decides it (oneDNN when the batch is within the band). Tables are per CPU
family (``PLATFORM``: the vendor, since the two machines measured differ in their GEMM library's
speed, not just in size), thread count (1, or 2 and more) and cell. Each was measured at T=100
with ``kernels.onednn_mode("always"/"never")`` side by side with torch.nn (BENCHMARKS.md).
"""

from __future__ import annotations

from .ops import _C, AVAILABLE

INF = 1 << 62
Band = tuple[int, int, int]

# "intel": the 2-core Xeon (AVX-512) every earlier rule was tuned on, MKL as the GEMM library.
_INTEL: dict[int, dict[str, list[Band]]] = {
    # re-measured once the forward ran as a two-core pipeline (csrc/pipeline.h), which moved our
    # kernel ahead at small H: LSTM H=128 B=16 1.06x vs oneDNN's 1.02x, RNN H=256 B=16 2.21 vs
    # 1.93, B=64 1.41 vs 1.27; GRU H=128 B=16 2.56 vs 2.30. The GRU above H = 128 (forward
    # split by units at B ≤ 32, csrc/split.h split_batch; projections in chunks, pipeline.h
    # proj_chunk_steps), oneDNN → ours, ms, alternating order: H=256 B=4 1.68 → 1.58, B=16 4.64 →
    # 4.47, B=32 9.38 → 8.99, B=64 20.95 → 19.11 and 20.41 → 20.17; H=512 B=32 41.0 → 38.7, B=64
    # 72.8 → 66.8 and 72.2 → 67.8
    2: {
        "lstm": [(128, 32, INF), (256, 8, INF), (INF, 32, INF)],
        "gru": [(64, INF, 0), (128, 32, INF), (INF, INF, 0)],
        "rnn": [(256, INF, 0), (INF, 2, 16)],
    },
    1: {  # one thread: our kernel loses no fork/join, and oneDNN's RNN H=512 was 2x slower
        "lstm": [(128, 4, INF), (256, 64, INF), (INF, 32, INF)],
        "gru": [(128, 2, INF), (INF, 64, INF)],
        "rnn": [],
    },
}

# "amd": a 2-core EPYC (Zen 4, AVX-512, 1 MB of L2 per core against the Xeon's 2 MB), oneDNN as
# the GEMM library (csrc/gemm.h). oneDNN's primitives keep W_hh in their own blocked layout and
# won far more often here; ms, oneDNN vs ours, 2 threads: GRU H=256 B=64 27.8 vs 38.4, H=512 B=8
# 14.4 vs 16.7, B=64 99.5 vs 135.2; LSTM H=128 B=8 1.53 vs 1.75, H=512 B=1 5.10 vs 5.67, B=8
# 17.7 vs 20.1; RNN H=512 B=32 20.8 vs 25.8. Ours stays ahead for the RNN up to H = 256 (H=256
# B=64 11.2 vs 13.7) and at small B·H (GRU H=128 B=8 1.84 vs 2.14, LSTM H=64 B=4 0.57 vs 0.71).
_AMD: dict[int, dict[str, list[Band]]] = {
    2: {
        # LSTM: ours up to H = 128 below B = 32 since its forward runs as batch halves (split.h);
        # above H = 256 from B = 40, since its per-step GEMMs run the matmul primitive (matmul.cpp).
        # Same process, interleaved, ms, torch / oneDNN / ours: H=512 B=64 164.2 / 155.2 / 139.6,
        # 164.9 / 154.3 / 138.6, 164.1 / 158.4 / 138.2; B=48 122.0 / 118.6 / 103.1; B=40 93.2 /
        # 94.1 / 88.0; H=1024 B=64 618.6 / 605.9 / 563.6; B=32 even (69.1 / 70.3 / 70.1, 69.1 /
        # 68.0 / 71.3, 69.3 / 66.6 / 69.3), B=24 and below oneDNN (50.5 / 49.0 / 50.9)
        "lstm": [(64, INF, 0), (128, 32, INF), (256, 4, INF), (INF, 1, 39)],
        # GRU: ours up to H = 128 since its forward runs as batch halves too (oneDNN → ours,
        # ms, alternating: H=128 B=32 4.59 → 4.42 and 4.74 → 4.52, B=48 6.74 → 6.24, B=64 8.64
        # → 8.12 and 8.29 → 8.03); oneDNN keeps H=256 B=64 (28.5 vs 30.8)
        "gru": [(128, INF, 0), (256, 8, INF), (INF, 2, INF)],
        "rnn": [(256, INF, 0), (INF, 8, INF)],
    },
    1: {  # one thread: GRU H=512 B=1 6.28 vs 6.70, B=64 187 vs 207; RNN ours (H=512 B=64 67.9
        # vs 70.8); LSTM H=256 B=4 4.59 vs 5.14, H=512 B=1 8.38 vs 9.20
        "lstm": [(128, 4, INF), (256, 4, INF), (INF, 1, INF)],
        "gru": [(64, INF, 0), (128, 8, INF), (256, 4, INF), (INF, 1, INF)],
        "rnn": [],
    },
}

# Short sequences. The bands above were measured at T = 100, where our kernel's fixed cost per
# call (chunk setup, the per-step GEMM primitive's reorder of W_hh) is spread over 100 steps. At
# T ≤ 10 with B ≥ 32, H 128–512, oneDNN's primitive took RNN and GRU inference on the EPYC (2
# threads, same process, interleaved, ours / oneDNN, T = 1 / 3 / 10): RNN H=128 B=32 1.28 / 1.28
# / 1.32, B=64 1.30 / 1.26 / 1.11; H=256 B=32 1.36 / 1.18 / 1.24, B=64 1.25 / 1.39 / 1.05; H=512
# B=32 1.57 / 1.55 / 1.15; GRU H=128 B=32 1.40 / 1.22 / 1.07, B=64 1.30 / 1.11 / 0.99; H=256 B=32
# 1.91 / 1.76 / 1.28 (at T=30: RNN 0.87–1.03, ours again). Below B = 32 ours kept most (RNN H=128
# B=8 0.81 / 0.90 / 0.95). Per platform and thread count: (most steps, least batch, hidden range)
SHORT: dict[str, dict[int, tuple[int, int, int, int]]] = {"amd": {2: (10, 32, 128, 512)}}

PLATFORM = "amd" if AVAILABLE and _C.cpu_is_amd() else "intel"
BANDS = {"intel": _INTEL, "amd": _AMD}


def prefers_onednn(kind: str, hidden: int, batch: int, threads: int,
                   platform: str = PLATFORM, steps: int | None = None) -> bool:
    """Whether the measured bands send a dense fp32 inference call of ``kind`` to oneDNN
    (``steps``: the sequence's length, for the short-sequence rule ``SHORT``)."""
    if steps is not None and kind != "lstm":
        short = SHORT.get(platform, {}).get(min(threads, 2))
        if short and steps <= short[0] and batch >= short[1] and short[2] <= hidden <= short[3]:
            return True
    key = (kind, hidden, batch, min(threads, 2), platform)
    found = _decided.get(key)
    if found is None:
        if len(_decided) > 4096:  # (batch sizes that vary call after call)
            _decided.clear()
        found = _decided[key] = _in_band(BANDS[platform][key[3]][kind], hidden, batch)
    return found


_decided: dict[tuple[str, int, int, int, str], bool] = {}  # (a layer asks on every call)


def _in_band(bands: list[Band], hidden: int, batch: int) -> bool:
    for max_hidden, min_batch, max_batch in bands:
        if hidden <= max_hidden:
            return min_batch <= batch <= max_batch
    return False
