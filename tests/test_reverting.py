"""Reverting on moto: after the handler ran, the group holds exactly what it held before."""

from __future__ import annotations

import datetime

import boto3
import pytest
from botocore.stub import Stubber
from cloudtrail import (
    ACCOUNT,
    SSH,
    EventHistory,
    assumed_role,
    authorize,
    camel,
    eventbridge,
    modify,
    record,
    rule_set,
    rules_of,
)
from conftest import CONTEXT, WIDENED

import lambda_function
from lambda_function import lambda_handler

SMTP = {**SSH, "FromPort": 25, "ToPort": 25}


def run(event):
    return lambda_handler(eventbridge(event), CONTEXT)


def every_kind(other_group):
    return [
        SSH,
        {
            "IpProtocol": "tcp",
            "FromPort": 3389,
            "ToPort": 3389,
            "Ipv6Ranges": [{"CidrIpv6": "::/0"}],
        },
        {
            "IpProtocol": "-1",
            "IpRanges": [{"CidrIp": "198.51.100.0/24", "Description": "partner"}],
            "Ipv6Ranges": [{"CidrIpv6": "2001:db8::/32"}],
        },
        {
            "IpProtocol": "tcp",
            "FromPort": 5432,
            "ToPort": 5432,
            "PrefixListIds": [{"PrefixListId": "pl-0123abcd"}],
        },
        {
            "IpProtocol": "udp",
            "FromPort": 0,
            "ToPort": 65535,
            "UserIdGroupPairs": [{"GroupId": other_group, "UserId": ACCOUNT}],
        },
        {
            "IpProtocol": "icmp",
            "FromPort": 8,
            "ToPort": -1,
            "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
        },
        {
            "IpProtocol": "icmpv6",
            "FromPort": -1,
            "ToPort": -1,
            "Ipv6Ranges": [{"CidrIpv6": "::/0"}],
        },
    ]


@pytest.fixture
def other_group(ec2, vpc_id):
    return ec2.create_security_group(GroupName="lb", Description="lb", VpcId=vpc_id)["GroupId"]


@pytest.mark.parametrize("modern", [True, False], ids=["rule-ids", "old-response"])
def test_every_source_kind_is_revoked_and_nothing_else(
    ec2, group_id, other_group, calls, modern
):
    before = rule_set(ec2, group_id)
    event = authorize(ec2, group_id, every_kind(other_group), modern=modern)
    assert len(rule_set(ec2, group_id) - before) == 8
    calls.clear()
    result = run(event)
    assert result["decision"] == "reverted"
    assert len(result["rules"]) == 8
    assert rule_set(ec2, group_id) == before
    expected = "RevokeSecurityGroupIngress"
    assert calls == [expected]


def test_rule_ids_are_used_when_the_response_has_them(ec2, group_id, calls):
    event = authorize(ec2, group_id, [SSH])
    calls.clear()
    revoked = []
    client = lambda_function.client("ec2", "us-east-1")
    client.meta.events.register(
        "provide-client-params.ec2.RevokeSecurityGroupIngress",
        lambda params, **_: revoked.append(params),
    )
    run(event)
    rule_id = event["responseElements"]["securityGroupRuleSet"]["items"][0][
        "securityGroupRuleId"
    ]
    assert revoked == [{"GroupId": group_id, "SecurityGroupRuleIds": [rule_id]}]


def test_an_older_rule_on_the_same_port_stays(ec2, group_id):
    # The fixture's group already allows tcp 22 from 192.0.2.0/24 (the bastion).
    event = authorize(ec2, group_id, [SSH], modern=False)
    run(event)
    assert (False, "tcp", 22, 22, "192.0.2.0/24") in rule_set(ec2, group_id)
    assert (False, "tcp", 22, 22, "0.0.0.0/0") not in rule_set(ec2, group_id)


