"""Large foci compiled in the build process (``focuskern.vllm.build``, issue 23): the same programs as
compiled in the engine's process, errors carried back by name, the process gone with its engine, and
the worker thread's fallback where it cannot run.  No vLLM needed."""
import logging
import os
import pickle
import random
import subprocess
import sys
import time

import pytest
import torch

import focuskern as fk
from cases import next_token, random_spec
from focuskern.vllm import rows as rows_module
from focuskern.vllm.build import BuildProcess, BuildProcessError, portable
from focuskern.vllm.rows import BatchFocus

ALPHABET = 9
VOCAB = ALPHABET + 3
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def same_state(a: fk.FocusState, b: fk.FocusState, rng: random.Random, alphabet: int) -> None:
    """Equal device tables, and equal boosts while both rows follow the same random tokens."""
    for name in a.programs.tables._fields:
        assert torch.equal(getattr(a.programs.tables, name), getattr(b.programs.tables, name)), name
    spec, said = a.spec(0), []
    for _ in range(12):
        ids = torch.tensor([said[-1] if said else -1], dtype=torch.int32)
        la, lb = (s.apply_(torch.zeros(1, a.vocab_size), ids, hold=ids < 0) for s in (a, b))
        assert torch.equal(la, lb)
        said.append(next_token(rng, spec, said, alphabet))


def test_programs_compiled_in_the_process_are_the_engines(seed):
    rng = random.Random(seed)
    process = BuildProcess(None, VOCAB)
    try:
        for _ in range(20):
            spec = random_spec(rng, ALPHABET)
            here = fk.FocusState([spec], VOCAB, "cpu")
            there = fk.FocusState([None], VOCAB, "cpu")
            there.set_row(0, spec, process.compile(spec))
            same_state(there, here, rng, ALPHABET)
        with pytest.raises(ValueError, match=r"entities\[1\]: token id 12 is outside \[0, vocab_size=12\)"):
            process.compile(fk.FocusSpec([[[1, 2]], [[3, VOCAB]]]))
        assert process.compile(fk.FocusSpec([[[4]]])).n_entities == 1  # still answering after an error
    finally:
        process.close()
    assert process._proc.returncode == 0


@pytest.mark.model
def test_string_entities_with_the_models_tokenizer(seed, smollm2_dir):
    """English, Chinese, Japanese, digits and sentence starts, tokenized and compiled in the process
    with a pickled copy of the model's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    vocab = len(tokenizer)
    rng = random.Random(seed)
    words = ["healthcare", "東京タワー", "北京大学", "1984", "The harbour", "autonomous driving", "さくら", "3.14159"]
    process = BuildProcess(tokenizer, vocab)
    try:
        for variants in ("text", "spaced", "as_written"):
            spec = fk.FocusSpec(rng.sample(words, rng.randint(2, len(words))), bias=3.0, variants=variants)
            here = fk.FocusState([spec], vocab, "cpu", tokenizer)
            there = fk.FocusState([None], vocab, "cpu", tokenizer)
            there.set_row(0, spec, process.compile(spec))
            for name in here.programs.tables._fields:
                assert torch.equal(getattr(there.programs.tables, name), getattr(here.programs.tables, name)), name
    finally:
        process.close()


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="no SCHED_IDLE on this platform")
def test_the_process_compiles_at_idle_priority(seed):
    """Once it has its tokenizer, the build process compiles under ``SCHED_IDLE`` (only on CPU time
    nothing else wants), and still answers there."""
    rng = random.Random(seed)
    process = BuildProcess(None, VOCAB)
    try:
        spec = random_spec(rng, ALPHABET)
        process.compile(spec)
        assert os.sched_getscheduler(process._proc.pid) == os.SCHED_IDLE
        assert process.compile(spec).n_nodes == fk.FocusState([spec], VOCAB, "cpu").programs[0].program.n_nodes
    finally:
        process.close()


def test_the_process_ends_with_its_engine():
    """An engine process that ends without cleaning up (``os._exit``, as a killed one would): its build
    process sees its stdin close and exits."""
    code = ("import os; from focuskern.vllm.build import BuildProcess; p = BuildProcess(None, 12); "
            "print(p._proc.pid, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": ROOT})
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 120
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


class Tokenizer:
    """Stands for a transformers tokenizer class."""


def test_vllms_per_instance_tokenizer_class_is_not_sent():
    """vLLM subclasses the tokenizer per instance (a class in ``vllm.tokenizers``): the build process
    gets the instance as the class it was made from, so that unpickling it does not import vLLM."""
    cached = type("CachedTokenizer", (Tokenizer,), {"__module__": "vllm.tokenizers.hf"})
    wrapped = cached()
    wrapped.vocab = {"東京": 7}
    sent = pickle.dumps(portable(wrapped))
    assert b"vllm.tokenizers" not in sent and b"CachedTokenizer" not in sent
    back = pickle.loads(sent)
    assert type(back) is Tokenizer and back.vocab == {"東京": 7} and type(wrapped) is cached
    plain = Tokenizer()
    assert portable(plain) is plain


class Unpicklable:
    """A tokenizer-like object that cannot be sent to a process."""

    def __init__(self):
        self.encode = lambda text, add_special_tokens=False: [ord(c) % ALPHABET for c in text]


def test_batch_focus_builds_in_the_process_and_falls_back_to_the_thread(monkeypatch, caplog, seed):
    rng = random.Random(seed)
    monkeypatch.setattr(rows_module, "OFF_LOOP_ENTITIES", 0)
    spec = random_spec(rng, ALPHABET)
    focus = BatchFocus(VOCAB, "cpu")
    try:
        started = focus.start_builds().result(timeout=300)  # as the engine's processor does when it loads
        assert isinstance(started, BuildProcess)
        built = focus.build_later(spec).result(timeout=300)
        assert focus._process is started
        same_state(built, fk.FocusState([spec], VOCAB, "cpu"), rng, ALPHABET)
    finally:
        focus._process.close()
    with pytest.raises(BuildProcessError, match="cannot be sent"):
        BuildProcess(Unpicklable(), VOCAB)

    def cannot_start(tokenizer, vocab_size):
        raise BuildProcessError("the build process did not start (no such file)")
    monkeypatch.setattr(rows_module, "BuildProcess", cannot_start)
    fallback = BatchFocus(VOCAB, "cpu")
    with caplog.at_level(logging.WARNING, logger="focuskern.vllm"):
        built = fallback.build_later(spec).result(timeout=300)
    assert fallback._process is False and "compiled in the engine's process" in caplog.text
    same_state(built, fk.FocusState([spec], VOCAB, "cpu"), rng, ALPHABET)
