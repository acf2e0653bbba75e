"""FlashMLA-compatible entry points: get_mla_metadata and flash_mla_with_kvcache.

Both FlashMLA interfaces are accepted:

* original: ``tile_scheduler_metadata, num_splits = get_mla_metadata(cache_seqlens,
  s_q * h_q // h_kv, h_kv)`` returns two int32 arrays computed on the GPU, passed to every
  ``flash_mla_with_kvcache`` call of the decoding step;
* current: ``sched_meta, _ = get_mla_metadata()`` returns an empty ``FlashMLASchedMeta`` that the
  first ``flash_mla_with_kvcache`` call fills (and later calls reuse), with ``num_splits=None``.

The two arrays are views of libmla's schedule buffer (src/sched/metadata.h):
``tile_scheduler_metadata`` is ``PartMetadata[num_sm_parts]`` (8 int32 each) and ``num_splits``
is ``split_offsets[b + 1]`` right after it in memory, as in FlashMLA. The buffer continues past
``num_splits`` with the decode kernel's merge flags (zero between calls), so the two views must
come from get_mla_metadata; arrays copied apart are put back into a new buffer of that layout.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Optional, Tuple

from . import _C
from ._backend import backend_of

_num_sms_cache: dict = {}
# The torch.library ops (set by _torch_ops when torch >= 2.4 is importable); torch tensors go
# through them so that torch.compile and CUDA graphs see one op per call.
_ops = None
_num_sms_lock = threading.Lock()


def _require_gpu(device: Optional[int]) -> int:
    """The SM count of the device the arrays live on; raises the C++ 'needs a Hopper GPU' error."""
    problem = _C.hopper_problem(-1 if device is None else device)
    if problem:
        raise RuntimeError(problem)
    if device is None:
        raise ValueError("libmla runs on CUDA arrays: the inputs are host arrays (move them to the GPU)")
    with _num_sms_lock:
        n = _num_sms_cache.get(device)
        if n is None:
            n = _num_sms_cache[device] = _C.device_num_sms(device)
    return n


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import operator

            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be an int (got {type(value).__name__})") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum} (got {value})")
    return int(value)


def _split_rows(num_q_tokens_per_head_k: int, num_heads_k: int, num_heads_q: Optional[int]):
    """(s_q, h_q) with s_q * h_q / h_kv == num_q_tokens_per_head_k.

    FlashMLA's metadata depends only on s_q * h_q / h_kv and h_kv, and so does libmla's plan
    (num_m_blocks = ceil(s_q * h_q / h_kv / 64)); without num_heads_q any split with that product
    gives the same schedule, and flash_mla_with_kvcache re-checks the part count against q."""
    rows = _check_int("num_q_tokens_per_head_k", num_q_tokens_per_head_k)
    h_kv = _check_int("num_heads_k", num_heads_k)
    if num_heads_q is None:
        # One query token with rows * h_kv heads: the same rows per kv head, and within the
        # kernel's limits on s_q (<= 64) for any MTP depth.
        return 1, rows * h_kv
    h_q = _check_int("num_heads_q", num_heads_q)
    if h_q % h_kv != 0:
        raise ValueError(f"num_heads_k ({h_kv}) must divide num_heads_q (got num_heads_q={h_q})")
    if (rows * h_kv) % h_q != 0:
        raise ValueError(
            f"num_q_tokens_per_head_k ({rows}) must be s_q * num_heads_q / num_heads_k for an "
            f"integer s_q (num_heads_q={h_q}, num_heads_k={h_kv})")
    return rows * h_kv // h_q, h_q


def _schedule_ints(plan, b: int) -> int:
    """int32 elements of the schedule buffer: [num_sm_parts * 8 | b + 1 | merge flags]."""
    return plan["num_sm_parts"] * 8 + b + 1 + plan["num_merge_flags"]


def _schedule_buffer(cache_seqlens, s_q: int, h_q: int, h_kv: int):
    """Runs mla::schedule on the caller's stream into a new int32 buffer of the caller's
    framework: [num_sm_parts * 8 | b + 1 | merge flags]."""
    be = backend_of(cache_seqlens, "cache_seqlens")
    shape = getattr(cache_seqlens, "shape", ())
    if len(shape) != 1:
        raise ValueError(f"cache_seqlens must be 1-D [b] (got ndim={len(shape)})")
    if be.dtype_name(cache_seqlens) != "int32":
        raise TypeError(f"cache_seqlens dtype must be int32 (got {be.dtype_name(cache_seqlens)})")
    b = _check_int("batch (cache_seqlens.shape[0])", int(shape[0]))
    num_sms = _require_gpu(be.cuda_device(cache_seqlens))
    plan = _C.plan(b, s_q, h_q, h_kv, num_sms)
    buf = be.empty((_schedule_ints(plan, b),), "int32", cache_seqlens)
    _C.schedule(cache_seqlens, s_q, h_q, h_kv, num_sms, buf, be.stream(cache_seqlens))
    return buf


def _split_views(be, buf, b: int, s_q: int, h_q: int, h_kv: int):
    """(tile_scheduler_metadata, num_splits) views of a schedule buffer for these shapes."""
    # Merge flags per part: the decode grid's CTAs per part, ceil(rows / 64) m-blocks times h_kv
    # (plan()'s num_merge_flags / num_sm_parts; plain arithmetic, so torch.compile traces it).
    flags_per_part = -(-(s_q * h_q // h_kv) // 64) * h_kv
    parts = (int(buf.shape[0]) - (b + 1)) // (8 + flags_per_part)
    return be.view_2d(buf[: parts * 8], parts, 8), buf[parts * 8: parts * 8 + b + 1]


def _decode_arrays(q, k_cache, block_table, cache_seqlens, tile_scheduler_metadata, num_splits,
                   head_dim_v: int, softmax_scale: float, causal: bool):
    """The framework-generic decode: allocates out/lse/workspace like q, runs on q's stream."""
    be = backend_of(q, "q")
    shape = tuple(int(s) for s in q.shape)
    if len(shape) != 4:
        raise ValueError(f"q must be 4-D [b, s_q, h_q, d_qk] (got ndim={len(shape)})")
    b, s_q, h_q, _ = shape
    head_dim_v = _check_int("head_dim_v", head_dim_v, 0)
    # Host-only validation first: argument errors surface the same way with or without a GPU.
    _C.check(q, k_cache, block_table, cache_seqlens, head_dim_v, softmax_scale, causal)
    out = be.empty((b, s_q, h_q, head_dim_v), be.dtype_name(q), q)
    lse = be.empty((b, h_q, s_q), "float32", q)
    num_sms = _require_gpu(be.cuda_device(q))
    h_kv = int(k_cache.shape[2])
    plan = _C.plan(b, s_q, h_q, h_kv, num_sms)
    if tile_scheduler_metadata is None or num_splits is None:
        raise ValueError("tile_scheduler_metadata and num_splits are required (from get_mla_metadata)")
    parts = int(tile_scheduler_metadata.shape[0]) if len(tile_scheduler_metadata.shape) else -1
    if parts >= 0 and be.data_ptr(num_splits) != be.data_ptr(tile_scheduler_metadata) + 32 * parts:
        # The two arrays were copied apart (e.g. by the caller): rebuild the single buffer the
        # kernel reads. Arrays from get_mla_metadata never take this path.
        flat = be.flat_concat(be.flat_concat(tile_scheduler_metadata, num_splits),
                              be.zeros((plan["num_merge_flags"],), "int32", q))
        tile_scheduler_metadata, num_splits = _split_views(be, flat, b, s_q, h_q, h_kv)
    workspace = be.empty((max(int(plan["workspace_bytes"]), 16),), "uint8", q)
    _C.decode(q, k_cache, block_table, cache_seqlens, tile_scheduler_metadata, num_splits, out, lse,
              workspace, head_dim_v, softmax_scale, causal, num_sms, be.stream(q))
    return out, lse


