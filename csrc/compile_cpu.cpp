// The automaton of a spec's patterns (trie, fail links, through/out lists, token edges): the native
// path of focuskern.automaton.build_automaton, the same arrays as its numpy version (the reference,
// used without the extension; tests/test_automaton.py checks them equal), in loops over nodes.
#include "compile_cpu.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <stdexcept>
#include <vector>

#include "focus_layout.h"

namespace focuskern {
namespace {

bool is_unit(int64_t s) { return s >= 0 && s != SYM_WORD_START && s != SYM_DIGITS_END; }

// One string to insert: symbols sym[pos:end] of `entity`; `node` and `sym` are the builder's.
struct Item {
  int64_t sym, entity, pos, end, node;
  bool operator<(const Item& o) const { return sym != o.sym ? sym < o.sym : entity < o.entity; }
};

// A trie numbered breadth-first with children sorted by symbol (root 0, symbol -1), and per node
// the sorted distinct entities of the strings ending at it and (with `through_lists`) through it.
struct Trie {
  std::vector<int64_t> sym{-1}, parent{0}, child_lo, through_off{0, 0}, through, ends_off{0, 0}, ends;
  int64_t max_depth = 0;

  // Depth by depth: the strings still alive at depth d, kept sorted by their node, are sorted by
  // (symbol, entity) within each node's run; each new (node, symbol) is the next node.  Nodes are
  // made in increasing order, so the lists come out in node order.
  Trie(std::vector<Item> alive, const int64_t* symbols, bool through_lists = true) {
    std::vector<Item> next;
    for (int64_t d = 0; !alive.empty(); ++d) {
      max_depth = d + 1;
      next.clear();
      for (auto& x : alive) x.sym = symbols[x.pos + d];
      for (size_t run = 0, i = 1; run < alive.size(); run = i++) {
        while (i < alive.size() && alive[i].node == alive[run].node) ++i;
        if (i - run > 1) std::sort(alive.begin() + run, alive.begin() + i);
        for (size_t j = run; j < i; ++j) {
          Item x = alive[j];
          if (j == run || x.sym != alive[j - 1].sym) {  // a new node
            sym.push_back(x.sym);
            parent.push_back(x.node);
            through_off.push_back(through_off.back());
            ends_off.push_back(ends_off.back());
          }
          if (through_lists) add(through_off, through, x.entity);
          x.node = static_cast<int64_t>(sym.size()) - 1;
          if (x.pos + d + 1 < x.end) {
            next.push_back(x);
          } else {
            add(ends_off, ends, x.entity);
          }
        }
      }
      std::swap(alive, next);
    }
    const int64_t n = static_cast<int64_t>(sym.size());
    child_lo.assign(n + 1, 0);
    for (int64_t v = 1; v < n; ++v) ++child_lo[parent[v] + 1];
    child_lo[0] = 1;
    for (int64_t v = 0; v < n; ++v) child_lo[v + 1] += child_lo[v];
  }

  // The child of v on symbol s at or after child index `from` (children sorted), or -1.
  int64_t child(int64_t v, int64_t s, int64_t from = 0) const {
    auto lo = sym.begin() + std::max(child_lo[v], from), hi = sym.begin() + child_lo[v + 1];
    auto it = std::lower_bound(lo, hi, s);
    return it != hi && *it == s ? it - sym.begin() : -1;
  }

