// CPU (C++, OpenMP through at::parallel_for) backend of focus_logits_ and the FocusState op, and the
// schemas of the native ops (focuskern::focus_{logits,state}_{cpp,cuda}_).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <initializer_list>
#include <limits>
#include <string>
#include <type_traits>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include "focus_common.h"

namespace focuskern {
namespace {

// Rows per OpenMP task: a row that blends streams all V logits, one that does not touches a few
// entries (microseconds for a whole batch), where waking threads costs more than it saves -- on a
// loaded machine milliseconds (measured: ~8 ms vs ~12 us for a 2-row step on a busy 2-vCPU VM).
int64_t rows_per_task(bool blend) { return blend ? 1 : std::numeric_limits<int32_t>::max(); }

// Logits per task when blended rows are cut into column tiles (64 KB of fp32).
constexpr int64_t kBlendTile = 16384;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

template <typename scalar_t>
inline void scale_row_loop(scalar_t* row, int64_t V, int64_t col_stride, float scale) {
  if (col_stride == 1) {
    // Unrolled: a one-vector loop body is front-end bound when it straddles a 64-byte fetch block
    // (measured 25% slower than torch's mul_ on AMD EPYC at V = 151936, depending on code placement).
#pragma GCC unroll 4
    for (int64_t v = 0; v < V; ++v) row[v] = static_cast<scalar_t>(static_cast<float>(row[v]) * scale);
  } else {
    for (int64_t v = 0; v < V; ++v) {
      scalar_t& x = row[v * col_stride];
      x = static_cast<scalar_t>(static_cast<float>(x) * scale);
    }
  }
}

#if defined(__GNUC__) && defined(__x86_64__)
// The wheel is built for baseline x86-64 (SSE2); the dense pass is memory-bound only once it is
// vectorized wide enough, so pick AVX-512 / AVX2 copies of the loop at run time.
template <typename scalar_t>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void scale_row_avx512(scalar_t* row, int64_t V, int64_t cs,
                                                                             float scale) {
  scale_row_loop(row, V, cs, scale);
}
template <typename scalar_t>
__attribute__((target("avx2,fma,f16c"))) void scale_row_avx2(scalar_t* row, int64_t V, int64_t cs, float scale) {
  if constexpr (std::is_same_v<scalar_t, c10::Half>) {
    // c10::Half converts in software; F16C converts 8 at a time (round to nearest even, as c10::Half).
    if (cs == 1) {
      auto* bits = reinterpret_cast<uint16_t*>(row);
      const __m256 factor = _mm256_set1_ps(scale);
      int64_t v = 0;
      for (; v + 8 <= V; v += 8) {
        const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bits + v)));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(bits + v),
                         _mm256_cvtps_ph(_mm256_mul_ps(x, factor), _MM_FROUND_TO_NEAREST_INT));
      }
      row += v;
      V -= v;
    }
  }
  scale_row_loop(row, V, cs, scale);
}
#endif

template <typename scalar_t>
void scale_row(scalar_t* row, int64_t V, int64_t col_stride, float scale) {
#if defined(__GNUC__) && defined(__x86_64__)
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl");
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx512 && !std::is_same_v<scalar_t, c10::Half>) return scale_row_avx512(row, V, col_stride, scale);
  if (avx2) return scale_row_avx2(row, V, col_stride, scale);
#endif
  scale_row_loop(row, V, col_stride, scale);
}

// Adds row r's entries (ids [lo, hi)) at strength s: x[id] += (b == -inf ? -inf : s * b), duplicates
// in order, ids outside [0, V) skipped.  kIdsChecked: the caller has checked every id (the default call),
// so the per-entry bounds test goes.  The entry loop is bound by its cache misses, so fewer
// instructions per entry keep more of them in flight: where s > 0, s * b already is -inf for b = -inf
// (the select goes), where s = 1 it is b (the multiply goes) -- the same bits either way.
template <bool kIdsChecked, typename scalar_t, typename Term>
inline void add_entries_as(scalar_t* row, int64_t V, int64_t col_stride, const int32_t* ids, const float* bias,
                           int32_t lo, int32_t hi, Term term) {
  const auto run = [&](auto column) {
    for (int32_t j = lo; j < hi; ++j) {
      // validate=False skips the id check: an id outside [0, V) would write out of bounds (issue 21).
      if (!kIdsChecked && static_cast<uint32_t>(ids[j]) >= static_cast<uint64_t>(V)) continue;
      scalar_t& out = row[column(ids[j])];
      out = static_cast<scalar_t>(static_cast<float>(out) + term(bias[j]));
    }
  };
  if (col_stride == 1)  // no multiply on the address of every entry
    run([](int32_t id) { return static_cast<int64_t>(id); });
  else
    run([col_stride](int32_t id) { return id * col_stride; });
}

