// Shared by the CPU and CUDA backends: the decay schedule and one row of the FocusState op (the byte
// walk of a token through the symbol automaton, the satisfied set, the value of a slot), written once
// for both.  Design: docs/text-tracking.md.
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

// The per-tokenizer table (focuskern.text.TokenTable): token t's symbols are sym[off[t]:off[t + 1]];
// byte_class[b] holds the BC_* flags of byte b.
struct TokenView {
  const int32_t* off;         // [n_tokens + 1]
  const int32_t* sym;         // [T]
  const int32_t* byte_class;  // [256]
  int64_t n_tokens;
};

// The op's last_tokens, int32 or int64 (one of the two pointers, or neither): read without narrowing,
// so an int64 id >= 2^31 cannot wrap into [0, V) -- the wrapper then needs no range pass per step.
struct TokenIds {
  const int32_t* i32;
  const int64_t* i64;

  FK_HOST_DEVICE bool given() const { return i32 != nullptr || i64 != nullptr; }
  FK_HOST_DEVICE int64_t operator[](int64_t r) const { return i64 != nullptr ? i64[r] : i32[r]; }
};

// A row's state word packs its program-local node and its text context (docs/text-tracking.md §2).
FK_HOST_DEVICE int32_t word_node(int32_t word) { return word & NODE_MASK; }
FK_HOST_DEVICE int32_t word_ctx(int32_t word) { return static_cast<int32_t>(static_cast<uint32_t>(word) >> CTX_SHIFT); }

// Push context pc = (ctx & SPACED ? 2 : 0) | (ctx & SENTENCE ? 1 : 0): which FIRST list starts apply.
FK_HOST_DEVICE int32_t push_context(int32_t ctx) {
  return ((ctx & CTX_SPACED) ? 2 : 0) | ((ctx & CTX_SENTENCE) ? 1 : 0);
}
static_assert(S_FIRST_HI0 == S_FIRST_LO0 + 1 && S_FIRST_LO1 == S_FIRST_LO0 + 2 && S_FIRST_LO3 == S_FIRST_LO0 + 6,
              "push_context indexes the slot's FIRST lists as FIRST_LO0 + 2 * pc");

// Context after a class-bearing byte of class c (a byte that is not a UTF-8 continuation).
FK_HOST_DEVICE int32_t next_ctx(int32_t ctx, int32_t c) {
  const bool sentence = (c & BC_SENT_END) || ((ctx & CTX_SENTENCE) && (c & BC_SENT_KEEP));
  return ((c & BC_WORD) ? CTX_PREV_WORD : 0) | ((c & BC_DIGIT) ? CTX_PREV_DIGIT : 0) |
         ((c & BC_OPEN) ? 0 : CTX_SPACED) | (sentence ? CTX_SENTENCE : 0);
}

// Child of node u on symbol s (binary search of u's child range, sorted by SYM), -1 if none.
FK_HOST_DEVICE int32_t child_on(const ProgramView& p, int32_t u, int32_t s) {
  const int32_t end = p.node_row(u)[N_CHILD_HI];
  int32_t lo = p.node_row(u)[N_CHILD_LO], hi = end;
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo) / 2;
    if (p.node_row(mid)[N_SYM] < s) lo = mid + 1; else hi = mid;
  }
  return lo < end && p.node_row(lo)[N_SYM] == s ? lo : -1;
}

// Aho-Corasick transition: follow fail links until a node has a child on s; the root if none does.
FK_HOST_DEVICE int32_t delta(const ProgramView& p, int32_t u, int32_t s) {
  for (;;) {
    const int32_t child = child_on(p, u, s);
    if (child >= 0) return child;
    if (u == 0) return 0;
    u = p.node_row(u)[N_FAIL];
  }
}

// Set the bits of the entities of the list [lo, hi) (one thread).
FK_HOST_DEVICE void mark_list(const int32_t* ents, int32_t lo, int32_t hi, int32_t* sat) {
  for (int32_t j = lo; j < hi; ++j) sat[ents[j] >> 5] |= 1 << (ents[j] & 31);
}

// One symbol of the walk: u <- delta(u, s), then the entities completed at u are said (satisfy="once").
FK_HOST_DEVICE int32_t feed_symbol(const ProgramView& p, int32_t u, int32_t s, bool once, int32_t* sat) {
  u = delta(p, u, s);
  if (once) mark_list(p.ents, p.node_row(u)[N_OUT_LO], p.node_row(u)[N_OUT_HI], sat);
  return u;
}

