#!/usr/bin/env python
"""GPU timings of ``focus_attention`` (Triton) against the other ways to add a per-key bias to attention.

Run on a CUDA machine from the repository root::

    python benchmarks/gpu_attention.py            # writes benchmarks/results/gpu_attention_<device>.json

Cases (bf16, D = 128, Hq = 32 query heads over Hkv = 8 KV heads by default):

* prefill: causal, Lq = Lk = L for L in {1k, 2k, 4k, 8k, 16k}, B = 1 (``--prefill-batch``);
* decode: Lq = 1 over Lk in {4k, 16k, 32k, 64k, 128k} keys, B in {1, 8, 64} (cases whose K/V, masks and
  outputs need more than ``--max-gib`` are skipped and listed as such).

Contenders (every one computes ``softmax(q k^T / sqrt(D) + bias[b, j] + causal) v`` except the no-bias
references):

* ``focus``: ``focus_attention(q, k, v, key_bias, backend="triton", validate=False)``;
* ``focus_nobias``: the same kernel without ``key_bias`` (the bias overhead is ``focus / focus_nobias``);
* ``focus_readout``: ``focus`` plus ``return_mass`` of one key group (the biased keys); issue 13's target
  is ``focus_readout / focus <= 1.15``;
* ``focus_target``: ``focus`` plus ``target_mass = 0.3`` on every head for that group (split running sums);
  target ``focus_target / focus <= 1.3`` (grouped calls run without KV splits: see the kernel's docstring);
* ``sdpa_flash``: ``scaled_dot_product_attention`` restricted to the flash backend, no bias;
* ``sdpa_mask``: SDPA with a float ``[B, 1, Lq, Lk]`` mask holding the bias and ``-inf`` above the
  diagonal (efficient/math backends: the flash backend takes no mask);
* ``flex``: ``torch.compile``-d FlexAttention with ``score_mod = s + bias[b, kv]`` (and a causal block
  mask for prefill).

Reported per case and contender: device time (``triton.testing.do_bench`` median, ms), prefill TFLOP/s
(``2 * 2 * B * Hq * D * (causal pairs)``), decode GB/s (bytes of K, V, q, out and the bias, read or
written once) and, for decode, that as a percentage of the copy bandwidth (a 1 GiB ``copy_``); plus the
largest difference of each contender's output from ``focus``.  Targets of issue 3 (H100): bias
overhead <= 5%, >= 1.0x FlexAttention, >= 2x SDPA float mask, decode >= 70% of copy bandwidth for
Lk >= 16k.  Nothing touches CUDA at import time; without a GPU the script exits with a message.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from focuskern.metadata import run_metadata

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CONTENDERS = ("focus", "focus_nobias", "focus_readout", "focus_target", "sdpa_flash", "sdpa_mask", "flex")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time focus_attention and other biased attentions on a CUDA GPU.")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON file (default: benchmarks/results/gpu_attention_<device>.json)")
    p.add_argument("--prefill", type=int, nargs="*", default=[1024, 2048, 4096, 8192, 16384], metavar="L")
    p.add_argument("--prefill-batch", type=int, default=1)
    p.add_argument("--decode", type=int, nargs="*", default=[4096, 16384, 32768, 65536, 131072], metavar="LK")
    p.add_argument("--decode-batch", type=int, nargs="+", default=[1, 8, 64], metavar="B")
    p.add_argument("--heads", type=int, nargs=2, default=[32, 8], metavar=("HQ", "HKV"))
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16")
    p.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    p.add_argument("--max-gib", type=float, default=40.0, help="skip cases whose tensors need more")
    p.add_argument("--warmup-ms", type=int, default=25)
    p.add_argument("--rep-ms", type=int, default=100)
    return p.parse_args(argv)


def case_bytes(B, Hq, Hkv, Lq, Lk, D, elem) -> dict:
    """Minimal traffic of one call (each tensor read or written once) and the SDPA float mask size."""
    kv = 2 * B * Hkv * Lk * D * elem
    qo = 2 * B * Hq * Lq * D * elem
    return {"min_bytes": kv + qo + 4 * B * Lk, "mask_bytes": B * Lq * Lk * elem}


def causal_pairs(Lq: int, Lk: int) -> int:
    """Visible (query, key) pairs when query i sits at position Lk - Lq + i (Lk >= Lq)."""
    return Lq * (Lk - Lq) + Lq * (Lq + 1) // 2


class Bench:
    def __init__(self, args):
        import torch
        import triton.testing

        self.torch, self.args = torch, args
        self.do_bench = triton.testing.do_bench
        self.dtype = getattr(torch, args.dtype)
        self._flex = None

    def ms(self, fn) -> float:
        return self.do_bench(fn, warmup=self.args.warmup_ms, rep=self.args.rep_ms, return_mode="median")

    def copy_gbps(self) -> float:
        """Bandwidth of a 1 GiB device copy (read + write), the decode roofline."""
        torch = self.torch
        src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        ms = self.ms(lambda: dst.copy_(src))
        return 2 * src.numel() / ms / 1e6

    def flex(self):
        if self._flex is None:
            from torch.nn.attention.flex_attention import flex_attention

            self._flex = self.torch.compile(flex_attention, dynamic=False)
        return self._flex

    def contenders(self, q, k, v, bias, causal: bool) -> dict:
        """Zero-argument callables, one per selected contender, on the same inputs."""
        torch = self.torch
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel

        from focuskern.ops import focus_attention

        B, Hq, Lq, D = q.shape
        Lk = k.shape[2]
        gqa = k.shape[1] != Hq
        group = torch.where(bias != 0, 0, -1).to(torch.int32)  # the biased keys are group 0
        target = torch.full((Hq,), 0.3, device=q.device)
        fns = {
            "focus": lambda: focus_attention(q, k, v, bias, causal=causal, backend="triton", validate=False),
            "focus_nobias": lambda: focus_attention(q, k, v, causal=causal, backend="triton", validate=False),
            "focus_readout": lambda: focus_attention(q, k, v, bias, causal=causal, key_group=group, num_groups=1,
                                                     return_mass=True, backend="triton", validate=False)[0],
            "focus_target": lambda: focus_attention(q, k, v, bias, causal=causal, key_group=group, num_groups=1,
                                                    target_mass=target, backend="triton", validate=False),
        }

        def flash():
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal and Lq > 1, enable_gqa=gqa)

        fns["sdpa_flash"] = flash
        if "sdpa_mask" in self.args.contenders:
            j = torch.arange(Lk, device=q.device)
            visible = j[None, :] <= (Lk - Lq) + torch.arange(Lq, device=q.device)[:, None]
            mask = torch.where(visible, bias[:, None, None, :].to(q.dtype), float("-inf")) if causal \
                else bias[:, None, None, :].to(q.dtype).expand(B, 1, Lq, Lk)
            fns["sdpa_mask"] = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        if "flex" in self.args.contenders:
            from torch.nn.attention.flex_attention import create_block_mask

            def score_mod(score, b, h, q_idx, kv_idx):
                return score + bias[b, kv_idx]

            block_mask = None
            if causal and Lq > 1:
                off = Lk - Lq
                block_mask = create_block_mask(lambda b, h, qi, kv: kv <= qi + off, None, None, Lq, Lk)
            flex = self.flex()
            fns["flex"] = lambda: flex(q, k, v, score_mod=score_mod, block_mask=block_mask, enable_gqa=gqa)
        return {name: fns[name] for name in self.args.contenders}

    def case(self, kind: str, B: int, Lq: int, Lk: int, copy_gbps: float) -> list[dict]:
        torch, args = self.torch, self.args
        Hq, Hkv = args.heads
        D = args.head_dim
        elem = torch.finfo(self.dtype).bits // 8
        sizes = case_bytes(B, Hq, Hkv, Lq, Lk, D, elem)
        need = sizes["min_bytes"] + (sizes["mask_bytes"] if "sdpa_mask" in args.contenders else 0)
        base = {"kind": kind, "B": B, "Hq": Hq, "Hkv": Hkv, "Lq": Lq, "Lk": Lk, "D": D, "dtype": args.dtype}
        if need > args.max_gib * 2**30:
            return [{**base, "skipped": f"needs {need / 2**30:.1f} GiB > --max-gib {args.max_gib}"}]
        gen = torch.Generator(device="cuda").manual_seed(0)
        q = torch.randn(B, Hq, Lq, D, device="cuda", dtype=self.dtype, generator=gen)
        k = torch.randn(B, Hkv, Lk, D, device="cuda", dtype=self.dtype, generator=gen)
        v = torch.randn(B, Hkv, Lk, D, device="cuda", dtype=self.dtype, generator=gen)
        bias = torch.zeros(B, Lk, device="cuda")
        bias[:, torch.randperm(Lk, device="cuda", generator=gen)[: max(1, Lk // 50)]] = 2.0  # 2% of keys
        causal = kind == "prefill"
        fns = self.contenders(q, k, v, bias, causal)
        ref = fns["focus"]() if "focus" in fns else None
        flops = 4 * B * Hq * D * (causal_pairs(Lq, Lk) if causal else Lq * Lk)
        rows = []
        for name, fn in fns.items():
            row = {**base, "contender": name}
            try:
                out = fn()
                if ref is not None and name not in ("focus_nobias", "sdpa_flash", "focus_target"):
                    row["max_abs_diff_vs_focus"] = float((out.float() - ref.float()).abs().max())
                ms = self.ms(fn)
            except Exception as exc:  # a contender that cannot run this case is reported, not fatal
                rows.append({**row, "error": f"{type(exc).__name__}: {exc}"[:300]})
                continue
            row["ms"] = round(ms, 4)
            if causal:
                row["tflops"] = round(flops / ms / 1e9, 1)
            else:
                row["gbps"] = round(sizes["min_bytes"] / ms / 1e6, 1)
                row["pct_of_copy_bw"] = round(100 * row["gbps"] / copy_gbps, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
        del q, k, v, fns, ref
        torch.cuda.empty_cache()
        return rows


def environment(torch) -> dict:
    return run_metadata("cuda", cuda=torch.version.cuda)


def summary(rows: list[dict]) -> list[str]:
    """Ratios the issue's targets are stated in, per case."""
    by_case: dict = {}
    for r in rows:
        if "ms" in r:
            by_case.setdefault((r["kind"], r["B"], r["Lq"], r["Lk"]), {})[r["contender"]] = r["ms"]
    lines = []
    for (kind, B, Lq, Lk), t in by_case.items():
        if "focus" not in t:
            continue
        parts = [f"{other} / focus = {t[other] / t['focus']:.2f}x" for other in ("flex", "sdpa_mask", "sdpa_flash")
                 if other in t]
        if "focus_nobias" in t:
            parts.insert(0, f"bias overhead {100 * (t['focus'] / t['focus_nobias'] - 1):+.1f}%")
        parts += [f"{other} / focus = {t[other] / t['focus']:.2f}x" for other in ("focus_readout", "focus_target")
                  if other in t]
        lines.append(f"{kind:7s} B={B:<3d} Lq={Lq:<6d} Lk={Lk:<6d} " + ", ".join(parts))
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_attention.py: torch is not installed", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("gpu_attention.py: no CUDA device; this benchmark needs a GPU (nothing was measured).",
              file=sys.stderr)
        return 1
    bench = Bench(args)
    copy = bench.copy_gbps()
    print(f"copy bandwidth: {copy:.0f} GB/s", flush=True)
    rows = []
    for L in args.prefill:
        rows += bench.case("prefill", args.prefill_batch, L, L, copy)
    for Lk in args.decode:
        for B in args.decode_batch:
            rows += bench.case("decode", B, 1, Lk, copy)
    report = {**environment(torch), "copy_gbps": round(copy, 1), "rows": rows}
    out = args.out or RESULTS_DIR / ("gpu_attention_" + re.sub(r"[^a-z0-9]+", "-", report["device"].lower())
                                     .strip("-") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print("\n".join(summary(rows)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
