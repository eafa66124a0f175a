"""The canary (Canary=true): a schedule adds a harmless rule to an empty group every few hours;
the live path reverts it whatever the conditions say, quietly; the sweep tells (topic and
metric) when one is still there after the grace period, and takes it out. The schedule's
request is EventBridge Scheduler's universal target (the EC2 API's own parameters), with the
<aws.scheduler.scheduled-time> context attribute in the description, as its user guide shows."""

from __future__ import annotations

import datetime
import json

import pytest
from botocore.stub import Stubber
from cloudtrail import assumed_role, authorize, rules_of
from conftest import CONTEXT
from test_deployment import RESOURCES
from test_sweeping import sweep_with_history, trail_record

import lambda_function
from lambda_function import lambda_handler

CANARY_ROLE = assumed_role("sg-guardrail-canary", "e3b0c44298fc1c14")


def canary_rule(when: str | None) -> dict:
    description = "sg-guardrail canary" + (f" {when}" if when else "")
    return {
        "IpProtocol": "tcp",
        "FromPort": 9,
        "ToPort": 9,
        "IpRanges": [{"CidrIp": "192.0.2.1/32", "Description": description}],
    }


def minutes_ago(minutes: int) -> str:
    then = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=minutes)
    return then.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def canary(ec2, vpc_id, monkeypatch):
    group = ec2.create_security_group(
        GroupName="sg-guardrail-canary", Description="canary", VpcId=vpc_id
    )["GroupId"]
    monkeypatch.setenv("CANARY_GROUP_ID", group)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return group


def canary_rules(ec2, group):
    return [r for r in rules_of(ec2, group) if r.get("CidrIpv4") == "192.0.2.1/32"]


@pytest.mark.parametrize(
    "when",
    [minutes_ago(30), None, "yesterday"],
    ids=["30 minutes old", "no time", "an unreadable time"],
)
def test_a_canary_rule_the_live_path_left_is_told_as_a_blind_spot_and_taken_out(
    ec2, canary, inbox, capsys, when
):
    """On the old code the sweep never looked: a blind guardrail looked like an idle one."""
    ec2.authorize_security_group_ingress(GroupId=canary, IpPermissions=[canary_rule(when)])
    result = sweep_with_history([])
    (spot,) = result["blindSpots"]
    assert "the canary rule" in spot and "the live path did not revert it" in spot
    assert canary_rules(ec2, canary) == []
    (told,) = inbox()
    assert told["Subject"].startswith("Guardrail blind spot: the canary rule")
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (metric,) = [line for line in logged if line.get("decision") == "blind-spot"]
    assert metric["Events"] == 1 and metric["_aws"]["CloudWatchMetrics"]


def test_a_fresh_canary_rule_is_left_to_the_live_path(ec2, canary, inbox):
    ec2.authorize_security_group_ingress(
        GroupId=canary, IpPermissions=[canary_rule(minutes_ago(1))]
    )
    assert "blindSpots" not in sweep_with_history([])
    assert len(canary_rules(ec2, canary)) == 1
    assert inbox() == []


def test_the_live_path_reverts_the_canary_whatever_the_conditions_and_quietly(
    ec2, canary, conditions, inbox
):
    conditions(
        ONLY_TAGGED={"guardrail": "on"},
        ALLOWED_RULES=[{"cidrWithin": "192.0.2.0/24"}],
    )
    event = authorize(ec2, canary, [canary_rule(minutes_ago(0))], identity=CANARY_ROLE)
    result = lambda_handler(event, CONTEXT)
    assert result["decision"] == "reverted"
    assert canary_rules(ec2, canary) == []
    assert inbox() == []


def test_without_a_canary_the_sweep_reads_no_group(aws, monkeypatch, calls):
    monkeypatch.delenv("CANARY_GROUP_ID", raising=False)
    assert "blindSpots" not in sweep_with_history([])
    assert calls == []


def test_the_template_adds_the_canary_rule_as_a_role_allowed_that_alone():
    for name in ("CanaryGroup", "CanaryRole", "CanarySchedule"):
        assert RESOURCES[name]["Condition"] == "HasCanary"
    (statement,) = RESOURCES["CanaryRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"
    ]
    assert statement["Action"] == ["ec2:AuthorizeSecurityGroupIngress"]
    assert statement["Resource"]["Fn::Sub"].endswith(":security-group/${CanaryGroup.GroupId}")
    target = RESOURCES["CanarySchedule"]["Properties"]["Target"]
    assert target["Arn"] == "arn:aws:scheduler:::aws-sdk:ec2:authorizeSecurityGroupIngress"
    text, _ = target["Input"]["Fn::Sub"]
    request = json.loads(
        text.replace("${Group}", "sg-0123456789abcdef0").replace(
            "<aws.scheduler.scheduled-time>", "2026-11-29T09:00:00Z"
        )
    )
    (permission,) = request["IpPermissions"]
    (source,) = permission["IpRanges"]
    rule = {
        "ipProtocol": permission["IpProtocol"],
        "fromPort": permission["FromPort"],
        "toPort": permission["ToPort"],
        "cidrIpv4": source["CidrIp"],
    }
    assert rule == lambda_function.CANARY
    late = datetime.datetime(2026, 11, 29, 9, 6, tzinfo=datetime.UTC)
    described = {**rule, "isEgress": False, "description": source["Description"]}
    assert lambda_function.is_stale_canary(described, late)
    assert not lambda_function.is_stale_canary(described, late.replace(minute=4))
    variables = RESOURCES["Function"]["Properties"]["Environment"]["Variables"]
    assert variables["CANARY_GROUP_ID"] == {
        "Fn::If": ["HasCanary", {"Fn::GetAtt": ["CanaryGroup", "GroupId"]}, ""]
    }


def test_a_canary_that_cannot_be_checked_is_told_with_the_other_blind_spots(
    ec2, canary, inbox
):
    """Before, a failed describe of the canary group failed the whole sweep, and the blind
    spots found before it (a trail stopped) were never told."""
    stub = Stubber(lambda_function.client("ec2", "us-east-1"))
    stub.add_client_error(
        "describe_security_group_rules", service_error_code="UnauthorizedOperation"
    )
    with stub:
        result = sweep_with_history([trail_record("StopLogging", {"name": "main"})])
    canary_spot, trail_spot = result["blindSpots"]  # the canary is looked at first
    assert trail_spot.startswith("StopLogging on trail main")
    assert canary_spot.startswith("the canary could not be checked: UnauthorizedOperation")
    assert len(inbox()) == 2