 private:
  // Appends `e` to the last node's list unless it is already its last entry (entries come sorted).
  static void add(std::vector<int64_t>& off, std::vector<int64_t>& list, int64_t e) {
    if (off.back() == off.end()[-2] || list.back() != e) {
      list.push_back(e);
      ++off.back();
    }
  }
};

}  // namespace

// The tokens' trie, without through lists (the token edges need the ends only).
struct VocabTrie {
  Trie trie;
};

VocabTrie* build_vocab_trie(const int64_t* tok_off, const int64_t* tok_sym, const int64_t* tokens, int64_t n_tokens) {
  std::vector<Item> words;
  for (int64_t k = 0; k < n_tokens; ++k)
    if (tok_off[tokens[k] + 1] > tok_off[tokens[k]]) words.push_back({0, tokens[k], tok_off[tokens[k]], tok_off[tokens[k] + 1], 0});
  return new VocabTrie{Trie(std::move(words), tok_sym, false)};
}

void free_vocab_trie(VocabTrie* vocab) { delete vocab; }

Automaton build_automaton_cpu(const int64_t* sym, const int64_t* off, int64_t n_forms, const int64_t* entity,
                              const VocabTrie* vocab_trie) {
  std::vector<Item> items;
  for (int64_t f = 0; f < n_forms; ++f)
    if (off[f + 1] > off[f]) items.push_back({0, entity[f], off[f], off[f + 1], 0});
  Trie t(std::move(items), sym);
  Automaton a;
  const int64_t n = static_cast<int64_t>(t.sym.size());
  a.max_depth = t.max_depth;

  // fail(u): the parent's fail chain down to the first node with a child on u's symbol.
  a.fail.assign(n, 0);
  for (int64_t u = 1; u < n; ++u) {
    if (t.parent[u] == 0) continue;  // depth 1
    int64_t w = a.fail[t.parent[u]], found;
    while ((found = t.child(w, t.sym[u])) < 0 && w != 0) w = a.fail[w];
    a.fail[u] = std::max<int64_t>(found, 0);
  }

  // out(u) = ends(u) | out(fail(u)) (out(0) = ends(0)).
  a.out_off.assign(n + 1, 0);  // entities < 2^31 (int32 tables)
  a.out.reserve(t.ends.size());
  for (int64_t u = 0; u < n; ++u) {
    auto e_lo = t.ends.begin() + t.ends_off[u], e_hi = t.ends.begin() + t.ends_off[u + 1];
    const int64_t w = u == 0 ? 0 : a.fail[u], o_lo = a.out_off[w], o_hi = u == 0 ? 0 : a.out_off[w + 1];
    const size_t need = a.out.size() + (o_hi - o_lo) + (e_hi - e_lo);  // no reallocation below
    if (need > a.out.capacity()) a.out.reserve(std::max(need, 2 * a.out.capacity()));
    std::set_union(e_lo, e_hi, a.out.begin() + o_lo, a.out.begin() + o_hi, std::back_inserter(a.out));
    a.out_off[u + 1] = static_cast<int64_t>(a.out.size());
  }

  // Token edges: from every resting u != root, walk down the pattern trie and the vocabulary trie
  // together (B/D symbols pass in the pattern trie only); a node entered on a unit whose vocabulary
  // node ends tokens is their child.
  if (vocab_trie != nullptr) {
    const Trie& vocab = vocab_trie->trie;
    std::vector<std::pair<int64_t, int64_t>> stack, found;  // (pattern node, vocabulary node), (token, child)
    for (int64_t u = 1; u < n; ++u) {
      if (!is_unit(t.sym[u])) continue;
      found.clear();
      stack.assign(1, {u, 0});
      while (!stack.empty()) {
        auto [x, v] = stack.back();
        stack.pop_back();
        int64_t from = 0;  // x's unit children ascend: so do their vocabulary children
        for (int64_t c = t.child_lo[x]; c < t.child_lo[x + 1]; ++c) {
          if (!is_unit(t.sym[c])) {
            stack.emplace_back(c, v);
            continue;
          }
          const int64_t vc = vocab.child(v, t.sym[c], from);
          if (vc < 0) continue;
          from = vc + 1;
          for (int64_t k = vocab.ends_off[vc]; k < vocab.ends_off[vc + 1]; ++k) found.emplace_back(vocab.ends[k], c);
          stack.emplace_back(c, vc);
        }
      }
      std::sort(found.begin(), found.end());
      for (auto [token, c] : found) {
        a.edge_u.push_back(static_cast<int32_t>(u));
        a.edge_token.push_back(static_cast<int32_t>(token));
        a.edge_child.push_back(static_cast<int32_t>(c));
      }
    }
  }
  a.sym = std::move(t.sym);
  a.child_lo = std::move(t.child_lo);
  a.through_off = std::move(t.through_off);
  a.through.assign(t.through.begin(), t.through.end());
  return a;
}

}  // namespace focuskern