def test_legacy_flat_request_is_revoked(ec2, group_id):
    before = rule_set(ec2, group_id)
    ec2.authorize_security_group_ingress(
        GroupId=group_id, CidrIp="0.0.0.0/0", IpProtocol="tcp", FromPort=80, ToPort=80
    )
    params = {
        "groupId": group_id,
        "ipPermissions": {},
        "cidrIp": "0.0.0.0/0",
        "ipProtocol": "tcp",
        "fromPort": 80,
        "toPort": 80,
    }
    result = run(record("AuthorizeSecurityGroupIngress", params, {"_return": True}))
    assert result["rules"] == ["tcp 80 from 0.0.0.0/0"]
    assert rule_set(ec2, group_id) == before


@pytest.mark.parametrize("modern", [True, False], ids=["rule-ids", "old-response"])
def test_egress_is_revoked_and_the_default_egress_rule_stays(ec2, group_id, modern):
    before = rule_set(ec2, group_id)
    result = run(authorize(ec2, group_id, [SMTP], egress=True, modern=modern))
    assert result["rules"] == ["tcp 25 to 0.0.0.0/0"]
    assert rule_set(ec2, group_id) == before
    assert (True, "-1", -1, -1, "0.0.0.0/0") in before


def test_egress_switch_leaves_egress_alone(ec2, group_id, conditions, calls):
    conditions(REVERT_EGRESS=False)
    event = authorize(ec2, group_id, [SMTP], egress=True)
    after_change = rule_set(ec2, group_id)
    calls.clear()
    assert run(event)["decision"] == "kept"
    assert rule_set(ec2, group_id) == after_change
    assert calls == []


@pytest.mark.parametrize("modern", [True, False], ids=["rule-ids", "old-response"])
def test_same_event_twice_is_harmless(ec2, group_id, modern):
    before = rule_set(ec2, group_id)
    event = authorize(ec2, group_id, [SSH], modern=modern)
    assert run(event)["rules"] == ["tcp 22 from 0.0.0.0/0"]
    second = run(event)
    assert second["decision"] == "already-gone"
    assert second["rules"] == []
    assert second["alreadyGone"] == ["tcp 22 from 0.0.0.0/0"]
    assert rule_set(ec2, group_id) == before


@pytest.mark.parametrize("modern", [True, False], ids=["rule-ids", "old-response"])
def test_rules_someone_already_removed_are_skipped_and_the_rest_revoked(ec2, group_id, modern):
    before = rule_set(ec2, group_id)
    web = {
        "IpProtocol": "tcp",
        "FromPort": 80,
        "ToPort": 80,
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
    }
    event = authorize(ec2, group_id, [SSH, web], modern=modern)
    ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=[SSH])
    result = run(event)
    assert result["rules"] == ["tcp 80 from 0.0.0.0/0"]
    assert result["alreadyGone"] == ["tcp 22 from 0.0.0.0/0"]
    assert rule_set(ec2, group_id) == before


@pytest.mark.parametrize("modern", [True, False], ids=["rule-ids", "old-response"])
def test_a_group_deleted_meanwhile_is_done(ec2, group_id, modern):
    event = authorize(ec2, group_id, [SSH], modern=modern)
    ec2.delete_security_group(GroupId=group_id)
    result = run(event)
    assert result["decision"] == "already-gone"
    assert result["alreadyGone"] == ["tcp 22 from 0.0.0.0/0"]


def test_a_failed_call_changes_nothing_and_calls_nothing(ec2, group_id, calls):
    bastion = {**SSH, "IpRanges": [{"CidrIp": "192.0.2.0/24"}]}
    event = authorize(ec2, group_id, [bastion])  # a duplicate: AWS refuses it
    assert event["errorCode"] == "Client.InvalidPermission.Duplicate"
    before = rule_set(ec2, group_id)
    calls.clear()
    result = run(event)
    assert result["decision"] == "ignored"
    assert "the call failed" in result["reason"]
    assert rule_set(ec2, group_id) == before
    assert calls == []


def bastion_rule_id(ec2, group_id):
    (rule,) = [r for r in rules_of(ec2, group_id) if r.get("CidrIpv4") == "192.0.2.0/24"]
    return rule["SecurityGroupRuleId"]


