"""iam_policy.json and event_pattern.json agree with the code."""

from __future__ import annotations

import json
import re

from conftest import ROOT

import lambda_function

POLICY = json.loads((ROOT / "iam_policy.json").read_text())
PATTERN = json.loads((ROOT / "event_pattern.json").read_text())


def granted(service):
    actions = set()
    for statement in POLICY["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"]
        actions |= {
            a
            for a in ([listed] if isinstance(listed, str) else listed)
            if a.startswith(service)
        }
    return actions


def test_policy_grants_exactly_the_ec2_actions_the_code_names():
    source = (ROOT / "lambda_function.py").read_text()
    named = set()
    for line in re.findall(r"# IAM: (.+)", source):
        named |= set(re.findall(r"ec2:\w+", line))
    assert named == granted("ec2:")


def test_no_wildcard_actions_and_revokes_are_scoped_to_security_groups():
    for statement in POLICY["Statement"]:
        actions = (
            statement["Action"]
            if isinstance(statement["Action"], list)
            else [statement["Action"]]
        )
        assert not any("*" in action for action in actions)
        if any(action.startswith("ec2:Revoke") for action in actions):
            assert all(
                ":security-group" in resource for resource in statement["Resource"]
            )
        if statement["Resource"] == "*":
            assert all(action.startswith("ec2:Describe") for action in actions)


def test_pattern_selects_the_handled_calls_and_no_failed_ones():
    assert PATTERN["source"] == ["aws.ec2"]
    assert PATTERN["detail"]["eventName"] == list(lambda_function.HANDLED_EVENTS)
    assert PATTERN["detail"]["errorCode"] == [{"exists": False}]
