// mla-bench command line: parsing and usage text. Header-only and free of CUDA so the CPU tests
// (tests/cpu/test_bench_cli.cpp) can include it without linking the tool.
#pragma once

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mla_bench {

enum class BenchDType { kBF16, kFP16 };

// How L2 is emptied before each timed replay (l2_flush.cu).
enum class FlushMode {
  kMemset,  // default, DESIGN.md's method: a memset of twice the L2 size; L2 is left dirty
  kRead,    // a kernel reads the buffer: the step's data leaves L2 and nothing is left dirty
  kNone,    // no flush: the step's inputs may still be in L2
};

namespace detail {

// One of a fixed set of names, each standing for a value of T: the command-line spelling and
// the name printed in the output come from the same table.
template <typename T>
struct Choice {
  const char* name;
  T value;
};

inline constexpr Choice<BenchDType> kDtypeChoices[] = {{"bf16", BenchDType::kBF16},
                                                       {"fp16", BenchDType::kFP16}};
inline constexpr Choice<FlushMode> kFlushChoices[] = {{"memset", FlushMode::kMemset},
                                                      {"read", FlushMode::kRead},
                                                      {"none", FlushMode::kNone}};

// The name of `value` in `choices` ("?" if absent, which the tables above rule out).
template <typename T, size_t N>
constexpr const char* choice_name(const Choice<T> (&choices)[N], T value) {
  for (const Choice<T>& c : choices) {
    if (c.value == value) return c.name;
  }
  return "?";
}

}  // namespace detail

inline const char* bench_dtype_name(BenchDType d) {
  return detail::choice_name(detail::kDtypeChoices, d);
}
inline const char* flush_mode_name(FlushMode m) {
  return detail::choice_name(detail::kFlushChoices, m);
}

struct Options {
  // Shape of the custom case (used only when `custom` is true).
  int batch = 128;
  int seqlen = 8192;  // s_k, or the mean length with --varlen
  int heads = 128;
  int kv_heads = 1;
  int mtp = 1;  // s_q
  bool varlen = false;
  bool custom = false;  // a shape option (or --varlen) was given: run one custom case

  // Apply to every case run.
  bool causal = false;
  BenchDType dtype = BenchDType::kBF16;
  int iters = 50;
  bool verify = true;
  std::string json_path;  // empty: no JSON file
  char only_case = 0;     // 'A'..'H': run this default case only; 0: all
  FlushMode flush = FlushMode::kMemset;  // how L2 is emptied between replays (l2_flush.h)
  bool help = false;
};

struct ParseResult {
  bool ok = true;
  std::string error;  // one line, names the option and the allowed values
  Options options;
};

inline const char* usage_text() {
  return
      "usage: mla-bench [options]\n"
      "\n"
      "Verifies libmla's MLA decode against a GPU reference and times it (CUDA-graph replays,\n"
      "L2 flushed between replays, median), next to a device-copy and a bf16-GEMM ceiling\n"
      "measured in the same run. Needs an NVIDIA Hopper GPU (sm_90).\n"
      "\n"
      "Without shape options it runs the default cases A..H (DESIGN.md section 5):\n"
      "  A b=128 s_q=1 s_k=8192 h_q=16     E b=1   s_q=1 s_k=32768 h_q=128\n"
      "  B b=128 s_q=1 s_k=8192 h_q=64     F b=32  s_q=1 s_k=1024  h_q=16\n"
      "  C b=128 s_q=1 s_k=8192 h_q=128    G b=64  s_q=1 s_k=4096 (mean, varlen) h_q=128\n"
      "  D b=128 s_q=2 s_k=8192 h_q=128    H b=128 s_q=4 s_k=4096 (mean, varlen) h_q=16\n"
      "all with h_kv=1, page size 64, pages in random physical order.\n"
      "\n"
      "Shape options (any of them runs one custom case; unspecified ones take the default):\n"
      "  --batch N       requests b (default 128)\n"
      "  --seqlen N      KV length s_k per request; the mean length with --varlen (default 8192)\n"
      "  --heads N       query heads h_q (default 128)\n"
      "  --kv-heads N    KV heads h_kv, must divide h_q (default 1)\n"
      "  --mtp N         query tokens per request s_q (default 1)\n"
      "  --varlen        lengths max(normal(s_k, s_k/2), s_q), fixed seed\n"
      "Other options:\n"
      "  --case X        run only default case X (A..H)\n"
      "  --causal        bottom-right aligned causal mask among the s_q query tokens\n"
      "  --dtype T       bf16 (default) or fp16; an fp16 run also times the GEMM ceiling's\n"
      "                  GEMM in fp16 and prints its ratio to bf16's (%GEMM stays bf16's)\n"
      "  --iters N       timed graph replays per case, median reported (default 50)\n"
      "  --no-verify     skip the comparison against the GPU reference\n"
      "  --json FILE     also write the results (ceilings, GPU, every case) as JSON to FILE\n"
      "  --flush MODE    how L2 is emptied before each replay: memset (default, the method of\n"
      "                  record), read (a read-only sweep: nothing left dirty) or none;\n"
      "                  the last two are diagnostics of what the flush itself costs\n"
      "  --help          this text\n"
      "\n"
      "Verification: relative Frobenius error of out <= 3e-3 (bf16; 1e-3 fp16), |lse - ref| <=\n"
      "1e-4 * max(1, |ref|), and NaN/Inf at the same positions as the reference.\n"
      "FLOPs = 2 * s_q * sum(seqlens) * h_q * (576 + 512); bytes = (sum(seqlens) * h_kv * 576 +\n"
      "b * s_q * h_q * (576 + 512)) * sizeof(elem) (FlashMLA's counting).\n"
      "\n"
      "Exit status: 0 all verified; 1 a verification or run failed; 2 bad options;\n"
      "3 no Hopper GPU.\n";
}

namespace detail {

// Strict decimal integer in [lo, hi]: the whole string must be digits (optional leading '-').
inline bool parse_int(std::string_view s, int lo, int hi, int* out) {
  if (s.empty()) return false;
  int64_t v = 0;
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, v);
  if (ec != std::errc() || ptr != end) return false;
  if (v < lo || v > hi) return false;
  *out = static_cast<int>(v);
  return true;
}

// "a, b or c" for the usage and error texts.
template <typename T, size_t N>
std::string choice_names(const Choice<T> (&choices)[N]) {
  std::string text;
  for (size_t k = 0; k < N; ++k) {
    if (k > 0) text += k + 1 == N ? " or " : ", ";
    text += choices[k].name;
  }
  return text;
}

// Sets *out to the value named v; returns false if v names none of them.
template <typename T, size_t N>
bool parse_choice(const std::string& v, const Choice<T> (&choices)[N], T* out) {
  for (const Choice<T>& c : choices) {
    if (v == c.name) {
      *out = c.value;
      return true;
    }
  }
  return false;
}

}  // namespace detail

