#include "reference/cpu_reference.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

namespace mla::reference {
namespace {

uint32_t float_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
}
float bits_float(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
}

// Rounds mantissa bits that are shifted out by `shift` to nearest, ties to even.
uint32_t shift_round_even(uint32_t value, int shift) {
  const uint32_t kept = value >> shift;
  const uint32_t rest = value & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  return kept + ((rest > half || (rest == half && (kept & 1u))) ? 1u : 0u);
}

Status invalid(const std::string& msg) {
  return Status(StatusCode::kInvalidArgument, "reference: " + msg);
}

double resolved_scale(const RefProblem& p) {
  return p.softmax_scale > 0.0 ? p.softmax_scale : 1.0 / std::sqrt(static_cast<double>(p.head_dim_qk));
}

Status check_problem(const RefProblem& p) {
  if (p.batch <= 0 || p.seqlen_q <= 0 || p.num_heads_q <= 0 || p.num_heads_kv <= 0 ||
      p.head_dim_qk <= 0 || p.head_dim_v <= 0 || p.head_dim_v > p.head_dim_qk || p.page_size <= 0 ||
      p.num_pages <= 0 || p.max_pages_per_seq <= 0) {
    return invalid("sizes must be positive and head_dim_v <= head_dim_qk");
  }
  if (p.num_heads_q % p.num_heads_kv != 0) return invalid("num_heads_kv must divide num_heads_q");
  if (!p.q || !p.kv || !p.block_table || !p.cache_seqlens) return invalid("null input array");
  return Status::Ok();
}

// Validates what request i will read, so that a bad table is an error, not an out-of-bounds read.
Status check_request(const RefProblem& p, int i) {
  const int64_t len = p.cache_seqlens[i];
  if (len < 0 || len > int64_t{p.max_pages_per_seq} * p.page_size) {
    return invalid("cache_seqlens[" + std::to_string(i) + "]=" + std::to_string(len) +
                   " outside [0, max_pages_per_seq * page_size]");
  }
  const int64_t pages = (len + p.page_size - 1) / p.page_size;
  for (int64_t j = 0; j < pages; ++j) {
    const int32_t page = p.block_table[i * p.block_table_batch_stride + j];
    if (page < 0 || page >= p.num_pages) {
      return invalid("block_table[" + std::to_string(i) + "][" + std::to_string(j) +
                     "]=" + std::to_string(page) + " outside [0, num_pages)");
    }
  }
  return Status::Ok();
}

// out [s_q, h_q, d_v] and lse [h_q, s_q] of request i, contiguous, written at the given pointers.
void run_request(const RefProblem& p, int i, double* out, double* lse) {
  const double scale = resolved_scale(p);
  const int64_t len = p.cache_seqlens[i];
  const int heads_per_kv = p.num_heads_q / p.num_heads_kv;
  std::vector<double> score;
  for (int s = 0; s < p.seqlen_q; ++s) {
    // Bottom-right aligned: the last query token sees all len keys, each earlier one one less.
    const int64_t visible = p.causal ? std::max<int64_t>(0, len - p.seqlen_q + s + 1) : len;
    for (int h = 0; h < p.num_heads_q; ++h) {
      double* o = out + (int64_t{s} * p.num_heads_q + h) * p.head_dim_v;
      double* l = lse + int64_t{h} * p.seqlen_q + s;
      if (visible == 0) {
        for (int d = 0; d < p.head_dim_v; ++d) o[d] = 0.0;
        *l = std::numeric_limits<double>::infinity();
        continue;
      }
      const int hk = h / heads_per_kv;
      const float* qrow = p.q + i * p.q_batch_stride + s * p.q_seq_stride + h * p.q_head_stride;
      auto key = [&](int64_t t) {
        const int32_t page = p.block_table[i * p.block_table_batch_stride + t / p.page_size];
        return p.kv + page * p.kv_page_stride + (t % p.page_size) * p.kv_token_stride +
               hk * p.kv_head_stride;
      };
      score.assign(static_cast<size_t>(visible), 0.0);
      double max_score = -std::numeric_limits<double>::infinity();
      for (int64_t t = 0; t < visible; ++t) {
        const float* k = key(t);
        double dot = 0.0;
        for (int d = 0; d < p.head_dim_qk; ++d) {
          dot += static_cast<double>(qrow[d * p.q_dim_stride]) * k[d * p.kv_dim_stride];
        }
        score[t] = dot * scale;
        max_score = std::max(max_score, score[t]);
      }
      double denom = 0.0;
      for (int d = 0; d < p.head_dim_v; ++d) o[d] = 0.0;
      for (int64_t t = 0; t < visible; ++t) {
        const double w = std::exp(score[t] - max_score);
        denom += w;
        const float* v = key(t);
        for (int d = 0; d < p.head_dim_v; ++d) o[d] += w * v[d * p.kv_dim_stride];
      }
      for (int d = 0; d < p.head_dim_v; ++d) o[d] /= denom;
      *l = max_score + std::log(denom);
    }
  }
}

template <typename G, typename R>
CompareResult compare_impl(const G* got, const R* ref, size_t n, double atol, double rtol) {
  CompareResult r;
  r.count = n;
  double err2 = 0.0, ref2 = 0.0;
  auto cls = [](double x) { return std::isnan(x) ? 1 : (std::isinf(x) ? (x > 0 ? 2 : 3) : 0); };
  for (size_t i = 0; i < n; ++i) {
    const double g = static_cast<double>(got[i]);
    const double e = static_cast<double>(ref[i]);
    const int cg = cls(g), ce = cls(e);
    if (cg != ce) {
      if (r.nan_inf_mismatches++ == 0) r.first_nan_inf_mismatch = i;
      continue;
    }
    if (cg != 0) continue;  // same NaN/Inf class at the same position: agreed
    const double diff = std::abs(g - e);
    err2 += diff * diff;
    ref2 += e * e;
    if (diff > r.max_abs_err) {
      r.max_abs_err = diff;
      r.max_abs_index = i;
    }
    if (diff > atol + rtol * std::abs(e)) {
      if (r.num_violations++ == 0) r.first_violation = i;
    }
  }
  // An all-zero reference makes the relative error meaningless; report the absolute norm then.
  r.rel_frobenius = ref2 > 0.0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
  r.ok = r.num_violations == 0 && r.nan_inf_mismatches == 0;

  std::ostringstream os;
  os.precision(6);
  os << (r.ok ? "OK" : "MISMATCH") << ": n=" << n << " rel_frobenius=" << r.rel_frobenius
     << " max_abs_err=" << r.max_abs_err;
  if (n > 0) {
    os << " at [" << r.max_abs_index << "] (got " << static_cast<double>(got[r.max_abs_index])
       << ", ref " << static_cast<double>(ref[r.max_abs_index]) << ")";
  }
  os << " violations=" << r.num_violations << " (atol=" << atol << ", rtol=" << rtol << ")";
  if (r.num_violations > 0) {
    os << " first at [" << r.first_violation << "] (got " << static_cast<double>(got[r.first_violation])
       << ", ref " << static_cast<double>(ref[r.first_violation]) << ")";
  }
  os << " nan_inf_mismatches=" << r.nan_inf_mismatches;
  if (r.nan_inf_mismatches > 0) {
    const size_t k = r.first_nan_inf_mismatch;
    os << " first at [" << k << "] (got " << static_cast<double>(got[k]) << ", ref "
       << static_cast<double>(ref[k]) << ")";
  }
  r.summary = os.str();
  return r;
}

}  // namespace

