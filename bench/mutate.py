"""make mutate: a sampled mutation check of the code that reads and decides.

Small plausible mutations (a comparison flipped, < for <=, and for or, a `not` or a condition
dropped, a constant off by one, True for False, in for not in, any for all, the branches of
a conditional swapped, a return value swapped or lost, += for =) are drawn at random, with a
seed it prints, from the parts of lambda_function.py that read and decide (SECTIONS below:
the default path's reading, deciding and other turns, and the sections of older records, late events and
edits, guard tags and prefix lists, found by their "# ====" or "# ----" headers). Each mutant is written into a copy of
the project in a temporary directory (the working file is never touched), and the fast part
of the suite runs against it (pytest -x), two at a time, each with a time limit. A mutant
the tests do not fail survives: a test is missing, or the mutant changes nothing that
matters (equivalent). docs/mutation.md keeps the last run and a verdict for each survivor.

    .venv/bin/python bench/mutate.py [-n 40] [--seed S] [--jobs 2] [--timeout SECONDS]
    .venv/bin/python bench/mutate.py --list            # every candidate, numbered
    .venv/bin/python bench/mutate.py --only 17,230     # those candidates, no sampling
    .venv/bin/python bench/mutate.py --only 17 --all-tests   # against the whole suite

Standard library only; not run by make test.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = "lambda_function.py"
SECTIONS = (
    "Reading the event",
    "Deciding",
    "The default path's other turns",  # ALLOWED_RULES' matching, the group's facts
    "Older and odder records",
    "Late events and edits",
    "Guard tags",
    "Prefix lists",
)

# The fast part of the suite, in the order that fails a mutant soonest: the pure readers
# and deciders first. Left out, measured on 2 cores: test_fuzz.py (50 s of hypothesis),
# test_local_use.py (12 s: the demo and the command line in subprocesses), the test that
# runs lint, the core tests and the demo on an edited copy (21 s), and the IAM check, which
# reads what the whole suite saw the function call (a part of the suite sees less).
FAST = [
    "tests/test_reading.py",
    "tests/test_deciding.py",
    "tests/test_conditions.py",
    "tests/test_edges.py",
    "tests/test_reverting.py",
    "tests/test_restoring.py",
    "tests/test_handler.py",
    "tests/test_locking.py",
    "tests/test_prefix_lists.py",
    "tests/test_tagging.py",
    "tests/test_accounts.py",
    "tests/test_faults.py",
    "tests/test_sweeping.py",
    "tests/test_canary.py",
    "tests/test_buffering.py",
    "tests/test_notifying.py",
    "tests/test_samples.py",
    "tests/test_deployment.py",
    "tests/test_policy.py",
]
DESELECTED = [
    "tests/test_conditions.py::test_a_users_edited_block_passes_lint_the_core_tests_and_the_demo",
    "tests/test_policy.py::test_iam_policy_matches_the_calls_the_suite_saw_the_function_make",
]
COPY_IGNORED = shutil.ignore_patterns(
    ".venv*", ".git", "*cache*", ".hypothesis", "dist", "__pycache__"
)


@dataclass(frozen=True)
class Mutant:
    line: int
    col: int
    end_line: int
    end_col: int
    text: str  # what replaces the node's source
    what: str  # the mutation in words


# ---- Where to mutate ------------------------------------------------------------------------


def section_lines(source: str) -> list[tuple[int, int]]:
    """(first, last) line numbers of each wanted section (or part of the default path, under
    a "# ----" header), from its header to the next header of either kind."""
    lines = source.splitlines()
    headers = [
        (number, lines[number].removeprefix("# ").strip())
        for number in range(1, len(lines))
        if lines[number - 1].startswith(("# ====", "# ----"))
        and lines[number].startswith("# ")
        and not lines[number].startswith(("# ====", "# ----"))
    ]
    found = []
    for index, (number, title) in enumerate(headers):
        if title.startswith(SECTIONS):
            end = headers[index + 1][0] - 1 if index + 1 < len(headers) else len(lines)
            found.append((number, end))  # 1-based: its top rule, up to the next one
    if len(found) != len(SECTIONS):
        raise SystemExit(f"expected the sections {SECTIONS} in {TARGET}, found {found}")
    return found


# ---- What to mutate -------------------------------------------------------------------------

SWAPPED_COMPARISONS = {
    ast.Lt: (ast.LtE, ast.Gt),
    ast.LtE: (ast.Lt, ast.GtE),
    ast.Gt: (ast.GtE, ast.Lt),
    ast.GtE: (ast.Gt, ast.LtE),
    ast.Eq: (ast.NotEq,),
    ast.NotEq: (ast.Eq,),
    ast.In: (ast.NotIn,),
    ast.NotIn: (ast.In,),
    ast.Is: (ast.IsNot,),
    ast.IsNot: (ast.Is,),
}
SYMBOLS = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.And: "and",
    ast.Or: "or",
    ast.Add: "+",
    ast.Sub: "-",
}


def expression(node: ast.AST, replacement: ast.AST, what: str) -> Mutant:
    """An expression replaced, in parentheses so that it binds as the original did."""
    return Mutant(
        node.lineno,
        node.col_offset,
        node.end_lineno,
        node.end_col_offset,
        f"({ast.unparse(replacement)})",
        what,
    )


def statement(node: ast.stmt, replacement: ast.stmt, what: str) -> Mutant:
    return Mutant(
        node.lineno,
        node.col_offset,
        node.end_lineno,
        node.end_col_offset,
        ast.unparse(replacement),
        what,
    )


def mutations_of(node: ast.AST) -> list[Mutant]:
    found = []
    if isinstance(node, ast.Compare):
        for index, op in enumerate(node.ops):
            for other in SWAPPED_COMPARISONS.get(type(op), ()):
                changed = copy.deepcopy(node)
                changed.ops[index] = other()
                found.append(
                    expression(node, changed, f"`{SYMBOLS[type(op)]}` -> `{SYMBOLS[other]}`")
                )
    elif isinstance(node, ast.BoolOp):
        other = ast.Or if isinstance(node.op, ast.And) else ast.And
        changed = copy.deepcopy(node)
        changed.op = other()
        found.append(
            expression(node, changed, f"`{SYMBOLS[type(node.op)]}` -> `{SYMBOLS[other]}`")
        )
        for index, value in enumerate(node.values):
            kept = [copy.deepcopy(v) for i, v in enumerate(node.values) if i != index]
            changed = kept[0] if len(kept) == 1 else ast.BoolOp(node.op, kept)
            found.append(
                expression(node, changed, f"condition `{ast.unparse(value)}` dropped")
            )
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        found.append(expression(node, node.operand, "`not` dropped"))
    elif isinstance(node, ast.Constant) and type(node.value) is bool:
        found.append(
            expression(
                node,
                ast.Constant(not node.value),
                f"`{node.value}` -> `{not node.value}`",
            )
        )
    elif isinstance(node, ast.Constant) and type(node.value) is int:
        for delta in (1, -1):
            found.append(
                expression(
                    node,
                    ast.Constant(node.value + delta),
                    f"`{node.value}` -> `{node.value + delta}`",
                )
            )
    elif (
        isinstance(node, ast.BinOp)
        and type(node.op) in (ast.Add, ast.Sub)
        and any(number(side) for side in (node.left, node.right))
    ):
        other = ast.Sub if isinstance(node.op, ast.Add) else ast.Add
        changed = copy.deepcopy(node)
        changed.op = other()
        found.append(
            expression(node, changed, f"`{SYMBOLS[type(node.op)]}` -> `{SYMBOLS[other]}`")
        )
    elif isinstance(node, ast.IfExp):
        changed = ast.IfExp(node.test, node.orelse, node.body)
        found.append(expression(node, changed, "branches of `... if ... else ...` swapped"))
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("any", "all")
    ):
        other = "all" if node.func.id == "any" else "any"
        changed = copy.deepcopy(node)
        changed.func = ast.Name(other, ast.Load())
        found.append(expression(node, changed, f"`{node.func.id}` -> `{other}`"))
    elif isinstance(node, ast.Return) and node.value is not None:
        value = node.value
        if isinstance(value, ast.Tuple) and len(value.elts) >= 2:
            changed = copy.deepcopy(node)
            elts = changed.value.elts
            elts[0], elts[1] = elts[1], elts[0]
            found.append(statement(node, changed, "first two returned values swapped"))
        if not (isinstance(value, ast.Constant) and value.value is None):
            found.append(
                statement(node, ast.Return(ast.Constant(None)), "`return None` instead")
            )
    elif isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add):
        changed = ast.Assign([node.target], node.value, lineno=node.lineno)
        found.append(statement(node, changed, "`+=` -> `=`"))
    return found


def number(node: ast.AST) -> bool:
    """A number written out (arithmetic, not a sum of tuples or lists)."""
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def skipped(node: ast.AST) -> set[int]:
    """Nodes left alone: messages (f-strings) and decorators (a cache size)."""
    ids = set()
    for found in ast.walk(node):
        parts = []
        if isinstance(found, ast.JoinedStr):
            parts = [found]
        elif isinstance(found, (ast.FunctionDef, ast.AsyncFunctionDef)):
            parts = found.decorator_list
        for part in parts:
            ids |= {id(inner) for inner in ast.walk(part)}
    return ids


def candidates(source: str) -> list[Mutant]:
    tree = ast.parse(source)
    ranges = section_lines(source)
    left_alone = skipped(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in left_alone or not hasattr(node, "lineno"):
            continue
        if not any(first <= node.lineno <= last for first, last in ranges):
            continue
        found += mutations_of(node)
    found.sort(key=lambda m: (m.line, m.col, m.end_line, m.end_col, m.what))
    return found  # each is compiled when drawn: compiling them all takes half a minute


def apply(source: str, mutant: Mutant) -> str:
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(line, col):  # ast columns count UTF-8 bytes
        text = lines[line - 1]
        return starts[line - 1] + len(text.encode()[:col].decode())

    start = offset(mutant.line, mutant.col)
    end = offset(mutant.end_line, mutant.end_col)
    return source[:start] + mutant.text + source[end:]


def compiles(source: str) -> bool:
    try:
        compile(source, TARGET, "exec")
    except SyntaxError:
        return False
    return True


# ---- Running the suite against a mutant -----------------------------------------------------


def project_copy(source: Path, into: Path) -> Path:
    """A copy of the project, beside ../shared as the tests expect."""
    copied = into / "project"
    shutil.copytree(source, copied, ignore=COPY_IGNORED)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (into / "shared").symlink_to(shared)
    return copied


def run_suite(
    snapshot: Path, source: str, timeout: float, tests: list[str]
) -> tuple[str, float, str]:
    """(killed, survived or timeout; seconds; the first failing test or the last line)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutant-") as temporary:
        project = project_copy(snapshot, Path(temporary))
        (project / TARGET).write_text(source)
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            *tests,
        ]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            done = subprocess.run(
                command,
                cwd=project,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return "timeout", time.monotonic() - started, f"over {timeout:.0f} s"
    seconds = time.monotonic() - started
    output = done.stdout.strip().splitlines() or done.stderr.strip().splitlines() or [""]
    if done.returncode == 0:
        return "survived", seconds, output[-1]
    failed = [line for line in output if line.startswith(("FAILED ", "ERROR "))]
    return "killed", seconds, (failed[0] if failed else output[-1])[:160]


def commit() -> str:
    def git(*args):
        found = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )
        return found.stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", TARGET, "tests")
    return head + (" (with uncommitted changes)" if dirty else "")