template <bool kIdsChecked, typename scalar_t>
inline void add_entries(scalar_t* row, int64_t V, int64_t col_stride, float s, const int32_t* ids, const float* bias,
                        int32_t lo, int32_t hi) {
  if (s == 1.f)
    add_entries_as<kIdsChecked>(row, V, col_stride, ids, bias, lo, hi, [](float b) { return b; });
  else if (s > 0.f)
    add_entries_as<kIdsChecked>(row, V, col_stride, ids, bias, lo, hi, [s](float b) { return s * b; });
  else  // s = 0 (a switched-off push still bans) or an unchecked s
    add_entries_as<kIdsChecked>(row, V, col_stride, ids, bias, lo, hi,
                                [s](float b) { return b == kNegInf ? kNegInf : s * b; });
}

// The small arguments of focus_logits, contiguous: borrowed where they already are (no new tensor
// handle: a handle's refcount can take the GIL), copied where not.
struct SmallArgs {
  c10::MaybeOwned<at::Tensor> ro, ids, bias, al, dc, st;
  const int32_t *ro_p, *ids_p, *st_p;
  const float *bias_p, *al_p, *dc_p;
  SmallArgs(const at::Tensor& row_offsets, const at::Tensor& token_ids, const at::Tensor& token_bias,
            const at::Tensor& alpha, const at::Tensor& decay, const at::Tensor& step)
      : ro(row_offsets.expect_contiguous()), ids(token_ids.expect_contiguous()), bias(token_bias.expect_contiguous()),
        al(alpha.expect_contiguous()), dc(decay.expect_contiguous()), st(step.expect_contiguous()),
        ro_p(ro->data_ptr<int32_t>()), ids_p(ids->data_ptr<int32_t>()), st_p(st->data_ptr<int32_t>()),
        bias_p(bias->data_ptr<float>()), al_p(al->data_ptr<float>()), dc_p(dc->data_ptr<float>()) {}
};

// Rows whose strengths are computed ahead of their entries (a stack buffer, no allocation per call).
constexpr int64_t kStrengthChunk = 64;

template <bool kIdsChecked>
void apply_focus_logits(const at::Tensor& logits, const SmallArgs& a) {
  const int64_t B = logits.size(0), V = logits.size(1);
  const int64_t s0 = logits.stride(0), s1 = logits.stride(1);
  const int32_t *ro_p = a.ro_p, *ids_p = a.ids_p, *st_p = a.st_p;
  const float *bias_p = a.bias_p, *al_p = a.al_p, *dc_p = a.dc_p;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "focus_logits_cpu", [&] {
    scalar_t* x = logits.data_ptr<scalar_t>();
    const auto entries = [&](int64_t r, float s) {
      add_entries<kIdsChecked>(x + r * s0, V, s1, s, ids_p, bias_p, ro_p[r], ro_p[r + 1]);
    };
    const bool any_blend = std::any_of(al_p, al_p + B, [](float a) { return a != 0.f; });
    if (!any_blend) {
      // Entries only, on the calling thread: a few microseconds for a whole batch, where waking
      // threads costs more than it saves (see rows_per_task).  The strengths first, so that the entry
      // loop's cache misses overlap.
      float strength[kStrengthChunk];
      for (int64_t r0 = 0; r0 < B; r0 += kStrengthChunk) {
        const int64_t n = std::min(kStrengthChunk, B - r0);
        for (int64_t i = 0; i < n; ++i) strength[i] = decay_strength(dc_p + 3 * (r0 + i), st_p[r0 + i]);
        for (int64_t i = 0; i < n; ++i) entries(r0 + i, strength[i]);
      }
      return;
    }
    // A task takes whole rows (scaled, then its entries while the row is in cache) when every thread
    // gets >= 4 rows; with fewer rows (B = 1 on 2 threads) the blended rows are cut into column tiles,
    // so that every thread streams, and the entries follow in a second pass.
    const int64_t tiles = B < 4 * at::get_num_threads() ? (V + kBlendTile - 1) / kBlendTile : 1;
    const int64_t width = tiles == 1 ? V : kBlendTile;
    at::parallel_for(0, B * tiles, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t r = i / tiles, c0 = i % tiles * width;
        const float s = decay_strength(dc_p + 3 * r, st_p[r]);
        const float scale = 1.f - s * al_p[r];
        if (scale != 1.f) scale_row(x + r * s0 + c0 * s1, std::min(width, V - c0), s1, scale);
        if (tiles == 1) entries(r, s);
      }
    });
    if (tiles > 1)
      for (int64_t r = 0; r < B; ++r) entries(r, decay_strength(dc_p + 3 * r, st_p[r]));
  });
}

