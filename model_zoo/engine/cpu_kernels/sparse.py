"""Bilinear sampling as a sparse matrix: the CSR helpers shared by DCN and RoIAlign.

Both ops read an image at fractional positions and weight the four neighbouring pixels; with the
feature map as rows ``X: (N·H·W, C)`` (channels-last order, a view, no copy) every output row is a
weighted sum of a few rows of ``X``: ``out = S · X`` with ``S`` a sparse (rows × N·H·W) matrix.
MKL's CSR × dense product computes it with every thread and vectorised over C.

The matrices built here keep each row's entries in the order they were generated: column indices
within a row are neither sorted nor distinct (a clamped corner repeats a neighbour with weight 0).
The CSR × dense kernels sum the entries as written, so this is exact; torch's invariant check
(which requires sorted, distinct columns) is therefore skipped on purpose.
"""

from __future__ import annotations

import warnings

import torch

CORNERS = 4  # a bilinear sample reads the four pixels around its point


def acknowledge_beta_warning() -> None:
    """Create one CSR tensor with torch's "Sparse CSR tensor support is in beta state" warning
    filtered. torch raises it once per process, so the products later stay quiet; the CSR × dense
    product used here is stable. Called when the sparse kernels are swapped in (load time), so
    no warnings filter is changed at import or during a forward."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        csr_matrix(1, torch.zeros(1, dtype=torch.long), torch.zeros(1), shape=(1, 1))


def csr_matrix(
    row_lengths: torch.Tensor | int, columns: torch.Tensor, values: torch.Tensor, *, shape: tuple[int, int]
) -> torch.Tensor:
    """Sparse CSR matrix of ``shape`` whose row r holds the next ``row_lengths[r]`` entries.

    row_lengths: (rows,) int64, or one int for every row; columns: (nnz,) int64 column indices;
    values: (nnz,) fp32 entries, in row order.
    """
    rows = shape[0]
    if isinstance(row_lengths, int):
        row_starts = torch.arange(0, rows * row_lengths + 1, row_lengths, device=values.device)
    else:
        row_starts = torch.zeros(rows + 1, dtype=torch.long, device=values.device)
        torch.cumsum(row_lengths, 0, out=row_starts[1:])
    return torch.sparse_csr_tensor(row_starts, columns, values, size=shape, check_invariants=False)


def sparse_matmul(matrix: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``matrix @ rows`` (CSR (R × M) times dense (M × C) → dense (R × C)) in fp32, even under
    autocast: the CPU CSR kernel has no reduced-precision path."""
    with torch.autocast("cpu", enabled=False):
        return matrix @ rows.float()