def test_a_rule_widened_in_place_is_revoked(ec2, group_id, calls):
    rule_id = bastion_rule_id(ec2, group_id)
    widened = {
        "IpProtocol": "tcp",
        "FromPort": 22,
        "ToPort": 22,
        "CidrIpv4": "0.0.0.0/0",
    }
    event = modify(ec2, group_id, {rule_id: widened})
    calls.clear()
    result = run(event)
    assert result["decision"] == "reverted"
    assert "no source gave the old value" in result["reason"]
    assert result["rules"] == ["tcp 22 from 0.0.0.0/0"]
    assert rule_id not in {r["SecurityGroupRuleId"] for r in rules_of(ec2, group_id)}
    assert (False, "tcp", 443, 443, "10.0.0.0/8") in rule_set(ec2, group_id)
    assert calls == ["DescribeSecurityGroupRules", "RevokeSecurityGroupIngress"]


def test_an_egress_rule_edited_in_place_is_revoked_as_egress(ec2, group_id):
    (egress,) = [r for r in rules_of(ec2, group_id) if r["IsEgress"]]
    wider = {"IpProtocol": "-1", "FromPort": -1, "ToPort": -1, "CidrIpv4": "0.0.0.0/0"}
    result = run(modify(ec2, group_id, {egress["SecurityGroupRuleId"]: wider}))
    assert result["rules"] == ["all traffic to 0.0.0.0/0"]
    assert not [r for r in rules_of(ec2, group_id) if r["IsEgress"]]


@pytest.mark.parametrize(
    ("setting", "new_value"),
    [
        ({"REVERT_MODIFIED_RULES": False}, {"ToPort": 22, "CidrIpv4": "0.0.0.0/0"}),
        (
            {"ALLOWED_RULES": [{"isEgress": False, "cidrWithin": "192.0.2.0/24"}]},
            {"ToPort": 23, "CidrIpv4": "192.0.2.0/25"},
        ),
    ],
    ids=["edits-left-alone", "edit-to-an-allowed-value"],
)
def test_an_edit_the_conditions_allow_stays(ec2, group_id, conditions, setting, new_value):
    conditions(**setting)
    rule_id = bastion_rule_id(ec2, group_id)
    value = {"IpProtocol": "tcp", "FromPort": 22, **new_value}
    assert run(modify(ec2, group_id, {rule_id: value}))["decision"] == "kept"
    assert rule_id in {r["SecurityGroupRuleId"] for r in rules_of(ec2, group_id)}


def test_a_group_named_only_in_the_default_vpc_is_resolved_and_reverted(ec2, calls):
    default = ec2.create_security_group(GroupName="legacy-web", Description="web")["GroupId"]
    before = rule_set(ec2, default)
    ec2.authorize_security_group_ingress(GroupName="legacy-web", IpPermissions=[SSH])
    params = {"groupName": "legacy-web", "ipPermissions": camel([SSH])}
    calls.clear()
    result = run(record("AuthorizeSecurityGroupIngress", params, {"_return": True}))
    assert result["decision"] == "reverted"
    assert rule_set(ec2, default) == before
    assert calls == ["DescribeSecurityGroups", "RevokeSecurityGroupIngress"]


@pytest.mark.parametrize(
    ("setting", "reverted"),
    [
        ({"ONLY_TAGGED": {"guardrail": "on"}}, True),
        ({"ONLY_TAGGED": {"guardrail": "strict"}}, False),
        ({"NEVER_TAGGED": {"guardrail": None}}, False),
        ({"ONLY_VPC_IDS": ["vpc-0aaaaaaaaaaaaaaaa"]}, False),
        ({"NEVER_VPC_IDS": ["vpc-0aaaaaaaaaaaaaaaa"]}, True),
    ],
)
def test_vpc_and_tag_conditions_cost_one_lookup(
    ec2, group_id, conditions, calls, setting, reverted
):
    ec2.create_tags(Resources=[group_id], Tags=[{"Key": "guardrail", "Value": "on"}])
    conditions(**setting)
    event = authorize(ec2, group_id, [SSH])
    calls.clear()
    result = run(event)
    assert result["decision"] == ("reverted" if reverted else "kept")
    assert ((False, "tcp", 22, 22, "0.0.0.0/0") in rule_set(ec2, group_id)) != reverted
    assert calls[0] == "DescribeSecurityGroups"
    assert len(calls) == (2 if reverted else 1)


