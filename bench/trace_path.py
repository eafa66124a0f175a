"""make trace: where one plain event runs in lambda_function.py, as an auditor would follow it.

One fresh AuthorizeSecurityGroupIngress (tcp 22 from 0.0.0.0/0, the shipped conditions, no
optional feature on) is handed to the handler on moto, in process, under sys.settrace. It
prints what an auditor reading that event down the page meets:

- functions: the functions of lambda_function.py that ran (each counted once);
- lines: the distinct lines of the file that ran;
- span: the first and last line of those functions (def to last line), and its length;
- jumps: calls from a line of the file to a function of it that starts more than 300 lines
  away (where the reader scrolls away; the return brings them back);
- outside: functions that ran outside the default-path section (between the line
  "# The default path" and the line "# The rest is optional");
- and the size of each section of the file (its "# ====" headers).

    .venv/bin/python bench/trace_path.py [--json]

tests/test_default_path.py holds the same trace to its layout: no function outside.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET = str(ROOT / "lambda_function.py")
JUMP = 300
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def functions_of(path: str) -> dict[int, tuple[str, int, int]]:
    """Every function of the file: its first line (decorators aside) -> (name, def, end)."""
    tree = ast.parse(Path(path).read_text())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found[node.lineno] = (
                node.name,
                node.lineno,
                node.end_lineno or node.lineno,
            )
    return found


def sections_of(path: str) -> list[tuple[str, int, int]]:
    """(title, first line, last line) of each section: a header is the comment between two
    "# ====" lines, its first line the title; the docstring and imports come first."""
    lines = Path(path).read_text().splitlines()
    rules = [i for i, text in enumerate(lines) if text.startswith("# ====")]
    starts = rules[0::2]  # each header opens with one rule line and closes with another
    bounds = [0, *starts, len(lines)]
    titles = ["docstring and imports"] + [
        lines[start + 1].lstrip("# ").strip() for start in starts
    ]
    return [(titles[k], bounds[k] + 1, bounds[k + 1]) for k in range(len(titles))]


def default_path_bounds(path: str) -> tuple[int, int]:
    """The lines of the default-path section: its header to the marked end."""
    lines = Path(path).read_text().splitlines()
    start = next((i + 1 for i, t in enumerate(lines) if t.startswith("# The default path")), 0)
    end = next(
        (i + 1 for i, t in enumerate(lines) if t.startswith("# The rest is optional")),
        0,
    )
    return start, end


def run_traced(call: Any) -> tuple[Any, list[int], list[tuple[int, int]]]:
    """call() under sys.settrace: its result, the lines of lambda_function.py that ran, in
    order, and each call made from a line of the file to a function of it."""
    ran: list[int] = []
    calls: list[tuple[int, int]] = []  # (the calling line, the callee's def line)

    def tracer(frame, why, _):
        if frame.f_code.co_filename != TARGET:
            return None
        if why == "call":
            caller = frame.f_back
            if caller and caller.f_code.co_filename == TARGET:
                calls.append((caller.f_lineno, frame.f_code.co_firstlineno))
        if why == "line":
            ran.append(frame.f_lineno)
        return tracer

    sys.settrace(tracer)
    try:
        result = call()
    finally:
        sys.settrace(None)
    return result, ran, calls


def trace_one_authorize() -> dict[str, Any]:
    """Run the event on moto; what ran, in lambda_function.py."""
    os.environ.update(
        AWS_ACCESS_KEY_ID="trace",  # never real credentials: the only AWS here is moto
        AWS_SECRET_ACCESS_KEY="trace",
        AWS_DEFAULT_REGION="us-east-1",
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "DRY_RUN", "NOTIFY_TOPIC_ARN"):
        os.environ.pop(name, None)
    from cloudtrail import SSH, authorize, eventbridge
    from moto import mock_aws
    from shipped import SHIPPED_CONDITIONS

    import lambda_function

    for name, value in SHIPPED_CONDITIONS.items():
        setattr(lambda_function, name, value)
    lambda_function.SETTINGS = lambda_function.check_conditions()
    context = SimpleNamespace(
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:sg-guardrail",
        get_remaining_time_in_millis=lambda: 30_000,
    )
    with mock_aws():
        import boto3

        ec2 = boto3.client("ec2", region_name="us-east-1")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        group = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)[
            "GroupId"
        ]
        event = eventbridge(authorize(ec2, group, [SSH]))
        with contextlib.redirect_stdout(sys.stderr):  # the handler's log line: not ours
            result, ran, calls = run_traced(
                lambda: lambda_function.lambda_handler(event, context)
            )
    return {"result": result, "ran": ran, "calls": calls}


def figures(ran: list[int], calls: list[tuple[int, int]]) -> dict[str, Any]:
    functions = functions_of(TARGET)
    starts = sorted(functions)

    def owner(line: int) -> tuple[str, int, int] | None:
        best = None
        for start in starts:  # the innermost function that holds the line
            name, first, last = functions[start]
            if first <= line <= last and (best is None or first >= best[1]):
                best = (name, first, last)
        return best

    owners = {line: owner(line) for line in set(ran)}
    used = {found for found in owners.values() if found}
    # A jump: a call whose callee starts more than JUMP lines from the line that calls it,
    # where the reader must scroll away (the return brings them back where they were).
    jumps = sum(1 for line, callee in calls if abs(callee - line) > JUMP)
    first = min(found[1] for found in used)
    last = max(found[2] for found in used)
    start, end = default_path_bounds(TARGET)
    conditions_end = next(
        last for title, _, last in sections_of(TARGET) if title.startswith("CONDITIONS")
    )
    outside = sorted(
        f"{name} ({first_line})"
        for name, first_line, last_line in used
        if last_line > conditions_end  # should_revert is the user's, in the block
        if not (start and end and start <= first_line and last_line <= end)
    )
    return {
        "functions": len(used),
        "lines": len({line for line in ran if owners[line]}),
        "functionLines": sum(last - first + 1 for _, first, last in used),
        "used": sorted((first, last, name) for name, first, last in used),
        "span": [first, last, last - first + 1],
        "jumps": jumps,
        "defaultPath": [start, end],
        "outside": outside,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args()
    traced = trace_one_authorize()
    found = figures(traced["ran"], traced["calls"])
    found["decision"] = traced["result"]["decision"]
    found["sections"] = [
        {"section": title, "lines": last - first + 1, "from": first}
        for title, first, last in sections_of(TARGET)
    ]
    found["fileLines"] = len(Path(TARGET).read_text().splitlines())
    if args.json:
        print(json.dumps(found, indent=1))
        return
    span = found["span"]
    print(
        f"one plain Authorize ({found['decision']}): {found['functions']} functions, "
        f"{found['lines']} lines run of {found['functionLines']} in those functions, spread over lines {span[0]}-{span[1]} ({span[2]} lines) "
        f"of {found['fileLines']}, {found['jumps']} jumps of more than {JUMP} lines"
    )
    start, end = found["defaultPath"]
    if start and end:
        print(f"default path: lines {start}-{end} ({end - start + 1} lines)")
    else:
        print("default path: no section marked")
    if found["outside"]:
        print("outside it:", ", ".join(found["outside"]))
    print("sections:")
    for section in found["sections"]:
        print(f"  {section['from']:5}  {section['lines']:5}  {section['section']}")


if __name__ == "__main__":
    main()
