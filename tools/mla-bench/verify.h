// mla-bench verification: compares a kernel's out/lse (already widened to float) with the
// reference. Host-only and header-only so the CPU tests can exercise it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <string>

namespace mla_bench {

struct Tolerance {
  double out_rel_fro;  // ||out - ref||_F / ||ref||_F over positions finite in both
  double lse_rel;      // max |lse - ref| / max(1, |ref|) over positions finite in both
};

// bf16 rounds out (and the kernel's P before the P.V product) to 8 significant bits: about
// 1.5e-3 relative each, ~2e-3 together; fp16 keeps 11 bits.
inline Tolerance tolerance_for(bool bf16) { return bf16 ? Tolerance{3e-3, 1e-4} : Tolerance{1e-3, 1e-4}; }

struct VerifyResult {
  bool pass = false;
  double out_rel_err = 0;      // relative Frobenius error of out
  double lse_err = 0;          // max normalised lse error
  size_t out_nonfinite_mismatch = 0;  // positions where NaN/Inf-ness (or Inf sign) differs
  size_t lse_nonfinite_mismatch = 0;
  std::string summary() const {
    char buf[160];
    std::snprintf(buf, sizeof(buf), "out_err=%.2e lse_err=%.2e nonfinite_mismatch=%zu",
                  out_rel_err, lse_err, out_nonfinite_mismatch + lse_nonfinite_mismatch);
    return buf;
  }
};

namespace detail {
// Same class: both NaN, both the same infinity, or both finite.
inline bool same_nonfinite_class(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  if (std::isinf(a) || std::isinf(b)) return a == b;
  return true;
}
}  // namespace detail

inline VerifyResult compare_outputs(const float* out, const float* out_ref, size_t n_out,
                                    const float* lse, const float* lse_ref, size_t n_lse,
                                    Tolerance tol) {
  VerifyResult r;
  double diff2 = 0, ref2 = 0;
  for (size_t k = 0; k < n_out; ++k) {
    const float a = out[k], b = out_ref[k];
    if (!detail::same_nonfinite_class(a, b)) {
      ++r.out_nonfinite_mismatch;
    } else if (std::isfinite(a)) {
      const double d = static_cast<double>(a) - b;
      diff2 += d * d;
      ref2 += static_cast<double>(b) * b;
    }
  }
  // An all-zero reference (every row empty) makes the error absolute.
  r.out_rel_err = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  for (size_t k = 0; k < n_lse; ++k) {
    const float a = lse[k], b = lse_ref[k];
    if (!detail::same_nonfinite_class(a, b)) {
      ++r.lse_nonfinite_mismatch;
    } else if (std::isfinite(a)) {
      const double e = std::fabs(static_cast<double>(a) - b) / std::max(1.0, std::fabs(double(b)));
      r.lse_err = std::max(r.lse_err, e);
    }
  }
  r.pass = r.out_nonfinite_mismatch == 0 && r.lse_nonfinite_mismatch == 0 &&
           r.out_rel_err <= tol.out_rel_fro && r.lse_err <= tol.lse_rel;
  return r;
}

}  // namespace mla_bench
