"""The stage model a pipeline schedule runs, its data, and the non-pipelined reference.

The model is `layers` identical blocks (an MLP block, or a transformer-like block: pre-norm
single-head attention and a 4x MLP, both residual), built from one seed so every rank builds the
same weights. It is cut into `chunks` equal runs of blocks; a schedule's stage s runs chunk
`chunk_of(s)` (for bidirectional DualPipe, the two model copies share the chunks' initial weights,
and a chunk's gradient is the sum over both copies). The loss is the mean over microbatches of the
MSE against a fixed target, so the pipelined gradients equal the reference's full-batch ones.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

MODEL_KINDS = ("mlp", "transformer")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelSpec:
    kind: str = "mlp"
    width: int = 64
    layers: int = 8
    seq: int = 16  # tokens per sample (transformer only)
    microbatch_size: int = 4
    seed: int = 0
    dtype: str = "float32"  # parameters, activations and messages: float32 | bfloat16

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def sample_shape(self) -> tuple[int, ...]:
        return (self.microbatch_size, self.seq, self.width) if self.kind == "transformer" else (
            self.microbatch_size, self.width)


class MLPBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.up, self.down = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x):
        return x + self.down(F.gelu(self.up(x)))


class TransformerBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x):
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


def divisors_hint(layers: int, chunks: int) -> str:
    good = [n for n in range(chunks, chunks * 4 + 1, chunks)]
    return f"the model's {layers} layers do not split into {chunks} equal stages (layers could be {', '.join(map(str, good))}, ...)"


def build_chunks(spec: ModelSpec, chunks: int, device: torch.device) -> list[nn.Module]:
    """The model cut into `chunks` stages of layers // chunks blocks each (same weights on every rank)."""
    if spec.layers % chunks:
        raise ValueError(divisors_hint(spec.layers, chunks))
    torch.manual_seed(spec.seed)
    block = TransformerBlock if spec.kind == "transformer" else MLPBlock
    blocks = [block(spec.width) for _ in range(spec.layers)]
    per = spec.layers // chunks
    return [nn.Sequential(*blocks[i * per:(i + 1) * per]).to(device, spec.torch_dtype) for i in range(chunks)]


def batch(spec: ModelSpec, microbatches: int, device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Inputs and targets, one per microbatch, identical on every rank."""
    gen = torch.Generator().manual_seed(spec.seed + 1)
    dtype = spec.torch_dtype
    xs = [torch.randn(spec.sample_shape(), generator=gen).to(device, dtype) for _ in range(microbatches)]
    ys = [torch.randn(spec.sample_shape(), generator=gen).to(device, dtype) for _ in range(microbatches)]
    return xs, ys


def microbatch_loss(out: torch.Tensor, target: torch.Tensor, microbatches: int) -> torch.Tensor:
    return F.mse_loss(out, target) / microbatches


def reference(spec: ModelSpec, chunks: list[nn.Module], microbatches: int, device: torch.device):
    """Loss and per-chunk gradients of the whole model on the whole batch, in one process, in
    float32 from the same (possibly bfloat16) weights and data: what a bfloat16 pipeline is
    compared with. One microbatch at a time (the loss is their mean), each block recomputed in
    the backward (checkpointed), so that only the model, its gradients and one microbatch's
    block boundaries have to fit next to the pipeline's own stages."""
    from torch.utils.checkpoint import checkpoint

    model = nn.Sequential(*(copy.deepcopy(c) for c in chunks)).to(device, torch.float32)
    blocks = [block for chunk in model for block in chunk]
    xs, ys = batch(spec, microbatches, device)
    loss = torch.zeros((), device=device)
    for x, y in zip(xs, ys):
        h = x.float()
        for block in blocks:
            h = checkpoint(block, h, use_reentrant=False)
        part = microbatch_loss(h, y.float(), microbatches)
        part.backward()
        loss += part.detach()
    grads = [[p.grad.detach().clone() for p in sub.parameters()] for sub in model]
    return loss, grads
