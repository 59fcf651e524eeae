"""Random test inputs shared by several test files (all drawn from the seeded RNGs of conftest)."""
import math
import random

import torch

import focuskern as fk
from conftest import DEVICE


def random_case(B, V, *, max_k=24, blend=True, dtype=torch.float32, row_stride_pad=0, gen=None):
    """Random CSR batch with empty rows, duplicated ids, -inf bans and every decay kind (``gen=None``:
    the global generator, seeded by the ``seed`` fixture)."""
    base = torch.randn(B, V + row_stride_pad, generator=gen) * 4
    counts = torch.randint(0, max_k + 1, (B,), generator=gen)
    counts[torch.rand(B, generator=gen) < 0.2] = 0
    row_offsets = torch.zeros(B + 1, dtype=torch.int32)
    row_offsets[1:] = counts.cumsum(0)
    nnz = int(row_offsets[-1])
    ids = torch.randint(0, V, (nnz,), generator=gen, dtype=torch.int32)
    if nnz > 2:
        ids[1] = ids[0]  # a duplicate (same row unless row 0 holds one entry)
        ids[-1] = V - 1  # the last column
    bias = torch.randn(nnz, generator=gen) * 3
    bias[torch.rand(nnz, generator=gen) < 0.05] = -math.inf
    alpha = torch.rand(B, generator=gen) if blend else torch.zeros(B)
    alpha[torch.rand(B, generator=gen) < 0.3] = 0.0
    kinds = torch.randint(0, 6, (B,), generator=gen).float()
    decay = torch.stack([kinds, torch.rand(B, generator=gen) * 20 + 0.5, torch.rand(B, generator=gen)], 1)
    step = torch.randint(0, 40, (B,), generator=gen, dtype=torch.int32)
    logits = base.to(dtype)[:, :V] if row_stride_pad else base.to(dtype)
    args = [row_offsets, ids, bias, alpha, decay, step]
    return logits.to(DEVICE), [a.to(DEVICE) for a in args]


def random_spec(rng: random.Random, alphabet: int, **kw) -> fk.FocusSpec:
    """Entities with shared first tokens and prefix-overlapping variants over a small alphabet."""
    entities = []
    for _ in range(rng.randint(1, 5)):
        variants = []
        for _ in range(rng.randint(1, 3)):
            variants.append([rng.randrange(alphabet) for _ in range(rng.randint(1, 4))])
        if rng.random() < 0.3 and entities:  # a variant extending another entity's variant
            variants.append(list(entities[-1][0]) + [rng.randrange(alphabet)])
        entities.append(variants)
    kw.setdefault("bias", rng.choice([1.5, 2.0, 3.0]))
    kw.setdefault("continuation_bias", rng.choice([None, 0.5, 4.0]))
    kw.setdefault("mode", rng.choice(["phrase", "phrase", "tokens"]))
    kw.setdefault("satisfy", rng.choice(["once", "never"]))
    kw.setdefault("boost_starts_in_match", rng.random() < 0.5)
    kw.setdefault("decay", rng.choice([fk.Decay.constant(), fk.Decay.ramp(5, floor=0.2)]))
    # The budget policy: short budgets so that urgency and end-of-text damping happen within a test;
    # the end-of-text id sometimes an entity token too (the damping lands after the push).
    kw.setdefault("max_new_tokens", rng.choice([None, 6, 20]))
    kw.setdefault("slack", rng.choice([1.5, 4.0]))
    kw.setdefault("force", rng.choice([0.0, 5.0]))
    kw.setdefault("eos_damp", rng.choice([0.0, 7.0]))
    kw.setdefault("eos_token_id", rng.choice([None, alphabet + 1, rng.randrange(alphabet)]))
    return fk.FocusSpec(entities, **kw)


def next_token(rng, spec, gen, alphabet):
    """Half the time follow some variant, so matches (full and partial) actually happen."""
    if spec is not None and rng.random() < 0.6:
        variant = rng.choice(rng.choice(spec.entities))
        for n in range(min(len(gen), len(variant) - 1), 0, -1):
            if list(gen[-n:]) == list(variant[:n]):
                return variant[n]
        return variant[0]
    return rng.randrange(alphabet + 3)