def test_the_vpc_condition_sees_the_groups_real_vpc(ec2, group_id, vpc_id, conditions):
    conditions(ONLY_VPC_IDS=[vpc_id])
    assert run(authorize(ec2, group_id, [SSH]))["decision"] == "reverted"


def test_allowed_rules_stay_and_the_rest_of_the_change_goes(ec2, group_id, conditions):
    conditions(
        ALLOWED_RULES=[
            {"ipProtocol": "tcp", "fromPort": 443, "toPort": 443, "cidr": "0.0.0.0/0"}
        ]
    )
    https = {**SSH, "FromPort": 443, "ToPort": 443}
    result = run(authorize(ec2, group_id, [https, SSH]))
    assert result["rules"] == ["tcp 22 from 0.0.0.0/0"]
    assert result["keptRules"] == ["tcp 443 from 0.0.0.0/0"]
    assert (False, "tcp", 443, 443, "0.0.0.0/0") in rule_set(ec2, group_id)
    assert (False, "tcp", 22, 22, "0.0.0.0/0") not in rule_set(ec2, group_id)


def test_it_acts_in_the_events_region(aws):
    eu = boto3.client("ec2", region_name="eu-west-1")
    vpc = eu.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    group = eu.create_security_group(GroupName="eu", Description="eu", VpcId=vpc)["GroupId"]
    before = rule_set(eu, group)
    event = authorize(eu, group, [SSH])
    assert event["awsRegion"] == "eu-west-1"
    assert run(event)["decision"] == "reverted"
    assert rule_set(eu, group) == before
    assert list(lambda_function._clients) == [("ec2", "eu-west-1", None)]


# ---- Fail closed: no odd field shields a change (issue: fail closed, stay exact) -----------

ECHO = {
    "IpProtocol": "icmp",
    "FromPort": 8,
    "ToPort": 0,
    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
}


@pytest.mark.parametrize("modern", [True, False], ids=["rule-ids", "old-response"])
def test_an_icmp_echo_rule_does_not_shield_ssh_in_the_same_call(ec2, group_id, modern):
    before = rule_set(ec2, group_id)
    result = run(authorize(ec2, group_id, [ECHO, SSH], modern=modern))
    assert result["decision"] == "reverted"
    assert result["rules"] == [
        "icmp type 8 code 0 from 0.0.0.0/0",
        "tcp 22 from 0.0.0.0/0",
    ]
    assert rule_set(ec2, group_id) == before


@pytest.mark.parametrize(
    "odd",
    [
        {"ipProtocol": "a-protocol-from-the-future"},
        {"cidrIpv4": None, "someNewSourceKind": {"id": "x"}},
        {"fromPort": "twenty-two"},
    ],
)
def test_a_response_rule_with_odd_values_is_revoked_by_its_id(ec2, group_id, odd):
    before = rule_set(ec2, group_id)
    event = authorize(ec2, group_id, [SSH, SMTP])
    event["responseElements"]["securityGroupRuleSet"]["items"][0].update(odd)
    result = run(event)
    assert result["decision"] == "reverted"
    assert len(result["rules"]) == 2
    assert result["rules"][0].startswith("rule sgr-")
    assert rule_set(ec2, group_id) == before


def test_a_malformed_rule_id_is_never_sent_and_the_rest_is_revoked(ec2, group_id, calls):
    event = authorize(ec2, group_id, [SSH, SMTP])
    items = event["responseElements"]["securityGroupRuleSet"]["items"]
    items[0]["securityGroupRuleId"] = "sgr-../../etc"
    result = run(event)
    assert result["decision"] == "unreadable"
    assert result["rules"] == ["tcp 25 from 0.0.0.0/0"]
    assert "sgr-../../etc" in result["unreadable"][0]
    assert (False, "tcp", 22, 22, "0.0.0.0/0") in rule_set(ec2, group_id)
    assert (False, "tcp", 25, 25, "0.0.0.0/0") not in rule_set(ec2, group_id)
    assert calls == ["RevokeSecurityGroupIngress"]


