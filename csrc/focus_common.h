// Shared by the CPU and CUDA backends: the decay schedule and the op schemas' column layouts.
// Formulas: focuskern/decay.py (strength) and focuskern/ops/focus_state.py (the FocusState op).
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define FK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FK_HOST_DEVICE inline
#endif

namespace focuskern {

// Columns of prog_f32 / prog_i32 (focuskern/ops/focus_state.py).
enum ProgF32 { F_BIAS = 0, F_CONT, F_ALPHA, F_KIND, F_HORIZON, F_FLOOR, F_WIDTH };
enum ProgI32 { I_NODE_BASE = 0, I_SLOT_BASE, I_N_SLOTS, I_PHRASE, I_ONCE, I_STARTS_IN_MATCH, I_WIDTH };

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

// Does the bitset `mask` (W words) hold an entity not in `sat`?
FK_HOST_DEVICE bool any_unsatisfied(const int32_t* mask, const int32_t* sat, int64_t words) {
  for (int64_t w = 0; w < words; ++w)
    if (mask[w] & ~sat[w]) return true;
  return false;
}

// Aho-Corasick step of a program from local node u on `token`: the program's slots hold its distinct
// token ids sorted; the node's closure entries (cslot, cchild) map a slot to the deepest child; a slot
// outside the closure restarts from the root's child on it, an unknown token at the root (0).
FK_HOST_DEVICE int32_t advance_node(int32_t u, int32_t token, const int32_t* slot_token, int32_t n_slots,
                                    const int32_t* slot_root_child, const int32_t* clo_slot,
                                    const int32_t* clo_child, int32_t clo_lo, int32_t clo_hi) {
  int32_t lo = 0, hi = n_slots;
  while (lo < hi) {
    const int32_t mid = (lo + hi) / 2;
    if (slot_token[mid] < token) lo = mid + 1; else hi = mid;
  }
  if (lo == n_slots || slot_token[lo] != token) return 0;
  for (int32_t c = clo_lo; c < clo_hi; ++c)
    if (clo_slot[c] == lo) return clo_child[c];
  return slot_root_child[lo];
}

}  // namespace focuskern
