"""The `hpcbench compile-kernels` command: arguments, the table, the JSON file and the exit status
(the compiling itself: hpcbench.kernelcheck.check)."""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from hpcbench.api.errors import CommandParser, UserError

from hpcbench.kernelcheck.check import (Entry, Job, interpreted_kernels_loaded, nvidia_tool, astsource_api, compile_job,
                                  jobs_for, stub_entry)


def _table(entries: list[Entry], arch: str, seconds: float):
    from rich.table import Table

    table = Table(title=f"{arch}: Triton kernels compiled ahead of time ({seconds:.0f} s)")
    for col, just in [("kernel", "left"), ("variant", "left"), ("config", "left"), ("warps", "right"),
                      ("stages", "right"), ("result", "left"), ("smem B", "right"), ("regs", "right"),
                      ("spills B", "right"), ("MMA", "left"), ("TMA", "left"), ("WS", "left"), ("addr", "right")]:
        table.add_column(col, justify=just)
    for e in entries:
        if e.status == "listed":
            result = f"would compile (~{e.smem_estimate} B)" if e.smem_estimate else "would compile"
        elif e.status in ("pruned", "skipped"):
            result = f"[dim]{e.error}[/dim]"
        elif e.problems:
            result = "[red]" + "; ".join(e.problems) + (f": {e.error}" if e.error else "") + "[/red]"
        else:
            result = "[green]compiled[/green]"
        spills = None if e.spill_stores is None else f"{e.spill_stores}/{e.spill_loads}"
        mma = None if e.mma is None else (e.mma if not e.mma_sass else f"{e.mma} ({e.mma_sass})")
        addr = None if e.addr64 is None else ("64-bit" if e.addr64 else "32-bit")
        tma = None if e.tma is None else ("yes" if e.tma else "no")
        ws = None if e.ws is None else (f"yes ({e.warps_total} warps)" if e.ws else "no")
        table.add_row(e.kernel, e.variant, e.config, str(e.num_warps), str(e.num_stages), result,
                      *(str(v) if v is not None else "" for v in (e.shared, e.regs, spills, mma, tma, ws, addr)))
    return table


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="hpcbench compile-kernels",
        description="Compile every Triton kernel x autotune config x variant for GPU architectures, "
                    "without a GPU; report shared memory, registers, spills, MMA instructions, TMA "
                    "and warp specialization.")
    parser.add_argument("--arch", default="sm_90", help="comma-separated, e.g. sm_90,sm_89,sm_80 (default sm_90)")
    parser.add_argument("--json", type=Path, help="write the entries to this file")
    parser.add_argument("--kernel", action="append", default=[],
                        help="only entries whose 'kernel variant' contains this text (repeatable)")
    parser.add_argument("--first", type=int, help="only the first N configs of each kernel and variant")
    parser.add_argument("--list", action="store_true", help="enumerate and prune only; compile nothing")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="compile in N processes (default 1)")
    parser.add_argument("--no-sass", dest="sass", action="store_false",
                        help="do not disassemble kernels that cannot spill (a zero stack frame) to read "
                             "their MMA SASS instruction: about a third of the time; spills stay exact")
    return parser


def _select(jobs: list[Job], kernels: list[str], first: int | None) -> list[Job]:
    if kernels:
        jobs = [j for j in jobs if any(k in f"{j.kernel} {j.variant}" for k in kernels)]
    if first is not None:
        seen: dict[tuple, int] = {}
        kept = []
        for j in jobs:
            key = (j.arch, j.kernel, j.variant)
            seen[key] = seen.get(key, 0) + 1
            if seen[key] <= first:
                kept.append(j)
        jobs = kept
    return jobs


def _run(args) -> int:
    import triton
    from rich.console import Console

    from hpcbench.kernels import tuning

    # a log or a pipe gets the full table rather than 80 wrapped columns
    console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=200)
    archs = _archs(args.arch)
    console.print(f"triton {triton.__version__} (ASTSource API: {astsource_api()}), "
                  f"ptxas and cuobjdump from {Path(nvidia_tool('cuobjdump')).parent}")
    all_entries: list[Entry] = []
    failed = 0
    for arch in archs:
        jobs = _select(jobs_for(arch), args.kernel, args.first)
        start = time.perf_counter()
        if args.list:
            entries = [stub_entry(j, listing=True) for j in jobs]
        elif args.jobs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                entries = list(pool.map(functools.partial(compile_job, sass=args.sass), jobs))
        else:
            entries = [compile_job(j, args.sass) for j in jobs]
        seconds = time.perf_counter() - start
        console.print(_table(entries, arch, seconds))
        bad = [e for e in entries if e.problems]
        counts = {s: sum(e.status == s for e in entries) for s in ("ok", "failed", "pruned", "skipped", "listed")}
        console.print(f"{arch}: {counts['ok']} compiled, {counts['failed']} failed, {counts['pruned']} pruned "
                      f"by shared memory, {counts['skipped']} skipped"
                      + (f", {counts['listed']} to compile" if args.list else "") + f", in {seconds:.1f} s")
        failed += len(bad)
        all_entries += entries
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "triton": triton.__version__, "astsource_api": astsource_api(),
            "entries": [asdict(e) for e in all_entries]}, indent=1) + "\n")
    return 1 if failed else 0


def _archs(text: str) -> list[str]:
    """The --arch list, each one a known architecture (LLVM aborts on one it does not know)."""
    from hpcbench.kernels import tuning

    archs = [a.strip() for a in text.split(",") if a.strip()]
    known = ", ".join(f"sm_{major}{minor}" for major, minor in tuning.SMEM_LIMIT_BYTES)
    for a in archs:
        try:
            ok = tuning.parse_arch(a) in tuning.SMEM_LIMIT_BYTES
        except ValueError:
            ok = False
        if not ok:
            raise UserError(f"--arch {a}: not an architecture hpcbench knows (known: {known})")
    if not archs:
        raise UserError(f"--arch {text!r}: name at least one architecture (known: {known})")
    return archs


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    _archs(args.arch)  # refused here, before a process is started to compile
    if args.jobs < 1:
        raise UserError(f"-j/--jobs {args.jobs}: use a number of processes >= 1")
    if args.first is not None and args.first < 1:
        raise UserError(f"--first {args.first}: use a number of configs >= 1")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") or interpreted_kernels_loaded():
        # compile with the real compiler: decorate the kernels afresh in a process without it
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        return subprocess.run([sys.executable, "-m", "hpcbench.kernelcheck.cli", *argv], env=env, check=False).returncode
    return _run(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"hpcbench compile-kernels: error: {exc}", file=sys.stderr)
        sys.exit(2)