def line_of(source: str, number: int) -> str:
    return source.splitlines()[number - 1].strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=40, help="mutants to draw (40)")
    parser.add_argument("--seed", type=int, help="seed of the draw (default: random)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants at a time (2)")
    parser.add_argument(
        "--timeout", type=float, help="seconds per mutant (default: 3x the clean run)"
    )
    parser.add_argument("--list", action="store_true", help="list the candidates")
    parser.add_argument("--only", help="comma-separated candidate numbers, no draw")
    parser.add_argument(
        "--all-tests",
        action="store_true",
        help="the whole suite instead of its fast part (to judge a survivor)",
    )
    args = parser.parse_args()

    source = (ROOT / TARGET).read_text()
    every = candidates(source)
    if args.list:
        for number, mutant in enumerate(every):
            print(f"{number:4}  {TARGET}:{mutant.line}  {mutant.what}")
        return 0
    if args.only:
        numbers = [int(n) for n in re.split(r"[,\s]+", args.only.strip()) if n]
        seed = None
    else:
        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
        numbers = sorted(
            random.Random(seed).sample(range(len(every)), min(args.n, len(every)))
        )
    at = commit()
    print(f"{len(every)} candidate mutations in {', '.join(SECTIONS)} of {TARGET}")
    print(
        f"commit {at}; "
        + (f"seed {seed}, " if seed is not None else "")
        + f"{len(numbers)} mutants, {args.jobs} at a time",
        flush=True,
    )
    # The project as it is now (uncommitted changes too), copied once: what is edited
    # during the run does not leak into the mutants run later.
    with tempfile.TemporaryDirectory(prefix="mutate-snapshot-") as temporary:
        snapshot = project_copy(ROOT, Path(temporary))
        return measure(snapshot, source, every, numbers, args, seed, at)


