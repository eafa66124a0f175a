"""Loading the conditions: every setting checked when the file loads, one line per typo."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, shipped_source

from lambda_function import ConditionsError, check_conditions

HTTPS = {"ipProtocol": "tcp", "fromPort": 443, "toPort": 443, "cidr": "0.0.0.0/0"}


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        # The typos of a first-time user: each guarded less, silently, before this check.
        ("ONLY_GROUP_IDS", ["sg-0123456789abcdef"], "is not such an ID"),
        ("NEVER_GROUP_IDS", ["SG-0123456789abcdef0"], "is not such an ID"),
        ("NEVER_VPC_IDS", ["vcp-0123456789abcdef0"], "is not such an ID"),
        ("ONLY_VPC_IDS", "vpc-0123456789abcdef0", "must be a list of IDs"),
        ("ALLOWED_RULES", [{"cidr": "0.0.0.0"}], "is not a CIDR like 10.0.0.0/8"),
        ("ALLOWED_RULES", [{"cidrWithin": "10.0.0.0/33"}], "is not a CIDR"),
        ("ALLOWED_RULES", [{**HTTPS, "fromPort": 443, "toPort": 80}], "above toPort"),
        ("ALLOWED_RULES", [{}], "an empty entry would allow every rule"),
        ("ALLOWED_RULES", [{"port": 22}], "unknown key 'port'"),
        ("ALLOWED_RULES", [{"fromPort": "22"}], "fromPort must be int"),
        ("ALLOWED_RULES", [{"isEgress": "yes"}], "isEgress must be bool"),
        ("ALLOWED_RULES", [{"ipProtocol": "gre"}], "ipProtocol 'gre' is not"),
        ("ALLOWED_RULES", [{"toPort": 70000}], "toPort 70000 is not a port"),
        ("ALLOWED_RULES", [{"prefixListId": "pl-office"}], "is not such an ID"),
        ("ALLOWED_RULES", HTTPS, "must be a list of dicts"),
        ("REVERT_EGRESS", "false", "must be True or False"),
        ("REVERT_MODIFIED_RULES", 0, "must be True or False"),
        ("ONLY_TAGGED", ["guardrail"], "must be a dict"),
        ("NEVER_TAGGED", {"team": 5}, "is not a value for tag 'team'"),
        ("NEVER_TAGGED", {"": "x"}, "is not a tag key"),
        ("EXEMPT_PRINCIPALS", "arn:aws:iam::111122223333:user/a", "list of strings"),
        ("EXEMPT_PRINCIPALS", ["alice"], "is not an ARN or service"),
        ("EXEMPT_PRINCIPALS", ["*"], "is not an ARN or service"),
        ("EXEMPT_PRINCIPALS", ["arn:aws:iam::*:*"], "would exempt everyone"),
        ("MEMBER_ROLE_NAME", "role/sg-guardrail", "is not an IAM role name"),
        ("LATE_AFTER_SECONDS", -5, "whole number of seconds"),
        ("should_revert", False, "must be a function"),
    ],
)
def test_a_typo_gives_one_line_naming_the_setting_the_value_and_an_example(
    conditions, setting, value, says
):
    conditions(**{setting: value})
    with pytest.raises(ConditionsError) as raised:
        check_conditions()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"CONDITIONS: {setting}")
    assert says in message
    assert "; e.g. " in message and "e.g. None" not in message


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("EXEMPT_PRINCIPALS", ["arn:aws:iam::111122223333:user/alice"]),
        ("EXEMPT_PRINCIPALS", ["arn:aws:sts::111122223333:assumed-role/Deployer/ci-*"]),
        ("EXEMPT_PRINCIPALS", ["arn:aws-us-gov:iam::*:role/NetworkAdmin"]),
        ("EXEMPT_PRINCIPALS", ["arn:aws:iam::111122223333:root"]),
        ("EXEMPT_PRINCIPALS", ["elasticmapreduce.amazonaws.com"]),
        ("ONLY_GROUP_IDS", ["sg-0123456789abcdef0", "sg-01234567"]),
        ("ONLY_TAGGED", {"guardrail": "on", "team": None}),
        ("ALLOWED_RULES", [HTTPS, {"isEgress": False, "cidrWithin": "10.0.0.0/8"}]),
        ("ALLOWED_RULES", [{"ipProtocol": "icmp", "fromPort": 8, "toPort": 0}]),
        ("ALLOWED_RULES", [{"ipProtocol": "TCP", "fromPort": 22, "toPort": 22}]),
        ("ALLOWED_RULES", [{"ipProtocol": "58", "fromPort": 128, "toPort": -1}]),
        ("ALLOWED_RULES", [{"cidr": "2001:db8::/32"}]),
        ("REVERT_EGRESS", False),
        ("MEMBER_ROLE_NAME", "sg-guardrail-member"),
    ],
)
def test_good_values_pass(conditions, setting, value):
    conditions(**{setting: value})
    check_conditions()


def test_every_problem_is_listed_at_once(conditions):
    conditions(ONLY_GROUP_IDS=["sg-x"], REVERT_EGRESS="no")
    with pytest.raises(ConditionsError) as raised:
        check_conditions()
    assert re.fullmatch(
        r"CONDITIONS: ONLY_GROUP_IDS = sg-x: .*\nCONDITIONS: REVERT_EGRESS = 'no': .*",
        str(raised.value),
    )  # one line each, as the README says


def copy_of_the_function(tmp_path, old, new):
    """lambda_function.py with one edit in its CONDITIONS block as shipped, in a folder of
    its own."""
    source = shipped_source()
    assert source.count(old) == 1, old
    (tmp_path / "lambda_function.py").write_text(source.replace(old, new))
    return tmp_path


def test_a_typo_stops_the_function_from_loading_with_a_readable_error(tmp_path):
    folder = copy_of_the_function(
        tmp_path,
        'ONLY_GROUP_IDS: list[str] = []  # e.g. ["sg-0123456789abcdef0"]',
        'ONLY_GROUP_IDS: list[str] = ["sg-0123456789abcdeg0"]',
    )
    done = subprocess.run(
        [sys.executable, "-c", "import lambda_function"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        "lambda_function.ConditionsError: CONDITIONS: ONLY_GROUP_IDS = "
        'sg-0123456789abcdeg0: is not such an ID; e.g. ["sg-0123456789abcdef0"]'
    )


def test_the_environment_adds_to_the_block_and_is_checked_too(tmp_path):
    folder = tmp_path
    shutil.copy(ROOT / "lambda_function.py", folder)
    env = {"PATH": "/usr/bin:/bin", "EXEMPT_PRINCIPALS": "alice,bob"}
    done = subprocess.run(
        [sys.executable, "-c", "import lambda_function"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "EXEMPT_PRINCIPALS = alice: is not an ARN or service" in done.stderr


def test_a_cold_start_in_lambda_logs_the_conditions_that_run(tmp_path):
    """The block plus what the environment added: one JSON line when Lambda loads the file
    (and none when it is imported anywhere else, where stdout is the command line's)."""
    shutil.copy(ROOT / "lambda_function.py", tmp_path)
    env = {
        "PATH": "/usr/bin:/bin",
        "EXEMPT_PRINCIPALS": "arn:aws:iam::111122223333:role/NetworkAdmin",
        "REVERT_EGRESS": "false",
        "DRY_RUN": "true",
    }
    logged = []
    for lambda_env in ({"AWS_EXECUTION_ENV": "AWS_Lambda_python3.13"}, {}):
        done = subprocess.run(
            [sys.executable, "-c", "import lambda_function"],
            cwd=tmp_path,
            env={**env, **lambda_env},
            capture_output=True,
            text=True,
            check=True,
        )
        logged.append(done.stdout.splitlines())
    (line,), outside_lambda = logged
    effective = json.loads(line)["effectiveConditions"]
    # The environment's exemption comes after the block's, whatever the block holds.
    assert effective["EXEMPT_PRINCIPALS"][-1:] == [
        "arn:aws:iam::111122223333:role/NetworkAdmin"
    ]
    assert (effective["REVERT_EGRESS"], effective["DRY_RUN"]) == (False, True)
    assert outside_lambda == []


def edit_as_the_readme_says(source: str) -> str:
    """What a new user does: uncomment every example in the block's lists, add an exemption
    of their own, a tag condition and an allowed rule."""
    block, rest = source.split("def should_revert(", 1)
    block = re.sub(r'(?m)^    # ([{"])', r"    \1", block)
    edits = {
        'NEVER_TAGGED: dict[str, str | None] = {}  # e.g. {"guardrail": "off", "team": None}': (
            'NEVER_TAGGED: dict[str, str | None] = {"guardrail": "off", "team": None}'
        ),
        "EXEMPT_PRINCIPALS: list[str] = [\n": (
            "EXEMPT_PRINCIPALS: list[str] = [\n"
            '    "arn:aws:sts::123456789012:assumed-role/Developer/*",\n'
        ),
        "ALLOWED_RULES: list[dict[str, Any]] = [\n": (
            "ALLOWED_RULES: list[dict[str, Any]] = [\n"
            '    {"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "cidr": "0.0.0.0/0"},\n'
        ),
    }
    for old, new in edits.items():
        assert block.count(old) == 1, old
        block = block.replace(old, new)
    return block + "def should_revert(" + rest


def test_a_users_edited_block_passes_lint_the_core_tests_and_the_demo(tmp_path):
    """The README's way of editing the block, on a copy of the project: ruff is clean (the
    examples are written as it formats them), the core tests pass (they never depend on
    the block), and the demo shows the edits at work."""
    copy = tmp_path / "project"
    shutil.copytree(
        ROOT,
        copy,
        ignore=shutil.ignore_patterns(".venv*", ".git", "*cache*", ".hypothesis", "dist"),
    )
    function = copy / "lambda_function.py"
    function.write_text(edit_as_the_readme_says(shipped_source()))
    bin_dir = Path(sys.executable).parent

    def run(*command):
        return subprocess.run(
            command, cwd=copy, capture_output=True, text=True, timeout=600, check=False
        )

    for check in (["check"], ["format", "--check"]):
        done = run(str(bin_dir / "ruff"), *check, "lambda_function.py")
        assert done.returncode == 0, done.stdout + done.stderr
    # The core: reading, deciding and the handler whole; reverting on moto for every
    # source kind, repeats, late events, ICMP and the allow-list.
    core = [
        "test_reading.py",
        "test_deciding.py",
        "test_handler.py",
        "test_reverting.py",
    ]
    selection = "not test_reverting or every_source or twice or late or icmp or allow"
    done = run(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *(f"tests/{name}" for name in core),
        "-k",
        selection,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    demo = run(sys.executable, "tests/demo.py")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "NEVER_TAGGED = {'guardrail': 'off', 'team': None}   <- yours" in demo.stdout
    assert "opens SSH to 0.0.0.0/0            kept           reverted" in demo.stdout
    assert "opens RDP to ::/0                 kept           reverted" in demo.stdout
    assert "OK: the function did what its conditions say" in demo.stdout


def test_the_shipped_block_the_text_edits_start_from_holds_the_shipped_conditions():
    """tests/shipped.py's two forms of the block, its text and its values, agree; and the
    text fits the file (the tests that edit the file's text put it in place of the user's)."""
    from shipped import SHIPPED_BLOCK, SHIPPED_CONDITIONS

    found: dict = {}
    exec("from typing import Any\n" + SHIPPED_BLOCK, found)  # noqa: S102 -- our own text
    assert {name: found[name] for name in SHIPPED_CONDITIONS} == SHIPPED_CONDITIONS
    assert found["should_revert"]({}) is True
    assert SHIPPED_BLOCK in shipped_source()


def test_the_code_reads_the_settings_that_run_never_the_blocks_names():
    """Past the CONDITIONS block, no line reads a block's name directly (an f-string too):
    each reads SETTINGS, the block plus what the environment adds, built once at load. A
    bare MEMBER_ROLE_NAME in the member role's ARN would ignore the template's parameter."""
    import ast

    import lambda_function

    source = (ROOT / "lambda_function.py").read_text()
    block_end = next(
        number
        for number, line in enumerate(source.splitlines(), 1)
        if line.startswith("# The default path")
    )
    names = set(lambda_function.Settings._fields)
    read = [
        (node.lineno, node.id)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Name) and node.id in names
        if isinstance(node.ctx, ast.Load) and node.lineno > block_end
    ]
    assert read == []
    assert set(names) == set(lambda_function.EXAMPLES) - {"should_revert"}


def test_settings_from_the_environment_reach_the_member_roles_arn(aws, monkeypatch):
    """MEMBER_ROLE_NAME given only by the deployment (the template's parameter) is the role
    the function assumes, as moto's STS is asked for it."""
    import lambda_function

    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("MEMBER_ROLE_NAME", "from-the-template")
    monkeypatch.setattr(lambda_function, "SETTINGS", check_conditions())
    asked = []
    lambda_function.client("sts", "us-east-1").meta.events.register(
        "before-parameter-build.sts.AssumeRole",
        lambda params, **_: asked.append(params["RoleArn"]),
    )
    assert lambda_function.assume_member_role("111122223333")["AccessKeyId"]
    assert asked == ["arn:aws:iam::111122223333:role/from-the-template"]


def test_a_users_edited_block_with_an_only_condition_still_passes_the_demo(tmp_path):
    """ONLY_TAGGED set (the README's tag example), the demo's group untagged: every row is
    kept, the exception's end keeps its rule too, and the demo does not call that a failure
    (a new user's finding: row 11 expected the revoke whatever the conditions said)."""
    copy = tmp_path / "project"
    shutil.copytree(
        ROOT,
        copy,
        ignore=shutil.ignore_patterns(".venv*", ".git", "*cache*", ".hypothesis", "dist"),
    )
    shipped_line = 'ONLY_TAGGED: dict[str, str | None] = {}  # e.g. {"guardrail": "on"}'
    source = shipped_source()
    assert shipped_line in source
    edited = source.replace(
        shipped_line, 'ONLY_TAGGED: dict[str, str | None] = {"guardrail": "on"}'
    )
    (copy / "lambda_function.py").write_text(edited)
    demo = subprocess.run(
        [sys.executable, "tests/demo.py"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr
    assert "the group lacks the ONLY_TAGGED tags" in demo.stdout