// Step 1 of the op for one row (one thread): feed token t (checked in [0, V) by the caller; an id past
// the token table has no symbols) to the row whose state word is `word`, return the new word.  Each
// class-bearing byte first inserts B (a word starts) and D (a digit run ended) as its class and the
// context say, then updates the context; every symbol is fed, so a match may end inside a token.
FK_HOST_DEVICE int32_t step_row(const ProgramView& p, const TokenView& tv, int32_t word, int32_t token, bool once,
                                int32_t* sat) {
  int32_t u = word_node(word), ctx = word_ctx(word);
  const int32_t lo = token < tv.n_tokens ? tv.off[token] : 0, hi = token < tv.n_tokens ? tv.off[token + 1] : 0;
  for (int32_t i = lo; i < hi; ++i) {
    const int32_t b = tv.sym[i];
    const int32_t c = static_cast<uint32_t>(b) < 256u ? tv.byte_class[b] : BC_CONT;  // symbols >= 256: class-less
    if (!(c & BC_CONT)) {
      if ((c & BC_WORD) && !(ctx & CTX_PREV_WORD)) u = feed_symbol(p, u, SYM_WORD_START, once, sat);
      if ((ctx & CTX_PREV_DIGIT) && !(c & BC_DIGIT)) u = feed_symbol(p, u, SYM_DIGITS_END, once, sat);
      ctx = next_ctx(ctx, c);
    }
    u = feed_symbol(p, u, b, once, sat);
  }
  return u | (ctx << CTX_SHIFT);
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

// Is closure entry c alive: does its child have an unsatisfied entity?
FK_HOST_DEVICE bool entry_alive(const ProgramView& p, int32_t c, const int32_t* sat) {
  const int32_t* child = p.node_row(p.clo_child(c));
  return any_unsatisfied(p.ents, child[N_THROUGH_LO], child[N_THROUGH_HI], sat);
}

// Is token a column of the row?  Tables built by hand may hold any id: no backend writes or reads
// a logit it did not check (issue 21).
FK_HOST_DEVICE bool in_vocab(int64_t token, int64_t V) { return token >= 0 && token < V; }

// Step 2a: is closure entry c banned -- its token's logit -inf before this step's writes (a bigram of
// the prompt under no_repeat_ngram_size=2, bad words)?  A token outside the row is never banned.
template <typename Logit>
FK_HOST_DEVICE bool banned_continuation(const ProgramView& p, int32_t c, const Logit* row, int64_t col_stride,
                                        int64_t V) {
  const int64_t token = p.slot_row(p.clo_slot(c))[S_TOKEN];
  return in_vocab(token, V) && static_cast<float>(row[token * col_stride]) == -INFINITY;
}

// Step 2a: can closure entry c still continue its attempt -- alive, its token in [0, V) and not banned?
template <typename Logit>
FK_HOST_DEVICE bool open_continuation(const ProgramView& p, int32_t c, const Logit* row, int64_t col_stride, int64_t V,
                                      const int32_t* sat) {
  const int64_t token = p.slot_row(p.clo_slot(c))[S_TOKEN];
  return in_vocab(token, V) && static_cast<float>(row[token * col_stride]) != -INFINITY && entry_alive(p, c, sat);
}

// Step 2a: is node u inside a character -- are its children UTF-8 continuation bytes?  The bytes
// written so far may begin any character that shares them (a lone lead byte begins thousands), so a
// banned continuation there aborts the attempt and gives nothing up.
FK_HOST_DEVICE bool mid_character(const ProgramView& p, const TokenView& tv, int32_t u) {
  const int32_t* row = p.node_row(u);
  if (row[N_CHILD_HI] <= row[N_CHILD_LO]) return false;
  const int32_t s = p.node_row(row[N_CHILD_LO])[N_SYM];
  return static_cast<uint32_t>(s) < 256u && (tv.byte_class[s] & BC_CONT) != 0;
}

// Is slot k a continuation of an open partial match at node u (an alive entry on slot k)?
FK_HOST_DEVICE bool is_continuation(const ProgramView& p, int32_t u, int32_t k, const int32_t* sat) {
  const int32_t hi = p.node_row(u)[N_CLO_HI];
  for (int32_t c = closure_lower_bound(p, u, k); c < hi && p.clo_slot(c) == k; ++c)
    if (entry_alive(p, c, sat)) return true;
  return false;
}

// Steps 2-3 for slot k at node u in push context pc: the value to add (times the strength), -inf for none.
FK_HOST_DEVICE float slot_value(const ProgramView& p, int32_t u, int32_t pc, int32_t k, const int32_t* sat,
                                bool phrase, bool starts, float bias, float cont_bias) {
  const int32_t* row = p.slot_row(k);
  float val = -INFINITY;
  if (starts && any_unsatisfied(p.ents, row[S_FIRST_LO0 + 2 * pc], row[S_FIRST_HI0 + 2 * pc], sat)) val = bias;
  if (phrase && is_continuation(p, u, k, sat)) val = val > cont_bias ? val : cont_bias;
  return val;
}

// End-of-text id i of a program to damp: EOSi if it lies in [0, V) and no earlier EOSj lists it
// (each id is damped once), else -1.
FK_HOST_DEVICE int64_t eos_to_damp(const int32_t* ip, int32_t i, int64_t V) {
  const int32_t e = ip[I_EOS0 + i];
  for (int32_t j = 0; j < i; ++j)
    if (ip[I_EOS0 + j] == e) return -1;
  return in_vocab(e, V) ? e : -1;
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