@pytest.mark.parametrize(
    ("verdict", "decision"),
    [
        (False, "kept"),
        (True, "reverted"),
        (None, "reverted"),  # a forgotten return
        (0, "reverted"),
        ("no", "reverted"),
        ([], "reverted"),
    ],
)
def test_only_an_exact_false_from_should_revert_keeps_a_change(
    ec2, group_id, conditions, verdict, decision
):
    conditions(should_revert=lambda change: verdict)
    result = run(authorize(ec2, group_id, [SSH]))
    assert result["decision"] == decision
    assert ((False, "tcp", 22, 22, "0.0.0.0/0") in rule_set(ec2, group_id)) == (
        decision == "kept"
    )
    if verdict not in (True, False):
        assert f"should_revert returned {verdict!r}" in result["reason"]


# ---- Exact, even when the event is late ----------------------------------------------------


def late(event, minutes=30):
    """The record as a retry, a redrive or a replay brings it: the same, but old."""
    made = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=minutes)
    return {**event, "eventTime": made.strftime("%Y-%m-%dT%H:%M:%SZ")}


def test_a_late_event_leaves_a_rule_an_admin_changed_since_and_says_so(
    ec2, group_id, conditions
):
    """On the old code, replaying Alice's event deleted the admin's narrowed rule."""
    conditions(EXEMPT_PRINCIPALS=["arn:aws:iam::*:role/NetworkAdmin"])
    wide = {**SSH, "FromPort": 8080, "ToPort": 8080}
    wide["IpRanges"] = [{"CidrIp": "198.51.100.0/24"}]
    alice = authorize(ec2, group_id, [wide])
    (rule,) = alice["responseElements"]["securityGroupRuleSet"]["items"]
    narrowed = {
        "IpProtocol": "tcp",
        "FromPort": 8080,
        "ToPort": 8080,
        "CidrIpv4": "10.0.0.0/8",
    }
    admin = assumed_role("NetworkAdmin", "carol")
    assert (
        run(modify(ec2, group_id, {rule["securityGroupRuleId"]: narrowed}, identity=admin))[
            "decision"
        ]
        == "kept"
    )
    result = run(late(alice))
    assert result["decision"] == "changed-since"
    assert result["changedSince"] == [
        {"recorded": "tcp 8080 from 198.51.100.0/24", "now": "tcp 8080 from 10.0.0.0/8"}
    ]
    assert (False, "tcp", 8080, 8080, "10.0.0.0/8") in rule_set(ec2, group_id)


def test_a_late_event_whose_rules_are_unchanged_is_reverted_with_one_check(
    ec2, group_id, calls
):
    before = rule_set(ec2, group_id)
    result = run(late(authorize(ec2, group_id, [SSH, SMTP])))
    assert result["decision"] == "reverted"
    assert rule_set(ec2, group_id) == before
    assert calls == ["DescribeSecurityGroupRules", "RevokeSecurityGroupIngress"]


def test_a_fresh_event_keeps_the_one_call_path(ec2, group_id, calls):
    run(authorize(ec2, group_id, [SSH]))
    assert calls == ["RevokeSecurityGroupIngress"]


@pytest.mark.parametrize("time", [None, "yesterday", "2026-11-27 12:00:00", 17])
def test_an_unreadable_event_time_counts_as_late(ec2, group_id, calls, time):
    event = authorize(ec2, group_id, [SSH])
    event["eventTime"] = time
    assert run(event)["decision"] == "reverted"
    assert calls == ["DescribeSecurityGroupRules", "RevokeSecurityGroupIngress"]


def test_a_late_event_whose_rules_are_all_gone_is_already_gone(ec2, group_id, calls):
    event = authorize(ec2, group_id, [SSH])
    ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=[SSH])
    result = run(late(event))
    assert result["decision"] == "already-gone"
    assert result["alreadyGone"] == ["tcp 22 from 0.0.0.0/0"]
    assert calls == ["DescribeSecurityGroupRules"]


def test_an_edit_changed_again_since_is_left_as_it_is_now(ec2, group_id):
    rule_id = bastion_rule_id(ec2, group_id)
    widened = WIDENED
    event = modify(ec2, group_id, {rule_id: widened})
    ec2.modify_security_group_rules(
        GroupId=group_id,
        SecurityGroupRules=[
            {
                "SecurityGroupRuleId": rule_id,
                # ports the edit did not open: a change of its own, not a put-back
                "SecurityGroupRule": {
                    **widened,
                    "ToPort": 23,
                    "CidrIpv4": "192.0.2.0/25",
                },
            }
        ],
    )
    result = run(event)
    assert result["decision"] == "changed-since"
    assert (False, "tcp", 22, 23, "192.0.2.0/25") in rule_set(ec2, group_id)


