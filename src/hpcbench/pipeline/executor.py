"""Runs one rank's share of a schedule on torch.distributed point-to-point primitives.

The executor walks the rank's actions from the schedule representation in order, exactly as the
simulator does, so a measured timeline and a predicted one describe the same program:
  - before an action, the messages it needs are received (and the sends of earlier actions are
    posted in the same batch: on NCCL, sends and receives between two ranks that are issued
    separately can deadlock, so they go out together, as in DualPipe's own implementation);
  - an F runs the stage chunk and sends its output to the next stage's rank (or hands it over
    locally when that stage is on this rank); the last stage computes the microbatch's loss;
  - B runs the full backward and sends the input gradient upstream; I computes only the input
    gradient (the graph is kept), W then the weight gradients;
  - an FB pair runs its forward and its backward concurrently through `OverlapHook`: a second
    thread on CPU, a second CUDA stream on GPU.
Messages between two ranks are matched by their position in the sender's order (the gloo tag),
and the receiver posts receives in that order, which is what NCCL's in-order matching needs.

Every action gets a start/end timestamp (host clock on CPU, CUDA events on GPU) relative to the
rank's start of the step, and the time the rank sat waiting on a receive before it.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
import time
from collections import defaultdict
import dataclasses
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hpcbench.pipeline.ir import Action, Schedule
from hpcbench.pipeline.model import ModelSpec, microbatch_loss
from hpcbench.runtime.watchdog import inject_fault


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

    def shifted(self, offset: float) -> "StepResult":
        """The records moved `offset` seconds later (onto a time axis shared with other ranks)."""
        moved = [dataclasses.replace(r, start=r.start + offset, end=r.end + offset) for r in self.records]
        return dataclasses.replace(self, records=moved)


class HostClock:
    def __init__(self):
        self.origin = self.host_origin = time.perf_counter()

    def mark(self):
        return time.perf_counter()

    def seconds(self, mark) -> float:
        return mark - self.origin


class CudaClock:
    """Events recorded on the current stream; resolved after the step (one sync, not per action)."""

    def __init__(self):
        self.origin = torch.cuda.Event(enable_timing=True)
        self.origin.record()
        self.host_origin = time.perf_counter()  # the step starts after a device sync: close to the event

    def mark(self):
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def seconds(self, mark) -> float:
        return self.origin.elapsed_time(mark) / 1e3


class Synthetic:
    """Fixed per-action durations: the stage's real (tiny) compute is padded to them.

    On CPU the pad is a sleep to the target (cores stay free for the other ranks); on CUDA it is a
    calibrated `torch.cuda._sleep` spin of the full duration, added after the stage's kernels."""

    def __init__(self, durations_s: dict[str, float], device: torch.device):
        self.durations = durations_s
        self.cuda = device.type == "cuda"
        self.overruns = 0
        self._cycles_per_s = _calibrate_spin() if self.cuda else 0.0

    def pad(self, kind: str, started: float) -> None:
        target = self.durations[kind]
        if self.cuda:
            torch.cuda._sleep(int(target * self._cycles_per_s))
            return
        left = target - (time.perf_counter() - started)
        if left > 0:
            time.sleep(left)
        else:
            self.overruns += 1


def _calibrate_spin() -> float:
    torch.cuda._sleep(1_000_000)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(10_000_000)
    end.record()
    end.synchronize()
    return 10_000_000 / (start.elapsed_time(end) / 1e3)


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


def message_plan(schedule: Schedule) -> dict[int, list[tuple[int, tuple]]]:
    """Per rank, the messages it sends to other ranks, in order: (dst rank, key). Keys are
    ("f", stage, mb) for an activation entering `stage`, ("b", stage, mb) for a gradient."""
    plan: dict[int, list[tuple[int, tuple]]] = {}
    s2r = schedule.stage_to_rank
    for rank, actions in schedule.actions.items():
        out = []
        for action in actions:
            for a in action.parts():
                key = _output_key(schedule, a)
                if key is not None and s2r[key[1]] != rank:
                    out.append((s2r[key[1]], key))
        plan[rank] = out
    return plan


def _output_key(schedule: Schedule, a: Action) -> tuple | None:
    if a.kind == "F":
        nxt = schedule.next_stage(a.stage)
        return None if nxt is None else ("f", nxt, a.mb)
    if a.kind in ("B", "I"):
        prev = schedule.prev_stage(a.stage)
        return None if prev is None else ("b", prev, a.mb)
    return None


def _input_key(schedule: Schedule, a: Action) -> tuple | None:
    if a.kind == "F" and not schedule.first_stage_of(a.stage):
        return ("f", a.stage, a.mb)
    if a.kind in ("B", "I") and not schedule.last_stage_of(a.stage):
        return ("b", a.stage, a.mb)
    return None


