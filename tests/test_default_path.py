"""The default path, the first test an auditor reads: one plain event, the calls it makes, and
what AWS (moto) holds afterwards.

Alice, who is not exempt, opens SSH to the world on a group that has two legitimate rules.
The shipped conditions revert every change. The function makes one AWS call, a revoke of the
rule by its ID, and the group holds exactly what it held before. The code that ran lies in
the section of lambda_function.py between "# The default path" and "# The rest is optional"
(bench/trace_path.py, `make trace`, prints the same figures).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import botocore.handlers
import pytest
from cloudtrail import OPEN, SSH, authorize, eventbridge, rule_set
from conftest import CONTEXT

import lambda_function

TRACER = Path(__file__).resolve().parent.parent / "bench" / "trace_path.py"
spec = importlib.util.spec_from_file_location("trace_path", TRACER)
tracing = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tracing)

# Every AWS call any client makes while a test listens: (service, operation, parameters).
HEARD: list[tuple[str, str, dict]] | None = None


def hear(model, params, **_):
    if HEARD is not None:
        HEARD.append((model.service_model.service_name, model.name, params))


botocore.handlers.BUILTIN_HANDLERS.append(("before-parameter-build", hear))


@pytest.fixture
def heard():
    global HEARD
    HEARD = []
    yield HEARD
    HEARD = None


def test_one_plain_authorize_is_one_revoke_and_the_group_is_as_before(
    ec2, group_id, heard, capsys
):
    before = rule_set(ec2, group_id)
    record = authorize(ec2, group_id, [SSH])  # alice, tcp 22 from 0.0.0.0/0
    (added,) = record["responseElements"]["securityGroupRuleSet"]["items"]
    assert OPEN in rule_set(ec2, group_id)
    heard.clear()  # what the test itself called is not the function's

    result = lambda_function.lambda_handler(eventbridge(record), CONTEXT)

    assert heard == [
        (
            "ec2",
            "RevokeSecurityGroupIngress",
            {
                "GroupId": group_id,
                "SecurityGroupRuleIds": [added["securityGroupRuleId"]],
            },
        )
    ]
    assert rule_set(ec2, group_id) == before
    assert (result["decision"], result["reason"], result["rules"]) == (
        "reverted",
        "not approved by the conditions",
        ["tcp 22 from 0.0.0.0/0"],
    )
    (line,) = capsys.readouterr().out.splitlines()
    logged = json.loads(line)
    assert logged["decision"] == "reverted"
    assert logged["actor"] == "arn:aws:iam::123456789012:user/alice"
    assert logged["groupId"] == group_id


def test_the_code_one_plain_authorize_runs_is_all_in_the_default_path_section(ec2, group_id):
    """The layout an auditor relies on: from the handler to the revoke and the log line, no
    function outside the section (should_revert, the user's, sits in the CONDITIONS block)."""
    event = eventbridge(authorize(ec2, group_id, [SSH]))
    result, ran, calls = tracing.run_traced(
        lambda: lambda_function.lambda_handler(event, CONTEXT)
    )
    found = tracing.figures(ran, calls)
    start, end = found["defaultPath"]
    assert result["decision"] == "reverted"
    assert 0 < start < end, "the default path's start and end are marked"
    assert found["outside"] == []
    assert found["jumps"] <= 4  # calls to a function more than 300 lines away
    assert found["functionLines"] <= 760  # the functions' own lines (make trace: 749)
    assert found["span"][2] <= 1270  # first to last line of them (make trace: 1,262)
