#!/usr/bin/env python
"""Speed on paper: what each op of ``make gpu-report`` must move and compute, and its floors on H100/H200.

For every case the report's benchmarks run (their own argument parsers and case lists, with the
arguments of ``benchmarks/gpu_sizes.py``) this computes the bytes a minimal kernel must move, the FLOPs
it must do, its kernel launches and programs (the Triton launchers' own plans), and from them

* the bandwidth floor ``bytes / HBM bandwidth``, the compute floor ``FLOPs / peak`` (dense bf16 tensor
  cores for attention and the model's matmuls, FP32 CUDA cores for the elementwise logits ops) and the
  launch floor ``launches x LAUNCH_US``; the **floor** is the largest of the three;
* the **SM-share** estimate: the floor when a grid of ``p < SMs`` programs can draw only ``p / SMs`` of
  the bandwidth (one program per SM at most): where it exceeds the floor, the grid, not the memory,
  bounds the kernel.

Published peaks: H100 SXM 3.35 TB/s HBM3, 989 TFLOP/s dense bf16, 67 TFLOP/s FP32; H200 4.8 TB/s, the same
compute; 132 SMs each; a launch costs 3-5 us (the floor takes 3).  Scattered 4-byte accesses move whole
32-byte sectors.  ``python benchmarks/gpu_prediction.py --md docs/gpu-prediction.md`` writes the table;
``benchmarks/gpu_report.py`` puts the measured times beside it.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
import gpu_attention  # noqa: E402
import gpu_generate  # noqa: E402
import gpu_logits  # noqa: E402
import gpu_sizes  # noqa: E402
import gpu_state  # noqa: E402
from focuskern.ops import focus_attention_triton as fat  # noqa: E402
from focuskern.ops import focus_logits_triton  # noqa: E402

DEVICES = {  # name -> (HBM bytes/s, dense bf16 tensor FLOP/s, FP32 FLOP/s, SMs)
    "H100 SXM": (3.35e12, 989e12, 67e12, 132),
    "H200": (4.8e12, 989e12, 67e12, 132),
}
LAUNCH_US = 3.0
SECTOR = 32  # bytes moved by one scattered 4-byte (or smaller) access
ROW_TABLE_BYTES = 1024  # FocusState: a row's program, trie node, slot, closure and entity-list reads (estimate)
STATE_SLOTS = 20  # gpu_state.py's specs: 5 entities x 4 variants -> at most 20 first tokens boosted per row
LAYER_LAUNCHES = 20  # HF eager decoder layer: norms, 7 matmuls, rope, attention, activation, adds (estimate)


@dataclass
class Work:
    """One op call of a benchmark case: what it must move and do, and how it is launched."""

    op: str
    case: str
    bytes: float
    flops: float
    tensor: bool  # FLOPs on tensor cores (bf16) or FP32 CUDA cores
    launches: int
    programs: int | None  # grid size of the op's widest launch (None: not ours)
    match: dict = field(default_factory=dict)  # fields of the benchmark's result rows this predicts
    per: int = 1  # the measured time covers `per` units (generate: tokens of a step)

    def floors(self, device: str) -> dict:
        bw, tensor, fp32, sms = DEVICES[device]
        parts = {"bandwidth": self.bytes / bw * 1e6, "compute": self.flops / (tensor if self.tensor else fp32) * 1e6,
                 "launch": self.launches * LAUNCH_US}
        bound = max(parts, key=parts.get)
        share = self.bytes / (bw * min(1.0, self.programs / sms)) * 1e6 if self.programs else 0.0
        return {"floor_us": round(parts[bound], 2), "bound": bound,
                "sm_share_us": round(max(share, parts[bound]), 2)}


def logits_work(args) -> list[Work]:
    """focus_logits_ (one launch): alpha = 0 touches the listed entries (a sector read and written per
    entry, 8 bytes of id and bias), alpha > 0 also reads and writes every logit once; 24 bytes of row
    arguments per row."""
    elem = {"float32": 4, "float16": 2, "bfloat16": 2}[args.dtype]
    out = []
    for c in gpu_logits.build_cases(args):
        nnz = c.B * c.K
        dense = 2 * c.B * c.V * elem if c.alpha else 0
        splits = min(-(-4 * DEVICES["H100 SXM"][3] // c.B), -(-c.V // focus_logits_triton.BLOCK_V))
        out.append(Work("logits", c.name, dense + nnz * (2 * SECTOR + 8) + 24 * c.B, c.B * c.V if c.alpha else nnz,
                        False, 1, c.B * splits, dict(B=c.B, V=c.V, K=c.K, alpha=c.alpha)))
    return out


def state_work(args) -> list[Work]:
    """One FocusState.apply_ step (one launch, one program per row): the row's tables, its boosted logits
    (a sector each way), and with alpha > 0 every logit read and written (float32 logits)."""
    return [Work("state", f"B={B} V={args.vocab} alpha={alpha:g}",
                 B * (ROW_TABLE_BYTES + STATE_SLOTS * 2 * SECTOR + (8 * args.vocab if alpha else 0)),
                 B * (args.vocab if alpha else STATE_SLOTS), False, 1, B, dict(B=B, alpha=alpha))
            for alpha in args.alpha for B in args.batch]


def attention_work(args) -> list[Work]:
    """Every contender of gpu_attention.py per case: q, k, v, out once, plus the float32 key bias
    (``focus``), the int32 key groups and the mass (``focus_readout``, ``focus_target``) or the SDPA
    mask (``sdpa_mask``); FLOPs 4 B Hq D per visible (query, key) pair (``focus_target``: 6, two P.V;
    ``focus_readout``: + 2 x 16 per pair for the group sums; ``sdpa_mask``: every pair, no causal skip).
    Launches and programs of the focus contenders from the Triton launcher's own plan."""
    Hq, Hkv = args.heads
    D, elem = args.head_dim, 2
    cases = [("prefill", args.prefill_batch, L, L) for L in args.prefill]
    cases += [("decode", B, 1, Lk) for Lk in args.decode for B in args.decode_batch]
    out = []
    for kind, B, Lq, Lk in cases:
        sizes = gpu_attention.case_bytes(B, Hq, Hkv, Lq, Lk, D, elem)
        pairs = gpu_attention.causal_pairs(Lq, Lk) if kind == "prefill" else Lq * Lk
        base = sizes["min_bytes"] - 4 * B * Lk  # without the bias
        flops = 4 * B * Hq * D * pairs
        groups = 4 * B * Lk + 4 * B * Hq * Lq
        rows = {"focus": (base + 4 * B * Lk, flops, None), "focus_nobias": (base, flops, None),
                "focus_readout": (base + 4 * B * Lk + groups, flops + 2 * 16 * B * Hq * pairs, True),
                "focus_target": (base + 4 * B * Lk + groups, flops * 3 // 2, False),
                "sdpa_flash": (base, flops, "other"), "flex": (base + 4 * B * Lk, flops, "other"),
                "sdpa_mask": (base + sizes["mask_bytes"], 4 * B * Hq * D * Lq * Lk, "other")}
        name = f"{kind} B={B} Lq={Lq} Lk={Lk}"
        for contender, (nbytes, nflops, mass) in rows.items():
            launches, programs = 1, None
            if mass != "other":
                p = fat.plan((B, Hq, Lq, D), Hkv, Lk, elem, DEVICES["H100 SXM"][3], False, mass is not None,
                             1 if mass is not None else 0, bool(mass), contender == "focus_target")
                launches, programs = 1 + (p.splits > 1) + p.stats, p.row_blocks * B * Hkv * p.splits
            out.append(Work("attention", f"{name} {contender}", nbytes, nflops, True, launches, programs,
                            dict(kind=kind, B=B, Lq=Lq, Lk=Lk, contender=contender)))
    return out


def model_shape(name: str) -> dict:
    """Decoder parameter count per layer, LM head, KV width and heads of a gpu_generate.py config."""
    shape = gpu_generate.CONFIGS[name][1]
    h, heads = shape["hidden_size"], shape["num_attention_heads"]
    kv = shape["num_key_value_heads"] * h // heads
    layer = 2 * h * h + 2 * h * kv + 3 * h * shape["intermediate_size"]
    return dict(layer=layer, head=shape["vocab_size"] * h, kv=kv, heads=heads, head_dim=h // heads)


def generate_work(args) -> list[Work]:
    """HF generate with bf16 weights: a decode step reads every layer's weights and the LM head once plus
    the KV cache, and does 2 FLOPs per weight per row; ``LAYER_LAUNCHES`` kernels per layer.  The
    processor adds one FocusState step (alpha = 0).  Long prompts: the prefill's matmuls and causal
    attention (logits of the last position only), then ``long_new`` steps."""
    out = []
    for name in args.models:
        m = model_shape(name)
        weights = args.layers * m["layer"] + m["head"]

        def step(B: int, ctx: int) -> tuple[float, float]:
            kv_bytes = 2 * args.layers * B * ctx * m["kv"] * 2
            attn = 4 * B * args.layers * m["heads"] * m["head_dim"] * ctx
            return 2 * weights + kv_bytes, 2 * B * weights + attn

        launches = args.layers * LAYER_LAUNCHES + 2
        for B in args.batch:
            nbytes, flops = step(B, args.prompt + args.new_tokens // 2)
            out.append(Work("generate", f"{name} decode step B={B}", nbytes, flops, True, launches, None,
                            dict(model=name, batch=B, column="plain"), per=B))
            out.append(Work("generate", f"{name} + processor (one state step) B={B}",
                            B * (ROW_TABLE_BYTES + 2 * SECTOR * STATE_SLOTS), B * STATE_SLOTS, False, 1, B,
                            dict(model=name, batch=B, column="processor"), per=B))
        for L in args.long_prompt:
            prefill_flops = 2 * L * args.layers * m["layer"] + 2 * m["head"] \
                + 4 * args.layers * m["heads"] * m["head_dim"] * L * (L + 1) // 2
            nbytes, flops = step(1, L + args.long_new // 2)
            out.append(Work("generate", f"{name} prompt {L} + {args.long_new} new tokens",
                            2 * weights + args.long_new * nbytes, prefill_flops + args.long_new * flops, True,
                            (1 + args.long_new) * launches, None, dict(model=name, prompt=L, column="long")))
    return out


def predictions() -> list[Work]:
    return (logits_work(gpu_logits.parse_args(gpu_sizes.LOGITS)) + state_work(gpu_state.parse_args(gpu_sizes.STATE))
            + attention_work(gpu_attention.parse_args(gpu_sizes.ATTENTION))
            + generate_work(gpu_generate.parse_args(gpu_sizes.GENERATE)))


def fmt(x: float) -> str:
    return f"{x:.3g}"


def table(works: list[Work], devices=tuple(DEVICES), measured: dict | None = None) -> list[str]:
    """Markdown rows: one per work, floors per device, then the measured column (µs) where given,
    keyed by the work's case."""
    head = ["op", "case", "bytes", "FLOPs", "launches", "programs"]
    for d in devices:
        head += [f"{d} floor µs (bound)", f"{d} SM-share µs"]
    head += ["measured µs", "measured / floor"] if measured is not None else [f"measured {d} µs" for d in devices]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for w in works:
        cells = [w.op, w.case, fmt(w.bytes), fmt(w.flops), str(w.launches), str(w.programs or "-")]
        for d in devices:
            f = w.floors(d)
            cells += [f"{f['floor_us']:g} ({f['bound']})", f"{f['sm_share_us']:g}"]
        if measured is None:
            cells += [""] * len(devices)
        else:
            got = measured.get(w.case)
            ratio = got / w.floors(devices[0])["floor_us"] if got else None
            cells += [fmt(got) if got else "-", f"{ratio:.2f}" if ratio else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def document(works: list[Work]) -> str:
    doc = __doc__.split("\n\n", 1)[1].strip()
    return "\n".join(["# GPU speed on paper: predicted floors for `make gpu-report`", "",
                      "Written by `python benchmarks/gpu_prediction.py --md docs/gpu-prediction.md` (do not edit by "
                      "hand); the measured columns are filled by `make gpu-report` in its own markdown "
                      "(`gpu_report_<device>.md`, section *Measured against the predicted floors*).", "", doc, "",
                      "Estimates beyond the published peaks: a FocusState row reads about "
                      f"{ROW_TABLE_BYTES} bytes of tables and boosts at most {STATE_SLOTS} logits; an HF eager "
                      f"decoder layer launches about {LAYER_LAUNCHES} kernels; generate rows are per decode step "
                      "(measured: `B / tokens per s`), or the whole call for long prompts.", "",
                      "What to read first: the logits and state steps at alpha = 0 are launch-bound at every "
                      "size (their bytes take well under a microsecond), so their measured time is launch "
                      "overhead; a blended FocusState row runs in one program, so below 132 rows the grid "
                      "(SM-share column), not HBM, bounds it; the grouped attention calls (`focus_readout`, "
                      "`focus_target`) take no split-KV path, so a B = 1 decode runs 8 programs and its "
                      "SM-share estimate is 16x its floor; prefill is compute-bound, `focus_target` at 1.5x "
                      "the FLOPs of `focus` (two P.V products).", "",
                      *table(works), ""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--md", type=Path, default=None, help="write the markdown table here")
    p.add_argument("--json", type=Path, default=None, help="write the rows (with floors) here")
    args = p.parse_args(argv)
    works = predictions()
    if args.md:
        args.md.write_text(document(works))
    if args.json:
        rows = [{**asdict(w), **{d: w.floors(d) for d in DEVICES}} for w in works]
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if not (args.md or args.json):
        print("\n".join(table(works)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
