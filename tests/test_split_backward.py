"""The split backward of zero-bubble schedules (hpcbench.pipeline.split_backward), on one stage:
I then W give the gradients of one full backward B, and W does only the weight-gradient work.
Known answers counted by torch.utils.flop_counter: for a stage of Linear layers over T tokens, a
full backward costs 2 x 2·T·in·out per layer (input and weight GEMMs), W exactly the weight half."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hpcbench.pipeline.model import ModelSpec, build_chunks, microbatch_loss
from hpcbench.pipeline.split_backward import input_gradient, weight_gradients


def _stage(kind: str, last: bool):
    spec = ModelSpec(kind=kind, width=32, layers=2, seq=8, microbatch_size=6)
    (module,) = build_chunks(spec, 1, torch.device("cpu"))
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(spec.sample_shape(), generator=gen).requires_grad_()
    target, grad_out = torch.randn(spec.sample_shape(), generator=gen), torch.randn(spec.sample_shape(), generator=gen)
    return module, x, target, grad_out, last


def _forward(module, x, target, grad_out, last):
    out = module(x)
    return (microbatch_loss(out, target, 4), None) if last else (out, grad_out)


def _fresh(stage):
    """The stage's module and input with no gradient yet, and a new forward's root."""
    module, x, *_ = stage
    module.zero_grad(set_to_none=True)
    x.grad = None
    return (module, x, *_forward(*stage))


def _full(stage):
    module, x, root, root_grad = _fresh(stage)
    with FlopCounterMode(display=False) as flops:
        torch.autograd.backward(root, root_grad)
    return x.grad.clone(), {n: p.grad.clone() for n, p in module.named_parameters()}, flops.get_total_flops()


def _split(stage):
    module, x, root, root_grad = _fresh(stage)
    with FlopCounterMode(display=False) as i_flops:
        kept = input_gradient(module, root, root_grad, x)
    dx = x.grad.clone()
    assert all(p.grad is None for p in module.parameters())  # I computed no weight gradient
    with FlopCounterMode(display=False) as w_flops:
        weight_gradients(module, kept)
    return dx, {n: p.grad.clone() for n, p in module.named_parameters()}, i_flops.get_total_flops(), w_flops.get_total_flops()


@pytest.mark.parametrize("last", [False, True], ids=["middle stage", "last stage (loss)"])
def test_i_then_w_equal_one_full_backward_bit_for_bit_on_linear_layers(last):
    stage = _stage("mlp", last)
    dx_b, grads_b, flops_b = _full(stage)
    dx_s, grads_s, flops_i, flops_w = _split(stage)
    assert torch.equal(dx_b, dx_s)
    assert grads_b.keys() == grads_s.keys() and all(torch.equal(grads_b[n], grads_s[n]) for n in grads_b)
    tokens, width = 6, 32
    linears = [(width, 2 * width), (2 * width, width)] * 2  # up and down of 2 blocks
    weight_flops = sum(2 * tokens * i * o for i, o in linears)
    assert flops_w == weight_flops  # only the weight GEMMs: the input chain is not gone through again
    assert flops_i == weight_flops and flops_b == flops_i + flops_w  # dX GEMMs have the same size


def test_i_then_w_cover_every_parameter_of_a_transformer_block():
    """LayerNorm weights and biases (reductions, not GEMMs) and attention's projections too."""
    stage = _stage("transformer", False)
    dx_b, grads_b, flops_b = _full(stage)
    dx_s, grads_s, flops_i, flops_w = _split(stage)
    torch.testing.assert_close(dx_s, dx_b)
    assert grads_s.keys() == grads_b.keys() and any("norm" in n for n in grads_s)
    for name in grads_b:
        torch.testing.assert_close(grads_s[name], grads_b[name], msg=name)
    assert flops_b == flops_i + flops_w and 0 < flops_w < flops_b


def test_a_first_stage_whose_input_is_data_computes_no_input_gradient():
    module, x, target, grad_out, last = _stage("mlp", False)
    x = x.detach()  # the data
    out = module(x)
    kept = input_gradient(module, out, grad_out, x)
    assert x.grad is None and all(p.grad is None for p in module.parameters())
    weight_gradients(module, kept)
    assert all(p.grad is not None for p in module.parameters())


@pytest.mark.subprocess
def test_loading_the_families_does_not_import_torch_dynamo():
    """torch's pipelining package imports torch._dynamo and Triton with it; loaded with the families,
    before the CPU fallback switches Triton to its interpreter, it broke every Triton kernel of the
    default run ("Cannot call @triton.jit'd outside of the scope of a kernel")."""
    import subprocess
    import sys

    code = ("import sys; from hpcbench.api import registry; registry.families(); "
            "print(sorted(m for m in sys.modules if m.startswith(('torch._dynamo', 'torch.distributed.pipelining'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout[-500:] + out.stderr[-2000:]


def test_rows_put_the_stages_mean_i_plus_w_beside_b():
    from hpcbench.benchmarks.pipeline.summary import _cost_columns
    from hpcbench.pipeline.simulator import Costs

    split = Costs(per_stage={0: {"F": 1e-3, "I": 1e-3, "W": 2e-3}, 1: {"F": 1e-3, "I": 3e-3, "W": 4e-3}})
    cols = _cost_columns(split, 0.0, None)
    assert cols["split_backward_ms"] == pytest.approx(5.0) and cols["backward_ms"] is None  # (3 + 7) / 2 ms
    full = _cost_columns(Costs(per_stage={0: {"F": 1e-3, "B": 2e-3}, 1: {"F": 1e-3, "B": 4e-3}}), 0.0, None)
    assert full["backward_ms"] == pytest.approx(3.0) and full["split_backward_ms"] is None
