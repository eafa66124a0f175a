"""Injected faults: what AWS may answer on a bad day, and what the function then does.

Faults are injected on the handler's own client at the HTTP layer (botocore's before-send
event), so botocore's standard retry mode sees them exactly as it would see AWS's answers.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from cloudtrail import OPEN, SSH, authorize, modify, rule_set, rules_of
from conftest import CONTEXT

import lambda_function
from lambda_function import DeadlineNear, lambda_handler


class Body:
    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_):
        yield self.data


def answer(status: int, code: str) -> AWSResponse:
    xml = (
        f"<Response><Errors><Error><Code>{code}</Code><Message>injected</Message></Error>"
        f"</Errors><RequestID>fault</RequestID></Response>"
    )
    return AWSResponse("https://ec2.us-east-1.amazonaws.com/", status, {}, Body(xml.encode()))


@pytest.fixture
def faults(monkeypatch):
    """inject(operation, status, code, times): the next `times` sends of it fail so."""
    sleeps = []
    monkeypatch.setattr("botocore.endpoint.time.sleep", sleeps.append)  # no real backoff
    attempts = []

    def inject(operation, status, code, times=100):
        client = lambda_function.client("ec2", "us-east-1")
        left = [times]

        def fail(request, **_):
            attempts.append(operation)
            if left[0] > 0:
                left[0] -= 1
                # moto's in-process hook sees every send too: hand it a harmless read instead.
                request.body = b"Action=DescribeRegions&Version=2016-11-15"
                return answer(status, code)
            return None  # through to moto

        client.meta.events.register_first(f"before-send.ec2.{operation}", fail)

    inject.attempts = attempts
    inject.sleeps = sleeps
    return inject


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "RequestLimitExceeded"), (503, "Unavailable"), (500, "InternalError")],
)
def test_throttling_and_5xx_are_retried_a_bounded_number_of_times_then_raised(
    ec2, group_id, faults, capsys, status, code
):
    event = authorize(ec2, group_id, [SSH])
    faults("RevokeSecurityGroupIngress", status, code)
    capsys.readouterr()
    with pytest.raises(ClientError, match=code):
        lambda_handler(event, CONTEXT)
    assert len(faults.attempts) == lambda_function.MAX_ATTEMPTS == 10
    assert len(faults.sleeps) == 9
    assert '"decision": "error"' in capsys.readouterr().out
    assert OPEN in rule_set(ec2, group_id)


def test_a_passing_fault_is_ridden_out_by_retries(ec2, group_id, faults):
    event = authorize(ec2, group_id, [SSH])
    faults("RevokeSecurityGroupIngress", 400, "RequestLimitExceeded", times=2)
    assert lambda_handler(event, CONTEXT)["decision"] == "reverted"
    assert len(faults.attempts) == 3
    assert OPEN not in rule_set(ec2, group_id)


@pytest.mark.parametrize("code", ["UnauthorizedOperation", "AccessDenied"])
def test_missing_permission_raises_at_once_and_names_the_permission(
    ec2, group_id, faults, capsys, code
):
    event = authorize(ec2, group_id, [SSH])
    faults("RevokeSecurityGroupIngress", 403, code)
    capsys.readouterr()
    with pytest.raises(ClientError, match=code):
        lambda_handler(event, CONTEXT)
    assert len(faults.attempts) == 1
    assert "the role needs ec2:RevokeSecurityGroupIngress" in capsys.readouterr().out


def test_a_deleted_group_is_success(ec2, group_id, faults):
    event = authorize(ec2, group_id, [SSH])
    faults("RevokeSecurityGroupIngress", 400, "InvalidGroup.NotFound")
    result = lambda_handler(event, CONTEXT)
    assert result["decision"] == "already-gone"
    assert result["alreadyGone"] == ["tcp 22 from 0.0.0.0/0"]


def test_aws_rule_not_found_code_leads_to_revoking_what_is_left(ec2, group_id, faults):
    # moto answers InvalidPermission.NotFound; AWS answers this code for an unknown rule ID.
    event = authorize(ec2, group_id, [SSH])
    faults(
        "RevokeSecurityGroupIngress",
        400,
        "InvalidSecurityGroupRuleId.NotFound",
        times=1,
    )
    assert lambda_handler(event, CONTEXT)["decision"] == "reverted"
    assert faults.attempts == ["RevokeSecurityGroupIngress"] * 2
    assert OPEN not in rule_set(ec2, group_id)


def context_with(seconds_left):
    deadline = time.monotonic() + seconds_left
    return SimpleNamespace(
        invoked_function_arn=CONTEXT.invoked_function_arn,
        get_remaining_time_in_millis=lambda: int((deadline - time.monotonic()) * 1000),
    )


def test_a_nearly_spent_deadline_stops_retrying_and_raises_for_a_later_retry(
    ec2, group_id, faults, capsys
):
    event = authorize(ec2, group_id, [SSH])
    faults("RevokeSecurityGroupIngress", 503, "Unavailable")
    capsys.readouterr()
    with pytest.raises(DeadlineNear):
        lambda_handler(event, context_with(seconds_left=4))
    assert len(faults.attempts) == 1
    assert faults.sleeps == []
    assert "DeadlineNear" in capsys.readouterr().out


def test_an_answer_that_is_not_retried_is_handled_however_little_time_is_left(
    ec2, group_id, faults
):
    """Found by the thorough fuzzing run: near the deadline, "rule not found" was turned
    into DeadlineNear instead of reaching the code that revokes what is left."""
    event = authorize(ec2, group_id, [SSH])
    faults("RevokeSecurityGroupIngress", 400, "InvalidPermission.NotFound", times=1)
    result = lambda_handler(event, context_with(seconds_left=4))
    assert result["decision"] == "reverted"
    assert OPEN not in rule_set(ec2, group_id)


def test_with_time_to_spare_the_same_fault_is_retried(ec2, group_id, faults):
    event = authorize(ec2, group_id, [SSH])
    faults("RevokeSecurityGroupIngress", 503, "Unavailable", times=3)
    assert lambda_handler(event, context_with(seconds_left=60))["decision"] == "reverted"
    assert len(faults.attempts) == 4


def test_a_failure_halfway_through_an_edit_of_ingress_and_egress_is_finished_on_retry(
    ec2, group_id, faults
):
    ingress = next(r for r in rules_of(ec2, group_id) if r.get("CidrIpv4") == "192.0.2.0/24")
    egress = next(r for r in rules_of(ec2, group_id) if r["IsEgress"])
    event = modify(
        ec2,
        group_id,
        {
            ingress["SecurityGroupRuleId"]: {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "CidrIpv4": "0.0.0.0/0",
            },
            egress["SecurityGroupRuleId"]: {
                "IpProtocol": "-1",
                "FromPort": -1,
                "ToPort": -1,
                "CidrIpv4": "0.0.0.0/0",
            },
        },
    )
    faults("RevokeSecurityGroupEgress", 503, "Unavailable")
    with pytest.raises(ClientError):
        lambda_handler(event, CONTEXT)
    left = {r["SecurityGroupRuleId"] for r in rules_of(ec2, group_id)}
    assert ingress["SecurityGroupRuleId"] not in left  # the first half is done
    assert egress["SecurityGroupRuleId"] in left

    lambda_function._clients.clear()  # Lambda retries the event later, faults gone
    result = lambda_handler(event, CONTEXT)
    assert result["decision"] == "reverted"
    assert result["rules"] == ["all traffic to 0.0.0.0/0"]
    assert result["alreadyGone"] == ["tcp 22 from/to 0.0.0.0/0"]
    left = {r["SecurityGroupRuleId"] for r in rules_of(ec2, group_id)}
    assert not {ingress["SecurityGroupRuleId"], egress["SecurityGroupRuleId"]} & left


def test_a_failure_while_finishing_a_partly_removed_change_is_finished_on_retry(
    ec2, group_id, faults
):
    before = rule_set(ec2, group_id)
    many = [{**SSH, "FromPort": port, "ToPort": port} for port in range(2000, 2050)]
    event = authorize(ec2, group_id, many)
    ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=many[:10])
    faults(
        "RevokeSecurityGroupIngress",
        400,
        "InvalidSecurityGroupRuleId.NotFound",
        times=1,
    )
    faults("RevokeSecurityGroupIngress", 503, "Unavailable")
    with pytest.raises(ClientError):
        lambda_handler(event, CONTEXT)
    assert len(rule_set(ec2, group_id) - before) == 40

    lambda_function._clients.clear()
    result = lambda_handler(event, CONTEXT)
    assert (len(result["rules"]), len(result["alreadyGone"])) == (40, 10)
    assert rule_set(ec2, group_id) == before


@pytest.mark.parametrize(
    ("operation", "action"),
    [
        ("RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"),
        ("AssumeRole", "sts:AssumeRole"),
        ("LookupEvents", "cloudtrail:LookupEvents"),  # it said ec2:LookupEvents (a review)
        ("GetResourceConfigHistory", "config:GetResourceConfigHistory"),
        ("ListAccounts", "organizations:ListAccounts"),
        ("ReceiveMessage", "sqs:ReceiveMessage"),
        ("BatchImportFindings", "securityhub:BatchImportFindings"),
        ("GetCallerIdentity", "sts:GetCallerIdentity"),
    ],
)
def test_a_denial_names_the_action_the_role_needs(operation, action):
    error = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, operation)
    assert f"the role needs {action} " in lambda_function.error_reason(error)