void focus_logits_cpu(const at::Tensor& logits, const at::Tensor& row_offsets, const at::Tensor& token_ids,
                      const at::Tensor& token_bias, const at::Tensor& alpha, const at::Tensor& decay,
                      const at::Tensor& step) {
  TORCH_CHECK(logits.device().is_cpu(), "focus_logits_cpp_: logits must be a CPU tensor");
  apply_focus_logits</*kIdsChecked=*/false>(logits, SmallArgs(row_offsets, token_ids, token_bias, alpha, decay, step));
}

bool has_layout(const at::Tensor& t, at::ScalarType dtype, std::initializer_list<int64_t> shape) {
  if (t.scalar_type() != dtype || t.dim() != static_cast<int64_t>(shape.size())) return false;
  int64_t d = 0;
  for (const int64_t want : shape) {
    if (want >= 0 && t.size(d) != want) return false;  // -1: any size
    ++d;
  }
  return true;
}

// The nnz-long checks in one pass: every id in [0, id_limit) (one unsigned 32-bit compare: a negative
// id wraps above 2^31) and every bias finite or -inf.  Flags OR-ed into ints, so that the loop
// vectorizes (a bool |= reduction stays scalar: ~1 ns per entry).  Returns 0, 3 (an id) or 4 (a bias):
// 1 + the argument's position, ids first.
inline int64_t check_entries_loop(const int32_t* ids, const float* bias, int64_t nnz, uint32_t id_limit) {
  uint32_t bad_ids = 0, bad_bias = 0;
  for (int64_t j = 0; j < nnz; ++j) {
    bad_ids |= static_cast<uint32_t>(static_cast<uint32_t>(ids[j]) >= id_limit);
    bad_bias |= static_cast<uint32_t>(!(bias[j] < -kNegInf));  // NaN, +inf
  }
  return bad_ids ? 3 : bad_bias ? 4 : 0;
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx2"))) int64_t check_entries_avx2(const int32_t* ids, const float* bias, int64_t nnz,
                                                           uint32_t id_limit) {
  return check_entries_loop(ids, bias, nnz, id_limit);
}
#endif

int64_t check_entries(const int32_t* ids, const float* bias, int64_t nnz, uint32_t id_limit) {
#if defined(__GNUC__) && defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return check_entries_avx2(ids, bias, nnz, id_limit);
#endif
  return check_entries_loop(ids, bias, nnz, id_limit);
}

}  // namespace