def _tracing(x) -> bool:
    """True while torch.compile traces (arrays are fake: no data to hand to the C++ checks)."""
    if backend_of(x).name != "torch":
        return False
    import torch

    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


@dataclasses.dataclass
class FlashMLASchedMeta:
    """Scheduling metadata filled by the first flash_mla_with_kvcache call (FlashMLA's current
    interface). Reuse it across the layers of one decoding step only: same shapes and the same
    cache_seqlens values."""

    @dataclasses.dataclass
    class Config:
        b: int
        s_q: int
        h_q: int
        page_block_size: int
        h_k: int
        causal: bool
        is_fp8_kvcache: bool
        topk: Optional[int]

    have_initialized: bool = False
    config: Optional["FlashMLASchedMeta.Config"] = None
    tile_scheduler_metadata: Any = None  # int32 [num_sm_parts, 8]
    num_splits: Any = None               # int32 [b + 1]


def get_mla_metadata(cache_seqlens=None, num_q_tokens_per_head_k=None, num_heads_k=None,
                     num_heads_q=None, is_fp8_kvcache: bool = False, topk=None):
    """FlashMLA's get_mla_metadata.

    With arguments (original interface): returns ``(tile_scheduler_metadata, num_splits)``,
    int32 arrays ``[num_sm_parts, 8]`` and ``[b + 1]`` in cache_seqlens' framework, computed on
    the GPU on the current stream (no synchronisation; CUDA-graph capturable).
    ``num_q_tokens_per_head_k = s_q * h_q // h_kv``.

    Without arguments (current interface): returns ``(FlashMLASchedMeta(), None)``, filled by
    the first flash_mla_with_kvcache call.
    """
    if cache_seqlens is None and num_q_tokens_per_head_k is None and num_heads_k is None:
        return FlashMLASchedMeta(), None
    if is_fp8_kvcache:
        raise _C.UnsupportedError("is_fp8_kvcache=True: the FP8 KV cache is not supported yet")
    if topk is not None:
        raise _C.UnsupportedError("topk: sparse (top-k) decoding is not supported yet")
    if cache_seqlens is None or num_q_tokens_per_head_k is None or num_heads_k is None:
        raise TypeError("get_mla_metadata needs cache_seqlens, num_q_tokens_per_head_k and "
                        "num_heads_k (or no arguments at all for the FlashMLASchedMeta interface)")
    s_q, h_q = _split_rows(num_q_tokens_per_head_k, num_heads_k, num_heads_q)
    h_kv = int(num_heads_k)
    be = backend_of(cache_seqlens, "cache_seqlens")
    if be.name == "torch" and _ops is not None:
        buf = _ops.get_mla_metadata(cache_seqlens, s_q, h_q, h_kv)
    else:
        buf = _schedule_buffer(cache_seqlens, s_q, h_q, h_kv)
    return _split_views(be, buf, int(cache_seqlens.shape[0]), s_q, h_q, h_kv)


def flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v: int,
                           tile_scheduler_metadata, num_splits=None,
                           softmax_scale: Optional[float] = None, causal: bool = False,
                           is_fp8_kvcache: bool = False, indices=None, attn_sink=None,
                           extra_k_cache=None, extra_indices_in_kvcache=None, topk_length=None,
                           extra_topk_length=None) -> Tuple[Any, Any]:
    """FlashMLA's flash_mla_with_kvcache (dense, paged KV cache).

    q [b, s_q, h_q, d_qk] bf16/fp16; k_cache [num_pages, page_size, h_kv, d_qk] same dtype;
    block_table [b, max_pages_per_seq] int32; cache_seqlens [b] int32; head_dim_v = 512.
    tile_scheduler_metadata/num_splits: from get_mla_metadata (arrays), or a FlashMLASchedMeta
    with num_splits=None. softmax_scale defaults to d_qk ** -0.5; causal is bottom-right aligned.

    Returns ``(out [b, s_q, h_q, head_dim_v] in q's dtype, lse [b, h_q, s_q] float32)``,
    allocated in q's framework and computed on its current stream.
    """
    if is_fp8_kvcache:
        raise _C.UnsupportedError("is_fp8_kvcache=True: the FP8 KV cache is not supported yet")
    unsupported = {"indices": indices, "attn_sink": attn_sink, "extra_k_cache": extra_k_cache,
                   "extra_indices_in_kvcache": extra_indices_in_kvcache,
                   "topk_length": topk_length, "extra_topk_length": extra_topk_length}
    for name, value in unsupported.items():
        if value is not None:
            raise _C.UnsupportedError(f"{name}: sparse decoding is not supported yet (pass None)")
    if block_table is None or cache_seqlens is None:
        raise ValueError("block_table and cache_seqlens are required for dense decoding")
    if softmax_scale is None:
        softmax_scale = float(q.shape[-1]) ** -0.5
    softmax_scale = float(softmax_scale)
    causal = bool(causal)
    be = backend_of(q, "q")
    if isinstance(tile_scheduler_metadata, FlashMLASchedMeta):
        meta = tile_scheduler_metadata
        if num_splits is not None:
            raise ValueError("num_splits must be None when tile_scheduler_metadata is a FlashMLASchedMeta")
        if len(q.shape) != 4:
            raise ValueError(f"q must be 4-D [b, s_q, h_q, d_qk] (got ndim={len(q.shape)})")
        if len(k_cache.shape) != 4:
            raise ValueError("k_cache must be 4-D [num_pages, page_size, h_kv, d_qk] "
                             f"(got ndim={len(k_cache.shape)})")
        config = FlashMLASchedMeta.Config(
            b=int(q.shape[0]), s_q=int(q.shape[1]), h_q=int(q.shape[2]),
            page_block_size=int(k_cache.shape[1]), h_k=int(k_cache.shape[2]), causal=causal,
            is_fp8_kvcache=False, topk=None)
        if not meta.have_initialized:
            # Validate before scheduling so that a bad call reports its argument error rather than
            # a scheduling failure; under torch.compile the op itself checks at run time.
            if not _tracing(q):
                _C.check(q, k_cache, block_table, cache_seqlens, int(head_dim_v), softmax_scale,
                         causal)
            b, s_q, h_q, h_kv = config.b, config.s_q, config.h_q, config.h_k
            if be.name == "torch" and _ops is not None:
                buf = _ops.get_mla_metadata(cache_seqlens, s_q, h_q, h_kv)
            else:
                buf = _schedule_buffer(cache_seqlens, s_q, h_q, h_kv)
            meta.tile_scheduler_metadata, meta.num_splits = _split_views(be, buf, b, s_q, h_q,
                                                                         h_kv)
            meta.config = config
            meta.have_initialized = True
        elif meta.config != config:
            raise ValueError(
                f"tile_scheduler_metadata was filled for {meta.config} but this call has "
                f"{config}: use one FlashMLASchedMeta per set of shapes (and per decoding step)")
        tile_scheduler_metadata, num_splits = meta.tile_scheduler_metadata, meta.num_splits
    elif num_splits is None:
        raise ValueError("num_splits is required with tile_scheduler_metadata arrays "
                         "(both come from get_mla_metadata)")

    if be.name == "torch" and _ops is not None:
        return _ops.flash_mla_with_kvcache(
            q, k_cache, block_table, cache_seqlens, tile_scheduler_metadata, num_splits,
            int(head_dim_v), softmax_scale, causal)
    return _decode_arrays(q, k_cache, block_table, cache_seqlens, tile_scheduler_metadata,
                          num_splits, head_dim_v, softmax_scale, causal)
