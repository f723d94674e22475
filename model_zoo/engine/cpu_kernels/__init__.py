"""CPU rewrites of the model's heaviest ops (``cpu_kernels="fast"``), swapped in by ``inference_pass``.

Each module here computes what a plain op of the model computes, in another summation order
(rounding-level differences, parity kept), faster on CPU:

- ``onednn``: fully connected layers and GeneralizedAttention's per-head products as oneDNN 1×1
  convolutions (AVX-512 on any x86 CPU that has it, where MKL's sgemm takes AVX2 on AMD);
- ``sparse``: bilinear sampling as a CSR × dense product (MKL, every thread), shared by
- ``deform_conv`` (DCN v1) and ``roi_align`` (aligned RoIAlign), which replace torchvision's
  single-threaded or channel-looping CPU kernels.

The model files never import these modules; these modules may import the model's modules (to
subclass them). The ``portable`` setting and CUDA use none of them.
"""