// Every check of validate_focus_logits_args (focuskern/ops/focus_logits.py) in one pass over the
// small tensors: the ~12 separate ATen reductions cost ~9x the kernel per call.  Returns -1 when a
// tensor is not on the CPU (not checked here), 0 when every argument is good (then, with `apply`,
// runs focus_logits_cpu), else 1 + the position of the first bad argument; the caller then reruns
// the Python checks, which name the argument and the fault.  Called from focuskern._C (module.cpp).
int64_t focus_logits_check_cpu(const at::Tensor& logits, const at::Tensor& row_offsets, const at::Tensor& token_ids,
                               const at::Tensor& token_bias, const at::Tensor& alpha, const at::Tensor& decay,
                               const at::Tensor& step, int64_t n_kinds, bool apply) {
  // Pointers, not a list of tensors: a tensor copy bumps the refcount of its Python object, under the GIL.
  for (const at::Tensor* t : {&logits, &row_offsets, &token_ids, &token_bias, &alpha, &decay, &step})
    if (!t->device().is_cpu()) return -1;
  const auto dt = logits.scalar_type();
  if (logits.dim() != 2 || (dt != at::kFloat && dt != at::kHalf && dt != at::kBFloat16)) return 1;
  const int64_t B = logits.size(0), V = logits.size(1);
  if ((logits.stride(0) == 0 && B > 1) || (logits.stride(1) == 0 && V > 1)) return 1;  // written in place
  if (!has_layout(row_offsets, at::kInt, {B + 1})) return 2;
  if (!has_layout(token_ids, at::kInt, {-1})) return 3;
  const int64_t nnz = token_ids.size(0);
  if (!has_layout(token_bias, at::kFloat, {nnz})) return 4;
  if (!has_layout(alpha, at::kFloat, {B})) return 5;
  if (!has_layout(decay, at::kFloat, {B, 3})) return 6;
  if (!has_layout(step, at::kInt, {B})) return 7;
  const SmallArgs a(row_offsets, token_ids, token_bias, alpha, decay, step);
  const int32_t *ro_p = a.ro_p, *ids_p = a.ids_p, *st_p = a.st_p;
  const float *bias_p = a.bias_p, *al_p = a.al_p, *dc_p = a.dc_p;
  // Branch-free reductions (one flag per argument) so that the loops vectorize: nnz can be ~10^5.
  bool bad = ro_p[0] != 0 || ro_p[B] != nnz;
  for (int64_t r = 0; r < B; ++r) bad |= ro_p[r + 1] < ro_p[r];
  if (bad) return 2;
  const int64_t bad_entry = check_entries(ids_p, bias_p, nnz, static_cast<uint32_t>(std::min<int64_t>(V, int64_t{1} << 31)));
  if (bad_entry) return bad_entry;
  for (int64_t r = 0; r < B; ++r) bad |= !((al_p[r] >= 0.f) & (al_p[r] <= 1.f));  // NaN too
  if (bad) return 5;
  for (int64_t r = 0; r < B; ++r) {
    const float kind = dc_p[3 * r], horizon = dc_p[3 * r + 1], floor_ = dc_p[3 * r + 2];
    // An integer in [0, n_kinds): the range first, so that the cast to int is defined (NaN fails it).
    const bool in_range = (kind >= 0.f) & (kind < static_cast<float>(n_kinds));
    const float whole = in_range ? kind : 0.f;
    bad |= !in_range | (whole != static_cast<float>(static_cast<int32_t>(whole)));
    bad |= !((kind == 0.f) | (horizon > 0.f)) | !((floor_ >= 0.f) & (floor_ <= 1.f));
  }
  if (bad) return 6;
  for (int64_t r = 0; r < B; ++r) bad |= st_p[r] < 0;
  if (bad) return 7;
  if (apply) apply_focus_logits</*kIdsChecked=*/true>(logits, a);
  return 0;
}

// The pointer of last_tokens by its dtype (the ops check it is int32 or int64).
TokenIds last_token_ids(const c10::optional<at::Tensor>& last_tokens) {
  if (!last_tokens.has_value()) return {nullptr, nullptr};
  if (last_tokens->scalar_type() == at::kLong) return {nullptr, last_tokens->data_ptr<int64_t>()};
  return {last_tokens->data_ptr<int32_t>(), nullptr};
}

