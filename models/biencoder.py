"""The bi-encoder: query/candidate towers, similarity heads (H→proj) and a pair classifier.

Which modules are shared between the two sides is decided by the arm (`models.arms`); this module only
wires whatever it is given, so sharing is a property of object identity, visible in `parts()`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from models.arms import ARMS
from models.backbone import TinyBert, freeze, hidden_size, load_encoder
from models.pooling import Tower

Batch = dict[str, torch.Tensor]  # attention_mask, and input_ids or the frozen prefix's output (prefix)


@dataclass
class TripletOutput:
    """Pooled and projected vectors of query, positive and negative, and the classifier's logits."""

    query_pool: torch.Tensor
    query_proj: torch.Tensor
    pos_pool: torch.Tensor
    pos_proj: torch.Tensor
    neg_pool: torch.Tensor
    neg_proj: torch.Tensor
    pos_logits: torch.Tensor
    neg_logits: torch.Tensor


class PairClassifier(nn.Module):
    """2-way classifier over ``[u, v, |u−v|]`` of the projected and of the pooled vectors.

    It starts at zero: every pair gets probability 1/2, so before any step the rerank keeps the retrieval
    order (ties in probability go to the higher retrieval score), and what it changes later is learned.
    Cross-entropy still has a gradient at zero, as in logistic regression."""

    def __init__(self, hidden: int, proj_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * proj_dim + 3 * hidden, 2)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(
        self, u_proj: torch.Tensor, u_pool: torch.Tensor, v_proj: torch.Tensor, v_pool: torch.Tensor
    ) -> torch.Tensor:
        feats = [u_proj, v_proj, (u_proj - v_proj).abs(), u_pool, v_pool, (u_pool - v_pool).abs()]
        return self.linear(torch.cat([f.float() for f in feats], dim=-1))

    def indexed(self, q: dict[str, torch.Tensor], c: dict[str, torch.Tensor]) -> Callable[..., torch.Tensor]:
        """A function of index tensors (qi, ci) giving the positive-minus-negative logit of the pairs
        (q[qi], c[ci]), so that its sigmoid is `forward`'s positive-class probability. The linear layer
        splits into a per-query term and a per-candidate term, computed here once each, and a weighted L1
        distance of the concatenated [proj | pool] vectors: one gather per side is the only per-pair work."""
        p, h = q["proj"].shape[1], q["pool"].shape[1]
        w = self.linear.weight.float()
        w, bias = w[1] - w[0], self.linear.bias.float()[1] - self.linear.bias.float()[0]
        wu_p, wv_p, wd_p, wu_h, wv_h, wd_h = torch.split(w, [p, p, p, h, h, h])
        xq = torch.cat([q["proj"].float(), q["pool"].float()], dim=1)
        xc = torch.cat([c["proj"].float(), c["pool"].float()], dim=1)
        # elementwise products and sums rather than BLAS matrix-vector calls: on CPU, MKL calls interleaved
        # with torch's own OpenMP ops were measured to slow whole processes 3-4x on a 2-core machine
        a = (xq * torch.cat([wu_p, wu_h])).sum(1) + bias
        b = (xc * torch.cat([wv_p, wv_h])).sum(1)
        wd = torch.cat([wd_p, wd_h])

        def margin(qi: torch.Tensor, ci: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
            """`chunk` pairs at a time, gathered into two reused buffers (no allocation per chunk)."""
            out = a.index_select(0, qi).add_(b.index_select(0, ci))
            gq = xq.new_empty(min(chunk, len(qi)), xq.shape[1])
            gc = torch.empty_like(gq)
            for s in range(0, len(qi), chunk):
                m = min(chunk, len(qi) - s)
                torch.index_select(xq, 0, qi[s : s + m], out=gq[:m])
                torch.index_select(xc, 0, ci[s : s + m], out=gc[:m])
                out[s : s + m] += gq[:m].sub_(gc[:m]).abs_().mul_(wd).sum(1)
            return out

        return margin


class BiEncoder(nn.Module):
    """Query side and candidate side, each text → pooled (H) → projected (proj_dim)."""

    def __init__(
        self,
        query_tower: nn.Module,
        cand_tower: nn.Module,
        query_head: nn.Module,
        cand_head: nn.Module,
        classifier: PairClassifier,
        arm: str,
    ) -> None:
        super().__init__()
        self.arm = arm
        self.query_tower = query_tower
        self.cand_tower = cand_tower  # may be the same object as query_tower
        self.query_head = query_head
        self.cand_head = cand_head
        self.classifier = classifier

    def encode_query(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.query_tower(**batch)
        return pooled, self.query_head(pooled)

    def encode_candidate(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.cand_tower(**batch)
        return pooled, self.cand_head(pooled)

    def forward(self, query: Batch, pos: Batch, neg: Batch) -> TripletOutput:
        """Encode a triplet batch. The call order (query, positive, negative) is fixed for every arm so that
        the same seed draws the same dropout masks whatever the sharing."""
        q_pool, q_proj = self.encode_query(query)
        p_pool, p_proj = self.encode_candidate(pos)
        n_pool, n_proj = self.encode_candidate(neg)
        return TripletOutput(
            q_pool,
            q_proj,
            p_pool,
            p_proj,
            n_pool,
            n_proj,
            self.classifier(q_proj, q_pool, p_proj, p_pool),
            self.classifier(q_proj, q_pool, n_proj, n_pool),
        )

    @torch.no_grad()
    def init_heads(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Set both similarity heads (one module when shared) to the affine map ``weight @ x + bias``."""
        for head in {id(h): h for h in (self.query_head, self.cand_head)}.values():
            head.weight.copy_(weight)
            head.bias.copy_(bias)

    @property
    def two_encoders(self) -> bool:
        return self.query_tower is not self.cand_tower

    def parts(self) -> dict[str, nn.Module]:
        """Named parts, each distinct module once: `encoder`/`head` when shared, else per side."""
        out: dict[str, nn.Module] = {}
        for kind, q, c in (("encoder", self.query_tower, self.cand_tower), ("head", self.query_head, self.cand_head)):
            if q is c:
                out[kind] = q
            else:
                out[f"query_{kind}"], out[f"candidate_{kind}"] = q, c
        out["classifier"] = self.classifier
        return out

    def side_modules(self, side: str) -> tuple[nn.Module, nn.Module]:
        """(tower, head) of the `query` or `candidate` side."""
        return (self.query_tower, self.query_head) if side == "query" else (self.cand_tower, self.cand_head)


@dataclass(frozen=True)
class BiEncoderSpec:
    """What `build_biencoder` builds: the encoder (HF id, local path or `tiny-random`), the arm, pooling,
    the head's width and what to freeze."""

    name: str
    sharing: str = "shared"
    pooling: str = "mean"
    max_length: int = 128
    proj_dim: int = 128
    freeze_embeddings: bool = False
    freeze_layers: int = 0
    tiny: TinyBert = field(default_factory=TinyBert)


def build_biencoder(spec: BiEncoderSpec, vocab_size: int) -> BiEncoder:
    """Build the arm named by `spec.sharing`. Uses the torch RNG (tiny encoder init, head init): seed first.
    Raises ValueError for an unknown arm or a model that cannot be loaded or frozen as asked."""
    if spec.sharing not in ARMS:
        raise ValueError(f"unknown arm {spec.sharing!r} (known: {', '.join(sorted(ARMS))})")
    encoder = load_encoder(spec.name, vocab_size, spec.pooling, spec.max_length, spec.tiny)
    freeze(encoder, spec.freeze_embeddings, spec.freeze_layers)
    frozen_prefix = spec.freeze_layers if spec.freeze_embeddings else 0
    tower = Tower(encoder, spec.pooling, frozen_prefix)
    h = hidden_size(encoder)
    head = nn.Linear(h, spec.proj_dim)
    classifier = PairClassifier(h, spec.proj_dim)
    q_tower, c_tower, q_head, c_head = ARMS[spec.sharing](tower, head)
    return BiEncoder(q_tower, c_tower, q_head, c_head, classifier, spec.sharing)