def measure(
    snapshot: Path,
    source: str,
    every: list[Mutant],
    numbers: list[int],
    args: argparse.Namespace,
    seed: int | None,
    at: str,
) -> int:
    started = time.monotonic()
    tests = ["tests"] if args.all_tests else FAST + [f"--deselect={t}" for t in DESELECTED]
    verdict, seconds, said = run_suite(snapshot, source, 3600, tests)
    if verdict != "survived":
        print(f"the suite fails without any mutation ({said}): nothing to measure")
        return 2
    timeout = args.timeout or 3 * seconds
    print(f"clean run: {seconds:.0f} s; at most {timeout:.0f} s a mutant", flush=True)
    broken = [n for n in numbers if not compiles(apply(source, every[n]))]
    for number in broken:  # none so far: unparse and parentheses keep the syntax
        print(f"#{number} does not compile, left out: {every[number].what}")
    numbers = [n for n in numbers if n not in broken]
    results = {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            pool.submit(run_suite, snapshot, apply(source, every[n]), timeout, tests): n
            for n in numbers
        }
        for done_count, future in enumerate(as_completed(futures), 1):
            number = futures[future]
            results[number] = verdict, seconds, said = future.result()
            mutant = every[number]
            print(
                f"[{done_count:3}/{len(numbers)}] {verdict:8} #{number} "
                f"{TARGET}:{mutant.line} {mutant.what} ({seconds:.0f} s)"
                + (f"  {said}" if verdict == "killed" else ""),
                flush=True,
            )
    survivors = [n for n in numbers if results[n][0] == "survived"]
    killed = len(numbers) - len(survivors)
    print()
    print(
        f"score: {killed}/{len(numbers)} killed ({100 * killed / max(len(numbers), 1):.1f}%)"
        + (f", seed {seed}" if seed is not None else "")
        + f", commit {at}, {time.monotonic() - started:.0f} s with the clean run"
    )
    for number in survivors:
        mutant = every[number]
        mutated = apply(source, mutant).splitlines()[mutant.line - 1].strip()
        print(f"survived #{number} {TARGET}:{mutant.line}: {mutant.what}")
        print(f"    was: {line_of(source, mutant.line)}")
        print(f"    now: {mutated}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
