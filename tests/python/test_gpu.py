"""GPU-side tests of the libmla Python package (need torch and a Hopper GPU; skipped otherwise).

- results equal a torch float32 reference over the sweep of the decode kernel's issue
  (b, s_q, s_k, (h_q, h_kv), varlen, causal, bf16/fp16), with NaN-poisoned unused pages and
  tails, out-of-range ids in unused block-table slots and pages in random physical order;
- both FlashMLA interfaces (metadata arrays; FlashMLASchedMeta filled on the first call);
- CUDA-graph capture of get_mla_metadata + flash_mla_with_kvcache, replayed after the inputs
  changed in place;
- torch.compile(fullgraph=True) of a function calling the ops;
- a FlashMLA-style script run with only its import changed.
"""

import math
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
import libmla  # noqa: E402

if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU visible to torch", allow_module_level=True)
if not libmla.hopper_available():
    pytest.skip(f"not a Hopper GPU: {libmla._C.hopper_problem()}", allow_module_level=True)

PAGE = 64
D_QK, D_V = 576, 512
POISON_ID = 1 << 30  # out of range of any page id: the kernel must never read these slots


def new_gen():
    """Fresh random inputs every run: a CPU generator for sizes, a CUDA one for the data."""
    seed = int.from_bytes(os.urandom(4), "little")
    return torch.Generator().manual_seed(seed), torch.Generator(device="cuda").manual_seed(seed)