inline ParseResult parse_options(const std::vector<std::string>& args) {
  ParseResult res;
  Options& o = res.options;
  auto fail = [&res](std::string msg) {
    res.ok = false;
    res.error = "mla-bench: " + std::move(msg) + " (see --help)";
    return res;
  };

  struct IntOpt {
    const char* name;
    int* dst;
    int lo, hi;
    bool shape;
  };
  // Upper bounds keep every derived size inside int32 index arithmetic; check() has the final say.
  const IntOpt int_opts[] = {
      {"--batch", &o.batch, 1, 1 << 20, true},
      {"--seqlen", &o.seqlen, 1, 1 << 24, true},
      {"--heads", &o.heads, 1, 1 << 12, true},
      {"--kv-heads", &o.kv_heads, 1, 1 << 12, true},
      {"--mtp", &o.mtp, 1, 1 << 10, true},
      {"--iters", &o.iters, 1, 1 << 20, false},
  };

  for (size_t k = 0; k < args.size(); ++k) {
    std::string arg = args[k];
    std::string value;
    bool has_inline_value = false;
    if (arg.rfind("--", 0) == 0) {
      const size_t eq = arg.find('=');
      if (eq != std::string::npos) {
        value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
        has_inline_value = true;
      }
    }
    // Fetches the option's value from "--opt=V" or the next argument.
    auto take_value = [&](std::string* v) {
      if (has_inline_value) {
        *v = value;
        return true;
      }
      if (k + 1 >= args.size()) return false;
      *v = args[++k];
      return true;
    };
    auto no_value = [&]() { return !has_inline_value; };

    bool matched = false;
    for (const IntOpt& io : int_opts) {
      if (arg != io.name) continue;
      matched = true;
      std::string v;
      const std::string allowed = "an integer in [" + std::to_string(io.lo) + ", " +
                                  std::to_string(io.hi) + "]";
      if (!take_value(&v)) return fail(std::string(io.name) + " needs a value: " + allowed);
      if (!detail::parse_int(v, io.lo, io.hi, io.dst))
        return fail(std::string(io.name) + " must be " + allowed + " (got '" + v + "')");
      if (io.shape) o.custom = true;
      break;
    }
    if (matched) continue;

    if (arg == "--varlen" || arg == "--causal" || arg == "--no-verify" || arg == "--help" ||
        arg == "-h") {
      if (!no_value()) return fail(arg + " takes no value (got '" + value + "')");
      if (arg == "--varlen") {
        o.varlen = true;
        o.custom = true;
      } else if (arg == "--causal") {
        o.causal = true;
      } else if (arg == "--no-verify") {
        o.verify = false;
      } else {
        o.help = true;
      }
    } else if (arg == "--dtype" || arg == "--flush") {
      // Options that take one of a few names.
      const bool dtype = arg == "--dtype";
      const std::string allowed = dtype ? detail::choice_names(detail::kDtypeChoices)
                                        : detail::choice_names(detail::kFlushChoices);
      std::string v;
      if (!take_value(&v)) return fail(arg + " needs a value: " + allowed);
      const bool known = dtype ? detail::parse_choice(v, detail::kDtypeChoices, &o.dtype)
                               : detail::parse_choice(v, detail::kFlushChoices, &o.flush);
      if (!known) return fail(arg + " must be " + allowed + " (got '" + v + "')");
    } else if (arg == "--json") {
      std::string v;
      if (!take_value(&v) || v.empty()) return fail("--json needs a file name");
      o.json_path = v;
    } else if (arg == "--case") {
      std::string v;
      if (!take_value(&v)) return fail("--case needs a value: one of A, B, C, D, E, F, G, H");
      if (v.size() != 1 || !((v[0] >= 'A' && v[0] <= 'H') || (v[0] >= 'a' && v[0] <= 'h')))
        return fail("--case must be one of A, B, C, D, E, F, G, H (got '" + v + "')");
      o.only_case = static_cast<char>(v[0] >= 'a' ? v[0] - 'a' + 'A' : v[0]);
    } else {
      return fail("unknown option '" + args[k] +
                  "'; options: --batch --seqlen --heads --kv-heads --mtp --varlen --causal "
                  "--dtype --iters --no-verify --json --flush --case --help");
    }
  }

  if (o.custom && o.only_case)
    return fail("--case runs a default case and cannot be combined with shape options "
                "(--batch --seqlen --heads --kv-heads --mtp --varlen)");
  if (o.heads % o.kv_heads != 0)
    return fail("--kv-heads must divide --heads (got --heads " + std::to_string(o.heads) +
                ", --kv-heads " + std::to_string(o.kv_heads) + ")");
  return res;
}

inline ParseResult parse_options(int argc, const char* const* argv) {
  std::vector<std::string> args;
  for (int k = 1; k < argc; ++k) args.emplace_back(argv[k]);
  return parse_options(args);
}

}  // namespace mla_bench
