"""torch.library registration of libmla's ops (only when torch >= 2.4 is importable).

Registered as custom ops with fake (meta) implementations so that torch.compile traces through
them without graph breaks, and so that the outputs come from torch's caching allocator on the
current stream, which is what CUDA-graph capture needs:

  libmla::get_mla_metadata(Tensor cache_seqlens, int s_q, int h_q, int h_kv) -> Tensor
      the flat int32 schedule buffer [num_sm_parts * 8 + b + 1 + merge flags]
  libmla::flash_mla_with_kvcache(Tensor q, Tensor k_cache, Tensor block_table,
      Tensor cache_seqlens, Tensor tile_scheduler_metadata, Tensor num_splits, int head_dim_v,
      float softmax_scale, bool causal) -> (Tensor out, Tensor lse)
"""

# No "from __future__ import annotations": custom_op reads the parameter annotations as types.
import os
import types

available = False
get_mla_metadata_op = None
flash_mla_with_kvcache_op = None

_DISABLED = os.environ.get("LIBMLA_NO_TORCH", "") not in ("", "0")

try:
    if _DISABLED:
        raise ImportError("LIBMLA_NO_TORCH is set")
    import torch

    _have_custom_op = hasattr(torch, "library") and hasattr(torch.library, "custom_op")
except ImportError:
    torch = None
    _have_custom_op = False

if _have_custom_op:
    from typing import Tuple

    from . import _C
    from .interface import _decode_arrays, _require_gpu, _schedule_buffer, _schedule_ints

    def _fake_num_sms(t) -> int:
        index = t.device.index
        if index is None:
            index = torch.cuda.current_device() if t.device.type == "cuda" else None
        return _require_gpu(index)

    @torch.library.custom_op("libmla::get_mla_metadata", mutates_args=())
    def _get_mla_metadata(cache_seqlens: torch.Tensor, s_q: int, h_q: int,
                          h_kv: int) -> torch.Tensor:
        return _schedule_buffer(cache_seqlens, s_q, h_q, h_kv)

    @_get_mla_metadata.register_fake
    def _(cache_seqlens, s_q, h_q, h_kv):
        b = cache_seqlens.shape[0]
        plan = _C.plan(int(b), s_q, h_q, h_kv, _fake_num_sms(cache_seqlens))
        return cache_seqlens.new_empty((_schedule_ints(plan, int(b)),), dtype=torch.int32)

    @torch.library.custom_op("libmla::flash_mla_with_kvcache", mutates_args=())
    def _flash_mla_with_kvcache(q: torch.Tensor, k_cache: torch.Tensor,
                                block_table: torch.Tensor, cache_seqlens: torch.Tensor,
                                tile_scheduler_metadata: torch.Tensor, num_splits: torch.Tensor,
                                head_dim_v: int, softmax_scale: float,
                                causal: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        return _decode_arrays(q, k_cache, block_table, cache_seqlens, tile_scheduler_metadata,
                              num_splits, head_dim_v, softmax_scale, causal)

    @_flash_mla_with_kvcache.register_fake
    def _(q, k_cache, block_table, cache_seqlens, tile_scheduler_metadata, num_splits,
          head_dim_v, softmax_scale, causal):
        b, s_q, h_q, _ = q.shape
        out = q.new_empty((b, s_q, h_q, head_dim_v))
        lse = q.new_empty((b, h_q, s_q), dtype=torch.float32)
        return out, lse

    get_mla_metadata_op = _get_mla_metadata
    flash_mla_with_kvcache_op = _flash_mla_with_kvcache
    available = True

    from . import _backend, interface

    _backend.torch_module = torch
    interface._ops = types.SimpleNamespace(get_mla_metadata=_get_mla_metadata,
                                           flash_mla_with_kvcache=_flash_mla_with_kvcache)
