// The automaton compiler's native path (compile_cpu.cpp), called by module.cpp.
#pragma once
#include <cstdint>
#include <vector>

namespace focuskern {

// Node arrays (breadth-first numbering, children sorted by symbol; root 0 with symbol -1), the
// through/out lists as CSR, and the token edges sorted by (u, token): focuskern.automaton.Automaton.
struct Automaton {
  std::vector<int64_t> sym, child_lo, fail, through_off, out_off;
  std::vector<int32_t> through, out, edge_u, edge_token, edge_child;  // the long ones (ids < 2^31)
  int64_t max_depth = 0;
};

// The trie of a vocabulary's tokens that token edges may carry (`tokens`; token k's symbols
// tok_sym[tok_off[k]:tok_off[k + 1]]): built once per token table, since it costs what the vocabulary
// does (16 ms for 49k tokens) while a small spec's automaton costs far less.
struct VocabTrie;
VocabTrie* build_vocab_trie(const int64_t* tok_off, const int64_t* tok_sym, const int64_t* tokens, int64_t n_tokens);
void free_vocab_trie(VocabTrie* vocab);

// Patterns sym[off[f]:off[f + 1]] of entities entity[f]; token edges against `vocab` (none without one).
Automaton build_automaton_cpu(const int64_t* sym, const int64_t* off, int64_t n_forms, const int64_t* entity,
                              const VocabTrie* vocab);

}  // namespace focuskern