class Channels:
    """Receives in each sender's order; sends batched with the next receives (see module doc)."""

    def __init__(self, schedule: Schedule, rank: int, shape, dtype, device, use_batch: bool):
        self.rank, self.shape, self.dtype, self.device, self.use_batch = rank, shape, dtype, device, use_batch
        self.expected: dict[int, list[tuple]] = defaultdict(list)  # src -> keys in its send order
        self.source: dict[tuple, tuple[int, int]] = {}  # key -> (src, tag)
        self.tag_to: dict[tuple[int, tuple], int] = {}  # (dst, key) -> tag, for this rank's sends
        for src, messages in message_plan(schedule).items():
            per_dst: dict[int, int] = defaultdict(int)
            for dst, key in messages:
                tag = per_dst[dst]
                per_dst[dst] += 1
                if dst == rank:
                    self.expected[src].append(key)
                    self.source[key] = (src, tag)
                if src == rank:
                    self.tag_to[(dst, key)] = tag
        self.posted = defaultdict(int)
        self.recvs: dict[tuple, tuple[object, torch.Tensor]] = {}
        self.pending_sends: list[tuple[torch.Tensor, int, int]] = []
        self.send_works: list[tuple[object, torch.Tensor]] = []

    def send(self, tensor: torch.Tensor, dst: int, key: tuple) -> None:
        self.pending_sends.append((tensor, dst, self.tag_to[(dst, key)]))

    def post_all(self) -> None:
        """Post every receive of the step at once (gloo): a gloo send leaves only once its receive
        is posted, so receives posted when needed would add a round trip to every hop. Not for
        NCCL, whose receives would hold up the sends queued behind them on the same stream."""
        self.post([keys[-1] for keys in self.expected.values() if keys])

    def source_of(self, key: tuple) -> int:
        return self.source[key][0]

    def post(self, needed: list[tuple]) -> None:
        """Post the pending sends and the receives up to each needed message, in one batch."""
        recv_ops: list[tuple[tuple, torch.Tensor, int, int]] = []
        for key in needed:
            src, tag = self.source[key]
            while self.posted[src] <= tag:
                k = self.expected[src][self.posted[src]]
                recv_ops.append((k, torch.empty(self.shape, dtype=self.dtype, device=self.device), src,
                                 self.posted[src]))
                self.posted[src] += 1
        if not recv_ops and not self.pending_sends:
            return
        sends, self.pending_sends = self.pending_sends, []
        if self.use_batch:
            ops = [dist.P2POp(dist.isend, t, dst, tag=tag) for t, dst, tag in sends]
            ops += [dist.P2POp(dist.irecv, buf, src, tag=tag) for _, buf, src, tag in recv_ops]
            works = dist.batch_isend_irecv(ops)
        else:
            works = [dist.isend(t, dst, tag=tag) for t, dst, tag in sends]
            works += [dist.irecv(buf, src, tag=tag) for _, buf, src, tag in recv_ops]
        self.send_works += [(w, t) for w, (t, _, _) in zip(works, sends)]
        for w, (key, buf, _, _) in zip(works[len(sends):], recv_ops):
            self.recvs[key] = (w, buf)

    def take(self, key: tuple) -> torch.Tensor:
        work, buf = self.recvs.pop(key)
        work.wait()
        return buf

    def drain(self) -> None:
        self.post([])
        for work, _ in self.send_works:
            work.wait()
        self.send_works.clear()
        if self.recvs:
            raise RuntimeError(f"received but never used: {sorted(self.recvs)[:4]}")


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
        self.copies = len(schedule.notes.get("first_stages", (0,)))
        self.chunks_per_copy = schedule.num_stages // self.copies
        self.modules = {s: copy.deepcopy(chunks[s % self.chunks_per_copy])
                        for s, r in schedule.stage_to_rank.items() if r == rank}
        self.synthetic = synthetic
        self.overlap = OverlapHook(device, enabled=overlap)
        self.use_batch_p2p = use_batch_p2p
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
        sched, rank = self.schedule, self.rank
        cuda = self.device.type == "cuda"
        channels = Channels(sched, rank, self.spec.sample_shape(), torch.float32, self.device, self.use_batch_p2p)
        if not self.use_batch_p2p:
            channels.post_all()
        clock = CudaClock() if cuda else HostClock()
        local: dict[tuple, torch.Tensor] = {}
        stash: dict[tuple[int, int], dict] = {}
        losses: dict[int, torch.Tensor] = {}
        acts = _Activations()
        live = peak_live = live_bytes = peak_bytes = 0
        counting = threading.Lock()
        records: list[ActionRecord] = []
        if self.synthetic:
            self.synthetic.overruns = 0

        def deliver(a: Action, tensor: torch.Tensor) -> None:
            key = _output_key(sched, a)
            if key is None:
                return
            dst = sched.stage_to_rank[key[1]]
            if dst == rank:
                local[key] = tensor
            else:
                channels.send(tensor, dst, key)

        def pad(kind: str, started: float) -> None:
            if self.synthetic:
                self.synthetic.pad(kind, started)

        def forward(a: Action, x: torch.Tensor | None) -> None:
            nonlocal live, peak_live, live_bytes, peak_bytes
            t0 = time.perf_counter()
            idx = self.data_index(a.stage, a.mb)
            inp = xs[idx] if x is None else x.detach().requires_grad_()
            acts.bytes = 0
            with acts.hooks():
                out = self.modules[a.stage](inp)
            entry = {"input": inp, "output": out, "bytes": acts.bytes + out.numel() * out.element_size()}
            if sched.last_stage_of(a.stage):
                entry["loss"] = microbatch_loss(out, ys[idx], self.total_microbatches)
                losses[idx] = entry["loss"].detach()
            stash[(a.stage, a.mb)] = entry
            with counting:  # an FB pair's halves run on two threads
                live += 1
                live_bytes += entry["bytes"]
                peak_live, peak_bytes = max(peak_live, live), max(peak_bytes, live_bytes)
            pad("F", t0)
            deliver(a, out.detach())

        def backward(a: Action, grad: torch.Tensor | None) -> None:
            nonlocal live, live_bytes
            t0 = time.perf_counter()
            key = (a.stage, a.mb)
            entry = stash[key]
            if a.kind == "W":
                params = list(self.modules[a.stage].parameters())
                torch.autograd.backward(entry["loss"] if "loss" in entry else entry["output"],
                                        None if "loss" in entry else entry["grad"], inputs=params)
            else:
                root = entry["loss"] if "loss" in entry else entry["output"]
                root_grad = None if "loss" in entry else grad
                first = sched.first_stage_of(a.stage)
                if a.kind == "B":
                    torch.autograd.backward(root, root_grad)
                elif not first:  # I: only the gradient the previous stage needs; keep the graph for W
                    (entry["input"].grad,) = torch.autograd.grad(root, entry["input"], root_grad, retain_graph=True)
                entry["grad"] = grad
            pad(a.kind, t0)
            if a.kind in ("B", "W"):
                del stash[key]
                with counting:
                    live -= 1
                    live_bytes -= entry["bytes"]
            if a.kind in ("B", "I") and not sched.first_stage_of(a.stage):
                deliver(a, entry["input"].grad)

        def run_part(a: Action, inp: torch.Tensor | None) -> None:
            if a.kind == "F":
                forward(a, inp)
            else:
                backward(a, inp)

        for action in sched.actions[rank]:
            parts = action.parts()
            label = str(action)
            self.on_action(f"starting {label}")
            inject_fault(rank, label)
            needed = [k for k in (_input_key(sched, a) for a in parts) if k is not None]
            remote = [k for k in needed if k not in local]
            channels.post(remote)
            wait_start = clock.mark()
            inputs = []
            for a in parts:
                key = _input_key(sched, a)
                if key is None:
                    inputs.append(None)
                elif key in local:
                    inputs.append(local.pop(key))
                else:
                    src = channels.source_of(key)
                    self.on_action(f"{label}: waiting for {'activation' if key[0] == 'f' else 'gradient'} "
                                   f"{key[1]}{'F' if key[0] == 'f' else 'B'}{key[2]} from rank {src}")
                    inputs.append(channels.take(key))
            self.on_action(f"running {label}")
            start = clock.mark()
            if action.kind == "FB":
                f, b = parts
                self.overlap.run(lambda: run_part(f, inputs[0]), lambda: run_part(b, inputs[1]), f, b)
            else:
                run_part(action, inputs[0])
            end = clock.mark()
            records.append((label, action, wait_start, start, end))
        channels.drain()
        if cuda:
            torch.cuda.synchronize()
        out = []
        for label, action, wait_start, start, end in records:
            s, e = clock.seconds(start), clock.seconds(end)
            stage, mb = (action.stage, action.mb) if action.kind != "FB" else (-1, -1)
            out.append(ActionRecord(rank, label, action.kind, stage, mb, s, e, s - clock.seconds(wait_start),
                                    tuple(str(p) for p in action.parts()) if action.kind == "FB" else ()))
        return StepResult(out, {i: float(v) for i, v in losses.items()}, peak_live, peak_bytes,
                          self.synthetic.overruns if self.synthetic else 0, clock.host_origin)
