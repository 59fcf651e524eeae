"""Float64 ground truth written straight from the formulas of the contract (independent of the package)."""
import math
from typing import Optional, Sequence

import torch

import focuskern as fk


def decay_f64(kind: float, horizon: float, floor: float, t: int) -> float:
    if kind == 0:
        f = 1.0
    elif kind == 1:
        f = max(0.0, 1.0 - t / horizon)
    elif kind == 2:
        f = 0.5 ** (t / horizon)
    elif kind == 3:
        f = 0.5 * (1.0 + math.cos(math.pi * min(t, horizon) / horizon))
    elif kind == 4:
        f = 1.0 if t < horizon else 0.0
    else:
        f = min(1.0, t / horizon)
    return floor + (1.0 - floor) * f


def focus_logits_f64(x, row_offsets, token_ids, token_bias, alpha, decay, step):
    """out[r,v] = (1 - s_r a_r) x[r,v] + s_r sum_j bias_j  (a -inf entry bans v whatever s_r is)."""
    out = x.double().clone()
    for r in range(x.shape[0]):
        s = decay_f64(*decay[r].tolist(), int(step[r]))
        out[r] *= 1.0 - s * float(alpha[r])
        for j in range(int(row_offsets[r]), int(row_offsets[r + 1])):
            v, b = int(token_ids[j]), float(token_bias[j])
            out[r, v] = -math.inf if b == -math.inf else out[r, v] + s * b
    return out


def assert_close_to_f64(out, expected, magnitude, rtol, atol):
    """``|out - expected| <= rtol * magnitude + atol`` where ``magnitude`` bounds the summed terms
    (``(1 - s*a)|x| + s*sum|b|``): rounding happens at the terms' scale, so a result that cancels to
    near zero can only be as exact as its largest term.  Infinite entries must match exactly."""
    out = out.detach().cpu().double()
    inf = torch.isinf(expected)
    assert torch.equal(torch.isinf(out), inf) and torch.equal(out[inf], expected[inf]), "bans (-inf) differ"
    err = (out - expected).abs()[~inf]
    bound = rtol * magnitude[~inf] + atol
    worst = int((err - bound).argmax()) if err.numel() else 0
    assert bool((err <= bound).all()), f"error {float(err[worst]):.3g} > bound {float(bound[worst]):.3g}"


def occurs(seq, gen):
    n = len(seq)
    return any(tuple(gen[i:i + n]) == seq for i in range(len(gen) - n + 1))


def brute_boosts(spec: fk.FocusSpec, gen: list[int], tokenizer=None) -> dict[int, float]:
    """The contract (docs/text-tracking.md) read literally for token-id entities without a tokenizer
    (every token one opaque symbol): what the op adds to each id of a zero logits row after ``gen``.
    The row's node ``u`` is the longest suffix of ``gen`` that is a prefix of a variant; a continuation
    is the next token of a variant of an unsaid entity extending ``u`` (``u`` not empty); starts are
    the first tokens of unsaid entities' variants (tokens mode: all their tokens)."""
    variants = spec.token_variants(tokenizer)
    satisfied = {e for e, vs in enumerate(variants) if spec.satisfy == "once" and any(occurs(v, gen) for v in vs)}
    open_variants = [v for e, vs in enumerate(variants) if e not in satisfied for v in vs]
    if spec.mode == "tokens":
        values = {t: spec.bias for v in open_variants for t in v}
    else:
        prefixes = {v[:i] for vs in variants for v in vs for i in range(len(v) + 1)}
        u = next(tuple(gen[i:]) for i in range(len(gen) + 1) if tuple(gen[i:]) in prefixes)
        cont = {v[len(u)]: spec.effective_continuation_bias for v in open_variants
                if u and len(v) > len(u) and v[:len(u)] == u}
        values = {} if (cont and not spec.boost_starts_in_match) else {v[0]: spec.bias for v in open_variants}
        for t, b in cont.items():
            values[t] = max(values.get(t, -math.inf), b)
    s = decay_f64(*spec.decay.as_triple(), len(gen))
    unsaid = len(variants) - len(satisfied) if spec.satisfy == "once" and spec.max_new_tokens else 0
    urgency = min(max(1 - max(spec.max_new_tokens - len(gen), 1) / (unsaid * spec.slack), 0), 1) if unsaid else 0
    out = {t: s * v + urgency * spec.force for t, v in values.items()}
    eos = spec.eos_token_ids or (getattr(tokenizer, "eos_token_id", None),)
    for e in dict.fromkeys(e for e in eos if e is not None):
        if unsaid:
            out[e] = out.get(e, 0.0) - spec.eos_damp
    return {t: v for t, v in out.items() if v != 0}