def make_case(b, s_q, s_k, h_q, h_kv, varlen, dtype, gens, zero_some=False):
    """Random paged inputs. Unused pages and the tail of each last page hold NaN."""
    gen, cuda_gen = gens
    if varlen:
        lens = torch.normal(float(s_k), s_k / 2.0, (b,), generator=gen).clamp(min=s_q)
        lens = lens.round().to(torch.int32)
    else:
        lens = torch.full((b,), s_k, dtype=torch.int32)
    if zero_some and b > 1:
        lens[torch.randperm(b, generator=gen)[: max(1, b // 4)]] = 0
    max_len = int(lens.max())
    max_pages = max(1, math.ceil(max_len / PAGE))
    used_pages = [math.ceil(int(n) / PAGE) for n in lens]
    spare = int(torch.randint(1, 8, (1,), generator=gen))
    num_pages = sum(used_pages) + spare
    k_cache = torch.randn(num_pages, PAGE, h_kv, D_QK, generator=cuda_gen, device="cuda").to(dtype)
    # Random physical order; every slot past a request's last page gets an invalid id.
    perm = torch.randperm(num_pages, generator=gen)
    block_table = torch.full((b, max_pages), POISON_ID, dtype=torch.int32)
    used = torch.zeros(num_pages, dtype=torch.bool)
    pos = 0
    tails = []
    for i, n_pages in enumerate(used_pages):
        ids = perm[pos: pos + n_pages]
        block_table[i, :n_pages] = ids.to(torch.int32)
        used[ids] = True
        pos += n_pages
        n = int(lens[i])
        if n % PAGE and n_pages:
            tails.append((int(ids[-1]), n % PAGE))
    for page, start in tails:
        k_cache[page, start:] = float("nan")
    k_cache[(~used).cuda()] = float("nan")
    q = torch.randn(b, s_q, h_q, D_QK, generator=cuda_gen, device="cuda").to(dtype)
    return q, k_cache, block_table.cuda(), lens.cuda()


def reference(q, k_cache, block_table, lens, scale, causal):
    """float32 attention over the visible keys; rows without a key: out = 0, lse = +inf."""
    b, s_q, h_q, _ = q.shape
    h_kv = k_cache.shape[2]
    g = h_q // h_kv
    max_pages = block_table.shape[1]
    n_max = max_pages * PAGE
    safe_ids = torch.where(block_table >= k_cache.shape[0], 0, block_table).long()
    kv = k_cache[safe_ids].reshape(b, n_max, h_kv, D_QK).float()  # [b, n, h_kv, d]
    key = torch.arange(n_max, device=q.device)
    limit = lens.long()[:, None].expand(b, s_q)  # keys [0, limit) visible to (b, s)
    if causal:
        limit = limit - s_q + 1 + torch.arange(s_q, device=q.device)[None, :]
    visible = key[None, None, :] < limit[:, :, None]  # [b, s_q, n]
    valid_key = key[None, :] < lens.long()[:, None]  # [b, n]
    kv = torch.where(valid_key[:, :, None, None], kv, 0.0)  # drop the NaN poison
    qf = q.float().reshape(b, s_q, h_kv, g, D_QK)
    scores = torch.einsum("bskgd,bnkd->bkgsn", qf, kv) * scale
    scores = scores.masked_fill(~visible[:, None, None, :, :], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # [b, h_kv, g, s_q]
    p = torch.exp(scores - lse[..., None])
    p = torch.nan_to_num(p, nan=0.0)
    out = torch.einsum("bkgsn,bnkd->bskgd", p, kv[..., :D_V]).reshape(b, s_q, h_q, D_V)
    lse = lse.reshape(b, h_q, s_q)
    empty = torch.isneginf(lse)
    lse = torch.where(empty, float("inf"), lse)
    out = torch.where(empty.permute(0, 2, 1)[..., None], 0.0, out)
    return out, lse


def assert_close(out, lse, ref_out, ref_lse, dtype, what=""):
    assert out.dtype == dtype and lse.dtype == torch.float32
    assert not torch.isnan(out).any(), f"NaN in out {what}"
    assert not torch.isnan(lse).any(), f"NaN in lse {what}"
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse)), f"+inf positions of lse {what}"
    finite = torch.isfinite(ref_lse)
    lse_err = (lse[finite] - ref_lse[finite]).abs() / ref_lse[finite].abs().clamp(min=1.0)
    assert lse_err.numel() == 0 or lse_err.max().item() <= 1e-3, f"lse err {lse_err.max()} {what}"
    o = out.float()
    rel = (o - ref_out).norm() / ref_out.norm().clamp(min=1e-6)
    tol = 8e-3 if dtype == torch.bfloat16 else 2e-3
    assert rel.item() <= tol, f"relative Frobenius error {rel.item():.3e} > {tol} {what}"
    assert torch.allclose(o, ref_out, atol=3e-2, rtol=3e-2), f"max abs err {(o - ref_out).abs().max()} {what}"


HEADS = [(1, 1), (3, 1), (9, 3), (64, 1), (128, 1), (128, 8)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("h_q,h_kv", HEADS, ids=[f"h{a}_{b}" for a, b in HEADS])
@pytest.mark.parametrize("s_k", [20, 140, 4096])
@pytest.mark.parametrize("s_q", [1, 2, 4])
@pytest.mark.parametrize("b", [1, 2, 6, 64])
def test_sweep_matches_float32_reference(b, s_q, s_k, h_q, h_kv, causal, dtype):
    gens = new_gen()
    gen = gens[0]
    varlen = b > 1 and bool(torch.randint(0, 2, (1,), generator=gen))
    q, k, bt, lens = make_case(b, s_q, s_k, h_q, h_kv, varlen, dtype, gens, zero_some=b >= 6)
    tsm, splits = libmla.get_mla_metadata(lens, s_q * h_q // h_kv, h_kv)
    assert tsm.dtype == torch.int32 and tsm.dim() == 2 and tsm.shape[1] == 8
    assert splits.dtype == torch.int32 and splits.shape == (b + 1,)
    out, lse = libmla.flash_mla_with_kvcache(q, k, bt, lens, D_V, tsm, splits, causal=causal)
    assert out.shape == (b, s_q, h_q, D_V) and lse.shape == (b, h_q, s_q)
    ref_out, ref_lse = reference(q, k, bt, lens, D_QK ** -0.5, causal)
    assert_close(out, lse, ref_out, ref_lse, dtype, f"(varlen={varlen}, lens={lens.tolist()[:8]})")


def test_metadata_layout_is_parts_then_split_offsets():
    gens = new_gen()
    gen = gens[0]
    b = 37
    lens = torch.randint(0, 9000, (b,), generator=gen, dtype=torch.int32).cuda()
    tsm, splits = libmla.get_mla_metadata(lens, 128, 1)
    parts = tsm.shape[0]
    # One buffer: num_splits right after the parts, as the kernel reads it.
    assert splits.data_ptr() == tsm.data_ptr() + 32 * parts
    s = splits.cpu()
    assert s[0] == 0 and bool((s[1:] >= s[:-1]).all())
    assert int(s[-1]) <= b + parts
    blocks = (lens.cpu() + 63) // 64
    # Requests without KV get no split, the others at least one.
    assert torch.equal((s[1:] - s[:-1]) == 0, blocks == 0)
    assert int(tsm[:, 5].sum()) == int(blocks.sum())  # every block dealt exactly once


def test_new_interface_sched_meta_filled_on_first_call_and_reused():
    gens = new_gen()
    gen = gens[0]
    q, k, bt, lens = make_case(6, 2, 700, 16, 1, True, torch.bfloat16, gens)
    meta, none = libmla.get_mla_metadata()
    assert none is None and not meta.have_initialized
    scale = 0.07
    out1, lse1 = libmla.flash_mla_with_kvcache(q, k, bt, lens, D_V, meta, None,
                                               softmax_scale=scale, causal=True)
    assert meta.have_initialized and meta.tile_scheduler_metadata is not None
    first = meta.tile_scheduler_metadata
    # A second "layer": same metadata object, other q.
    q2 = torch.randn_like(q)
    out2, lse2 = libmla.flash_mla_with_kvcache(q2, k, bt, lens, D_V, meta, None,
                                               softmax_scale=scale, causal=True)
    assert meta.tile_scheduler_metadata is first
    for qq, o, l in [(q, out1, lse1), (q2, out2, lse2)]:
        ro, rl = reference(qq, k, bt, lens, scale, True)
        assert_close(o, l, ro, rl, torch.bfloat16)
    with pytest.raises(ValueError, match="FlashMLASchedMeta|filled for"):
        libmla.flash_mla_with_kvcache(q[:, :1].contiguous(), k, bt, lens, D_V, meta, None,
                                      softmax_scale=scale, causal=True)


def test_copied_metadata_arrays_still_work():
    gens = new_gen()
    gen = gens[0]
    q, k, bt, lens = make_case(5, 1, 3000, 128, 1, True, torch.bfloat16, gens)
    tsm, splits = libmla.get_mla_metadata(lens, 128, 1)
    out, lse = libmla.flash_mla_with_kvcache(q, k, bt, lens, D_V, tsm.clone(), splits.clone())
    ro, rl = reference(q, k, bt, lens, D_QK ** -0.5, False)
    assert_close(out, lse, ro, rl, torch.bfloat16)


def test_runs_on_the_current_stream():
    gens = new_gen()
    gen = gens[0]
    q, k, bt, lens = make_case(8, 1, 2000, 64, 1, True, torch.float16, gens)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # keeps the side stream busy: wrong-stream work would race
        q.mul_(0.5)
        tsm, splits = libmla.get_mla_metadata(lens, 64, 1)
        out, lse = libmla.flash_mla_with_kvcache(q, k, bt, lens, D_V, tsm, splits)
    torch.cuda.current_stream().wait_stream(side)
    ro, rl = reference(q, k, bt, lens, D_QK ** -0.5, False)
    assert_close(out, lse, ro, rl, torch.float16)


def test_errors_on_gpu_inputs():
    gens = new_gen()
    gen = gens[0]
    q, k, bt, lens = make_case(2, 1, 100, 16, 1, False, torch.bfloat16, gens)
    tsm, splits = libmla.get_mla_metadata(lens, 16, 1)
    with pytest.raises(TypeError, match="dtype"):
        libmla.flash_mla_with_kvcache(q, k.half(), bt, lens, D_V, tsm, splits)
    with pytest.raises(ValueError, match="CUDA device array"):
        libmla.flash_mla_with_kvcache(q, k, bt.cpu(), lens, D_V, tsm, splits)
    # Metadata made for other shapes (h_q=128 has 2 row blocks per kv head, not 1).
    tsm_other, splits_other = libmla.get_mla_metadata(lens, 16 * 64, 1)
    if tsm_other.shape[0] != tsm.shape[0]:
        with pytest.raises(ValueError, match="num_sm_parts"):
            libmla.flash_mla_with_kvcache(q, k, bt, lens, D_V, tsm_other, splits_other)


@pytest.mark.parametrize("interface", ["arrays", "sched_meta"])
def test_cuda_graph_capture_and_replay(interface):
    gens = new_gen()
    gen = gens[0]
    b, s_q, h_q, h_kv = 16, 2, 64, 1
    q, k, bt, lens = make_case(b, s_q, 3000, h_q, h_kv, True, torch.bfloat16, gens)
    # Lengths shrink between replays (the poisoned tails past the original lengths stay out of
    # reach) and the schedule captured in the graph must follow them.
    orig_lens = lens.cpu()

    def step():
        if interface == "arrays":
            tsm, splits = libmla.get_mla_metadata(lens, s_q * h_q // h_kv, h_kv)
            return libmla.flash_mla_with_kvcache(q, k, bt, lens, D_V, tsm, splits, causal=True)
        meta, _ = libmla.get_mla_metadata()
        return libmla.flash_mla_with_kvcache(q, k, bt, lens, D_V, meta, None, causal=True)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # warm-up outside capture (lazy initialisation, allocator)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, lse = step()
    for it in range(3):
        frac = torch.rand(b, generator=gen)
        new_lens = (s_q + frac * (orig_lens - s_q).float()).to(torch.int32)
        if it == 2:
            new_lens[0] = 0
        lens.copy_(new_lens.cuda())
        q.copy_(torch.randn(q.shape, generator=gens[1], device="cuda").to(q.dtype))
        graph.replay()
        torch.cuda.synchronize()
        ro, rl = reference(q, k, bt, lens, D_QK ** -0.5, True)
        assert_close(out, lse, ro, rl, torch.bfloat16, f"replay {it}")


def test_torch_compile_fullgraph():
    if not libmla.torch_ops_registered():
        pytest.skip("torch.library.custom_op unavailable (torch < 2.4)")
    assert hasattr(torch.ops.libmla, "flash_mla_with_kvcache")
    assert hasattr(torch.ops.libmla, "get_mla_metadata")
    gens = new_gen()
    gen = gens[0]
    b, s_q, h_q, h_kv = 4, 2, 128, 1
    q, k, bt, lens = make_case(b, s_q, 1500, h_q, h_kv, True, torch.bfloat16, gens)

    def attention(q, k, bt, lens):
        tsm, splits = libmla.get_mla_metadata(lens, s_q * h_q // h_kv, h_kv)
        out, lse = libmla.flash_mla_with_kvcache(q, k, bt, lens, D_V, tsm, splits, causal=True)
        return out * 2.0, lse  # something for the compiler to fuse after the op

    torch._dynamo.reset()
    compiled = torch.compile(attention, fullgraph=True)
    out, lse = compiled(q, k, bt, lens)
    ro, rl = reference(q, k, bt, lens, D_QK ** -0.5, True)
    assert_close((out / 2.0).to(q.dtype), lse, ro, rl, torch.bfloat16)
    eager_out, eager_lse = attention(q, k, bt, lens)
    assert torch.equal(out, eager_out) and torch.equal(lse, eager_lse)


def test_opcheck():
    if not libmla.torch_ops_registered() or not hasattr(torch.library, "opcheck"):
        pytest.skip("torch.library.opcheck unavailable")
    gens = new_gen()
    gen = gens[0]
    q, k, bt, lens = make_case(3, 1, 300, 16, 1, True, torch.bfloat16, gens)
    tsm, splits = libmla.get_mla_metadata(lens, 16, 1)
    # test_autograd_registration does not apply: the ops have no backward.
    tests = ("test_schema", "test_faketensor")
    torch.library.opcheck(torch.ops.libmla.get_mla_metadata.default, (lens, 1, 16, 1),
                          test_utils=tests)
    torch.library.opcheck(torch.ops.libmla.flash_mla_with_kvcache.default,
                          (q, k, bt, lens, tsm, splits, D_V, D_QK ** -0.5, False),
                          test_utils=tests)


# A script in the style of FlashMLA's decode test, written against `flash_mla`; the drop-in test
# changes its import line only.
FLASHMLA_STYLE_SCRIPT = textwrap.dedent('''
    import math, random
    import torch
    from flash_mla import get_mla_metadata, flash_mla_with_kvcache

    def scaled_dot_product_attention(query, key, value, h_q, h_kv, is_causal=False):
        query = query.float(); key = key.float(); value = value.float()
        key = key.repeat_interleave(h_q // h_kv, dim=0)
        value = value.repeat_interleave(h_q // h_kv, dim=0)
        attn_weight = query @ key.transpose(-2, -1) / math.sqrt(query.size(-1))
        if is_causal:
            s_q, s_k = query.shape[-2], key.shape[-2]
            attn_bias = torch.zeros(s_q, s_k, dtype=query.dtype, device=query.device)
            temp_mask = torch.ones(s_q, s_k, dtype=torch.bool, device=query.device).tril(diagonal=s_k - s_q)
            attn_bias.masked_fill_(temp_mask.logical_not(), float("-inf"))
            attn_weight += attn_bias
        lse = attn_weight.logsumexp(dim=-1)
        attn_weight = torch.softmax(attn_weight, dim=-1, dtype=torch.float32)
        return attn_weight @ value, lse

    def run(b, s_q, mean_sk, h_q, h_kv, d, dv, causal, varlen):
        cache_seqlens = torch.full((b,), mean_sk, dtype=torch.int32)
        if varlen:
            for i in range(b):
                cache_seqlens[i] = max(random.normalvariate(mean_sk, mean_sk / 2), s_q)
        total_seqlens = cache_seqlens.sum().item()
        max_seqlen_pad = math.ceil(cache_seqlens.max().item() / 256) * 256
        block_size = 64
        q = torch.randn(b, s_q, h_q, d)
        block_table = torch.arange(b * max_seqlen_pad // block_size, dtype=torch.int32).view(b, max_seqlen_pad // block_size)
        blocked_k = torch.randn(block_table.numel(), block_size, h_kv, d)
        for i in range(b):
            blocked_k.view(b, max_seqlen_pad, h_kv, d)[i, cache_seqlens[i].item():] = float("nan")
        q, blocked_k = q.cuda().bfloat16(), blocked_k.cuda().bfloat16()
        block_table, cache_seqlens = block_table.cuda(), cache_seqlens.cuda()
        blocked_v = blocked_k[..., :dv]
        tile_scheduler_metadata, num_splits = get_mla_metadata(cache_seqlens, s_q * h_q // h_kv, h_kv)
        out_flash, lse_flash = flash_mla_with_kvcache(
            q, blocked_k, block_table, cache_seqlens, dv,
            tile_scheduler_metadata, num_splits, causal=causal)
        out = torch.empty(b, s_q, h_q, dv, dtype=torch.float32, device="cuda")
        lse = torch.empty(b, h_q, s_q, dtype=torch.float32, device="cuda")
        for i in range(b):
            begin, end = i * max_seqlen_pad, i * max_seqlen_pad + cache_seqlens[i].item()
            o, l = scaled_dot_product_attention(
                q[i].transpose(0, 1), blocked_k.view(-1, h_kv, d)[begin:end].transpose(0, 1),
                blocked_v.view(-1, h_kv, dv)[begin:end].transpose(0, 1), h_q, h_kv, is_causal=causal)
            out[i] = o.transpose(0, 1)
            lse[i] = l
        cos = torch.nn.functional.cosine_similarity(out_flash.float().flatten(), out.flatten(), dim=0)
        assert 1 - cos.item() < 1e-5, f"cos diff {1 - cos.item()}"
        assert torch.allclose(lse_flash, lse, atol=1e-3, rtol=1e-3)
        return total_seqlens

    torch.manual_seed(0); random.seed(0)
    n = 0
    for b in [1, 33]:
        for s_q in [1, 2]:
            for mean_sk in [64, 1000, 4096]:
                for h_q in [16, 128]:
                    for causal in [False, True]:
                        n += 1
                        run(b, s_q, mean_sk, h_q, 1, 576, 512, causal, varlen=b > 1)
    print(f"drop-in: {n} cases passed")
''')


def test_flashmla_style_script_runs_with_only_the_import_changed():
    assert "from flash_mla import" in FLASHMLA_STYLE_SCRIPT
    script = FLASHMLA_STYLE_SCRIPT.replace("from flash_mla import", "from libmla import")
    assert script.count("libmla") == 1  # nothing else was adapted
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "drop-in: 48 cases passed" in result.stdout