namespace {

void focus_state_cpu(at::Tensor logits, const c10::optional<at::Tensor>& last_tokens, const at::Tensor& prog,
                     at::Tensor node, at::Tensor sat, at::Tensor step, const at::Tensor& prog_f32,
                     const at::Tensor& prog_i32, const at::Tensor& node_table, const at::Tensor& slot_table,
                     const at::Tensor& closure, const at::Tensor& ents, const at::Tensor& tok_off,
                     const at::Tensor& tok_sym, const at::Tensor& byte_class, at::IntArrayRef limits, bool blend) {
  TORCH_CHECK(logits.device().is_cpu(), "focus_state_cpp_: logits must be a CPU tensor");
  TORCH_CHECK(node.is_contiguous() && sat.is_contiguous() && step.is_contiguous() && prog.is_contiguous(),
              "focus_state_cpp_: row state must be contiguous");
  TORCH_CHECK(!last_tokens.has_value() || (last_tokens->is_contiguous() && (last_tokens->scalar_type() == at::kInt ||
                                        last_tokens->scalar_type() == at::kLong)),
              "focus_state_cpp_: last_tokens must be contiguous int32 or int64");
  const int64_t B = logits.size(0), V = logits.size(1), W = sat.size(1);
  const int64_t s0 = logits.stride(0), s1 = logits.stride(1);
  const TokenIds last = last_token_ids(last_tokens);
  const int32_t* prog_p = prog.data_ptr<int32_t>();
  int32_t* node_p = node.data_ptr<int32_t>();
  int32_t* sat_p = sat.data_ptr<int32_t>();
  int32_t* step_p = step.data_ptr<int32_t>();
  const float* pf = prog_f32.data_ptr<float>();
  const int32_t* pi = prog_i32.data_ptr<int32_t>();
  const int32_t* nodes = node_table.data_ptr<int32_t>();
  const int32_t* slots = slot_table.data_ptr<int32_t>();
  const int32_t* clo = closure.data_ptr<int32_t>();
  const int32_t* ent = ents.data_ptr<int32_t>();
  const TokenView tokens{tok_off.data_ptr<int32_t>(), tok_sym.data_ptr<int32_t>(), byte_class.data_ptr<int32_t>(),
                         tok_off.numel() - 1};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "focus_state_cpu", [&] {
    scalar_t* x = logits.data_ptr<scalar_t>();
    at::parallel_for(0, B, rows_per_task(blend), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int32_t p = prog_p[r];
        if (p < 0) continue;
        const int32_t* ip = pi + p * I_WIDTH;
        const float* fp = pf + p * F_WIDTH;
        const ProgramView view = program_view(ip, nodes, slots, clo, ent);
        int32_t* row_sat = sat_p + r * W;
        if (last.given() && in_vocab(last[r], V)) {  // a token outside [0, V) is not fed (held rows: -1)
          node_p[r] = step_row(view, tokens, node_p[r], static_cast<int32_t>(last[r]), ip[I_ONCE] != 0, row_sat);
          step_p[r] += 1;
        }
        const int32_t u = word_node(node_p[r]), pc = push_context(word_ctx(node_p[r]));
        const int32_t clo_lo = view.node_row(u)[N_CLO_LO];
        const int32_t clo_hi = ip[I_PHRASE] != 0 ? view.node_row(u)[N_CLO_HI] : clo_lo;
        const float s = decay_strength(fp + F_KIND, step_p[r]);
        const float scale = 1.f - s * fp[F_ALPHA];
        scalar_t* row = x + r * s0;
        // Step 2a: a banned continuation aborts its attempt; the entities through the banned entries
        // are given up only when no entry can continue.  Reads the logits before any write.
        bool open = false;
        for (int32_t c = clo_lo; c < clo_hi && !open; ++c)
          open = open_continuation(view, c, row, s1, V, row_sat);
        for (int32_t c = clo_lo; c < clo_hi && !open; ++c)
          if (banned_continuation(view, c, row, s1, V)) {
            const int32_t* child = view.node_row(view.clo_child(c));
            mark_list(ent, child[N_THROUGH_LO], child[N_THROUGH_HI], row_sat);
          }
        if (scale != 1.f) scale_row(row, V, s1, scale);
        bool in_match = false;
        for (int32_t c = clo_lo; c < clo_hi && !in_match; ++c) in_match = entry_alive(view, c, row_sat);
        const bool starts = ip[I_STARTS_IN_MATCH] || !in_match;
        int32_t unsaid = 0;
        if (ip[I_ONCE] && fp[F_BUDGET] > 0.f) {
          unsaid = ip[I_N_ENTITIES];
          for (int64_t w = 0; w < W; ++w) unsaid -= popcount32(row_sat[w]);
        }
        const float push = budget_urgency(fp, step_p[r], unsaid) * fp[F_FORCE];
        for (int32_t k = 0; k < view.n_slots; ++k) {
          const int64_t token = view.slot_row(k)[S_TOKEN];
          if (!in_vocab(token, V)) continue;
          const float val = slot_value(view, u, pc, k, row_sat, in_match, starts, fp[F_BIAS], fp[F_CONT]);
          if (val == kNegInf) continue;
          scalar_t& out = row[token * s1];
          out = static_cast<scalar_t>(static_cast<float>(out) + s * val + push);
        }
        for (int32_t i = 0; i < MAX_EOS && unsaid > 0; ++i) {  // end-of-text damped after the slots (it may be one)
          const int64_t eos = eos_to_damp(ip, i, V);
          if (eos < 0) continue;
          scalar_t& out = row[eos * s1];
          out = static_cast<scalar_t>(static_cast<float>(out) - fp[F_EOS_DAMP]);
        }
      }
    });
  });
}

}  // namespace

// The argument lists equal FOCUS_LOGITS_SCHEMA / FOCUS_STATE_SCHEMA in focuskern/ops (a test compares them).
TORCH_LIBRARY_FRAGMENT(focuskern, m) {
  const std::string logits_args =
      "(Tensor(a!) logits, Tensor row_offsets, Tensor token_ids, Tensor token_bias, Tensor alpha, "
      "Tensor decay, Tensor step) -> ()";
  const std::string state_args = kFocusStateArgs;  // focus_layout.h, from focuskern/ops/layout.py
  for (const char* backend : {"cpp", "cuda"}) {
    m.def((std::string("focus_logits_") + backend + "_" + logits_args).c_str());
    m.def((std::string("focus_state_") + backend + "_" + state_args).c_str());
  }
}

TORCH_LIBRARY_IMPL(focuskern, CPU, m) {
  m.impl("focus_logits_cpp_", &focus_logits_cpu);
  m.impl("focus_state_cpp_", &focus_state_cpu);
}

}  // namespace focuskern