def pasta_eq2_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, emphasized: torch.Tensor,
                        alpha: float, heads: Sequence[int], *, causal: bool = True,
                        key_start: Optional[torch.Tensor] = None) -> torch.Tensor:
    """PASTA's Eq. 2 computed eagerly (float64): post-softmax weights of non-emphasized keys times
    ``alpha`` in the chosen heads, then each row renormalized.  For tests and for reading.

    Parameters
    ----------
    q : [B, Hq, Lq, D]; k, v : [B, Hkv, Lk, D].
    emphasized : [B, Lk] bool.
    alpha : scaling coefficient.
    heads : query heads that are steered.
    causal, key_start : as in ``focus_attention``.

    Returns
    -------
    out : [B, Hq, Lq, D] float64.
    """
    B, Hq, Lq, D = q.shape
    Lk = k.shape[2]
    G = Hq // k.shape[1]
    kk = k.double().repeat_interleave(G, dim=1)
    vv = v.double().repeat_interleave(G, dim=1)
    s = q.double() @ kk.transpose(-1, -2) / math.sqrt(D)
    j = torch.arange(Lk)
    visible = torch.ones(B, 1, Lq, Lk, dtype=torch.bool)
    if causal:
        visible = visible & (j[None, :] <= (Lk - Lq) + torch.arange(Lq)[:, None])
    if key_start is not None:
        visible = visible & (j >= key_start.long().view(B, 1, 1, 1))
    a = torch.softmax(s.masked_fill(~visible, float("-inf")), dim=-1).nan_to_num(0.0)
    scale = torch.ones(B, Hq, 1, Lk, dtype=torch.float64)
    for h in heads:
        scale[:, h, 0] = torch.where(emphasized, 1.0, float(alpha))
    a = a * scale
    a = a / a.sum(-1, keepdim=True).clamp_min(1e-300)
    return a @ vv


