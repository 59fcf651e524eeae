// Shared by the CPU and CUDA backends: the decay schedule and one row of the FocusState op (the
// automaton step, the satisfied set, the value of a slot), written once for both.
// Formulas: focuskern/decay.py (strength) and focuskern/ops/focus_state.py (the FocusState op).
#pragma once
#include <cmath>
#include <cstdint>

#include "focus_layout.h"

#if defined(__CUDACC__)
#define FK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FK_HOST_DEVICE inline
#endif

namespace focuskern {

// s = floor + (1 - floor) * f(t); decay = (kind, horizon, floor).
FK_HOST_DEVICE float decay_strength(const float* decay, int32_t step) {
  const float kind = decay[0], horizon = decay[1], floor_ = decay[2];
  const float t = static_cast<float>(step);
  const float ratio = t / (horizon > 0.f ? horizon : 1.f);
  float f = 1.f;
  if (kind == 1.f) f = fmaxf(1.f - ratio, 0.f);
  else if (kind == 2.f) f = exp2f(-ratio);
  else if (kind == 3.f) f = 0.5f * (1.f + cosf(3.14159265358979f * fminf(ratio, 1.f)));
  else if (kind == 4.f) f = t < horizon ? 1.f : 0.f;
  else if (kind == 5.f) f = fminf(ratio, 1.f);
  return floor_ + (1.f - floor_) * f;
}

// A FocusState program's view of the tables (columns: focus_layout.h, generated from
// focuskern/ops/layout.py).  Node, slot and closure indices are program-local; bounds of closure
// ranges and entity lists are global.
struct ProgramView {
  const int32_t* node;     // [N, N_WIDTH], this program's rows
  const int32_t* slot;     // [S, S_WIDTH], this program's rows
  const int32_t* closure;  // [E, C_WIDTH], all programs
  const int32_t* ents;     // [M], all programs
  int32_t n_slots;

