#!/usr/bin/env python3
"""Bounded mutation testing of the modules whose numbers users read (targets: scripts/mutation_targets.toml).

    python scripts/mutation.py                                         # every target, <= --budget-min
    python scripts/mutation.py --module stragglers --max-per-module 15
    python scripts/mutation.py --list [--module NAME]                  # the sampled mutants, nothing run

Code in functions is mutated by mutmut 3 (pip install -e '.[mutation]'): a child forked per mutant runs only the
tests that reached the mutated function. Module-level code, which mutmut leaves alone (tables such as COLLECTIVES
and their lambdas, dataclass and argument defaults), gets the script's AST mutants (comparisons, arithmetic,
numbers, booleans, and/or, `not`), each run against the module's whole selection by a pytest fork server. All
runs happen in a scratch copy of the repository, one pytest at a time, with the copy's src/ first on sys.path.
"""

from __future__ import annotations

import argparse, ast, copy, datetime, importlib.util, json, os, random, re, shutil, signal  # noqa: E401
import itertools, subprocess, sys, tempfile, time, tomllib  # noqa: E401
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from mutation_report import COUNTS, load_verdicts, markdown  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
PLANT = 'raise RuntimeError("hpcbench-mutation: planted mutant")'
STRING = re.compile(r"""[rbufRBUF]{0,2}("[^"\\\n]*(?:\\.[^"\\\n]*)*"|'[^'\\\n]*(?:\\.[^'\\\n]*)*')""")
MUTMUT_STATUS = {"killed": "killed", "caught by type check": "killed", "survived": "survived",
                 "timeout": "timeout", "no tests": "no_tests", "not checked": "not_run"}
PYTEST_STATUS = {None: "timeout", 0: "survived", 1: "killed", 2: "killed", 3: "killed"}  # 2: an import fails
CMP = {ast.Lt: (ast.LtE, ast.GtE), ast.LtE: (ast.Lt, ast.Gt), ast.Gt: (ast.GtE, ast.LtE), ast.GtE: (ast.Gt, ast.Lt),
       ast.Eq: (ast.NotEq,), ast.NotEq: (ast.Eq,), ast.Is: (ast.IsNot,), ast.IsNot: (ast.Is,),
       ast.In: (ast.NotIn,), ast.NotIn: (ast.In,)}
BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mod,
       ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.LShift: ast.RShift, ast.RShift: ast.LShift,
       ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}
SKIP_FIELDS = {"annotation", "returns", "decorator_list", "type_params", "type_comment"}
GEN = ("import io, contextlib, mutmut.__main__ as m\n"
       "with contextlib.redirect_stdout(io.StringIO()):\n    m.copy_src_dir(); m.copy_also_copy_files(); m.create_mutants(1)")
SHOW = ("import io, json, sys, contextlib\nfrom mutmut.__main__ import cli\nout = {}\n"
        "for n in json.load(open(sys.argv[1])):\n    b = io.StringIO()\n"
        "    with contextlib.redirect_stdout(b):\n        cli.main(['show', n], standalone_mode=False)\n"
        "    out[n] = b.getvalue()\njson.dump(out, open(sys.argv[1], 'w'))")
# The fork server reads [pytest args, log file, timeout] lines and answers each with the exit code or "timeout".
SERVER = r"""
import json, os, sys, time
import numpy, pandas, pytest, scipy.special, scipy.stats, torch  # imported once; hpcbench never here
for line in sys.stdin:
    args, log, timeout = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            os.setsid(), os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(fd := os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1), os.dup2(fd, 2)
            code = int(pytest.main(args))
            sys.stdout.flush(), sys.stderr.flush()
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while not (done := os.waitpid(pid, os.WNOHANG))[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    if not done[0]:
        os.killpg(pid, 9), os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(done[1]) if done[0] else "timeout", flush=True)
"""


def run(cmd: list[str], cwd: Path, timeout: float | None = None) -> tuple[int | None, str]:
    """(exit code, None on timeout; output). A timed-out command's process group gets SIGINT, then SIGKILL."""
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    for sig, wait in ((None, timeout), (signal.SIGINT, 20), (signal.SIGKILL, None)):
        if sig:
            os.killpg(p.pid, sig)
        try:
            out = p.communicate(timeout=wait)[0]
            return (p.returncode if sig is None else None), out
        except subprocess.TimeoutExpired:
            pass