def attention_mass_f64(q, k, v, key_bias=None, head_scale=None, *, causal=True, sm_scale=None, key_start=None,
                       key_group=None, num_groups=1, target_mass=None, max_target_bias=20.0):
    """(out, magnitude, mass) in float64, from the contract of ``focus_attention`` read literally:
    ``s = sm_scale q.k + head_scale[h] key_bias[b, j]`` over visible j (query i at Lk - Lq + i, keys
    j >= key_start[b]); ``mu`` = softmax share of group 0; ``delta = min(cap, max(0, logit(p_h) -
    logit(mu)))`` (0 where mu = 0 or p_h = 0) added to group 0's scores; ``mass[g]`` = the steered
    softmax summed over group g; magnitude = sum_j w_j |v_j| (the scale of the output's rounding)."""
    q, k, v = (t.detach().cpu().double() for t in (q, k, v))
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    G = Hq // Hkv
    scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    out = torch.zeros(B, Hq, Lq, D, dtype=torch.float64)
    mag = torch.zeros_like(out)
    mass = torch.zeros(B, Hq, Lq, num_groups, dtype=torch.float64)
    for b in range(B):
        grp = None if key_group is None else [int(g) for g in key_group[b]]
        for h in range(Hq):
            for i in range(Lq):
                vis = [j for j in range(Lk) if j >= (0 if key_start is None else int(key_start[b]))
                       and (not causal or j <= Lk - Lq + i)]
                if not vis:
                    continue
                s = {}
                for j in vis:
                    s[j] = scale * float(q[b, h, i] @ k[b, h // G, j])
                    if key_bias is not None:
                        s[j] += (1.0 if head_scale is None else float(head_scale[h])) * float(key_bias[b, j])
                top = max(s.values())
                w = {j: math.exp(x - top) for j, x in s.items()}
                if target_mass is not None and float(target_mass[h]) > 0:
                    total = sum(w.values())
                    mu = sum(x for j, x in w.items() if grp[j] == 0) / total
                    p = float(target_mass[h])
                    if 0 < mu < 1:
                        delta = min(max_target_bias, max(0.0, math.log(p / (1 - p)) - math.log(mu / (1 - mu))))
                        w = {j: x * math.exp(delta) if grp[j] == 0 else x for j, x in w.items()}
                total = sum(w.values())
                for j, x in w.items():
                    out[b, h, i] += x / total * v[b, h // G, j]
                    mag[b, h, i] += x / total * v[b, h // G, j].abs()
                    if grp is not None and grp[j] >= 0:
                        mass[b, h, i, grp[j]] += x / total
    return out, mag, mass


# ---------------------------------------------------------------- text (docs/text-tracking.md)
def byte_walk(data: bytes, ctx: int = 8) -> tuple[list[int], int]:
    """The symbol stream of ``data`` fed from context ``ctx`` (section 2), and the context after."""
    from focuskern.ops.layout import BYTE_CLASS
    out = []
    for b in data:
        c = BYTE_CLASS[b]
        if not c & 4:  # BC_CONT: no class event
            if c & 1 and not ctx & 1:
                out.append(256)
            if ctx & 2 and not c & 2:
                out.append(257)
            sentence = c & 16 or (ctx & 8 and c & 32)
            ctx = (1 if c & 1 else 0) | (2 if c & 2 else 0) | (0 if c & 8 else 4) | (8 if sentence else 0)
        out.append(b)
    return out, ctx


def counted_forms(entity: str) -> list[str]:
    e = entity.strip()
    flipped = e[:1].swapcase()
    return list(dict.fromkeys([e, flipped + e[1:] if len(flipped) == 1 else e]))


def said_in_text(entities: list[str], data: bytes) -> set[int]:
    """Entities whose text occurs in ``data`` by the rules read directly: a counted form (as written,
    first letter's case flipped) at byte ``i`` that starts with a letter or digit must not follow one
    (the previous byte that is not a UTF-8 continuation byte), and one that ends in a digit must be
    followed by a byte that is neither a digit nor a continuation byte (later in ``data``)."""
    from focuskern.ops.layout import BYTE_CLASS
    bearing = [i for i, b in enumerate(data) if not BYTE_CLASS[b] & 4]
    said = set()
    for e, entity in enumerate(entities):
        for form in counted_forms(entity):
            f = form.encode()
            start = 0
            while (i := data.find(f, start)) >= 0:
                start = i + 1
                prev = [j for j in bearing if j < i]
                if BYTE_CLASS[f[0]] & 1 and prev and BYTE_CLASS[data[prev[-1]]] & 1:
                    continue
                last_digit = [b for b in f if not BYTE_CLASS[b] & 4][-1:]
                if last_digit and BYTE_CLASS[last_digit[0]] & 2:
                    after = [j for j in bearing if j >= i + len(f)]
                    if not after or BYTE_CLASS[data[after[0]]] & 2:
                        continue
                said.add(e)
    return said


def pushed_forms(entity: str) -> list[str]:
    """Per push context pc = 2 * spaced + sentence: the form pushed (section 4)."""
    e = entity.strip()
    upper = e[:1].upper()
    cap = upper + e[1:] if len(upper) == 1 else e
    space = "" if len(e[:1].encode()) >= 3 else " "
    return [e, cap, space + e, space + cap]


def text_boosts(entities: list[str], data: bytes, said: set[int], vocab: dict[bytes, list[int]],
                spaces: dict[bytes, list[int]], bias: float, cont: float) -> dict[int, float]:
    """What a row pushes after the text ``data`` (constant strength 1, no budget, no bans): the node is
    the longest suffix of the text's symbol stream that is a prefix of a pattern; continuations are the
    tokens spelling the next bytes of a pattern of an unsaid entity from there (not from the root or
    from a node entered on B/D); without one, starts: the longest tokens spelling a prefix of an unsaid
    entity's form for the row's push context (the shortest where its first character is 3-4 bytes and no
    token holds that whole character).
    ``vocab``: bytes -> tokens (not whitespace-only); ``spaces``: one whitespace byte -> its tokens,
    pushed where no ``vocab`` token continues a pattern with that byte."""
    from focuskern.ops.layout import BYTE_CLASS

    def pattern(form: bytes) -> list[int]:
        last = [b for b in form if not BYTE_CLASS[b] & 4][-1:]
        return byte_walk(form, 0)[0] + ([257] if last and BYTE_CLASS[last[0]] & 2 else [])
    pats = [(e, pattern(f.encode())) for e, entity in enumerate(entities) for f in counted_forms(entity)]
    stream, ctx = byte_walk(data)
    prefixes = {tuple(p[:i]) for _, p in pats for i in range(len(p) + 1)}
    u = next(tuple(stream[i:]) for i in range(len(stream) + 1) if tuple(stream[i:]) in prefixes)
    values: dict[int, float] = {}
    if u and u[-1] < 256:
        rests = [(e, bytes(s for s in p[len(u):] if s < 256)) for e, p in pats if tuple(p[:len(u)]) == u]
        continued = {rest[:1] for _, rest in rests if any(rest[:n] in vocab for n in range(1, len(rest) + 1))}
        for e, rest in rests:
            if e not in said:
                for n in range(1, len(rest) + 1):
                    for t in vocab.get(rest[:n], ()):
                        values[t] = cont
                if rest[:1] not in continued:  # only a lone whitespace token goes on (" June" " " "1")
                    for t in spaces.get(rest[:1], ()):
                        values[t] = cont
    if not values:
        pc = (2 if ctx & 4 else 0) | (1 if ctx & 8 else 0)
        for e, entity in enumerate(entities):
            if e not in said:
                form = pushed_forms(entity)[pc].encode()
                n = next((n for n in range(len(form), 0, -1) if form[:n] in vocab), 0)
                if form[0] >= 0xE0 and n < (4 if form[0] >= 0xF0 else 3):  # a wide character written split
                    n = next((n for n in range(1, len(form) + 1) if form[:n] in vocab), 0)
                for t in vocab.get(form[:n], ()):  # the longest start token(s); the shortest for a split wide character
                    values[t] = bias
    return values
