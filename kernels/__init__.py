"""Triton-language kernels, each beside its PyTorch reference (``<name>_triton`` / ``<name>_ref``).

Model code calls only :mod:`ocrstream.kernels.dispatch`, which picks kernel or reference from the
``OCRSTREAM_KERNELS`` setting and imports triton lazily. See docs/performance.md.
"""
