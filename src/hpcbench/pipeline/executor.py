"""Runs one rank's share of a schedule on torch.distributed point-to-point primitives.

The executor walks the rank's actions from the schedule representation in order, exactly as the
simulator does, so a measured timeline and a predicted one describe the same program:
  - before an action, the messages planned for that point go out (`p2p.Channels`: the previous
    action's sends; receives, all at once or in groups ordered alike on every rank) and the
    tensors it needs from other stages (`ir.input_key`, the simulator's rule too) are received;
  - an F runs the stage chunk and sends its output to the next stage's rank (or hands it over
    locally when that stage is on this rank); the last stage computes the microbatch's loss;
  - B runs the full backward and sends the input gradient upstream; I computes only the input
    gradient (the graph is kept), W then the weight gradients;
  - an FB pair runs its forward and its backward concurrently through `OverlapHook`: a second
    thread on CPU, a second CUDA stream on GPU.

Every action gets a start/end timestamp (host clock on CPU, CUDA events on GPU) relative to the
rank's start of the step, and the time the rank sat waiting on a receive before it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from hpcbench.pipeline.clocks import CudaClock, HostClock, Synthetic
from hpcbench.pipeline.ir import Action, Key, Schedule, describe, input_key, output_key
from hpcbench.pipeline.model import ModelSpec, microbatch_loss
from hpcbench.pipeline.p2p import BatchPlan, Channels
from hpcbench.pipeline.split_backward import input_gradient, weight_gradients
from hpcbench.runtime.watchdog import inject_fault

__all__ = ["ActionRecord", "Executor", "OverlapHook", "StepResult", "Synthetic"]


@dataclass(frozen=True)
class ActionRecord:
    rank: int
    label: str
    kind: str  # F B I W FB
    stage: int
    mb: int
    start: float  # seconds from the rank's step start
    end: float
    blocked: float  # seconds waiting on receives just before it
    parts: tuple[str, ...] = ()  # for FB: the two actions


@dataclass
class StepResult:
    records: list[ActionRecord]
    losses: dict[int, float]  # data microbatch index -> loss (on the ranks holding last stages)
    peak_live_activations: int
    peak_activation_bytes: int
    synthetic_overruns: int = 0  # actions whose real compute exceeded their fixed duration
    origin: float = 0.0  # time.perf_counter() at the step's start: aligns ranks that share a host clock

    def shifted(self, offset: float) -> StepResult:
        """The records moved `offset` seconds later (onto a time axis shared with other ranks)."""
        moved = [dataclasses.replace(r, start=r.start + offset, end=r.end + offset) for r in self.records]
        return dataclasses.replace(self, records=moved)


class OverlapHook:
    """Runs an overlapped pair's two halves concurrently (the executor's hook for FB actions).

    CPU: the backward half on a second thread (torch releases the GIL inside its kernels).
    CUDA: the forward half on a side stream, chosen to differ from the stream autograd will run
    the backward half on (the stream its forward ran on)."""

    def __init__(self, device: torch.device, enabled: bool = True):
        self.enabled = enabled
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.side = (torch.cuda.Stream(device), torch.cuda.Stream(device))
        self.forward_stream: dict[tuple[int, int], object] = {}
        self._pool: ThreadPoolExecutor | None = None

    def run(self, forward, backward, f: Action, b: Action) -> None:
        if not self.enabled:
            forward()
            backward()
        elif self.cuda:
            current = torch.cuda.current_stream()
            b_stream = self.forward_stream.pop((b.stage, b.mb), current)
            f_stream = self.side[0] if b_stream is not self.side[0] else self.side[1]
            f_stream.wait_stream(current)
            with torch.cuda.stream(f_stream):
                forward()
            self.forward_stream[(f.stage, f.mb)] = f_stream
            backward()  # autograd runs it on b_stream and orders it after `current`
            current.wait_stream(f_stream)
        else:
            pending = self._worker().submit(backward)
            try:
                forward()
            finally:
                pending.result()  # re-raises the backward half's exception here

    def _worker(self):
        """One persistent thread for backward halves. It gets the rank's intra-op thread count:
        a new thread would otherwise start OpenMP with every core, and spinning OpenMP threads
        of several ranks on a small machine serialise everything."""
        if self._pool is None:
            threads = torch.get_num_threads()
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="hpcbench-fb",
                                            initializer=lambda: torch.set_num_threads(threads))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class _Activations:
    """Counts autograd's saved tensors per stage forward (bytes), to report activation memory."""

    def __init__(self):
        self.bytes = 0

    def hooks(self):
        def pack(t):
            self.bytes += t.numel() * t.element_size()
            return t

        return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)


