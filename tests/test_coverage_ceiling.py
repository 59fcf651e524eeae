"""benchmarks/coverage_ceiling.py: can any tokenization write an entity while avoiding banned n-grams."""
import itertools
import random

import pytest

from benchmarks.coverage_ceiling import VocabPieces, targets, writable


def ids(pieces, *texts):
    return tuple(pieces.index(t.encode()) for t in texts)


def test_digits_split_one_per_token_are_unwritable_once_the_prompt_holds_them():
    pieces = [b" June", b"June", b" ", b"1", b"4", b" Ju", b"ne", b","]
    vocab = VocabPieces(pieces)
    assert writable("June 14", vocab, set(), 2)
    # the prompt wrote " June", " ", "1", "4": every way to put "1" after a space is banned
    banned = {ids(pieces, " June", " "), ids(pieces, " ", "1"), ids(pieces, "1", "4")}
    assert not writable("June 14", vocab, banned, 2)
    assert writable("June 1", vocab, banned - {ids(pieces, " ", "1")}, 2)


def test_another_tokenization_or_an_earlier_start_escapes_a_prompt_bigram():
    pieces = [b" coral", b" reefs", b" reef", b"s", b" c", b"oral", b"Coral"]
    vocab = VocabPieces(pieces)
    banned = {ids(pieces, " coral", " reefs")}
    assert writable("coral reefs", vocab, banned, 2)  # " coral" " reef" "s"
    banned |= {ids(pieces, " reef", "s")}
    assert writable("coral reefs", vocab, banned, 2)  # " c" "oral" " reefs"
    banned |= {ids(pieces, "oral", " reefs"), ids(pieces, "Coral", " reefs")}
    assert not writable("coral reefs", vocab, banned, 2)
    assert writable("Coral reefs", vocab, banned - {ids(pieces, "Coral", " reefs")}, 2)


def test_boundaries_latin_needs_one_cjk_does_not():
    pieces = [b"xPar", b"is", b" Par", "我医".encode(), "疗".encode(), "医".encode()]
    vocab = VocabPieces(pieces)
    assert not writable("Paris", vocab, {ids(pieces, " Par", "is")}, 2)  # "xParis" does not say it
    assert writable("Paris", vocab, set(), 2)
    banned = {ids(pieces, "医", "疗")}
    assert writable("医疗", vocab, banned, 2)  # "我医" "疗": no boundary before a CJK character
    assert not writable("医疗", vocab, banned | {ids(pieces, "我医", "疗")}, 2)


def test_targets_as_written_and_any_case():
    assert targets("GitHub", True) == {"GitHub", "GitHubs", "GitHubes"}
    assert {"coral reefs", "Coral reefs", "Coral Reefs", "CORAL REEFS"} <= targets("coral reefs", False)
    assert targets("医疗", True) == {"医疗"}


def _brute(target, pieces, banned, max_len):
    """Some chain of at most max_len tokens, each overlapping the occurrence, no banned bigram."""
    word = lambda ch: ch.isalnum()  # noqa: E731
    for n in range(1, max_len + 1):
        for chain in itertools.product(range(len(pieces)), repeat=n):
            if any(g in banned for g in zip(chain, chain[1:])):
                continue
            text = b"".join(pieces[t] for t in chain).decode()
            first, last = len(pieces[chain[0]]), len(text) - len(pieces[chain[-1]])
            for s in range(first):
                e = s + len(target)
                if text[s:e] != target or not last < e <= len(text):
                    continue
                if (s == 0 or not word(text[s - 1])) and (e == len(text) or not word(text[e])):
                    return True
    return False


@pytest.mark.parametrize("trial", range(30))
def test_matches_a_brute_force_search_on_random_vocabularies(trial):
    seed = random.randrange(2**31)
    print("seed", seed)
    rng = random.Random(seed)
    pieces = list({"".join(rng.choice("ab ") for _ in range(rng.randint(1, 3))).encode() for _ in range(9)})
    pieces += [b"a", b"b", b" "]
    pieces = list(dict.fromkeys(pieces))
    banned = {(rng.randrange(len(pieces)), rng.randrange(len(pieces))) for _ in range(rng.randint(0, 40))}
    target = rng.choice(["ab", "ab b", "a ba", "bab"])
    assert writable(target, VocabPieces(pieces), banned, 2) == _brute(target, pieces, banned, len(target))