def test_dry_run_never_says_reverted(ec2, group_id, monkeypatch):
    monkeypatch.setenv("DRY_RUN", "true")
    result = run(late(authorize(ec2, group_id, [SSH])))
    assert result["decision"] == "dry-run"
    assert (False, "tcp", 22, 22, "0.0.0.0/0") in rule_set(ec2, group_id)


# AssociateSecurityGroupVpc (2024) lets a group be used in another VPC of the account and
# region. moto has neither it nor DisassociateSecurityGroupVpc: Stubber answers in the EC2 API
# reference's shapes (DescribeSecurityGroups' SecurityGroups[].VpcId; {"State": …}). The
# record's layout is assumed like ModifySecurityGroupRules' (unverified).
GUARDED_VPC, OPEN_VPC = "vpc-0aaaaaaaaaaaaaaa1", "vpc-0bbbbbbbbbbbbbbb2"
OUTSIDE_GROUP = "sg-0cccccccccccccccc"


def association(group_id, vpc_id, identity=None):
    request = {"AssociateSecurityGroupVpcRequest": {"GroupId": group_id, "VpcId": vpc_id}}
    response = {"AssociateSecurityGroupVpcResponse": {"state": "associating"}}
    return record("AssociateSecurityGroupVpc", request, response, identity=identity)


@pytest.mark.parametrize(
    ("only_vpcs", "into", "undone"),
    [
        (
            [GUARDED_VPC],
            GUARDED_VPC,
            True,
        ),  # an unguarded group's rules into a guarded VPC
        ([GUARDED_VPC], "vpc-0dddddddddddddddd", False),  # into another unguarded VPC
    ],
)
def test_a_group_from_an_unguarded_vpc_associated_with_a_guarded_one_is_taken_out(
    aws, conditions, only_vpcs, into, undone
):
    conditions(ONLY_VPC_IDS=only_vpcs)
    with Stubber(lambda_function.client("ec2", "us-east-1")) as ec2:
        if undone:
            ec2.add_response(
                "describe_security_groups",
                {"SecurityGroups": [{"GroupId": OUTSIDE_GROUP, "VpcId": OPEN_VPC}]},
                {"GroupIds": [OUTSIDE_GROUP]},
            )
            ec2.add_response(
                "disassociate_security_group_vpc",
                {"State": "disassociating"},
                {"GroupId": OUTSIDE_GROUP, "VpcId": into},
            )
        result = lambda_handler(eventbridge(association(OUTSIDE_GROUP, into)), CONTEXT)
        ec2.assert_no_pending_responses()
    assert result["decision"] == ("reverted" if undone else "kept")
    if undone:
        assert result["rules"] == [
            f"{OUTSIDE_GROUP} associated with {into}, disassociated again"
        ]


def at(event, seconds_after, made):
    """The record, made `seconds_after` seconds after `made` (CloudTrail's whole seconds)."""
    when = made + datetime.timedelta(seconds=seconds_after)
    return {**event, "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ")}


def disassociation(group_id, vpc_id, error_code=None):
    request = {"DisassociateSecurityGroupVpcRequest": {"GroupId": group_id, "VpcId": vpc_id}}
    response = None if error_code else {"DisassociateSecurityGroupVpcResponse": {}}
    return record("DisassociateSecurityGroupVpc", request, response, error_code=error_code)


