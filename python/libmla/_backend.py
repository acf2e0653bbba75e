"""Array frameworks libmla can allocate outputs in.

Outputs, the schedule buffer and the workspace are allocated by the caller's own framework, on
the device of the inputs, so that they come from the framework's allocator (for torch: the
caching allocator, which is also what CUDA-graph capture needs) and are returned as native
arrays. Only frameworks that can allocate device memory are listed; other DLPack producers are
rejected with a TypeError naming the supported ones.
"""

from __future__ import annotations

import sys

_SUPPORTED = "torch.Tensor, cupy.ndarray or numpy.ndarray (CPU: argument checks only)"


class _Torch:
    name = "torch"

    @staticmethod
    def dtype_name(x):
        return str(x.dtype).replace("torch.", "")

    @staticmethod
    def empty(shape, dtype, like):
        import torch

        return torch.empty(tuple(shape), dtype=getattr(torch, dtype), device=like.device)

    @staticmethod
    def zeros(shape, dtype, like):
        import torch

        return torch.zeros(tuple(shape), dtype=getattr(torch, dtype), device=like.device)

    @staticmethod
    def cuda_device(x):
        return x.device.index if x.device.type == "cuda" else None

    @staticmethod
    def stream(x):
        import torch

        if x.device.type != "cuda":
            return 0
        return torch.cuda.current_stream(x.device).cuda_stream

    @staticmethod
    def data_ptr(x):
        return x.data_ptr()

    @staticmethod
    def flat_concat(a, b):
        import torch

        return torch.cat([a.reshape(-1), b.reshape(-1)])

    @staticmethod
    def view_2d(x, rows, cols):
        return x.view(rows, cols)


class _CuPy:
    name = "cupy"

    @staticmethod
    def dtype_name(x):
        return str(x.dtype)

    @staticmethod
    def empty(shape, dtype, like):
        import cupy

        dev = getattr(like, "device", None)
        if dev is None or not hasattr(dev, "id"):
            return cupy.empty(tuple(shape), dtype=dtype)
        with cupy.cuda.Device(dev.id):
            return cupy.empty(tuple(shape), dtype=dtype)

    @staticmethod
    def zeros(shape, dtype, like):
        import cupy

        dev = getattr(like, "device", None)
        if dev is None or not hasattr(dev, "id"):
            return cupy.zeros(tuple(shape), dtype=dtype)
        with cupy.cuda.Device(dev.id):
            return cupy.zeros(tuple(shape), dtype=dtype)

    @staticmethod
    def cuda_device(x):
        return x.device.id

    @staticmethod
    def stream(x):
        import cupy

        with cupy.cuda.Device(x.device.id):
            return cupy.cuda.get_current_stream().ptr

    @staticmethod
    def data_ptr(x):
        return x.data.ptr

    @staticmethod
    def flat_concat(a, b):
        import cupy

        return cupy.concatenate([a.reshape(-1), b.reshape(-1)])

    @staticmethod
    def view_2d(x, rows, cols):
        return x.reshape(rows, cols)


class _NumPy:
    """Host arrays: enough for the argument checks, which run without a GPU."""

    name = "numpy"

    @staticmethod
    def dtype_name(x):
        return str(x.dtype)

    @staticmethod
    def empty(shape, dtype, like):
        import numpy

        if dtype == "bfloat16":
            try:
                import ml_dtypes

                return numpy.empty(tuple(shape), dtype=ml_dtypes.bfloat16)
            except ImportError:
                # Same element size; only the shape and strides matter on the host.
                return numpy.empty(tuple(shape), dtype=numpy.float16)
        return numpy.empty(tuple(shape), dtype=dtype)

    @staticmethod
    def zeros(shape, dtype, like):
        import numpy

        return numpy.zeros(tuple(shape), dtype=dtype)

    @staticmethod
    def cuda_device(x):
        return None

    @staticmethod
    def stream(x):
        return 0

    @staticmethod
    def data_ptr(x):
        return x.__array_interface__["data"][0]

    @staticmethod
    def flat_concat(a, b):
        import numpy

        return numpy.concatenate([a.reshape(-1), b.reshape(-1)])

    @staticmethod
    def view_2d(x, rows, cols):
        return x.reshape(rows, cols)


# Set by _torch_ops when torch is imported with libmla: an isinstance test is what torch.compile
# traces without a graph break (and it covers FakeTensor and other Tensor subclasses).
torch_module = None


def backend_of(x, name="q"):
    """The framework of array x (by its type's top-level module, so no framework is imported)."""
    if torch_module is not None and isinstance(x, torch_module.Tensor):
        return _Torch
    top = type(x).__module__.split(".", 1)[0]
    if top == "torch":
        return _Torch
    if top == "cupy" or top == "cupyx":
        return _CuPy
    if top == "numpy":
        return _NumPy
    # torch subclasses (FakeTensor, FunctionalTensor, ...) keep torch's module; anything else that
    # derives from torch.Tensor is still a tensor.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return _Torch
    raise TypeError(f"{name} must be a {_SUPPORTED} (got {type(x).__module__}.{type(x).__name__})")