class Executor:
    """One rank's stages (deep copies of their model chunks) and the loop that runs its actions."""

    def __init__(self, schedule: Schedule, spec: ModelSpec, chunks: list[torch.nn.Module], rank: int,
                 device: torch.device, *, synthetic: Synthetic | None = None, overlap: bool = True,
                 use_batch_p2p: bool = False, on_action=None):
        import copy

        self.schedule, self.spec, self.rank, self.device = schedule, spec, rank, device
        self.copies = schedule.copies
        self.chunks_per_copy = schedule.num_stages // self.copies
        self.modules = {s: copy.deepcopy(chunks[s % self.chunks_per_copy])
                        for s, r in schedule.stage_to_rank.items() if r == rank}
        self.synthetic = synthetic
        self.overlap = OverlapHook(device, enabled=overlap)
        self.use_batch_p2p = use_batch_p2p
        self.p2p_plan = BatchPlan.of(schedule, rank, use_batch_p2p)  # once: the batched plan simulates
        self.dtype = spec.torch_dtype
        self.on_action = on_action or (lambda text: None)
        self.total_microbatches = schedule.num_microbatches * self.copies

    def data_index(self, stage: int, mb: int) -> int:
        """Which microbatch of the batch a stage's microbatch `mb` is (DualPipe's copies split it)."""
        return (stage // self.chunks_per_copy) * self.schedule.num_microbatches + mb

    def zero_grad(self) -> None:
        for m in self.modules.values():
            m.zero_grad(set_to_none=True)

    def grads_by_chunk(self) -> dict[int, list[torch.Tensor]]:
        """Gradients per model chunk (summed over DualPipe's two copies when both are here)."""
        out: dict[int, list[torch.Tensor]] = {}
        for stage, module in self.modules.items():
            g = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]
            chunk = stage % self.chunks_per_copy
            out[chunk] = [a + b for a, b in zip(out[chunk], g)] if chunk in out else g
        return out

    def step(self, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> StepResult:
        """Run the rank's actions once on the batch (`xs`, `ys`: every microbatch, as on every rank)."""
        return _Step(self, xs, ys).run()


class _Live:
    """Stage-microbatch activations alive on the rank (count and bytes) and their peaks; an FB
    pair's halves update them from two threads."""

    def __init__(self):
        self.count = self.bytes = self.peak_count = self.peak_bytes = 0
        self._lock = threading.Lock()

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.count += 1
            self.bytes += nbytes
            self.peak_count, self.peak_bytes = max(self.peak_count, self.count), max(self.peak_bytes, self.bytes)

    def remove(self, nbytes: int) -> None:
        with self._lock:
            self.count -= 1
            self.bytes -= nbytes


class _Step:
    """One step of one rank: tensors handed over locally, activations stashed for the backward,
    losses, and a clock mark around every action."""

    def __init__(self, ex: Executor, xs: list[torch.Tensor], ys: list[torch.Tensor]):
        self.ex, self.sched, self.xs, self.ys = ex, ex.schedule, xs, ys
        self.cuda = ex.device.type == "cuda"
        self.channels = Channels(ex.p2p_plan, ex.use_batch_p2p, ex.spec.sample_shape(), ex.dtype, ex.device)
        self.clock = CudaClock() if self.cuda else HostClock()
        self.local: dict[Key, torch.Tensor] = {}  # outputs for a stage on this rank
        self.stash: dict[tuple[int, int], dict] = {}  # (stage, mb) -> its forward's tensors
        self.losses: dict[int, torch.Tensor] = {}
        self.acts = _Activations()
        self.live = _Live()
        self.marks: list[tuple] = []  # (label, action, wait start, start, end)
        if ex.synthetic:
            ex.synthetic.overruns = 0

    def run(self) -> StepResult:
        actions = self.sched.actions[self.ex.rank]
        for k, action in enumerate(actions):
            self.channels.before(k)
            self.run_action(action)
        self.channels.drain(len(actions))
        if self.cuda:
            torch.cuda.synchronize()
        return self.result()

    def run_action(self, action: Action) -> None:
        ex, label, parts = self.ex, str(action), action.parts()
        ex.on_action(f"starting {label}")
        inject_fault(ex.rank, label)
        keys = [input_key(self.sched, a) for a in parts]
        wait_start = self.clock.mark()
        inputs = [self.receive(k, label) for k in keys]
        ex.on_action(f"running {label}")
        start = self.clock.mark()
        if action.kind == "FB":
            f, b = parts
            ex.overlap.run(lambda: self.run_part(f, inputs[0]), lambda: self.run_part(b, inputs[1]), f, b)
        else:
            self.run_part(action, inputs[0])
        self.marks.append((label, action, wait_start, start, self.clock.mark()))

    def receive(self, key: Key | None, label: str) -> torch.Tensor | None:
        if key is None:
            return None
        if key in self.local:
            return self.local.pop(key)
        self.ex.on_action(f"{label}: waiting for {describe(key)} from rank {self.channels.source_of(key)}")
        return self.channels.take(key)

    def run_part(self, a: Action, inp: torch.Tensor | None) -> None:
        if a.kind == "F":
            self.forward(a, inp)
        else:
            self.backward(a, inp)

    def deliver(self, a: Action, tensor: torch.Tensor) -> None:
        key = output_key(self.sched, a)
        if key is None:
            return
        dst = self.sched.stage_to_rank[key[1]]
        if dst == self.ex.rank:
            self.local[key] = tensor
        else:
            self.channels.send(tensor, dst, key)

    def pad(self, kind: str, started: float) -> None:
        if self.ex.synthetic:
            self.ex.synthetic.pad(kind, started)

    def forward(self, a: Action, x: torch.Tensor | None) -> None:
        t0 = time.perf_counter()
        idx = self.ex.data_index(a.stage, a.mb)
        inp = self.xs[idx] if x is None else x.detach().requires_grad_()
        self.acts.bytes = 0
        with self.acts.hooks():
            out = self.ex.modules[a.stage](inp)
        entry = {"input": inp, "output": out, "bytes": self.acts.bytes + out.numel() * out.element_size()}
        if self.sched.last_stage_of(a.stage):
            entry["loss"] = microbatch_loss(out, self.ys[idx], self.ex.total_microbatches)
            self.losses[idx] = entry["loss"].detach()
        self.stash[(a.stage, a.mb)] = entry
        self.live.add(entry["bytes"])
        self.pad("F", t0)
        self.deliver(a, out.detach())

    def backward(self, a: Action, grad: torch.Tensor | None) -> None:
        t0 = time.perf_counter()
        key = (a.stage, a.mb)
        entry = self.stash[key]
        if a.kind == "W":
            weight_gradients(self.ex.modules[a.stage], entry.pop("param_groups"))
        else:
            root = entry["loss"] if "loss" in entry else entry["output"]
            root_grad = None if "loss" in entry else grad
            if a.kind == "B":
                torch.autograd.backward(root, root_grad)
            else:  # I: the previous stage's gradient, keeping what W needs
                entry["param_groups"] = input_gradient(self.ex.modules[a.stage], root, root_grad, entry["input"])
        self.pad(a.kind, t0)
        if a.kind in ("B", "W"):
            del self.stash[key]
            self.live.remove(entry["bytes"])
        if a.kind in ("B", "I") and not self.sched.first_stage_of(a.stage):
            self.deliver(a, entry["input"].grad)

    def result(self) -> StepResult:
        clock, out = self.clock, []
        for label, action, wait_start, start, end in self.marks:
            s, e = clock.seconds(start), clock.seconds(end)
            stage, mb = (action.stage, action.mb) if action.kind != "FB" else (-1, -1)
            out.append(ActionRecord(self.ex.rank, label, action.kind, stage, mb, s, e, s - clock.seconds(wait_start),
                                    tuple(str(p) for p in action.parts()) if action.kind == "FB" else ()))
        synthetic = self.ex.synthetic
        return StepResult(out, {i: float(v) for i, v in self.losses.items()}, self.live.peak_count,
                          self.live.peak_bytes, synthetic.overruns if synthetic else 0, clock.host_origin)
