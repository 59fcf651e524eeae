"""Float64 ground truth written straight from the formulas of the contract (independent of the package)."""
import math

import torch


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
