"""Many accounts: an event from a member account is reverted there, through the member role."""

from __future__ import annotations

import datetime

import boto3
import pytest
from botocore.exceptions import ClientError
from cloudtrail import OPEN, SSH, EventHistory, assumed_role, authorize, rule_set, tag
from conftest import CONTEXT
from test_tagging import tag_record, tags_of

import lambda_function
from lambda_function import lambda_handler

MEMBER = "210987654321"


def credentials_in(account: str) -> dict[str, str]:
    """Keys of a session in another account (moto keeps one state per account), for the
    test's own clients there."""
    found = boto3.client("sts", region_name="us-east-1").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/setup", RoleSessionName="setup"
    )["Credentials"]
    return {
        "aws_access_key_id": found["AccessKeyId"],
        "aws_secret_access_key": found["SecretAccessKey"],
        "aws_session_token": found["SessionToken"],
    }


@pytest.fixture
def member_ec2(aws):
    """An EC2 client in the member account."""
    return boto3.client("ec2", region_name="us-east-1", **credentials_in(MEMBER))


@pytest.fixture
def member_group(member_ec2):
    vpc = member_ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    group = member_ec2.create_security_group(GroupName="m", Description="m", VpcId=vpc)
    return group["GroupId"]


def member_event(member_ec2, member_group):
    event = authorize(member_ec2, member_group, [SSH])
    event["recipientAccountId"] = MEMBER
    return event


@pytest.fixture
def assumed(conditions):
    """The roles the function assumes, in order."""
    conditions(MEMBER_ROLE_NAME="sg-guardrail-member")
    roles = []
    sts = lambda_function.client("sts", "us-east-1")
    sts.meta.events.register(
        "provide-client-params.sts.AssumeRole",
        lambda params, **_: roles.append(params["RoleArn"]),
    )
    return roles


def test_a_member_accounts_change_is_reverted_in_that_account(
    member_ec2, member_group, ec2, assumed
):
    before = rule_set(member_ec2, member_group)
    result = lambda_handler(member_event(member_ec2, member_group), CONTEXT)
    assert result["decision"] == "reverted"
    assert rule_set(member_ec2, member_group) == before - {OPEN}
    assert OPEN not in rule_set(member_ec2, member_group)
    assert assumed == [f"arn:aws:iam::{MEMBER}:role/sg-guardrail-member"]


def test_member_credentials_are_cached_until_shortly_before_they_expire(
    member_ec2, member_group, assumed
):
    lambda_handler(member_event(member_ec2, member_group), CONTEXT)
    lambda_handler(member_event(member_ec2, member_group), CONTEXT)
    assert len(assumed) == 1
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=60)
    lambda_function._credentials[MEMBER]["Expiration"] = soon
    old_client = lambda_function._clients["ec2", "us-east-1", MEMBER]
    assert lambda_handler(member_event(member_ec2, member_group), CONTEXT)["decision"] == (
        "reverted"
    )
    assert len(assumed) == 2
    assert lambda_function._clients["ec2", "us-east-1", MEMBER] is not old_client
    assert OPEN not in rule_set(member_ec2, member_group)


def test_without_a_member_role_another_accounts_event_is_out_of_reach(
    member_ec2, member_group
):
    result = lambda_handler(member_event(member_ec2, member_group), CONTEXT)
    assert result["decision"] == "out-of-reach"
    assert result["leftOpen"] == ["tcp 22 from 0.0.0.0/0"]
    assert "no MEMBER_ROLE_NAME" in result["reason"]
    assert OPEN in rule_set(member_ec2, member_group)


def test_a_refused_assume_role_raises_with_a_clear_reason(
    member_ec2, member_group, assumed, capsys
):
    sts = lambda_function.client("sts", "us-east-1")

    def refuse(**_):
        raise ClientError(
            {"Error": {"Code": "AccessDenied", "Message": "not authorized to assume"}},
            "AssumeRole",
        )

    sts.meta.events.register_first("before-call.sts.AssumeRole", refuse)
    event = member_event(member_ec2, member_group)
    capsys.readouterr()
    with pytest.raises(ClientError, match="AccessDenied"):
        lambda_handler(event, CONTEXT)
    assert "the role needs sts:AssumeRole" in capsys.readouterr().out
    assert OPEN in rule_set(member_ec2, member_group)


def test_the_own_account_never_assumes_a_role(ec2, group_id, assumed):
    assert lambda_handler(authorize(ec2, group_id, [SSH]), CONTEXT)["decision"] == "reverted"
    assert assumed == []


def test_assume_role_is_asked_in_the_functions_own_region(aws, conditions, monkeypatch):
    """An opt-in region the central account has not enabled must not block its events."""
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    conditions(MEMBER_ROLE_NAME="sg-guardrail-member")
    regions = []
    sts = lambda_function.client("sts", "eu-west-1")
    sts.meta.events.register(
        "before-call.sts.AssumeRole",
        lambda model, **_: regions.append(sts.meta.region_name),
    )
    member_ec2 = boto3.client("ec2", region_name="ap-east-1")
    vpc = member_ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    group = member_ec2.create_security_group(GroupName="m", Description="m", VpcId=vpc)
    event = authorize(member_ec2, group["GroupId"], [SSH])
    event["recipientAccountId"] = MEMBER
    lambda_handler(event, CONTEXT)
    assert regions == ["eu-west-1"]
    assert ("sts", "ap-east-1", None) not in lambda_function._clients


