"""libmla: Multi-head Latent Attention decode kernels for NVIDIA Hopper (sm_90a).

A drop-in replacement for FlashMLA's decode API::

    from libmla import get_mla_metadata, flash_mla_with_kvcache

Works on torch and CuPy CUDA arrays (DLPack); PyTorch is optional. Importing needs no GPU;
calling without a Hopper GPU raises RuntimeError("libmla needs a Hopper GPU ...").
"""

from . import _C
from .interface import FlashMLASchedMeta, flash_mla_with_kvcache, get_mla_metadata
from . import _torch_ops  # registers the torch.library ops when torch is importable

__version__ = _C.__version__
UnsupportedError = _C.UnsupportedError  # subclass of ValueError and NotImplementedError

HEAD_DIM_QK = _C.HEAD_DIM_QK
HEAD_DIM_V = _C.HEAD_DIM_V
PAGE_SIZE = _C.PAGE_SIZE


def hopper_available(device: int = -1) -> bool:
    """True when a Hopper (sm_90) GPU is usable (device -1: the current device)."""
    return _C.hopper_problem(device) == ""


def torch_ops_registered() -> bool:
    """True when the torch.library ops libmla::get_mla_metadata / flash_mla_with_kvcache exist."""
    from . import _torch_ops

    return _torch_ops.available


__all__ = [
    "FlashMLASchedMeta",
    "UnsupportedError",
    "flash_mla_with_kvcache",
    "get_mla_metadata",
    "hopper_available",
    "torch_ops_registered",
    "HEAD_DIM_QK",
    "HEAD_DIM_V",
    "PAGE_SIZE",
    "__version__",
]
