"""Sweeping: what the live path missed is closed by the scheduled sweep, and a sweep is safe
to repeat. Event history (LookupEvents) is not emulated by moto: Stubber answers in the shape
of the CloudTrail API reference (Events[].CloudTrailEvent, a JSON string). The failure queue is
moto's SQS, holding Lambda's on-failure destination records (requestPayload: the event)."""

from __future__ import annotations

import datetime
import json
import uuid

import boto3
import pytest
from botocore.stub import Stubber
from cloudtrail import (
    ACCOUNT,
    OPEN,
    SSH,
    EventHistory,
    assumed_role,
    authorize,
    eventbridge,
    now,
    rule_set,
    rules_of,
)
from conftest import CONTEXT

import lambda_function
from lambda_function import lambda_handler

SMTP = {**SSH, "FromPort": 25, "ToPort": 25}
RDP = {**SSH, "FromPort": 3389, "ToPort": 3389}
EXEMPT_ADMIN = assumed_role("NetworkAdmin", "carol")
HTTPS_BY_ADMIN = {**SSH, "FromPort": 8443, "ToPort": 8443}


@pytest.fixture
def failure_queue(aws, monkeypatch):
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="sg-guardrail-failures")["QueueUrl"]
    monkeypatch.setenv("FAILURE_QUEUE_URL", url)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return sqs, url


ASKED = lambda_function.CHANGE_EVENTS + lambda_function.TRAIL_EVENTS


def lookup_pages(records):
    """One page per event name, as the sweep asks for them: the changes, then the trail's."""
    pages = []
    for name in ASKED:
        events = [
            {
                "EventId": r["eventID"],
                "EventName": name,
                "CloudTrailEvent": json.dumps(r),
            }
            for r in records
            if r["eventName"] == name
        ]
        pages.append({"Events": events})
    return pages


def sweep_with_history(records, **settings):
    """A sweep whose event history holds these records (cloudtrail.EventHistory)."""
    EventHistory(list(records)).serve(lambda_function.client("cloudtrail", "us-east-1"))
    return lambda_handler({"sweep": {"minutes": 15, **settings}}, CONTEXT)


def sent_by_lambda(sqs, url, body):
    """A message as Lambda's on-failure destination sends it: with the function's own role,
    so SQS records that role's unique ID as the SenderId (moto records a fixed one; it is
    set here on the message moto holds, as SQS would have set it)."""
    from moto.sqs.models import sqs_backends

    own = boto3.client("sts", region_name="us-east-1").get_caller_identity()
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    queue = sqs_backends[ACCOUNT]["us-east-1"].queues[url.rsplit("/", 1)[1]]
    queue._messages[-1].sender_id = own["UserId"].split(":")[0]


def test_one_sweep_closes_what_the_live_path_missed_and_a_second_changes_nothing(
    ec2, group_id, conditions, failure_queue
):
    conditions(EXEMPT_PRINCIPALS=["arn:aws:iam::*:role/NetworkAdmin"])
    sqs, url = failure_queue
    before = rule_set(ec2, group_id)
    never_delivered = authorize(ec2, group_id, [SSH])
    failed_in_lambda = authorize(ec2, group_id, [SMTP])
    while_the_trail_was_stopped = authorize(ec2, group_id, [RDP])
    kept = authorize(ec2, group_id, [HTTPS_BY_ADMIN], identity=EXEMPT_ADMIN)
    sent_by_lambda(
        sqs,
        url,
        {
            "version": "1.0",
            "requestContext": {
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3,
            },
            "requestPayload": eventbridge(failed_in_lambda),
            "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
        },
    )
    # Event history holds every management event, trail or no trail; the failed one too.
    history = [never_delivered, failed_in_lambda, while_the_trail_was_stopped, kept]
    first = sweep_with_history(history)
    assert first["decisions"] == {"reverted": 3, "kept": 1, "already-gone": 1}
    assert rule_set(ec2, group_id) == before | {(False, "tcp", 8443, 8443, "0.0.0.0/0")}
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    second = sweep_with_history(history)
    assert second["decisions"] == {"already-gone": 3, "kept": 1}
    assert rule_set(ec2, group_id) == before | {(False, "tcp", 8443, 8443, "0.0.0.0/0")}