@pytest.mark.parametrize(
    ("pattern", "warned"),
    [
        ("arn:aws:iam::*:role/NetworkAdmin", True),
        ("arn:aws:sts::*:assumed-role/Deployer/ci-*", True),
        ("arn:aws:iam::11112222333?:role/NetworkAdmin", True),
        ("arn:aws:iam::111122223333:role/NetworkAdmin", False),
        ("arn:aws:sts::111122223333:assumed-role/Deployer/ci-*", False),
        ("cloudformation.amazonaws.com", False),
    ],
)
def test_an_exemption_for_any_account_is_warned_of_with_many_accounts(
    conditions, capsys, pattern, warned
):
    conditions(MEMBER_ROLE_NAME="sg-guardrail-member", EXEMPT_PRINCIPALS=[pattern])
    lambda_function.check_conditions()
    out = capsys.readouterr().out
    assert ("matches any account" in out) == warned
    conditions(MEMBER_ROLE_NAME="")
    lambda_function.check_conditions()
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("role", "kept"), [("sg-guardrail-member", True), ("Attacker", False)]
)
def test_its_member_role_session_in_a_member_account_is_its_own(
    member_ec2, member_group, assumed, role, kept
):
    identity = assumed_role(role, "sg-guardrail", account=MEMBER)
    event = authorize(member_ec2, member_group, [SSH], identity=identity)
    event["recipientAccountId"] = MEMBER
    result = lambda_handler(event, CONTEXT)
    assert (result["decision"] == "kept") is kept
    assert (OPEN in rule_set(member_ec2, member_group)) is kept


def test_a_guard_tag_removed_in_a_member_account_is_put_back_there(
    member_ec2, member_group, ec2, assumed, conditions
):
    """Before, tag changes were undone with the function's own rights: in the central
    account, where the member's group is not."""
    conditions(ONLY_TAGGED={"guardrail": "on"})
    records = [
        tag(member_ec2, "CreateTags", member_group, {"guardrail": "on"}),
        tag(member_ec2, "DeleteTags", member_group, {"guardrail": None}),
    ]
    for found in records:
        found["recipientAccountId"] = MEMBER
    # The member account's own event history, read through the member role.
    EventHistory(records).serve(lambda_function.client("cloudtrail", "us-east-1", MEMBER))
    result = lambda_handler(records[-1], CONTEXT)
    assert result["decision"] == "reverted"
    assert tags_of(member_ec2, member_group) == {"guardrail": "on"}
    assert assumed == [f"arn:aws:iam::{MEMBER}:role/sg-guardrail-member"]


def test_a_tag_change_that_switches_nothing_off_needs_no_member_role(member_ec2, member_group):
    event = tag_record("CreateTags", member_group, {"team": "web"})
    event["recipientAccountId"] = MEMBER
    assert lambda_handler(event, CONTEXT)["decision"] == "kept"


def test_the_sweep_reads_member_accounts_history_and_closes_what_was_missed_there(
    member_ec2, member_group, assumed
):
    missed = member_event(member_ec2, member_group)
    EventHistory([]).serve(lambda_function.client("cloudtrail", "us-east-1"))
    member = lambda_function.client("cloudtrail", "us-east-1", MEMBER)
    EventHistory([missed]).serve(member)  # the member account's own event history
    result = lambda_handler({"sweep": {"accounts": [MEMBER]}}, CONTEXT)
    assert result["decisions"] == {"reverted": 1}
    assert OPEN not in rule_set(member_ec2, member_group)


def test_a_member_account_the_sweep_cannot_reach_is_told_as_a_blind_spot(aws, inbox):
    EventHistory([]).serve(lambda_function.client("cloudtrail", "us-east-1"))
    result = lambda_handler({"sweep": {"accounts": [MEMBER, "bad"]}}, CONTEXT)
    assert result["blindSpots"] == [f"account {MEMBER}: no MEMBER_ROLE_NAME to sweep it"]
    (told,) = inbox()
    assert told["Subject"].startswith("Guardrail blind spot: account")


def test_its_own_identity_is_asked_in_its_own_region_not_an_opt_in_one(aws, monkeypatch):
    """A session named like the function in a region the function's account has not
    enabled (an attacker's review): STS is asked in the function's own region, and the
    change, not the function's, is reverted instead of failing there on every try."""
    from cloudtrail import eventbridge

    monkeypatch.setenv("AWS_REGION", "us-east-1")  # Lambda sets it: the function's own
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "sg-guardrail")
    region = "ap-southeast-7"  # opt-in: enabled by the member, not the central account
    ec2 = boto3.client("ec2", region_name=region)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    group = ec2.create_security_group(GroupName="g", Description="g", VpcId=vpc)
    event = authorize(
        ec2, group["GroupId"], [SSH], identity=assumed_role("Admin", "sg-guardrail")
    )

    def not_enabled(**_):  # what STS answers in a region the account has not enabled
        error = {"Code": "InvalidClientTokenId", "Message": "token invalid"}
        raise ClientError({"Error": error}, "GetCallerIdentity")

    lambda_function.client("sts", region).meta.events.register_first(
        "before-call.sts.GetCallerIdentity", not_enabled
    )
    assert lambda_function.lambda_handler(eventbridge(event), CONTEXT)["decision"] == (
        "reverted"
    )
    assert (False, "tcp", 22, 22, "0.0.0.0/0") not in rule_set(ec2, group["GroupId"])
