"""Buffered delivery (Delivery=buffered): EventBridge -> SQS -> Lambda. A batch's additions
are revoked together, one call per group and direction; a message whose undo failed is
reported back (ReportBatchItemFailures). Messages in the shape of the Lambda developer guide's
SQS event (Records[].messageId, body, eventSource "aws:sqs"); rules and calls on moto."""

from __future__ import annotations

import json

import boto3
import pytest
from cloudtrail import (
    ACCOUNT,
    OPEN,
    SSH,
    assumed_role,
    authorize,
    eventbridge,
    modify,
    rule_set,
)
from conftest import CONTEXT, WIDENED, bastion_of

import lambda_function
from lambda_function import lambda_handler


def port(number):
    return {**SSH, "FromPort": number, "ToPort": number}


def batch(*events):
    return {
        "Records": [
            {
                "messageId": f"m{n}",
                "receiptHandle": f"r{n}",
                "body": json.dumps(eventbridge(event)),
                "attributes": {"ApproximateReceiveCount": "1"},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:sg-guardrail-buffer",
                "awsRegion": "us-east-1",
            }
            for n, event in enumerate(events)
        ]
    }


@pytest.fixture
def other_group(ec2, vpc_id):
    return ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc_id)["GroupId"]


def decisions(capsys):
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [line["decision"] for line in lines if "decision" in line]


def test_a_batch_revokes_each_groups_rules_in_one_call(
    ec2, group_id, other_group, calls, capsys
):
    before = rule_set(ec2, group_id), rule_set(ec2, other_group)
    events = [authorize(ec2, group_id, [port(p)]) for p in range(1000, 1005)]
    events += [authorize(ec2, other_group, [port(p)]) for p in (2000, 2001)]
    capsys.readouterr()
    assert lambda_handler(batch(*events), CONTEXT) == {"batchItemFailures": []}
    assert (rule_set(ec2, group_id), rule_set(ec2, other_group)) == before
    assert calls.count("RevokeSecurityGroupIngress") == 2  # not 7
    assert decisions(capsys) == ["reverted"] * 7


def test_kept_ignored_and_edited_events_in_a_batch_are_handled_as_live_ones(
    ec2, group_id, conditions, capsys
):
    admin = assumed_role("NetworkAdmin", "bob")
    conditions(EXEMPT_PRINCIPALS=["arn:aws:iam::123456789012:role/NetworkAdmin"])
    kept = authorize(ec2, group_id, [port(8443)], identity=admin)
    refused = authorize(ec2, group_id, [port(8443)])  # a duplicate: the call failed
    edited = modify(ec2, group_id, {bastion_of(ec2, group_id)["SecurityGroupRuleId"]: WIDENED})
    opened = authorize(ec2, group_id, [port(3389)])
    capsys.readouterr()
    assert lambda_handler(batch(kept, refused, edited, opened), CONTEXT) == {
        "batchItemFailures": []
    }
    # logged as each is done: the batched ones after the batch's revoke
    assert sorted(decisions(capsys)) == ["ignored", "kept", "reverted", "reverted"]
    after = rule_set(ec2, group_id)
    assert OPEN not in after and (False, "tcp", 3389, 3389, "0.0.0.0/0") not in after
    assert (False, "tcp", 8443, 8443, "0.0.0.0/0") in after


def test_a_groups_failed_revoke_fails_only_its_messages(
    ec2, group_id, other_group, inbox, monkeypatch
):
    events = [
        authorize(ec2, group_id, [port(1000)]),
        authorize(ec2, other_group, [SSH]),
    ]
    revoke = lambda_function.revoke

    def refused_for_the_first_group(ec2_client, change, rules):
        if change["groupId"] == group_id:
            raise lambda_function.NotRevoked("AWS answered Return: false")
        return revoke(ec2_client, change, rules)

    monkeypatch.setattr(lambda_function, "revoke", refused_for_the_first_group)
    result = lambda_handler(batch(*events), CONTEXT)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert OPEN not in rule_set(ec2, other_group)
    assert any(m["Subject"].startswith("NOT reverted yet (error)") for m in inbox())


def test_the_same_event_twice_in_a_batch_is_revoked_once(ec2, group_id, calls, capsys):
    event = authorize(ec2, group_id, [SSH])
    capsys.readouterr()
    assert lambda_handler(batch(event, event), CONTEXT) == {"batchItemFailures": []}
    assert calls.count("RevokeSecurityGroupIngress") == 1
    assert OPEN not in rule_set(ec2, group_id)


def test_dry_run_in_a_batch_changes_nothing(ec2, group_id, monkeypatch, capsys):
    monkeypatch.setenv("DRY_RUN", "true")
    event = authorize(ec2, group_id, [SSH])
    capsys.readouterr()
    lambda_handler(batch(event), CONTEXT)
    assert decisions(capsys) == ["dry-run"]
    assert OPEN in rule_set(ec2, group_id)


def test_a_message_that_is_no_event_is_ignored_not_retried(aws, capsys):
    messages = batch()
    messages["Records"] = [{"messageId": "m0", "body": "not json", "eventSource": "aws:sqs"}]
    assert lambda_handler(messages, CONTEXT) == {"batchItemFailures": []}
    assert decisions(capsys) == ["ignored"]


def dead_lettered_from(source_arn):
    """SQS marks a message it moved to a dead-letter queue with the system attribute
    DeadLetterQueueSourceArn (SQS API reference, ReceiveMessage, MessageSystemAttributeNames);
    moto does not: it is added here to the answers of the function's SQS client."""

    def mark(parsed, **_):
        for message in parsed.get("Messages", []):
            message.setdefault("Attributes", {})["DeadLetterQueueSourceArn"] = source_arn

    events = lambda_function.client("sqs", "us-east-1").meta.events
    events.register("after-call.sqs.ReceiveMessage", mark)


def test_the_sweep_takes_raw_events_from_the_buffers_dead_letter_queue(
    ec2, group_id, monkeypatch
):
    """SQS moves a message it gave up on as it is: the body is the event itself."""
    from test_sweeping import sweep_with_history

    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="sg-guardrail-failures")["QueueUrl"]
    buffer = f"arn:aws:sqs:us-east-1:{ACCOUNT}:sg-guardrail-buffer"
    monkeypatch.setenv("FAILURE_QUEUE_URL", url)
    monkeypatch.setenv("BUFFER_QUEUE_ARN", buffer)
    event = authorize(ec2, group_id, [SSH])
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(eventbridge(event)))
    dead_lettered_from(buffer)
    assert sweep_with_history([])["decisions"] == {"reverted": 1}
    assert OPEN not in rule_set(ec2, group_id)
