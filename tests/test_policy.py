"""iam_policy.json and event_pattern.json agree with the code."""

from __future__ import annotations

import json
import re

from conftest import CALLED_BY_THE_FUNCTION, ROOT

import lambda_function

POLICY = json.loads((ROOT / "iam_policy.json").read_text())
PATTERN = json.loads((ROOT / "event_pattern.json").read_text())


# Lambda itself uses these with the function's role: writing logs, the on-failure queue, and
# with Delivery=buffered, reading the buffer (ReceiveMessage and DeleteMessage the sweep names).
USED_BY_LAMBDA = {
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "sqs:SendMessage",
    "sqs:GetQueueAttributes",
}


# The one Deny: no other Lambda function may act with the function's role.
OTHER_FUNCTIONS_DENIED = "NoOtherFunctionActsWithThisRole"


def allows(policy):
    """The policy's Allow statements; its only Deny is OTHER_FUNCTIONS_DENIED."""
    for statement in policy["Statement"]:
        if statement["Effect"] == "Deny":
            assert statement["Sid"] == OTHER_FUNCTIONS_DENIED
            continue
        assert statement["Effect"] == "Allow"
        yield statement


def granted(service):
    actions = set()
    for statement in allows(POLICY):
        listed = statement["Action"]
        actions |= {
            a
            for a in ([listed] if isinstance(listed, str) else listed)
            if a.startswith(service)
        }
    return actions


def test_policy_grants_exactly_the_actions_the_code_names_beside_its_calls():
    source = (ROOT / "lambda_function.py").read_text()
    named = set()
    for line in re.findall(r"# IAM: (.+)", source):
        named |= set(
            re.findall(
                r"\b(?:ec2|sns|sts|sqs|config|cloudtrail|securityhub|organizations):\w+",
                line,
            )
        )
    assert named == granted("") - USED_BY_LAMBDA


def test_no_wildcard_actions_and_revokes_are_scoped_to_security_groups():
    for statement in allows(POLICY):
        actions = (
            statement["Action"]
            if isinstance(statement["Action"], list)
            else [statement["Action"]]
        )
        assert not any("*" in action for action in actions)
        if any(action.startswith("ec2:Revoke") for action in actions):
            assert all(":security-group" in resource for resource in statement["Resource"])
        if statement["Resource"] == "*":  # only reads that have no resource-level scope
            assert set(actions) <= {
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSecurityGroupRules",
                "ec2:DescribeManagedPrefixLists",
                "config:GetResourceConfigHistory",
                "cloudtrail:LookupEvents",
                "sts:GetCallerIdentity",
                "organizations:ListAccounts",
            }


def test_pattern_selects_the_handled_calls_and_no_failed_ones():
    assert PATTERN["source"] == ["aws.ec2"]
    assert PATTERN["detail"]["eventName"] == list(lambda_function.CHANGE_EVENTS)
    assert PATTERN["detail"]["errorCode"] == [{"exists": False}]


# The modules that, run together, reach every call the policy grants.
WHOLE_SUITE = {"test_reverting", "test_faults", "test_notifying", "test_accounts"}


def policy_mismatch(called: set[str], modules: set[str]) -> list[str]:
    """What is wrong between the calls the suite saw and iam_policy.json (empty: nothing)."""
    function_actions = granted("") - USED_BY_LAMBDA
    wrong = []
    if called - function_actions:
        wrong.append(f"called, not granted: {sorted(called - function_actions)}")
    if WHOLE_SUITE <= modules and function_actions - called:
        wrong.append(f"granted, never called: {sorted(function_actions - called)}")
    return wrong


def test_iam_policy_matches_the_calls_the_suite_saw_the_function_make(request):
    """Under make test's two workers this sees one worker's calls; the controller checks the
    whole set at the end (conftest.pytest_sessionfinish)."""
    modules = {item.module.__name__ for item in request.session.items}
    if hasattr(request.config, "workeroutput"):
        modules = set()  # this worker's share: only "called, not granted" can be told here
    assert policy_mismatch(CALLED_BY_THE_FUNCTION, modules) == []
    granted_actions = granted("") - USED_BY_LAMBDA
    assert policy_mismatch(
        granted_actions - {"ec2:DescribeSecurityGroupRules"},
        WHOLE_SUITE,
    ) == ["granted, never called: ['ec2:DescribeSecurityGroupRules']"]
    assert policy_mismatch(granted_actions | {"ec2:DeleteSecurityGroup"}, set()) == [
        "called, not granted: ['ec2:DeleteSecurityGroup']"
    ]


def test_parliament_finds_nothing_in_the_policy_and_would_notice_a_flaw():
    from parliament import analyze_policy_string

    findings = analyze_policy_string(json.dumps(POLICY)).findings
    assert [(f.issue, f.detail) for f in findings] == []
    flawed = json.loads(json.dumps(POLICY))
    flawed["Statement"][0]["Action"].append("ec2:RevokeSecurityGroupIngres")
    issues = {f.issue for f in analyze_policy_string(json.dumps(flawed)).findings}
    assert "UNKNOWN_ACTION" in issues
