"""The ``ATTNZOO_*`` variables that commands other than ``serve`` read as option defaults.

``ATTNZOO_METAFILE`` and ``ATTNZOO_WEIGHTS_DIR`` are read by the registry itself
(:func:`~model_zoo.registry.default_metafile`, :func:`~model_zoo.registry.default_weights_dir`);
the service reads every variable through its settings class under the same names.
"""

from __future__ import annotations

import argparse
import os

from pydantic import TypeAdapter, ValidationError

from model_zoo.errors import AttnzooError

CPU_KERNELS_ENV = "ATTNZOO_CPU_KERNELS"
CPU_KERNELS = ("fast", "portable")
KEEP_FREED_MEMORY_ENV = "ATTNZOO_KEEP_FREED_MEMORY"


def add_cpu_kernels_option(parser: argparse.ArgumentParser) -> None:
    """``--cpu-kernels fast|portable``, default ``$ATTNZOO_CPU_KERNELS`` or ``fast``."""
    parser.add_argument(
        "--cpu-kernels",
        type=_cpu_kernels,
        default=os.environ.get(CPU_KERNELS_ENV) or CPU_KERNELS[0],  # argparse passes a str default through `type`
        metavar="|".join(CPU_KERNELS),
        help="CPU inference path: fast (oneDNN and sparse kernels, the default) or portable (plain PyTorch) "
        f"(env {CPU_KERNELS_ENV})",
    )


def keep_freed_memory_wanted() -> bool:
    """``$ATTNZOO_KEEP_FREED_MEMORY`` as the service's settings read it (true, false, 1, 0, ...); default true."""
    value = os.environ.get(KEEP_FREED_MEMORY_ENV)
    if not value:
        return True
    try:
        return TypeAdapter(bool).validate_strings(value)
    except ValidationError:
        raise AttnzooError(f"invalid {KEEP_FREED_MEMORY_ENV}={value!r}: expected true or false") from None


def _cpu_kernels(text: str) -> str:
    if text not in CPU_KERNELS:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r} (from --cpu-kernels or {CPU_KERNELS_ENV}): expected {' or '.join(CPU_KERNELS)}"
        )
    return text
