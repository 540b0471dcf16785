"""What explains a difference between arms: parameter counts, weight checksums, gradient norms per part,
the cosine between the gradients the two sides send into the encoder, and the drift between encoders."""

from __future__ import annotations

import hashlib
import math

import torch
from torch import nn

from models.biencoder import BiEncoder, TripletOutput


def _unique(params: list[nn.Parameter]) -> list[nn.Parameter]:
    seen: set[int] = set()
    out = []
    for p in params:
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            out.append(p)
    return out


def param_counts(model: BiEncoder) -> dict[str, int]:
    """total (shared modules counted once per side), unique storage, trainable, and per side."""
    sides = {side: [p for m in model.side_modules(side) for p in m.parameters()] for side in ("query", "candidate")}
    classifier = list(model.classifier.parameters())
    everything = _unique(sides["query"] + sides["candidate"] + classifier)
    counts = {f"params/{side}_side": sum(p.numel() for p in _unique(ps)) for side, ps in sides.items()}
    counts["params/classifier"] = sum(p.numel() for p in classifier)
    counts["params/total"] = counts["params/query_side"] + counts["params/candidate_side"] + counts["params/classifier"]
    counts["params/unique"] = sum(p.numel() for p in everything)
    counts["params/trainable"] = sum(p.numel() for p in everything if p.requires_grad)
    return counts


def checksums(model: BiEncoder) -> dict[str, str]:
    """sha256 (first 16 hex digits) of each part's weights, in parameter-name order."""
    out = {}
    for name, module in model.parts().items():
        h = hashlib.sha256()
        for pname, p in sorted(module.state_dict().items()):
            h.update(pname.encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
        out[f"checksum.{name}"] = h.hexdigest()[:16]
    return out


def grad_norms(model: BiEncoder) -> dict[str, float]:
    """L2 norm of the current gradients (call before clipping), under the same names for every arm: `total`,
    `encoder` (every encoder tensor once, both sides), `head` and `classifier`, so arms compare key by key;
    an arm with separate parts per side adds them as `query_encoder`, `candidate_head`, ..."""

    def norm(modules: tuple[torch.nn.Module, ...]) -> float:
        params = {id(p): p for m in modules for p in m.parameters()}.values()  # a shared tensor once
        grads = [p.grad.detach().float() for p in params if p.grad is not None]
        return math.sqrt(float(sum(g.pow(2).sum() for g in grads))) if grads else 0.0

    out = {
        "grad_norm/total": norm((model,)),
        "grad_norm/encoder": norm((model.query_tower, model.cand_tower)),
        "grad_norm/head": norm((model.query_head, model.cand_head)),
        "grad_norm/classifier": norm((model.classifier,)),
    }
    for name, module in model.parts().items():
        if name.startswith(("query_", "candidate_")):
            out[f"grad_norm/{name}"] = norm((module,))
    return out


def backward_by_side(model: BiEncoder, out: TripletOutput, loss: torch.Tensor) -> float:
    """Backpropagate `loss` one side at a time, fill every `.grad`, and return the cosine between the
    gradients the query side and the candidate side send into the encoder weights.

    Replaces `loss.backward()` at the same cost: the heads/classifier are differentiated once, then each
    tower once, on its own side's outputs; a tensor both sides share gets the sum of both contributions,
    which is exactly its full gradient. The cosine pairs parameters by name (for a shared encoder, the two
    contributions to the same tensor). NaN when a side has nothing trainable.
    """
    towers = {id(p) for m in (model.query_tower, model.cand_tower) for p in m.parameters()}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in towers]
    q_named = {n: p for n, p in model.query_tower.named_parameters(remove_duplicate=False) if p.requires_grad}
    c_named = {n: p for n, p in model.cand_tower.named_parameters(remove_duplicate=False) if p.requires_grad}
    q_out = [t for t in (out.query_pool,) if t.requires_grad]
    c_out = [t for t in (out.pos_pool, out.neg_pool) if t.requires_grad]  # none for a frozen side
    q_named = q_named if q_out else {}
    c_named = c_named if c_out else {}
    grads = torch.autograd.grad(loss, q_out + c_out + rest, retain_graph=bool(q_named or c_named))
    d_q, d_c, g_rest = (
        grads[: len(q_out)],
        grads[len(q_out) : len(q_out) + len(c_out)],
        grads[len(q_out) + len(c_out) :],
    )
    g_q = (
        dict(
            zip(
                q_named,
                torch.autograd.grad(q_out, list(q_named.values()), d_q, retain_graph=bool(c_named), allow_unused=True),
                strict=True,
            )
        )
        if q_named
        else {}
    )
    g_c = (
        dict(zip(c_named, torch.autograd.grad(c_out, list(c_named.values()), d_c, allow_unused=True), strict=True))
        if c_named
        else {}
    )
    for p, g in zip(rest, g_rest, strict=True):
        p.grad = g
    for named, side in ((q_named, g_q), (c_named, g_c)):
        for name, p in named.items():
            g = side[name]
            if g is not None:
                p.grad = g.clone() if p.grad is None else p.grad + g
    dot = qq = cc = 0.0
    for name in sorted(set(g_q) & set(g_c)):
        a, b = g_q[name], g_c[name]
        if a is None or b is None:
            continue
        a, b = a.float(), b.float()
        dot += float((a * b).sum())
        qq += float((a * a).sum())
        cc += float((b * b).sum())
    return dot / math.sqrt(qq * cc) if qq > 0 and cc > 0 else float("nan")


@torch.no_grad()
def encoder_distance(model: BiEncoder) -> float:
    """L2 distance between the two encoders' weights (0 for a shared encoder)."""
    if not model.two_encoders:
        return 0.0
    q = dict(model.query_tower.named_parameters(remove_duplicate=False))
    c = dict(model.cand_tower.named_parameters(remove_duplicate=False))
    sq = sum(float((q[n].float() - c[n].float()).pow(2).sum()) for n in q if n in c)
    return math.sqrt(sq)