# A late copy of an association (Lambda's retry, a redrive, the sweep) must not take out an
# association made since: event history (cloudtrail.EventHistory, LookupEvents' documented
# shape, looked up by EventName) is read for a later association of the same group and VPC.
# A disassociation alone proves nothing: it is asynchronous and may fail after its record.
ADMIN = assumed_role("NetworkAdmin", "carol")
LATER_CALLS = {
    "taken out and associated again since, by an admin": (
        [(disassociation, 60, None), (association, 120, ADMIN)],
        False,
    ),
    "associated again since, its disassociation not in history yet": (
        [(association, 120, ADMIN)],
        False,
    ),
    "nothing since": ([], True),
    "a disassociation alone since (it may have failed after its record)": (
        [(disassociation, 60, None)],
        True,
    ),
    "a failed association since (it changed nothing)": (
        [(association, 60, "failed")],
        True,
    ),
    "in the same second: cannot be ordered, so the undo goes ahead": (
        [(disassociation, 0, None), (association, 0, ADMIN)],
        True,
    ),
    "another VPC's association since": ([(association, 60, "other-vpc")], True),
    "event history may not be read": (None, True),
}


def later_call(make, seconds, how, made):
    if make is disassociation:
        found = disassociation(OUTSIDE_GROUP, GUARDED_VPC, how)
    elif how == "other-vpc":
        found = association(OUTSIDE_GROUP, "vpc-0eeeeeeeeeeeeeee5")
    elif how == "failed":
        found = association(OUTSIDE_GROUP, GUARDED_VPC)
        found |= {"errorCode": "Client.UnauthorizedOperation", "responseElements": None}
    else:
        found = association(OUTSIDE_GROUP, GUARDED_VPC, how)
    return at(found, seconds, made)


def run_late_association(event, history, undone, denied=False):
    trail = lambda_function.client("cloudtrail", "us-east-1")
    if denied:
        stubbed = Stubber(trail)
        stubbed.add_client_error(
            "lookup_events", "AccessDeniedException", http_status_code=400
        )
        stubbed.activate()
    else:
        EventHistory([event, *history]).serve(trail)
    with Stubber(lambda_function.client("ec2", "us-east-1")) as ec2:
        ec2.add_response(
            "describe_security_groups",
            {"SecurityGroups": [{"GroupId": OUTSIDE_GROUP, "VpcId": OPEN_VPC}]},
            {"GroupIds": [OUTSIDE_GROUP]},
        )
        if undone:
            ec2.add_response(
                "disassociate_security_group_vpc",
                {"State": "disassociating"},
                {"GroupId": OUTSIDE_GROUP, "VpcId": GUARDED_VPC},
            )
        result = lambda_handler(eventbridge(event), CONTEXT)
        ec2.assert_no_pending_responses()
    return result


@pytest.mark.parametrize(("later", "undone"), LATER_CALLS.values(), ids=list(LATER_CALLS))
def test_a_late_association_is_undone_unless_the_group_was_associated_again_since(
    aws, conditions, inbox, later, undone
):
    conditions(ONLY_VPC_IDS=[GUARDED_VPC])
    made = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=30)
    event = at(association(OUTSIDE_GROUP, GUARDED_VPC), 0, made)
    history = [later_call(*call, made) for call in later or []]
    result = run_late_association(event, history, undone, denied=later is None)
    words = f"{OUTSIDE_GROUP} associated with {GUARDED_VPC}"
    if undone:
        assert result["decision"] == "reverted", result
        assert result["rules"] == [f"{words}, disassociated again"]
    else:  # left, and told: what is there now is the later call's
        assert result["decision"] == "changed-since", result
        assert result["changedSince"][0]["recorded"] == words
        assert "associated again at" in result["reason"]
        assert any(words in m["Message"] for m in inbox())


def test_a_late_associations_history_flooded_past_what_is_read_is_undone_and_says_so(
    aws, conditions, monkeypatch
):
    """More than 500 failed calls since (they need no permission) push an admin's later
    association out of what is read: the undo goes ahead, toward the guard, and says so."""
    conditions(ONLY_VPC_IDS=[GUARDED_VPC])
    monkeypatch.setattr(lambda_function, "PAGE_INTERVAL_S", 0)  # 2 a second on AWS
    made = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=30)
    event = at(association(OUTSIDE_GROUP, GUARDED_VPC), 0, made)
    history = [later_call(association, 60, ADMIN, made)]
    history += [later_call(association, 120 + n, "failed", made) for n in range(501)]
    result = run_late_association(event, history, undone=True)
    assert result["decision"] == "reverted"
    assert "could not be read whole" in result["reason"]