class Pytest:
    """pytest runs in the scratch copy, each forked from a server that imported the heavy dependencies once."""

    def __init__(self, work: Path):
        path = os.pathsep.join(filter(None, [str(work / "src"), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=path)
        self.log = work / ".mutation-pytest.log"
        self.server = subprocess.Popen([PY, "-c", SERVER], cwd=work, env=env, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, start_new_session=True)

    def __call__(self, args: list[str], timeout: float) -> tuple[int | None, str, float]:
        t0 = time.monotonic()
        request = [["-q", "-x", "-p", "no:cacheprovider", *args], str(self.log), timeout]
        print(json.dumps(request), file=self.server.stdin, flush=True)
        if not (answer := self.server.stdout.readline().strip()):
            raise RuntimeError("the pytest fork server died")
        return None if answer == "timeout" else int(answer), self.log.read_text(errors="replace"), time.monotonic() - t0

    def close(self) -> None:
        self.server.stdin.close(), self.server.wait()  # the server ends after its current child (which has a timeout)


def make_copy(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        if (REPO / rel).is_file():  # a tracked file deleted in the work tree is not copied
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)


def selection(target: dict, work: Path, marker_expr: str | None, notes: list[str]) -> list[str] | None:
    files = [t for t in target["tests"] if (work / t.split("::")[0]).exists()]
    notes += [f"{t.split('::')[0]} does not exist (yet): left out" for t in target["tests"] if t not in files]
    return files and files + [f"--deselect={d}" for d in target.get("deselect", [])] + (
        ["-k", target["k"]] if target.get("k") else []) + (["-m", marker_expr] if marker_expr else []) or None


def _walk(node: ast.AST):
    yield node
    for name, value in [] if isinstance(node, ast.JoinedStr) else ast.iter_fields(node):  # f-strings: bad positions
        for child in [] if name in SKIP_FIELDS else value if isinstance(value, list) else [value]:
            if isinstance(child, ast.AST) and not (isinstance(child, ast.Expr) and isinstance(child.value, ast.Constant)):
                yield from _walk(child)


def _roots(body: list[ast.stmt]):
    """What mutmut leaves alone: module and class-level assignments, default arguments."""
    for s in body:
        if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from [*s.args.defaults, *filter(None, s.args.kw_defaults)]
        elif isinstance(s, ast.ClassDef):
            yield from _roots(s.body)
        elif isinstance(s, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and s.value is not None:
            if not any(getattr(t, "id", "") == "__all__" for t in getattr(s, "targets", [])):
                yield s if isinstance(s, ast.AugAssign) else s.value


def _sites(node: ast.AST):
    """(node whose source span is replaced, replacement text, kind) for each mutation of `node`."""
    paren = lambda n: "(" + ast.unparse(n) + ")"  # noqa: E731
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for new in CMP.get(type(op), ()):
                m = copy.deepcopy(node)
                m.ops[i] = new()
                yield node, paren(m), "comparison"
    elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in BIN:
        m = copy.deepcopy(node)
        m.op = BIN[type(node.op)]()
        yield node, paren(m) if isinstance(node, ast.BinOp) else ast.unparse(m), "arithmetic"
    elif isinstance(node, ast.BoolOp):
        yield node, paren(ast.BoolOp(ast.Or() if isinstance(node.op, ast.And) else ast.And(), node.values)), "boolean"
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield node, paren(node.operand), "not removed"
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        yield node, repr(not node.value), "constant"
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
        v = node.value
        new = [v + 1, *([v - 1] if v > 1 else []), 0 if v else 1] if type(v) is int else [v / 2 if v else 1.0, 0.0]
        for n in dict.fromkeys(new):
            yield node, repr(n), "constant"


def ast_mutants(work: Path, rel: str, name: str) -> list[dict]:
    raw = (work / rel).read_bytes()
    starts = [0, *itertools.accumulate(len(line) for line in raw.splitlines(keepends=True))]
    seen, out, dump = set(), [], ast.dump(tree := ast.parse(raw))
    for node in (n for root in _roots(tree.body) for n in _walk(root)):
        for target, text, kind in _sites(node):
            a, b = (starts[target.lineno - 1] + target.col_offset, starts[target.end_lineno - 1] + target.end_col_offset)
            mutated = raw[:a] + text.encode() + raw[b:]
            try:
                if (a, b, text) in seen or seen.add((a, b, text)) or ast.dump(ast.parse(mutated)) == dump:
                    continue  # a mutant seen already, or one that changes nothing (0.0 -> 0.0)
            except SyntaxError:
                continue
            first, end = starts[target.lineno - 1], starts[min(target.end_lineno, len(starts) - 1)]
            out.append({"id": f"{name}.ast_{len(out) + 1}", "engine": "ast", "kind": kind, "file": rel,
                        "line": target.lineno, "source": mutated.decode(), "original": raw[first:end].decode().rstrip("\n"),
                        "mutated": (raw[first:a] + text.encode() + raw[b:end]).decode().rstrip("\n")})
    return out


def with_source(pytest, path: Path, source: str, args: list[str], timeout: float) -> tuple[int | None, str]:
    original, stat = path.read_bytes(), path.stat()
    try:
        path.write_bytes(source.encode())
        return pytest(args, timeout)[:2]
    finally:  # the original bytes and times: mutmut would otherwise generate this file's mutants again
        path.write_bytes(original), os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def mutmut_statuses(work: Path) -> dict[str, str]:
    out = run([PY, "-m", "mutmut", "results", "--all", "true"], work)[1]
    pairs = (line.strip().rsplit(": ", 1) for line in out.splitlines())
    return {p[0]: p[1] for p in pairs if len(p) == 2 and "__mutmut_" in p[0]}


def _diff_lines(diff: str) -> tuple[list[str], list[str], int]:
    minus, plus, first, cur = [], [], 0, None
    for line in diff.splitlines():
        if hunk := re.match(r"@@ -(\d+)", line):
            cur = int(hunk.group(1))
        elif cur is not None and line[:1] in "-+":
            (minus if line[0] == "-" else plus).append(line[1:])
            first, cur = first or cur, cur + (line[0] == "-")
        elif cur is not None:
            cur += 1
    return minus, plus, first or 1


def _function_lines(tree: ast.Module, key: str, n_lines: int) -> tuple[int, int]:
    """First and last line of the function a mutmut key names (x_f__mutmut_3, xǁClassǁmethod__mutmut_3)."""
    short = key.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0]
    cls, func = short.split("ǁ")[1:3] if short.startswith("xǁ") else (None, short[2:])
    for parent in ast.walk(tree):
        if isinstance(parent, ast.ClassDef if cls else ast.Module) and (not cls or parent.name == cls):
            for f in parent.body:
                if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.name == func:
                    return min([f.lineno] + [d.lineno for d in f.decorator_list]), f.end_lineno
    return 1, n_lines


def mutmut_mutants(work: Path, target: dict, args: list[str], factor: float) -> list[dict]:
    shutil.rmtree(work / "mutants", ignore_errors=True)
    lines = ["[mutmut]", "source_paths=src", f"only_mutate={target['file']}", "also_copy=conf", "    kernels",
             "    conftest.py", "pytest_add_cli_args_test_selection=" + "\n    ".join(args),
             f"timeout_multiplier={factor / 2}", "use_git_change_detection=false"]  # mutmut doubles the multiplier
    (work / "setup.cfg").write_text("\n".join(lines).replace("%", "%%") + "\n")
    rc, out = run([PY, "-c", GEN], work)
    if rc != 0:
        raise RuntimeError(f"mutmut could not generate mutants:\n{out[-3000:]}")
    names = sorted(mutmut_statuses(work))
    (listing := work / "mutants" / "names.json").write_text(json.dumps(names))
    if (rc := run([PY, "-c", SHOW, str(listing)], work))[0] != 0:
        raise RuntimeError(f"mutmut show failed:\n{rc[1][-3000:]}")
    diffs = json.loads(listing.read_text())
    src_lines = (work / target["file"]).read_text().splitlines()
    tree, mutants = ast.parse("\n".join(src_lines)), []
    for name in names:
        minus, plus, first = _diff_lines(diffs[name])
        lo, hi = _function_lines(tree, name, len(src_lines))
        guess = min(lo + first - 1, hi)
        hits = [i + 1 for i in range(max(lo - 10, 0), hi) if minus and src_lines[i].strip() == minus[0].strip()]
        before, after = "\n".join(minus), "\n".join(plus)
        mutants.append({"id": name, "engine": "mutmut", "file": target["file"], "original": before, "mutated": after,
                        "kind": "string" if STRING.sub('""', before) == STRING.sub('""', after) else "function",
                        "line": min(hits, key=lambda i: abs(i - guess)) if hits else guess})
    return mutants


def sample(pool: list[dict], n: int, seed: str) -> list[dict]:
    return pool if len(pool) <= n else [pool[i] for i in sorted(random.Random(seed).sample(range(len(pool)), n))]


def blank(target: dict, status: str = "ok") -> dict:
    return {"name": target["name"], "file": target["file"], "notes": [], "status": status, "pytest_args": None,
            "counts": dict.fromkeys(COUNTS, 0), "survivors": [], "no_tests": {}, "others": []}


def module(target: dict, work: Path, opts, pytest: Pytest | None, marker_expr: str | None, deadline: float) -> dict:
    res, name, rel = blank(target), target["name"], target["file"]
    res["pytest_args"] = selection(target, work, marker_expr, notes := res["notes"])
    if (args := res["pytest_args"]) is None or not (work / rel).exists():
        return res | {"status": "skipped: none of its test files exists" if args is None else f"skipped: {rel} missing"}
    tables, mm = ast_mutants(work, rel, name), mutmut_mutants(work, target, args, opts.timeout_factor)
    mm_pool = [m for m in mm if opts.strings or m["kind"] != "string"]
    res["generated"] = {"ast": len(tables), "mutmut": len(mm), "mutmut_string_only_left_out": len(mm) - len(mm_pool)}
    picked_ast = sample(tables, opts.max_tables, f"{opts.seed}:{name}:ast")
    picked_mm = sample(mm_pool, opts.max_per_module, f"{opts.seed}:{name}:mutmut")
    res["sampled"] = len(picked_ast) + len(picked_mm)
    if opts.list:
        return res | {"mutants": [{k: v for k, v in m.items() if k != "source"} for m in picked_ast + picked_mm]}
    rc, out, base = pytest(args, max(deadline - time.time(), 60))
    res["baseline_s"] = round(base, 1)
    if rc != 0:
        return res | {"status": f"refused: its tests fail unmutated (pytest exit {rc})", "baseline_output": out[-4000:]}
    planted = (work / rel).read_bytes().decode().rstrip("\n") + "\n" + PLANT + "\n"
    rc, out = with_source(pytest, work / rel, planted, args, max(opts.timeout_factor * base, 30))
    if rc == 0 or "planted mutant" not in out:
        return res | {"status": "refused: a planted mutant did not fail the tests (is the copy's module the one imported?)",
                      "planted_output": out[-4000:]}
    timeout = max(opts.timeout_factor * base, 10)
    results = {m["id"]: PYTEST_STATUS.get(with_source(pytest, work / rel, m["source"], args, timeout)[0], "other")
               if time.time() < deadline - 5 else "not_run" for m in picked_ast}
    if picked_mm and time.time() >= deadline - 30:
        notes.append("no time left in the module's share of --budget-min for mutmut: its mutants are not_run")
    elif picked_mm:
        rc, out = run([PY, "-m", "mutmut", "run", "--max-children", "1", *(m["id"] for m in picked_mm)], work,
                      deadline - time.time())
        if rc is None:
            notes.append("mutmut stopped at the module's share of --budget-min; the rest are not_run")
        elif rc != 0:
            res["status"] = f"mutmut failed (exit {rc}): see notes"
            notes.append(f"mutmut run exited {rc}: {out[-1500:]}")
    statuses = mutmut_statuses(work) if picked_mm else {}
    results |= {m["id"]: MUTMUT_STATUS.get(statuses.get(m["id"], "not checked"), "other") for m in picked_mm}
    for m in picked_ast + picked_mm:
        status, entry = results[m["id"]], {k: v for k, v in m.items() if k != "source"}
        res["counts"][status] += 1
        if status == "survived":
            res["survivors"].append(entry)
        elif status == "no_tests":
            fn = m["id"].rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0].lstrip("x").replace("ǁ", ".").strip("._")
            res["no_tests"][fn] = res["no_tests"].get(fn, 0) + 1
        elif status == "other":
            res["others"].append(entry | {"status": statuses.get(m["id"], status)})
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module", action="append", help="a target's name (repeatable); default: every target")
    ap.add_argument("--list", action="store_true", help="list the mutants a run would sample, run nothing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-per-module", type=int, default=200, help="mutants sampled per module (in functions)")
    ap.add_argument("--max-tables", type=int, default=20, help="module-level (AST) mutants sampled per module")
    ap.add_argument("--timeout-factor", type=float, default=10.0, help="a mutant's timeout, in baselines of its module")
    ap.add_argument("--budget-min", type=float, default=30.0, help="wall-clock budget of the whole run, shared")
    ap.add_argument("--strings", action="store_true", help="keep mutants that change only a string literal")
    ap.add_argument("--targets", type=Path, default=Path(__file__).with_name("mutation_targets.toml"))
    ap.add_argument("--out", type=Path, help="the Markdown report, a .json beside it (default /tmp/hpcbench-mutation-*)")
    ap.add_argument("--workdir", type=Path, help="where to make the scratch copy (default: a new temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copy")
    opts = ap.parse_args()
    config = tomllib.loads(opts.targets.read_text())
    targets = [t for t in config["target"] if not opts.module or t["name"] in opts.module]
    if opts.module and len(targets) != len(set(opts.module)):
        ap.error(f"unknown module; known: {', '.join(t['name'] for t in config['target'])}")
    if importlib.util.find_spec("mutmut") is None:
        ap.error("mutmut is not installed: pip install -e '.[mutation]'")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_md = (opts.out or Path(tempfile.gettempdir()) / f"hpcbench-mutation-{stamp}.md").resolve()
    if opts.workdir and opts.workdir.exists() and any(opts.workdir.iterdir()):
        ap.error("--workdir must be new or empty (it is deleted afterwards unless --keep)")
    work = (opts.workdir or Path(tempfile.mkdtemp(prefix="hpcbench-mutation-"))).resolve()
    if out_md.is_relative_to(REPO / "results") or work.is_relative_to(REPO):
        ap.error("the report must not go under results/, nor the scratch copy inside the repository")
    start, pytest, modules, marker_expr = time.time(), None, [], None
    try:
        make_copy(work)
        defaults = config.get("defaults", {})
        markers = run([PY, "-m", "pytest", "--markers", "-p", "no:cacheprovider"], work)[1]
        registered = all(f"@pytest.mark.{m}:" in markers for m in defaults.get("cost_markers", ["-"]))
        marker_expr = defaults.get("marker_expr") if registered else None
        pytest = None if opts.list else Pytest(work)
        for i, target in enumerate(targets):
            share = (start + opts.budget_min * 60 - time.time()) / (len(targets) - i)
            print(f"[{time.time() - start:5.0f} s] {target['name']} (up to {share:.0f} s)", file=sys.stderr, flush=True)
            try:
                modules.append(module(target, work, opts, pytest, marker_expr, time.time() + share))
            except Exception as e:  # one module's failure does not lose the others' results
                modules.append(blank(target, f"error: {e!r}"))
    finally:
        pytest and pytest.close()
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    report = {"run": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()} | {
        "started": stamp, "wall_s": round(time.time() - start), "marker_expr": marker_expr}, "modules": modules}
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text := markdown(report, load_verdicts()))
    out_md.with_suffix(".json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print(text)
    print(f"report: {out_md} and {out_md.with_suffix('.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
