"""A backward split in two, as zero-bubble schedules run it: I computes the input gradient (what
the previous stage waits for) and keeps, at each node of the graph that produces a parameter's
gradient, the gradient arriving there; W later computes only the parameters' gradients from those
(the weight GEMMs of each Linear, the reductions of each LayerNorm), without going through the
input-gradient chain again. This is what torch.distributed.pipelining's runtime and DeepSeek's
WeightGradStore do; a second backward over the whole kept graph for W recomputed the input chain
and made every zero-bubble schedule look slower than it is.

The two halves are torch's own (`stage_backward_input`, `stage_backward_weight`), so the split is
the one its pipelining runtime measures; together they give the gradients of one full backward.
"""

from __future__ import annotations

import torch

W_METHOD = "weight-gradient nodes (torch.distributed.pipelining stage_backward_weight)"


def input_gradient(module: torch.nn.Module, root: torch.Tensor, root_grad: torch.Tensor | None,
                   inp: torch.Tensor) -> dict:
    """I: sets `inp.grad` and returns what W needs. A first stage's input is data: it has no
    input gradient, so its I does nothing and its W is the whole backward (as in torch's runtime)."""
    if not inp.requires_grad:
        return {"full": (root, root_grad)}
    # imported here: torch's pipelining package imports torch._dynamo, and with it Triton, which
    # must not happen before the CPU fallback has switched Triton to its interpreter
    from torch.distributed.pipelining._backward import stage_backward_input

    grads, param_groups = stage_backward_input([root], None if root_grad is None else [root_grad], [inp],
                                               module.parameters())
    inp.grad = grads[0]
    return {"param_groups": param_groups}


def weight_gradients(module: torch.nn.Module, kept: dict) -> None:
    """W: every parameter's gradient, accumulated into `.grad`, from what I kept."""
    if "full" in kept:
        root, root_grad = kept["full"]
        torch.autograd.backward(root, root_grad)
    else:
        from torch.distributed.pipelining._backward import stage_backward_weight

        stage_backward_weight(module.parameters(), kept["param_groups"])
