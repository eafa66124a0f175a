"""Notifying: one SNS message per reverted, dry-run or open change, checked through SNS -> SQS."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from cloudtrail import ACCOUNT, OPEN, SSH, authorize, rule_set
from conftest import CONTEXT

import lambda_function
from lambda_function import lambda_handler


def test_a_revert_sends_one_message_a_person_can_act_on(
    ec2, group_id, vpc_id, inbox, conditions
):
    conditions(ONLY_VPC_IDS=[vpc_id])  # so that the VPC is looked up and named
    event = authorize(ec2, group_id, [SSH])
    result = lambda_handler(event, CONTEXT)
    assert result["notification"] == "sent"
    (message,) = inbox()
    assert message["Subject"] == f"Reverted: tcp 22 from 0.0.0.0/0 on {group_id} by alice"
    body = message["Message"]
    for fact in (
        f"arn:aws:iam::{ACCOUNT}:user/alice",
        event["eventTime"],
        ACCOUNT,
        "us-east-1",
        group_id,
        vpc_id,
        "AuthorizeSecurityGroupIngress",
        "  - tcp 22 from 0.0.0.0/0",
        event["eventID"],
        (
            f"https://us-east-1.console.aws.amazon.com/ec2/home?region=us-east-1"
            f"#SecurityGroup:groupId={group_id}"
        ),
    ):
        assert fact in body
    attributes = {k: v["Value"] for k, v in message["MessageAttributes"].items()}
    assert attributes == {
        "decision": "reverted",
        "eventName": "AuthorizeSecurityGroupIngress",
        "account": ACCOUNT,
        "region": "us-east-1",
        "groupId": group_id,
        "actor": f"arn:aws:iam::{ACCOUNT}:user/alice",
        "version": lambda_function.__version__,
    }
    assert f"Version:  sg-guardrail {lambda_function.__version__}" in body


def test_a_dry_run_says_what_it_would_revert(ec2, group_id, inbox, monkeypatch):
    monkeypatch.setenv("DRY_RUN", "true")
    https = {**SSH, "FromPort": 443, "ToPort": 443}
    lambda_handler(authorize(ec2, group_id, [SSH, https]), CONTEXT)
    (message,) = inbox()
    assert message["Subject"].startswith(
        "Would revert (dry run): tcp 22 from 0.0.0.0/0 (+1 more)"
    )
    assert message["MessageAttributes"]["decision"]["Value"] == "dry-run"


def test_kept_and_ignored_changes_send_nothing(ec2, group_id, inbox, conditions):
    conditions(EXEMPT_PRINCIPALS=["arn:aws:iam::*:user/alice"])
    lambda_handler(authorize(ec2, group_id, [SSH]), CONTEXT)
    lambda_handler({"not": "an event"}, CONTEXT)
    assert inbox() == []


def test_a_long_subject_is_cut_to_what_sns_accepts(ec2, group_id, inbox):
    identity = {
        "type": "IAMUser",
        "arn": f"arn:aws:iam::{ACCOUNT}:user/{'é' * 5}{'x' * 120}",
    }
    lambda_handler(authorize(ec2, group_id, [SSH], identity=identity), CONTEXT)
    (message,) = inbox()
    assert len(message["Subject"]) == 100
    assert message["Subject"].isascii()


@pytest.mark.parametrize(
    "topic",
    [f"arn:aws:sns:us-east-1:{ACCOUNT}:no-such-topic", "not-an-arn"],
    ids=["missing-topic", "malformed-arn"],
)
def test_a_failure_to_notify_never_blocks_the_revert(
    ec2, group_id, monkeypatch, capsys, topic
):
    monkeypatch.setenv("NOTIFY_TOPIC_ARN", topic)
    event = authorize(ec2, group_id, [SSH])
    capsys.readouterr()
    result = lambda_handler(event, CONTEXT)
    assert result["decision"] == "reverted"
    assert result["notification"].startswith("failed: ")
    assert OPEN not in rule_set(ec2, group_id)
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["notification"] == result["notification"]


# ---- Never silent: every change left open involuntarily is told -----------------------------


def test_an_unreadable_change_is_told_as_not_reverted(ec2, group_id, inbox):
    event = authorize(ec2, group_id, [SSH], modern=False)
    event["requestParameters"]["ipPermissions"]["items"][0]["ipProtocol"] = "tcp?"
    result = lambda_handler(event, CONTEXT)
    assert result["decision"] == "unreadable"
    (message,) = inbox()
    assert message["Subject"].startswith("NOT reverted (unreadable): ipPermissions item 1")
    assert "Left open, not readable (undo by hand):" in message["Message"]
    assert message["MessageAttributes"]["decision"]["Value"] == "unreadable"


def test_a_rule_changed_since_a_late_event_is_told_with_both_values(ec2, group_id, inbox):
    event = authorize(ec2, group_id, [SSH])
    (rule,) = event["responseElements"]["securityGroupRuleSet"]["items"]
    ec2.modify_security_group_rules(
        GroupId=group_id,
        SecurityGroupRules=[
            {
                "SecurityGroupRuleId": rule["securityGroupRuleId"],
                "SecurityGroupRule": {
                    "IpProtocol": "tcp",
                    "FromPort": 22,
                    "ToPort": 22,
                    "CidrIpv4": "10.0.0.0/8",
                },
            }
        ],
    )
    event["eventTime"] = "2026-01-01T00:00:00Z"
    assert lambda_handler(event, CONTEXT)["decision"] == "changed-since"
    (message,) = inbox()
    assert message["Subject"].startswith(
        "NOT reverted (changed since): tcp 22 from 0.0.0.0/0 (now tcp 22 from 10.0.0.0/8)"
    )


def test_an_error_is_told_before_it_is_raised_for_retry(ec2, group_id, inbox):
    event = authorize(ec2, group_id, [SSH])
    with Stubber(lambda_function.client("ec2", "us-east-1")) as stub:
        stub.add_client_error(
            "revoke_security_group_ingress", service_error_code="UnauthorizedOperation"
        )
        with pytest.raises(ClientError):
            lambda_handler(event, CONTEXT)
    (message,) = inbox()
    assert message["Subject"].startswith("NOT reverted yet (error): tcp 22 from 0.0.0.0/0")
    assert "the role needs ec2:RevokeSecurityGroupIngress" in message["Message"]


def test_a_change_in_an_account_out_of_reach_is_told(ec2, group_id, inbox):
    event = authorize(ec2, group_id, [SSH])
    event["recipientAccountId"] = "210987654321"
    assert lambda_handler(event, CONTEXT)["decision"] == "out-of-reach"
    (message,) = inbox()
    assert message["Subject"].startswith("NOT reverted (out of reach): tcp 22")
