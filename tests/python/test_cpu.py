"""CPU-side tests of the libmla Python package: no GPU, no torch needed (numpy arrays via DLPack).

They check what a user sees before any kernel runs: the import, the version, the mapping of the
C++ validation (mla::check) onto Python exceptions with the C++ message unchanged, and the
"needs a Hopper GPU" error when no usable GPU is present.
"""

import pathlib
import re

import numpy as np
import pytest

import libmla
from libmla import _C

ROOT = pathlib.Path(__file__).resolve().parents[2]
RNG = np.random.default_rng()  # fresh inputs every run

NO_HOPPER = not libmla.hopper_available()
needs_no_hopper = pytest.mark.skipif(not NO_HOPPER, reason="a Hopper GPU is present")


def make_inputs(b=None, s_q=None, h_q=None, h_kv=1, page_size=64, dtype=np.float16):
    """Random, valid FlashMLA-shaped host arrays (numpy float16 stands in for bf16/fp16)."""
    b = b or int(RNG.integers(1, 9))
    s_q = s_q or int(RNG.integers(1, 5))
    h_q = h_q or h_kv * int(RNG.integers(1, 17))
    lens = RNG.integers(0, 300, size=b).astype(np.int32)
    max_pages = int(max(1, -(-int(lens.max()) // page_size)))
    num_pages = b * max_pages + int(RNG.integers(0, 4))
    q = RNG.standard_normal((b, s_q, h_q, 576)).astype(dtype)
    k = RNG.standard_normal((num_pages, page_size, h_kv, 576)).astype(dtype)
    bt = RNG.permutation(num_pages)[: b * max_pages].reshape(b, max_pages).astype(np.int32)
    return q, k, bt, lens


def call(q, k, bt, lens, head_dim_v=512, **kw):
    meta, splits = libmla.get_mla_metadata()
    return libmla.flash_mla_with_kvcache(q, k, bt, lens, head_dim_v, meta, splits, **kw)


def cpp_message(q, k, bt, lens, head_dim_v=512, softmax_scale=0.0, causal=False):
    """mla::check's own (code, message) for these arrays, without the Python exception layer."""
    return _C.check_status(q, k, bt, lens, head_dim_v, softmax_scale, causal)


# ---- import, version, constants -----------------------------------------------------------------

def test_import_and_version_matches_cmake_project():
    text = (ROOT / "CMakeLists.txt").read_text()
    version = re.search(r"project\(libmla VERSION ([0-9.]+)", text).group(1)
    assert libmla.__version__ == version
    assert libmla.HEAD_DIM_QK == 576 and libmla.HEAD_DIM_V == 512 and libmla.PAGE_SIZE == 64


def test_public_names():
    for name in ["get_mla_metadata", "flash_mla_with_kvcache", "FlashMLASchedMeta",
                 "UnsupportedError", "hopper_available"]:
        assert hasattr(libmla, name), name
    assert issubclass(libmla.UnsupportedError, ValueError)
    assert issubclass(libmla.UnsupportedError, NotImplementedError)


def test_new_interface_returns_empty_sched_meta():
    meta, second = libmla.get_mla_metadata()
    assert isinstance(meta, libmla.FlashMLASchedMeta)
    assert second is None
    assert not meta.have_initialized and meta.tile_scheduler_metadata is None
    # Two calls give independent objects (one per decoding step).
    assert libmla.get_mla_metadata()[0] is not meta


def test_hopper_problem_is_consistent():
    problem = _C.hopper_problem()
    assert (problem == "") == libmla.hopper_available()
    if problem:
        assert "needs a Hopper GPU" in problem


# ---- argument errors carry the C++ message ------------------------------------------------------

def test_valid_inputs_pass_the_cpp_check():
    for _ in range(20):
        h_kv = int(RNG.choice([1, 2, 4]))
        q, k, bt, lens = make_inputs(h_kv=h_kv)
        assert cpp_message(q, k, bt, lens) == ("Ok", "")


def test_read_only_numpy_inputs_pass_and_non_arrays_are_type_errors():
    q, k, bt, lens = make_inputs()
    for a in (q, k, bt, lens):
        a.setflags(write=False)
    assert cpp_message(q, k, bt, lens) == ("Ok", "")
    seen = _C.describe(q)
    assert seen["shape"] == list(q.shape) and seen["data"] == q.ctypes.data
    assert seen["strides"] == [s // q.itemsize for s in q.strides]
    for pos, name in enumerate(["q", "k_cache", "block_table", "cache_seqlens"]):
        args = [q, k, bt, lens]
        args[pos] = [[1, 2]] if RNG.integers(0, 2) else int(RNG.integers(0, 9))
        with pytest.raises(TypeError, match=rf"^{name} must be an array supporting DLPack"):
            cpp_message(*args)


@pytest.mark.parametrize("case", ["heads", "length_negative", "length_too_long", "batch_zero",
                                  "scale_nan"])
def test_invalid_argument_is_value_error_with_cpp_message(case):
    q, k, bt, lens = make_inputs(h_kv=1)
    kw = {}
    if case == "heads":
        q, k, bt, lens = make_inputs(h_q=int(RNG.choice([5, 7, 9])), h_kv=1)
        k = np.ascontiguousarray(np.repeat(k, 2, axis=2))  # h_kv = 2 does not divide odd h_q
    elif case == "length_negative":
        lens[int(RNG.integers(0, len(lens)))] = -int(RNG.integers(1, 100))
    elif case == "length_too_long":
        lens[int(RNG.integers(0, len(lens)))] = bt.shape[1] * 64 + int(RNG.integers(1, 100))
    elif case == "batch_zero":
        q, bt, lens = q[:0], bt[:0], lens[:0]
    elif case == "scale_nan":
        kw["softmax_scale"] = float("nan")
    code, message = cpp_message(q, k, bt, lens, **kw)
    assert code == "InvalidArgument" and message
    with pytest.raises(ValueError) as info:
        call(q, k, bt, lens, **kw)
    assert str(info.value) == message
    assert not isinstance(info.value, libmla.UnsupportedError)


def test_unsupported_is_unsupported_error_with_cpp_message():
    q, k, bt, lens = make_inputs()
    code, message = cpp_message(q, k, bt, lens, head_dim_v=256)
    assert code == "Unsupported" and "head_dim_v" in message
    with pytest.raises(libmla.UnsupportedError) as info:
        call(q, k, bt, lens, head_dim_v=256)
    assert str(info.value) == message
    # page size 32 is valid in principle, not built yet
    q, k, bt, lens = make_inputs(page_size=32)
    with pytest.raises(ValueError, match="page_size"):
        call(q, k, bt, lens)


def test_dtype_errors_are_type_errors():
    q, k, bt, lens = make_inputs()
    with pytest.raises(TypeError, match=r"q dtype must be bfloat16 or float16 \(got float32\)"):
        call(q.astype(np.float32), k, bt, lens)
    with pytest.raises(TypeError, match=r"k_cache dtype .*float64"):
        call(q, k.astype(np.float64), bt, lens)
    with pytest.raises(TypeError, match=r"block_table dtype must be int32 \(got int64\)"):
        call(q, k, bt.astype(np.int64), lens)
    with pytest.raises(TypeError, match=r"cache_seqlens dtype must be int32 \(got uint32\)"):
        call(q, k, bt, lens.astype(np.uint32))


def test_dtype_mismatch_between_q_and_kv_is_type_error_with_cpp_message():
    # numpy has no bfloat16 that DLPack can export: CPU torch tensors carry it.
    torch = pytest.importorskip("torch")
    q, k, bt, lens = make_inputs()
    qb = torch.from_numpy(q.astype(np.float32)).to(torch.bfloat16)
    k, bt, lens = torch.from_numpy(k), torch.from_numpy(bt), torch.from_numpy(lens)
    code, message = cpp_message(qb, k, bt, lens)
    assert code != "Ok" and "dtype" in message
    with pytest.raises(TypeError) as info:
        call(qb, k, bt, lens)
    assert str(info.value) == message


def test_shape_errors_name_the_argument():
    q, k, bt, lens = make_inputs(b=3)
    with pytest.raises(ValueError, match=r"q must be 4-D"):
        call(q[0], k, bt, lens)
    with pytest.raises(ValueError, match=r"block_table.shape\[0\]"):
        call(q, k, bt[:2], lens)
    with pytest.raises(ValueError, match=r"cache_seqlens.shape\[0\]"):
        call(q, k, bt, lens[:2])
    with pytest.raises(ValueError, match=r"k_cache.shape\[3\]"):
        call(q, np.ascontiguousarray(k[..., :512]), bt, lens)


def test_non_contiguous_last_dim_is_rejected_with_cpp_message():
    q, k, bt, lens = make_inputs()
    q_strided = np.zeros(q.shape[:3] + (576 * 2,), q.dtype)[..., ::2]
    code, message = cpp_message(q_strided, k, bt, lens)
    assert code == "Unsupported" and "q_dim_stride" in message
    with pytest.raises(ValueError) as info:
        call(q_strided, k, bt, lens)
    assert str(info.value) == message


def test_sparse_and_fp8_arguments_are_unsupported():
    q, k, bt, lens = make_inputs()
    meta, _ = libmla.get_mla_metadata()
    with pytest.raises(libmla.UnsupportedError, match="FP8"):
        libmla.flash_mla_with_kvcache(q, k, bt, lens, 512, meta, None, is_fp8_kvcache=True)
    with pytest.raises(libmla.UnsupportedError, match="indices"):
        libmla.flash_mla_with_kvcache(q, k, bt, lens, 512, meta, None,
                                      indices=np.zeros((1, 1, 8), np.int32))
    with pytest.raises(libmla.UnsupportedError, match="topk"):
        libmla.get_mla_metadata(lens, 16, 1, topk=2048)


def test_metadata_argument_errors():
    lens = RNG.integers(0, 500, size=4).astype(np.int32)
    with pytest.raises(ValueError, match="num_heads_k"):
        libmla.get_mla_metadata(lens, 16, 0)
    with pytest.raises(ValueError, match="num_q_tokens_per_head_k"):
        libmla.get_mla_metadata(lens, 0, 1)
    with pytest.raises(ValueError, match="divide"):
        libmla.get_mla_metadata(lens, 16, 3, num_heads_q=16)
    with pytest.raises(TypeError, match="int32"):
        libmla.get_mla_metadata(lens.astype(np.int64), 16, 1)
    with pytest.raises(TypeError, match="torch.Tensor, cupy.ndarray"):
        libmla.get_mla_metadata(list(lens), 16, 1)
    meta, _ = libmla.get_mla_metadata()
    q, k, bt, lens = make_inputs()
    with pytest.raises(ValueError, match="num_splits must be None"):
        libmla.flash_mla_with_kvcache(q, k, bt, lens, 512, meta, np.zeros(3, np.int32))


def test_plan_matches_flashmla_row_count():
    # FlashMLA's metadata depends on s_q * h_q / h_kv and h_kv only; so must libmla's plan.
    for _ in range(20):
        b = int(RNG.integers(1, 200))
        h_kv = int(RNG.choice([1, 2, 8]))
        s_q = int(RNG.integers(1, 5))
        h_q = h_kv * int(RNG.choice([1, 3, 16, 64]))
        num_sms = int(RNG.choice([78, 114, 132]))
        p = _C.plan(b, s_q, h_q, h_kv, num_sms)
        rows = s_q * h_q // h_kv
        assert p["rows_per_kv_head"] == rows
        assert p["num_m_blocks"] == -(-rows // 64)
        assert p["num_sm_parts"] >= 1
        same_rows = _C.plan(b, 1, rows * h_kv, h_kv, num_sms)
        assert same_rows["num_sm_parts"] == p["num_sm_parts"]
        # One merge flag per decode CTA; interface._split_views relies on this formula.
        assert p["num_merge_flags"] == p["num_sm_parts"] * -(-rows // 64) * h_kv
        assert p["schedule_bytes"] >= 32 * p["num_sm_parts"] + 4 * (b + 1 + p["num_merge_flags"])
    with pytest.raises(ValueError, match="batch must be > 0"):
        _C.plan(0, 1, 16, 1, 132)


# ---- no usable GPU: the call says a Hopper GPU is needed ----------------------------------------

@needs_no_hopper
def test_valid_call_without_gpu_says_hopper_needed():
    q, k, bt, lens = make_inputs()
    with pytest.raises(RuntimeError, match="needs a Hopper GPU"):
        call(q, k, bt, lens)


@needs_no_hopper
def test_metadata_without_gpu_says_hopper_needed():
    lens = RNG.integers(0, 5000, size=int(RNG.integers(1, 64))).astype(np.int32)
    with pytest.raises(RuntimeError, match="needs a Hopper GPU"):
        libmla.get_mla_metadata(lens, 64, 1)
    with pytest.raises(RuntimeError, match="needs a Hopper GPU"):
        _C.device_num_sms(0)


@needs_no_hopper
def test_original_interface_without_gpu_says_hopper_needed():
    q, k, bt, lens = make_inputs()
    b = q.shape[0]
    tsm = np.zeros((8, 8), np.int32)
    splits = np.zeros(b + 1, np.int32)
    with pytest.raises(RuntimeError, match="needs a Hopper GPU"):
        libmla.flash_mla_with_kvcache(q, k, bt, lens, 512, tsm, splits, causal=True)