  FK_HOST_DEVICE const int32_t* node_row(int32_t u) const { return node + static_cast<int64_t>(u) * N_WIDTH; }
  FK_HOST_DEVICE const int32_t* slot_row(int32_t k) const { return slot + static_cast<int64_t>(k) * S_WIDTH; }
  FK_HOST_DEVICE int32_t clo_slot(int32_t c) const { return closure[static_cast<int64_t>(c) * C_WIDTH + C_SLOT]; }
  FK_HOST_DEVICE int32_t clo_child(int32_t c) const { return closure[static_cast<int64_t>(c) * C_WIDTH + C_CHILD]; }
};

// The view of the program whose prog_i32 row is `ip`.
FK_HOST_DEVICE ProgramView program_view(const int32_t* ip, const int32_t* node, const int32_t* slot,
                                        const int32_t* closure, const int32_t* ents) {
  return {node + static_cast<int64_t>(ip[I_NODE_BASE]) * N_WIDTH, slot + static_cast<int64_t>(ip[I_SLOT_BASE]) * S_WIDTH,
          closure, ents, ip[I_N_SLOTS]};
}

// Does the entity list [lo, hi) hold an entity whose bit in `sat` is clear?
FK_HOST_DEVICE bool any_unsatisfied(const int32_t* ents, int32_t lo, int32_t hi, const int32_t* sat) {
  for (int32_t j = lo; j < hi; ++j)
    if (!((sat[ents[j] >> 5] >> (ents[j] & 31)) & 1)) return true;
  return false;
}

// Slot of `token` (binary search of the program's sorted slot tokens), -1 if it holds none.
FK_HOST_DEVICE int32_t find_slot(const ProgramView& p, int32_t token) {
  int32_t lo = 0, hi = p.n_slots;
  while (lo < hi) {
    const int32_t mid = (lo + hi) / 2;
    if (p.slot_row(mid)[S_TOKEN] < token) lo = mid + 1; else hi = mid;
  }
  return lo < p.n_slots && p.slot_row(lo)[S_TOKEN] == token ? lo : -1;
}

// First closure entry of node u with slot >= k (entries are sorted by slot, deepest first).
FK_HOST_DEVICE int32_t closure_lower_bound(const ProgramView& p, int32_t u, int32_t k) {
  int32_t lo = p.node_row(u)[N_CLO_LO], hi = p.node_row(u)[N_CLO_HI];
  while (lo < hi) {
    const int32_t mid = (lo + hi) / 2;
    if (p.clo_slot(mid) < k) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Aho-Corasick step from local node u on `token`: the deepest closure entry on its slot, else the
// root's child on it, else the root.
FK_HOST_DEVICE int32_t advance_node(const ProgramView& p, int32_t u, int32_t token) {
  const int32_t k = find_slot(p, token);
  if (k < 0) return 0;
  const int32_t c = closure_lower_bound(p, u, k);
  if (c < p.node_row(u)[N_CLO_HI] && p.clo_slot(c) == k) return p.clo_child(c);
  return p.slot_row(k)[S_ROOT_CHILD];
}

// Set the bits of the entities of the list [lo, hi) (one thread).
FK_HOST_DEVICE void mark_list(const int32_t* ents, int32_t lo, int32_t hi, int32_t* sat) {
  for (int32_t j = lo; j < hi; ++j) sat[ents[j] >> 5] |= 1 << (ents[j] & 31);
}

// Step 1 of the op for one row (one thread): advance on `token`, record the entities the new node
// completes (satisfy="once"), return the new node.
FK_HOST_DEVICE int32_t step_row(const ProgramView& p, int32_t u, int32_t token, bool once, int32_t* sat) {
  u = advance_node(p, u, token);
  if (once) mark_list(p.ents, p.node_row(u)[N_OUT_LO], p.node_row(u)[N_OUT_HI], sat);
  return u;
}

// Is closure entry c alive: does its child have an unsatisfied entity?
FK_HOST_DEVICE bool entry_alive(const ProgramView& p, int32_t c, const int32_t* sat) {
  const int32_t* child = p.node_row(p.clo_child(c));
  return any_unsatisfied(p.ents, child[N_THROUGH_LO], child[N_THROUGH_HI], sat);
}

// Step 2a for closure entry c of node u: a continuation whose logit is -inf (banned by the decoding:
// a bigram of the prompt under no_repeat_ngram_size=2, bad words) can never be said from here, so the
// entities through it are given up (their bits set, as if said).  No aliveness test: a dead entry's
// entities are all set already, so marking it changes nothing.  Reads the logit before any write.
template <typename Logit>
FK_HOST_DEVICE bool banned_continuation(const ProgramView& p, int32_t c, const Logit* row, int64_t col_stride) {
  const int64_t token = p.slot_row(p.clo_slot(c))[S_TOKEN];
  return static_cast<float>(row[token * col_stride]) == -INFINITY;
}

// Is slot k a continuation of an open partial match at node u (an alive entry on slot k)?
FK_HOST_DEVICE bool is_continuation(const ProgramView& p, int32_t u, int32_t k, const int32_t* sat) {
  const int32_t hi = p.node_row(u)[N_CLO_HI];
  for (int32_t c = closure_lower_bound(p, u, k); c < hi && p.clo_slot(c) == k; ++c)
    if (entry_alive(p, c, sat)) return true;
  return false;
}

// Steps 2-3 for slot k: the value to add (times the strength), -inf for none.
FK_HOST_DEVICE float slot_value(const ProgramView& p, int32_t u, int32_t k, const int32_t* sat, bool phrase,
                                bool starts, float bias, float cont_bias) {
  const int32_t* row = p.slot_row(k);
  float val = -INFINITY;
  if (starts && any_unsatisfied(p.ents, row[S_FIRST_LO], row[S_FIRST_HI], sat)) val = bias;
  if (phrase && is_continuation(p, u, k, sat)) val = val > cont_bias ? val : cont_bias;
  return val;
}

// Set bits of one 32-bit word.
FK_HOST_DEVICE int32_t popcount32(int32_t word) {
#if defined(__CUDA_ARCH__)
  return __popc(static_cast<unsigned>(word));
#else
  return __builtin_popcount(static_cast<unsigned>(word));
#endif
}

// Step 4 (the budget policy): the urgency in [0, 1] of a row with `unsaid` entities left after
// `step` tokens, u = clamp(1 - max(budget - step, 1) / (unsaid * slack), 0, 1); 0 without a budget.
FK_HOST_DEVICE float budget_urgency(const float* fp, int32_t step, int32_t unsaid) {
  const float budget = fp[F_BUDGET];
  if (!(budget > 0.f) || unsaid <= 0) return 0.f;
  const float left = fmaxf(budget - static_cast<float>(step), 1.f);
  return fminf(fmaxf(1.f - left / (static_cast<float>(unsaid) * fp[F_SLACK]), 0.f), 1.f);
}

}  // namespace focuskern