def test_a_queued_event_that_fails_again_stays_in_the_queue(ec2, group_id, failure_queue):
    sqs, url = failure_queue
    event = authorize(ec2, group_id, [SSH])
    sent_by_lambda(sqs, url, {"requestPayload": event})
    revoke_fails = Stubber(lambda_function.client("ec2", "us-east-1"))
    revoke_fails.add_client_error(
        "revoke_security_group_ingress", service_error_code="UnauthorizedOperation"
    )
    with revoke_fails:
        result = sweep_with_history([])
    assert result["decisions"] == {"error": 1}
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"


@pytest.mark.parametrize("minutes", [None, "15", 0, -3, 100000])
def test_an_odd_sweep_period_falls_back_to_fifteen_minutes(aws, minutes):
    result = sweep_with_history([], minutes=minutes)
    assert result["sweep"]["minutes"] == 15


def trail_record(name, params):
    return {
        "eventVersion": "1.10",
        "userIdentity": assumed_role("Intruder", "mallory"),
        "eventTime": now(),
        "eventSource": "cloudtrail.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "requestParameters": params,
        "responseElements": None,
        "eventID": f"trail-{name}",
        "recipientAccountId": "123456789012",
    }


@pytest.mark.parametrize(
    ("name", "params", "blind"),
    [
        ("StopLogging", {"name": "main"}, True),
        ("DeleteTrail", {"name": "main"}, True),
        (
            "PutEventSelectors",
            {
                "trailName": "main",
                "eventSelectors": [{"includeManagementEvents": False}],
            },
            True,
        ),
        (
            "PutEventSelectors",
            {"trailName": "main", "eventSelectors": [{"readWriteType": "ReadOnly"}]},
            True,
        ),
        (
            "PutEventSelectors",
            {"trailName": "main", "eventSelectors": [{"readWriteType": "All"}]},
            False,
        ),
        (
            "PutEventSelectors",
            {
                "trailName": "main",
                "advancedEventSelectors": [
                    {"fieldSelectors": [{"field": "eventCategory", "equals": ["Management"]}]}
                ],
            },
            False,
        ),
    ],
)
def test_a_trail_change_that_may_blind_the_live_path_is_told(inbox, name, params, blind):
    result = sweep_with_history([trail_record(name, params)])
    told = inbox()
    assert bool(result.get("blindSpots")) is blind
    assert len(told) == (1 if blind else 0)
    if blind:
        assert told[0]["Subject"].startswith(f"Guardrail blind spot: {name} on trail main")


def test_after_a_burst_the_sweep_checks_what_is_still_open_in_one_call_per_200_rules(
    ec2, group_id, calls
):
    """Found by make burst: a sweep handled each of the 1,000 reverted changes in its
    window with a call of its own, and ran out of time before the failure queue."""
    changes = []
    for port in range(1000, 1250):
        changes.append(authorize(ec2, group_id, [{**SSH, "FromPort": port, "ToPort": port}]))
        if port < 1249:  # the live path reverted all but the last
            lambda_handler(changes[-1], CONTEXT)
    calls.clear()
    result = sweep_with_history(changes)
    assert result["decisions"] == {"already-gone": 249, "reverted": 1}
    assert calls.count("DescribeSecurityGroupRules") <= 3  # 2 batches, + the late check
    assert calls.count("RevokeSecurityGroupIngress") == 1


def test_a_sweep_out_of_time_tells_what_it_left_and_still_takes_the_failure_queue(
    ec2, group_id, failure_queue, inbox, monkeypatch
):
    sqs, url = failure_queue
    queued, missed = authorize(ec2, group_id, [SSH]), authorize(ec2, group_id, [RDP])
    # missed 25 minutes ago: in the oldest part of the window, read first
    missed["eventTime"] = (
        datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=25)
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    sent_by_lambda(sqs, url, {"requestPayload": queued})
    monkeypatch.setattr(lambda_function, "SWEEP_RESERVE_S", 10_000)  # no time at all
    result = sweep_with_history([missed])
    assert result["decisions"] == {"reverted": 1}  # the queued one
    (spot,) = result["blindSpots"]
    assert "ran out of time" in spot and "1 changes" in spot
    assert any(m["Subject"].startswith("Guardrail blind spot") for m in inbox())


def minutes_ago(found, minutes):
    found["eventTime"] = (
        datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=minutes)
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    return found