uint16_t float_to_bf16(float x) {
  const uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  // Adding 0x7fff plus the lowest kept bit rounds to nearest even; a carry into the exponent is the
  // correct result, including overflow to Inf.
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float bf16_to_float(uint16_t bits) { return bits_float(static_cast<uint32_t>(bits) << 16); }

uint16_t float_to_fp16(float x) {
  const uint32_t u = float_bits(x);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u | static_cast<uint16_t>((a >> 13) & 0x3ffu);  // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to Inf (and Inf itself)
  const int exp = static_cast<int>(a >> 23);    // biased float exponent
  if (exp >= 113) {                             // >= 2^-14: normal half
    const uint32_t rebased = (static_cast<uint32_t>(exp - 112) << 23) | (a & 0x7fffffu);
    return sign | static_cast<uint16_t>(shift_round_even(rebased, 13));  // carry may bump exponent
  }
  if (exp < 102) return sign;  // below 2^-25: rounds to zero
  // Subnormal half: count units of 2^-24. The value is mant * 2^(exp - 150), so shift by 126 - exp.
  const uint32_t mant = (a & 0x7fffffu) | 0x800000u;
  return sign | static_cast<uint16_t>(shift_round_even(mant, 126 - exp));
}

float fp16_to_float(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exp = (bits >> 10) & 0x1fu;
  const uint32_t mant = bits & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (mant << 13));  // Inf / NaN (payload kept)
  if (exp == 0) {
    const float mag = std::ldexp(static_cast<float>(mant), -24);  // zero or subnormal, exact
    return sign ? -mag : mag;
  }
  return bits_float(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t float_to_half(DType dtype, float x) {
  return dtype == DType::kFP16 ? float_to_fp16(x) : float_to_bf16(x);
}
float half_to_float(DType dtype, uint16_t bits) {
  return dtype == DType::kFP16 ? fp16_to_float(bits) : bf16_to_float(bits);
}
std::vector<uint16_t> to_half(DType dtype, const std::vector<float>& x) {
  std::vector<uint16_t> r(x.size());
  for (size_t i = 0; i < x.size(); ++i) r[i] = float_to_half(dtype, x[i]);
  return r;
}
std::vector<float> to_float(DType dtype, const std::vector<uint16_t>& bits) {
  std::vector<float> r(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) r[i] = half_to_float(dtype, bits[i]);
  return r;
}

RefProblem problem_from_args(const DecodeArgs& args, const float* q, const float* kv,
                             const int32_t* block_table, const int32_t* cache_seqlens) {
  return RefProblem{
      .batch = args.batch,
      .seqlen_q = args.seqlen_q,
      .num_heads_q = args.num_heads_q,
      .num_heads_kv = args.num_heads_kv,
      .head_dim_qk = args.head_dim_qk,
      .head_dim_v = args.head_dim_v,
      .page_size = args.page_size,
      .num_pages = args.num_pages,
      .max_pages_per_seq = args.max_pages_per_seq,
      .q = q,
      .q_batch_stride = args.q_batch_stride,
      .q_seq_stride = args.q_seq_stride,
      .q_head_stride = args.q_head_stride,
      .q_dim_stride = args.q_dim_stride,
      .kv = kv,
      .kv_page_stride = args.kv_page_stride,
      .kv_token_stride = args.kv_token_stride,
      .kv_head_stride = args.kv_head_stride,
      .kv_dim_stride = args.kv_dim_stride,
      .block_table = block_table,
      .block_table_batch_stride = args.block_table_batch_stride,
      .cache_seqlens = cache_seqlens,
      .softmax_scale = args.softmax_scale,
      .causal = args.causal,
  };
}

Status decode_reference(const RefProblem& p, RefResult* result) {
  if (result == nullptr) return invalid("result must not be null");
  if (Status st = check_problem(p); !st.ok()) return st;
  for (int i = 0; i < p.batch; ++i) {
    if (Status st = check_request(p, i); !st.ok()) return st;
  }
  const size_t rows = static_cast<size_t>(p.seqlen_q) * p.num_heads_q;
  result->out.assign(static_cast<size_t>(p.batch) * rows * p.head_dim_v, 0.0);
  result->lse.assign(static_cast<size_t>(p.batch) * rows, 0.0);
  for (int i = 0; i < p.batch; ++i) {
    run_request(p, i, result->out.data() + i * rows * p.head_dim_v, result->lse.data() + i * rows);
  }
  return Status::Ok();
}

Status decode_reference_request(const RefProblem& p, int request, std::vector<double>* out,
                                std::vector<double>* lse) {
  if (out == nullptr || lse == nullptr) return invalid("out and lse must not be null");
  if (Status st = check_problem(p); !st.ok()) return st;
  if (request < 0 || request >= p.batch) {
    return invalid("request=" + std::to_string(request) + " outside [0, batch)");
  }
  if (Status st = check_request(p, request); !st.ok()) return st;
  const size_t rows = static_cast<size_t>(p.seqlen_q) * p.num_heads_q;
  out->assign(rows * p.head_dim_v, 0.0);
  lse->assign(rows, 0.0);
  run_request(p, request, out->data(), lse->data());
  return Status::Ok();
}

CompareResult compare(const float* got, const double* ref, size_t n, double atol, double rtol) {
  return compare_impl(got, ref, n, atol, rtol);
}
CompareResult compare(const double* got, const double* ref, size_t n, double atol, double rtol) {
  return compare_impl(got, ref, n, atol, rtol);
}
CompareResult compare(const float* got, const float* ref, size_t n, double atol, double rtol) {
  return compare_impl(got, ref, n, atol, rtol);
}

}  // namespace mla::reference
