#!/usr/bin/env python
"""GPU timings of focus_logits_ (Triton and torch backends) against the usual ways to bias logits.

Run on a CUDA machine from the repository root::

    python benchmarks/gpu_logits.py --out benchmarks/results/h100.json

Cases: B in {1, 8, 64, 256} x V in {49152, 151936} x K in {16, 256} boosted ids per row, alpha = 0;
plus alpha = --blend-alpha (0.3) for the largest V and K at every B.  Per case and contender it
reports

* device us: ``triton.testing.do_bench`` median (CUDA events around one call, L2 flushed before
  each); for a contender made of several launches this includes the gaps between them;
* host us: ``time.perf_counter`` over N back-to-back calls, one ``torch.cuda.synchronize`` at the
  end (what a Python decode loop pays per step: launch overhead, or device time if that is larger);
* effective GB/s: the bytes a minimal kernel must move divided by device time (alpha = 0:
  ``nnz * (2 * elem + 8)``, only the listed entries and their ids/biases; alpha > 0:
  ``2 * B * V * elem``, every logit read and written), the same bytes for every contender of a
  case, and that as a percentage of the peak copy bandwidth (a 256 MiB ``copy_``) and of the copy
  of the case's own [B, V] tensor (the ``copy`` row).

The JSON holds the device, torch/triton/CUDA versions, the UTC date and the command line.  Nothing
here touches CUDA at import time; without a GPU the script exits with a message (status 1), and
``--cpu-smoke`` runs the same code paths on CPU (no Triton, meaningless numbers) to check the script.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

from focuskern.metadata import run_metadata

try:  # both `python benchmarks/gpu_logits.py` and `python -m benchmarks.gpu_logits`
    from . import logits_contenders as lc
except ImportError:
    import logits_contenders as lc

try:
    import triton
    import triton.language as tl
    import triton.testing
except ImportError:  # the script still imports (and --help works) without Triton
    triton = None

if triton is not None:

    @triton.jit
    def _empty_kernel(x_ptr, n, BLOCK: tl.constexpr):
        pass


RESULTS_DIR = Path(__file__).resolve().parent / "results"
PEAK_COPY_BYTES = 256 * 2**20  # per buffer; a copy reads and writes it


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time focus_logits_ and other logits-bias methods on a CUDA GPU; write JSON.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="contenders:\n" + "\n".join(f"  {k:18} {v}" for k, v in lc.DESCRIPTIONS.items()),
    )
    p.add_argument("--out", type=Path, default=None,
                   help="JSON file to write (default: benchmarks/results/<device>.json; "
                        "with --cpu-smoke nothing is written unless --out is given)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64, 256], metavar="B")
    p.add_argument("--vocab", type=int, nargs="+", default=[49152, 151936], metavar="V")
    p.add_argument("--k", type=int, nargs="+", default=[16, 256], metavar="K", help="boosted ids per row")
    p.add_argument("--blend-alpha", type=float, default=0.3,
                   help="alpha of the extra blended cases (largest V and K, every B); 0 = none")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--contenders", nargs="+", default=None, metavar="NAME",
                   help=f"only these (of {', '.join(lc.DESCRIPTIONS)})")
    p.add_argument("--warmup-ms", type=int, default=25, help="do_bench warmup time (default 25)")
    p.add_argument("--rep-ms", type=int, default=100, help="do_bench measuring time (default 100)")
    p.add_argument("--host-calls", type=int, default=500,
                   help="max calls of the host-time loop (fewer for slow contenders; default 500)")
    p.add_argument("--host-budget-s", type=float, default=0.3, help="time budget of one host loop in seconds (default 0.3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu-smoke", action="store_true",
                   help="run on CPU without Triton to test the script (numbers are meaningless)")
    args = p.parse_args(argv)
    unknown = set(args.contenders or ()) - set(lc.DESCRIPTIONS)
    if unknown:
        p.error(f"unknown contender(s): {', '.join(sorted(unknown))}")
    return args


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


class Timer:
    """Device and host time of a zero-argument callable, on CUDA or (smoke test) on CPU."""

    def __init__(self, args, device):
        self.args = args
        self.cuda = device.type == "cuda"
        import torch

        self.sync = torch.cuda.synchronize if self.cuda else (lambda: None)

    def device_us(self, fn) -> float:
        if self.cuda:
            return 1e3 * triton.testing.do_bench(fn, warmup=self.args.warmup_ms, rep=self.args.rep_ms,
                                                 return_mode="median")
        fn()
        samples = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t)
        return 1e6 * statistics.median(samples)

    def host_us(self, fn) -> tuple[float, int]:
        """Mean host time per call over N calls, synchronizing only before and after the loop."""
        self.sync()
        t = time.perf_counter()
        for _ in range(3):
            fn()
        self.sync()
        estimate = max((time.perf_counter() - t) / 3, 1e-7)
        calls = int(max(3, min(self.args.host_calls, self.args.host_budget_s / estimate)))
        self.sync()
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        self.sync()
        return 1e6 * (time.perf_counter() - t) / calls, calls


def build_cases(args) -> list:
    cases = [lc.Case(B, V, K, 0.0) for B in args.batch for V in args.vocab for K in args.k]
    if args.blend_alpha:
        cases += [lc.Case(B, max(args.vocab), max(args.k), args.blend_alpha) for B in args.batch]
    return cases


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not args.cpu_smoke:
        if not torch.cuda.is_available():
            sys.exit("gpu_logits.py: no CUDA device is visible (torch.cuda.is_available() is False), so nothing "
                     "was measured.\nRun it on a GPU machine; CPU timings are in "
                     "`python -m pytest benchmarks --benchmark-only`, and --cpu-smoke checks this script on CPU.")
        if triton is None:
            sys.exit("gpu_logits.py: Triton is not installed; the focuskern Triton backend cannot be timed.")
        if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
            sys.exit("gpu_logits.py: TRITON_INTERPRET is set; unset it (the interpreter is never benchmarked).")
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    dtype = getattr(torch, args.dtype)
    elem = torch.empty((), dtype=dtype).element_size()
    timer = Timer(args, device)
    use_triton = not args.cpu_smoke
    meta = run_metadata(device.type, cuda=torch.version.cuda, dtype=args.dtype, cpu_smoke=args.cpu_smoke)
    device_name = meta["device"]

    # Peak copy bandwidth: one large device-to-device copy.
    n_peak = (PEAK_COPY_BYTES if not args.cpu_smoke else 16 * 2**20) // elem
    src, dst = torch.empty(n_peak, dtype=dtype, device=device).normal_(), torch.empty(n_peak, dtype=dtype, device=device)
    peak_us = timer.device_us(lambda: dst.copy_(src))
    peak_gbps = 2 * n_peak * elem / peak_us / 1e3
    del src, dst
    print(f"{device_name} | torch {torch.__version__} | triton {lc.triton_version()} | {args.dtype} | "
          f"peak copy {peak_gbps:.0f} GB/s ({2 * n_peak * elem / 2**20:.0f} MiB moved in {peak_us:.1f} us)")
    header = f"{'case':34} {'contender':18} {'device us':>10} {'host us':>10} {'eff GB/s':>9} {'%peak':>7} {'%copy':>7}"
    print(header)
    print("-" * len(header))

    results = []
    for case in build_cases(args):
        inp = lc.make_inputs(case, device=device, dtype=dtype, seed=args.seed)
        names = case.contenders(device.type)
        lc.check_agreement(inp, names)  # the contenders do the same work (correctness, not timing)
        if args.contenders:
            names = tuple(n for n in names if n in args.contenders)
        refs = [n for n in ("copy", "empty_triton") if (not args.contenders or n in args.contenders)
                and (n != "empty_triton" or use_triton)]
        case_bytes = case.bytes_touched(elem)
        rows = []
        for name in refs + list(names):  # references first: %copy needs the copy time
            logits = inp.logits.clone()
            if name == "copy":
                src = inp.logits.clone()
                fn = lambda logits=logits, src=src: logits.copy_(src)  # noqa: E731
                nbytes = 2 * logits.numel() * elem
            elif name == "empty_triton":
                fn = lambda logits=logits: _empty_kernel[(case.B,)](logits, logits.numel(), BLOCK=128)  # noqa: E731
                nbytes = 0
            else:
                fn = lc.make_contender(name, inp, logits)
                nbytes = case_bytes
            # In place and repeated: the bias piles up / logits shrink; the work per call does not change.
            with lc.flush_denormal(args.cpu_smoke and case.alpha > 0):
                dev_us = timer.device_us(fn)
                host_us, calls = timer.host_us(fn)
            gbps = nbytes / dev_us / 1e3 if nbytes else None
            rows.append(dict(B=case.B, V=case.V, K=case.K, alpha=case.alpha, nnz=case.B * case.K,
                             contender=name, device_us=round(dev_us, 3), host_us=round(host_us, 3),
                             host_calls=calls, bytes=nbytes, gbps=None if gbps is None else round(gbps, 2),
                             pct_of_peak_copy=None if gbps is None else round(100 * gbps / peak_gbps, 2)))
            del logits, fn
        copy_gbps = next((r["gbps"] for r in rows if r["contender"] == "copy"), None)
        for r in rows:
            r["pct_of_case_copy"] = (round(100 * r["gbps"] / copy_gbps, 2)
                                     if r["gbps"] is not None and copy_gbps else None)
            print(f"{case.name:34} {r['contender']:18} {r['device_us']:10.2f} {r['host_us']:10.2f} "
                  f"{_fmt(r['gbps'], '9.1f')} {_fmt(r['pct_of_peak_copy'], '7.1f')} {_fmt(r['pct_of_case_copy'], '7.1f')}")
        results += rows
        del inp
        if device.type == "cuda":
            torch.cuda.empty_cache()

    report = {
        **meta,
        "timing": {
            "device_us": "cpu smoke: perf_counter median of 5 calls" if args.cpu_smoke else
            f"triton.testing.do_bench median, warmup={args.warmup_ms} ms, rep={args.rep_ms} ms, L2 flushed per call",
            "host_us": "perf_counter over host_calls back-to-back calls, synchronize before and after the loop",
            "gbps": "effective: alpha=0 -> nnz*(2*elem+8) bytes, alpha>0 -> 2*B*V*elem bytes, over device_us; "
                    "copy row: 2*B*V*elem",
        },
        "peak_copy": {"bytes": 2 * n_peak * elem, "device_us": round(peak_us, 3), "gbps": round(peak_gbps, 2)},
        "descriptions": lc.DESCRIPTIONS,
        "results": results,
    }
    out = args.out
    if out is None and not args.cpu_smoke:
        out = RESULTS_DIR / f"{slug(device_name)}.json"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


def _fmt(value, spec: str) -> str:
    width = int(spec.split(".")[0])
    return format(value, spec) if value is not None else "-".rjust(width)


if __name__ == "__main__":
    sys.exit(main())