class Clock:
    """time for the function, compressed: each LookupEvents request takes half a second
    (its 2 requests a second) and sleeping moves it on; nothing else takes time."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds

    def time(self):
        return datetime.datetime.now().timestamp()

    def lookup(self):
        self.now += 0.5


def test_a_flood_of_failed_calls_does_not_keep_the_sweep_from_a_missed_change(
    ec2, group_id, monkeypatch
):
    """Failed calls need no permission and stay in history. Before, the sweep read each
    name's history newest first and ran out of time in 3,000 newer failed calls: the
    missed change, 25 minutes old, left the window unseen, and the failed calls were
    counted as changes not handled."""
    missed = minutes_ago(authorize(ec2, group_id, [SSH]), 25)
    refused = minutes_ago(authorize(ec2, "sg-0000000000000dead", [SSH]), 10)
    failed = [{**refused, "eventID": str(uuid.uuid4())} for _ in range(3000)]
    clock = Clock()
    monkeypatch.setattr(lambda_function, "time", clock)
    EventHistory([missed, *failed], on_call=clock.lookup).serve(
        lambda_function.client("cloudtrail", "us-east-1")
    )
    result = lambda_handler({"sweep": {"minutes": 15}}, CONTEXT)  # 30 s to run
    assert OPEN not in rule_set(ec2, group_id)
    assert result["decisions"]["reverted"] == 1
    (spot,) = result["blindSpots"]
    assert "newest part of event history was not read" in spot


def test_a_canary_rule_found_in_event_history_is_a_blind_spot(ec2, vpc_id, monkeypatch, inbox):
    """Before, the history pass reverted the canary quietly, and a blind live path was
    never told."""
    group = ec2.create_security_group(
        GroupName="sg-guardrail-canary", Description="canary", VpcId=vpc_id
    )["GroupId"]
    monkeypatch.setenv("CANARY_GROUP_ID", group)
    canary = {
        **SSH,
        "FromPort": 9,
        "ToPort": 9,
        "IpRanges": [{"CidrIp": "192.0.2.1/32", "Description": f"canary {now()}"}],
    }
    added = authorize(ec2, group, [canary])  # the live path never saw it
    result = sweep_with_history([added])
    (spot,) = result["blindSpots"]
    assert "the live path missed it" in spot
    assert (False, "tcp", 9, 9, "192.0.2.1/32") not in rule_set(ec2, group)
    assert inbox()[0]["Subject"].startswith("Guardrail blind spot: the canary rule")


def test_a_failed_sweeps_own_input_in_the_queue_is_dropped_and_told(
    ec2, group_id, failure_queue, inbox
):
    """Before, the next sweep ran it through lambda_handler, which swept again and failed
    with KeyError: 'decision'; the message stayed and every later sweep failed the same."""
    sqs, url = failure_queue
    sent_by_lambda(sqs, url, {"requestPayload": {"sweep": {"minutes": 15}}})
    sent_by_lambda(sqs, url, {"requestPayload": authorize(ec2, group_id, [SSH])})
    result = sweep_with_history([])
    assert result["decisions"] == {"refused": 1, "reverted": 1}
    assert any("failed sweep's own input" in spot for spot in result["blindSpots"])
    assert OPEN not in rule_set(ec2, group_id)
    assert "Messages" not in sqs.receive_message(QueueUrl=url)


def test_a_message_in_the_failure_queue_from_anyone_but_lambda_is_refused(
    ec2, group_id, failure_queue, inbox
):
    """A made-up Authorize record naming the rule ID of the bastion rule the group has held
    all along: before, the sweep revoked it (an outage on demand)."""
    sqs, url = failure_queue
    (bastion,) = [r for r in rules_of(ec2, group_id) if r.get("FromPort") == 22]
    forged = authorize(ec2, group_id, [RDP])
    forged["responseElements"]["securityGroupRuleSet"]["items"][0]["securityGroupRuleId"] = (
        bastion["SecurityGroupRuleId"]
    )
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"requestPayload": forged}))
    result = sweep_with_history([])
    assert result["decisions"] == {"refused": 1}
    assert bastion["SecurityGroupRuleId"] in {
        r["SecurityGroupRuleId"] for r in rules_of(ec2, group_id)
    }
    assert "refused and deleted" in result["blindSpots"][0]
