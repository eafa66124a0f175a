"""Restoring edited rules: the old value put back, rule ID kept, from Config or event history.

moto runs ModifySecurityGroupRules but emulates neither AWS Config's history nor CloudTrail's
LookupEvents: those answers come from botocore's Stubber, in the shapes the API references
document (Config GetResourceConfigHistory: configurationItems[].configuration, a JSON string
of the group as DescribeSecurityGroups has it, camelCase, with ipv4Ranges [{cidrIp,
description}] beside the plain ipRanges strings, as real items show; CloudTrail LookupEvents:
Events[].CloudTrailEvent, the record as a JSON string, newest first).
"""

from __future__ import annotations

import datetime
import json

import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber
from cloudtrail import (
    ACCOUNT,
    EventHistory,
    assumed_role,
    authorize,
    eventbridge,
    modify,
    rule_set,
    rules_of,
)
from conftest import CONTEXT, WIDENED, bastion_of

import lambda_function
from lambda_function import lambda_handler, widens

BOB = assumed_role("Developer", "bob")


def config_item(group_id, permissions, egress=()):
    """A configuration item of the group, as GetResourceConfigHistory returns it."""
    configuration = {
        "groupId": group_id,
        "groupName": "web",
        "ipPermissions": list(permissions),
        "ipPermissionsEgress": list(egress),
    }
    return {
        "version": "1.3",
        "accountId": ACCOUNT,
        "configurationItemCaptureTime": datetime.datetime(2026, 11, 1),
        "configurationItemStatus": "OK",
        "resourceType": "AWS::EC2::SecurityGroup",
        "resourceId": group_id,
        "configuration": json.dumps(configuration),
    }


def tcp_permission(port, cidr, description):
    return {
        "fromPort": port,
        "toPort": port,
        "ipProtocol": "tcp",
        "ipRanges": [cidr],
        "ipv4Ranges": [{"cidrIp": cidr, "description": description}],
        "ipv6Ranges": [],
        "prefixListIds": [],
        "userIdGroupPairs": [],
    }


BEFORE_THE_EDIT = [
    tcp_permission(443, "10.0.0.0/8", "internal HTTPS"),
    tcp_permission(22, "192.0.2.0/24", "bastion"),
]


@pytest.fixture
def config(conditions):
    """Config's history stubbed, and event history (cloudtrail.py's records), which is read
    to see that the group did not change after the item was captured."""
    conditions(RESTORE_FROM_CONFIG=True)
    EventHistory().serve(lambda_function.client("cloudtrail", "us-east-1"))
    with Stubber(lambda_function.client("config", "us-east-1")) as stub:
        yield stub


@pytest.fixture
def history(conditions):
    conditions(RESTORE_FROM_CLOUDTRAIL=True)
    with Stubber(lambda_function.client("cloudtrail", "us-east-1")) as stub:
        yield stub


def lookup(records):
    return {
        "Events": [
            {
                "EventId": r["eventID"],
                "EventName": r["eventName"],
                "EventTime": datetime.datetime(2026, 11, 1),
                "CloudTrailEvent": json.dumps(r),
            }
            for r in records
        ]
    }


def test_a_widened_rule_is_put_back_from_config_with_its_id(ec2, group_id, config, calls):
    rule_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    event = modify(ec2, group_id, {rule_id: WIDENED}, identity=BOB)
    config.add_response(
        "get_resource_config_history",
        {"configurationItems": [config_item(group_id, BEFORE_THE_EDIT)]},
        {
            "resourceType": "AWS::EC2::SecurityGroup",
            "resourceId": group_id,
            "laterTime": ANY,
            "limit": 1,
        },
    )
    result = lambda_handler(eventbridge(event), CONTEXT)
    assert result["decision"] == "reverted"
    assert result["rules"] == ["tcp 22 from 0.0.0.0/0, restored to tcp 22 from 192.0.2.0/24"]
    back = bastion_of(ec2, group_id)
    assert back["SecurityGroupRuleId"] == rule_id
    assert back["Description"] == "bastion"
    assert calls == [
        "DescribeSecurityGroupRules",  # is the rule still as the edit left it?
        "DescribeSecurityGroupRules",  # the group's other rules, beside the Config item
        "ModifySecurityGroupRules",
    ]


def test_a_config_item_that_gives_two_candidates_is_not_used(ec2, group_id, config):
    rule_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    event = modify(ec2, group_id, {rule_id: WIDENED}, identity=BOB)
    extra = tcp_permission(3306, "10.1.0.0/16", "removed since")
    config.add_response(
        "get_resource_config_history",
        {"configurationItems": [config_item(group_id, [*BEFORE_THE_EDIT, extra])]},
    )
    result = lambda_handler(eventbridge(event), CONTEXT)
    assert result["decision"] == "reverted"
    assert "no source gave the old value" in result["reason"]
    assert rule_id not in {r["SecurityGroupRuleId"] for r in rules_of(ec2, group_id)}


@pytest.mark.parametrize(
    "code",
    ["ResourceNotDiscoveredException", "NoAvailableConfigurationRecorderException"],
)
def test_without_config_history_the_edit_is_revoked_fail_closed(ec2, group_id, config, code):
    rule_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    event = modify(ec2, group_id, {rule_id: WIDENED}, identity=BOB)
    config.add_client_error("get_resource_config_history", service_error_code=code)
    result = lambda_handler(eventbridge(event), CONTEXT)
    assert result["rules"] == ["tcp 22 from 0.0.0.0/0"]
    assert "put its old value back by hand" in result["reason"]
    assert (False, "tcp", 22, 22, "0.0.0.0/0") not in rule_set(ec2, group_id)


def test_the_authorize_call_that_made_the_rule_gives_its_old_value(ec2, group_id, history):
    created = authorize(
        ec2,
        group_id,
        [
            {
                "IpProtocol": "tcp",
                "FromPort": 5432,
                "ToPort": 5432,
                "IpRanges": [{"CidrIp": "10.20.0.0/16", "Description": "app"}],
            }
        ],
    )
    (item,) = created["responseElements"]["securityGroupRuleSet"]["items"]
    wide = {**WIDENED, "FromPort": 5432, "ToPort": 5432}
    event = modify(ec2, group_id, {item["securityGroupRuleId"]: wide}, identity=BOB)
    history.add_response(
        "lookup_events",
        lookup([created]),
        {
            "LookupAttributes": [{"AttributeKey": "ResourceName", "AttributeValue": group_id}],
            "StartTime": ANY,
            "EndTime": ANY,
            "MaxResults": 50,
        },
    )
    result = lambda_handler(eventbridge(event), CONTEXT)
    assert result["rules"] == [
        "tcp 5432 from 0.0.0.0/0, restored to tcp 5432 from 10.20.0.0/16"
    ]
    (back,) = [
        r
        for r in rules_of(ec2, group_id)
        if r["SecurityGroupRuleId"] == item["securityGroupRuleId"]
    ]
    assert (back["CidrIpv4"], back.get("Description")) == ("10.20.0.0/16", "app")


def test_the_latest_earlier_edit_wins_over_the_call_that_made_the_rule(ec2, group_id, history):
    created = authorize(
        ec2,
        group_id,
        [
            {
                "IpProtocol": "tcp",
                "FromPort": 8080,
                "ToPort": 8080,
                "IpRanges": [{"CidrIp": "10.30.0.0/16"}],
            }
        ],
    )
    (item,) = created["responseElements"]["securityGroupRuleSet"]["items"]
    rule_id = item["securityGroupRuleId"]
    narrowed = {**WIDENED, "FromPort": 8080, "ToPort": 8080, "CidrIpv4": "10.30.1.0/24"}
    earlier = modify(ec2, group_id, {rule_id: narrowed})
    event = modify(
        ec2, group_id, {rule_id: {**narrowed, "CidrIpv4": "0.0.0.0/0"}}, identity=BOB
    )
    history.add_response("lookup_events", lookup([event, earlier, created]))
    result = lambda_handler(eventbridge(event), CONTEXT)
    assert result["rules"] == [
        "tcp 8080 from 0.0.0.0/0, restored to tcp 8080 from 10.30.1.0/24"
    ]
    assert (False, "tcp", 8080, 8080, "10.30.1.0/24") in rule_set(ec2, group_id)


def test_nothing_in_history_means_revoke_and_say_so(ec2, group_id, history):
    rule_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    event = modify(ec2, group_id, {rule_id: WIDENED}, identity=BOB)
    history.add_response("lookup_events", lookup([]))
    result = lambda_handler(eventbridge(event), CONTEXT)
    assert result["decision"] == "reverted"
    assert "put its old value back by hand" in result["reason"]
    assert rule_id not in {r["SecurityGroupRuleId"] for r in rules_of(ec2, group_id)}


@pytest.mark.parametrize(
    ("new", "why"),
    [
        (
            {**WIDENED, "CidrIpv4": "192.0.2.0/24", "Description": "bastion v2"},
            "description",
        ),
    ],
)
def test_an_edit_that_widens_nothing_stays(ec2, group_id, config, calls, new, why):
    rule_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    event = modify(ec2, group_id, {rule_id: new}, identity=BOB)
    config.add_response(
        "get_resource_config_history",
        {"configurationItems": [config_item(group_id, BEFORE_THE_EDIT)]},
    )
    result = lambda_handler(eventbridge(event), CONTEXT)
    assert result["decision"] == "kept", why
    assert "widens nothing" in result["reason"]
    assert "ModifySecurityGroupRules" not in calls
    assert rule_id in {r["SecurityGroupRuleId"] for r in rules_of(ec2, group_id)}


@pytest.mark.parametrize(
    ("locked", "changed_since", "stays"),
    [
        (False, False, "narrowed"),  # the edit widens nothing: it stays
        (True, False, "put back"),  # a locked group: the old value goes back
        (False, True, "revoked"),  # the item is older than a change: its value is unknown
        (True, True, "revoked"),
    ],
    ids=["narrowed", "narrowed-locked", "stale", "stale-locked"],
)
def test_a_config_value_wider_than_the_edit_waits_for_event_history_to_show_it_current(
    ec2, group_id, config, conditions, locked, changed_since, stays
):
    """Config's value is wider than the edit's: it would keep the edit, or in a locked group
    widen the rule again. A Config item may be older than the group's latest changes (it
    names no rule IDs), so it is used only once event history holds the edit and shows no
    other change to the group's rules since the item's capture; else the edited rule is
    revoked, and told (two attackers' reviews: a stale item's value was used, and the first
    fix revoked every narrowing edit, in locked groups too)."""
    if locked:
        conditions(LOCKED_GROUP_IDS=[group_id])
    if changed_since:  # a rule added after the item was captured (2026-11-01)
        ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}
        authorize(ec2, group_id, [{**ssh, "IpRanges": [{"CidrIp": "10.9.0.0/16"}]}])
    rule_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    narrowed = {**WIDENED, "CidrIpv4": "192.0.2.0/25"}
    event = modify(ec2, group_id, {rule_id: narrowed}, identity=BOB)
    EventHistory().serve(lambda_function.client("cloudtrail", "us-east-1"))
    for _ in range(2):  # read live, then again on event history's record of the edit
        config.add_response(
            "get_resource_config_history",
            {"configurationItems": [config_item(group_id, BEFORE_THE_EDIT)]},
        )
    result = lambda_handler(eventbridge(event), CONTEXT)
    held = {r["SecurityGroupRuleId"]: r.get("CidrIpv4") for r in rules_of(ec2, group_id)}
    assert {
        "narrowed": held.get(rule_id) == "192.0.2.0/25" and result["decision"] == "kept",
        "put back": held.get(rule_id) == "192.0.2.0/24" and result["decision"] == "reverted",
        "revoked": rule_id not in held
        and "put its old value back by hand" in result["reason"],
    }[stays], result


@pytest.mark.parametrize(
    ("since", "decision"),
    [
        # Narrowed since (as the guard's own restore does): nothing the edit opened is
        # left, so the sweep's second look at the edit raises no left-open alarm.
        ({"CidrIpv4": "198.51.100.0/24"}, "already-gone"),
        ({"CidrIpv4": "192.0.2.0/24"}, "already-gone"),
        # Changed to let through what the edit did not: left as it is, and told.
        ({"FromPort": 22, "ToPort": 23, "CidrIpv4": "10.0.0.0/8"}, "changed-since"),
    ],
    ids=["narrowed", "put-back", "changed-otherwise"],
)
def test_an_edit_changed_again_since_is_not_written_back(
    ec2, group_id, config, since, decision
):
    rule_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    event = modify(ec2, group_id, {rule_id: WIDENED}, identity=BOB)
    ec2.modify_security_group_rules(
        GroupId=group_id,
        SecurityGroupRules=[
            {"SecurityGroupRuleId": rule_id, "SecurityGroupRule": {**WIDENED, **since}}
        ],
    )
    result = lambda_handler(eventbridge(event), CONTEXT)
    assert result["decision"] == decision
    now = bastion_of_id(ec2, group_id, rule_id)
    assert (now["FromPort"], now["ToPort"], now["CidrIpv4"]) == (
        since.get("FromPort", 22),
        since.get("ToPort", 22),
        since["CidrIpv4"],
    )


def bastion_of_id(ec2, group_id, rule_id):
    (found,) = [r for r in rules_of(ec2, group_id) if r["SecurityGroupRuleId"] == rule_id]
    return found


def test_ingress_and_egress_edits_in_one_call_are_each_restored(
    ec2, group_id, history, conditions
):
    conditions(EXEMPT_PRINCIPALS=[f"arn:aws:iam::{ACCOUNT}:role/NetworkAdmin"])
    created = authorize(
        ec2,
        group_id,
        [
            {
                "IpProtocol": "tcp",
                "FromPort": 25,
                "ToPort": 25,
                "IpRanges": [{"CidrIp": "10.40.0.0/16"}],
            }
        ],
        egress=True,
    )
    (out,) = created["responseElements"]["securityGroupRuleSet"]["items"]
    (into,) = [r for r in rules_of(ec2, group_id) if r.get("CidrIpv4") == "192.0.2.0/24"]
    earlier = modify(  # an admin's edit: a value the guard approves as it stands
        ec2,
        group_id,
        {into["SecurityGroupRuleId"]: {**WIDENED, "CidrIpv4": "192.0.2.0/24"}},
        identity=assumed_role("NetworkAdmin", "carol"),
    )
    event = modify(
        ec2,
        group_id,
        {
            into["SecurityGroupRuleId"]: WIDENED,
            out["securityGroupRuleId"]: {**WIDENED, "FromPort": 25, "ToPort": 25},
        },
        identity=BOB,
    )
    history.add_response("lookup_events", lookup([earlier, created]))
    result = lambda_handler(eventbridge(event), CONTEXT)
    assert len(result["rules"]) == 2
    after = rule_set(ec2, group_id)
    assert {
        (False, "tcp", 22, 22, "192.0.2.0/24"),
        (True, "tcp", 25, 25, "10.40.0.0/16"),
    } <= after
    assert not {r for r in after if r[4] == "0.0.0.0/0" and r[1] == "tcp"}


def test_an_edit_left_open_never_becomes_the_old_value_of_the_next(ec2, group_id, history):
    """Attack: widen a rule, and widen it again a little less before the guard gets to the
    first edit. The first edit finds what it opened gone (already-gone: the second is an
    event of its own); the second must not be measured against the first (it would "widen
    nothing" and be kept)."""
    created = authorize(
        ec2,
        group_id,
        [{**SSH_LIKE, "FromPort": 9000, "ToPort": 9000}],
    )
    (item,) = created["responseElements"]["securityGroupRuleSet"]["items"]
    rule_id = item["securityGroupRuleId"]
    wide = {**WIDENED, "FromPort": 9000, "ToPort": 9000}
    first = modify(ec2, group_id, {rule_id: wide}, identity=BOB)
    second = modify(ec2, group_id, {rule_id: {**wide, "CidrIpv4": "0.0.0.0/1"}}, identity=BOB)
    assert lambda_handler(eventbridge(first), CONTEXT)["decision"] == "already-gone"
    history.add_response("lookup_events", lookup([second, first, created]))
    result = lambda_handler(eventbridge(second), CONTEXT)
    assert result["rules"] == [
        "tcp 9000 from 0.0.0.0/1, restored to tcp 9000 from 10.50.0.0/16"
    ]
    assert (False, "tcp", 9000, 9000, "10.50.0.0/16") in rule_set(ec2, group_id)


def test_an_unapproved_edit_with_nothing_before_it_gives_no_old_value(ec2, group_id, history):
    rule_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    narrowed = {**WIDENED, "CidrIpv4": "192.0.2.0/25"}
    earlier = modify(ec2, group_id, {rule_id: narrowed})  # no creation record before it
    event = modify(ec2, group_id, {rule_id: WIDENED}, identity=BOB)
    history.add_response("lookup_events", lookup([earlier]))
    result = lambda_handler(eventbridge(event), CONTEXT)
    assert "no source gave the old value" in result["reason"]
    assert rule_id not in {r["SecurityGroupRuleId"] for r in rules_of(ec2, group_id)}


SSH_LIKE = {
    "IpProtocol": "tcp",
    "FromPort": 22,
    "ToPort": 22,
    "IpRanges": [{"CidrIp": "10.50.0.0/16"}],
}


def rule(protocol, low=None, high=None, **source):
    found = {"isEgress": False, "ipProtocol": protocol, **source}
    if low is not None:
        found |= {"fromPort": low, "toPort": high}
    return found


@pytest.mark.parametrize(
    ("new", "old", "wider"),
    [
        (
            rule("tcp", 22, 22, cidrIpv4="0.0.0.0/0"),
            rule("tcp", 22, 22, cidrIpv4="10.0.0.0/8"),
            True,
        ),
        (
            rule("tcp", 22, 22, cidrIpv4="10.1.0.0/16"),
            rule("tcp", 22, 22, cidrIpv4="10.0.0.0/8"),
            False,
        ),
        (
            rule("tcp", 20, 23, cidrIpv4="10.0.0.0/8"),
            rule("tcp", 22, 22, cidrIpv4="10.0.0.0/8"),
            True,
        ),
        (
            rule("tcp", 22, 22, cidrIpv4="10.0.0.0/8"),
            rule("tcp", 0, 1024, cidrIpv4="10.0.0.0/8"),
            False,
        ),
        (
            rule("udp", 22, 22, cidrIpv4="10.0.0.0/8"),
            rule("tcp", 22, 22, cidrIpv4="10.0.0.0/8"),
            True,
        ),
        (
            rule("tcp", 22, 22, cidrIpv4="10.0.0.0/8"),
            rule("-1", cidrIpv4="10.0.0.0/8"),
            False,
        ),
        (
            rule("-1", cidrIpv4="10.0.0.0/8"),
            rule("tcp", 22, 22, cidrIpv4="10.0.0.0/8"),
            True,
        ),
        (
            rule("tcp", 22, 22, cidrIpv6="::/0"),
            rule("tcp", 22, 22, cidrIpv4="0.0.0.0/0"),
            True,
        ),
        (
            rule("tcp", 22, 22, prefixListId="pl-0123abcd"),
            rule("tcp", 22, 22, prefixListId="pl-0123abcd"),
            False,
        ),
        (
            rule("tcp", 22, 22, prefixListId="pl-0123abcd"),
            rule("tcp", 22, 22, cidrIpv4="0.0.0.0/0"),
            True,
        ),
        (
            rule("icmp", 8, 0, cidrIpv4="10.0.0.0/8"),
            rule("icmp", 8, -1, cidrIpv4="10.0.0.0/8"),
            False,
        ),
        (
            rule("icmp", 8, -1, cidrIpv4="10.0.0.0/8"),
            rule("icmp", 8, 0, cidrIpv4="10.0.0.0/8"),
            True,
        ),
        (
            rule("icmp", -1, -1, cidrIpv4="10.0.0.0/8"),
            rule("icmp", 8, -1, cidrIpv4="10.0.0.0/8"),
            True,
        ),
    ],
)
def test_what_widens_an_edit(new, old, wider):
    assert widens(new, old) is wider


# ---- The guardrail never reacts to its own changes ------------------------------------------


def test_its_own_restore_is_left_alone(ec2, group_id, as_the_function):
    rule_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    event = modify(
        ec2,
        group_id,
        {rule_id: {**WIDENED, "CidrIpv4": "192.0.2.0/24"}},
        identity=as_the_function,
    )
    result = lambda_handler(eventbridge(event), CONTEXT)
    assert (result["decision"], result["reason"]) == (
        "kept",
        "made by this guardrail itself",
    )
    assert bastion_of(ec2, group_id)["SecurityGroupRuleId"] == rule_id


def test_a_session_merely_named_like_the_function_is_not_it(ec2, group_id, as_the_function):
    impostor = assumed_role("Attacker", "sg-guardrail")
    event = authorize(ec2, group_id, [WIDE_PERMISSION], identity=impostor)
    result = lambda_handler(eventbridge(event), CONTEXT)
    assert result["decision"] == "reverted"
    assert (False, "tcp", 22, 22, "0.0.0.0/0") not in rule_set(ec2, group_id)


@pytest.mark.parametrize("role", ["sg-guardrail-member", "Attacker"])
def test_a_member_role_session_in_the_functions_own_account_is_not_its_own(
    ec2, group_id, conditions, role
):
    """Anyone who may create roles in the central account could name one so."""
    conditions(MEMBER_ROLE_NAME="sg-guardrail-member")
    event = authorize(
        ec2, group_id, [WIDE_PERMISSION], identity=assumed_role(role, "sg-guardrail")
    )
    assert lambda_handler(eventbridge(event), CONTEXT)["decision"] == "reverted"


WIDE_PERMISSION = {
    "IpProtocol": "tcp",
    "FromPort": 22,
    "ToPort": 22,
    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
}


# A Config item names no rule IDs, and Config lags (minutes; a day with daily recording): the
# one rule of an item that no rule holds now may be one removed since (attackers' reviews).
RDP_CLOSED = (3389, "0.0.0.0/0")
BOBS_HOST_CLOSED = (22, "203.0.113.7/32")


@pytest.mark.parametrize(
    ("closed", "new"),
    [
        (RDP_CLOSED, {**WIDENED, "FromPort": 5432, "ToPort": 5432}),
        (RDP_CLOSED, {**WIDENED, "FromPort": 3389, "ToPort": 3389, "CidrIpv4": "0.0.0.0/1"}),
        (BOBS_HOST_CLOSED, WIDENED),
    ],
    ids=["widened-to-the-world", "within-the-stale-rule", "stale-rule-within-the-edit"],
)
def test_a_stale_config_item_is_never_put_back_nor_keeps_an_edit(
    ec2, group_id, conditions, closed, new
):
    """The group's last Config item is older than two changes: an admin closed a rule, and
    Bob added `tcp 5432 from 10.1.0.0/16` (allowed, kept). Bob edits his rule to `new`: the
    item's one rule no rule holds now is the closed one. Widened to the world, the rule was
    "restored" to RDP from the world, which no call had just opened; edited to RDP from half
    the internet, the edit "widened nothing" and was kept, untold; edited to SSH from the
    world, it was "restored" to SSH from Bob's host, reopening what the admin closed. Event
    history shows Bob's addition after the item's capture: the item is not taken for the
    group before the edit, and the edited rule is revoked and told."""
    conditions(
        RESTORE_FROM_CONFIG=True,
        ALLOWED_RULES=[{"isEgress": False, "cidrWithin": "10.0.0.0/8"}],
    )
    port, cidr = closed
    stale = config_item(
        group_id,
        [
            tcp_permission(443, "10.0.0.0/8", "internal HTTPS"),
            tcp_permission(22, "192.0.2.0/24", "bastion"),
            tcp_permission(port, cidr, "closed since by an admin"),
        ],
    )
    ours = {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432}
    added = [{**ours, "IpRanges": [{"CidrIp": "10.1.0.0/16"}]}]
    created = authorize(ec2, group_id, added, identity=BOB)
    assert lambda_handler(eventbridge(created), CONTEXT)["decision"] == "kept"
    (item,) = created["responseElements"]["securityGroupRuleSet"]["items"]
    event = modify(ec2, group_id, {item["securityGroupRuleId"]: new}, identity=BOB)
    EventHistory().serve(lambda_function.client("cloudtrail", "us-east-1"))
    with Stubber(lambda_function.client("config", "us-east-1")) as stub:
        for _ in range(2):  # read live, and again on event history's record of the edit
            stub.add_response("get_resource_config_history", {"configurationItems": [stale]})
        result = lambda_handler(eventbridge(event), CONTEXT)
    held = rule_set(ec2, group_id)
    assert (False, "tcp", port, port, cidr) not in held, result
    assert (False, "tcp", new["FromPort"], new["ToPort"], new["CidrIpv4"]) not in held
    assert "put its old value back by hand" in result["reason"]


@pytest.mark.parametrize("code", ["AccessDeniedException", "ThrottlingException"])
def test_a_widening_edit_is_undone_when_event_history_cannot_be_read(
    ec2, group_id, config, code
):
    """Event history is read to see that Config's item is current; denied (an SCP, a
    boundary) or throttled (two requests a second, shared with anyone who may read it), the
    widened rule was left open, an error for Lambda's retry that failed the same way (a
    fourth attacker's review). Not known current, the item is not used: the rule is
    revoked, and told."""
    rule_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    event = modify(ec2, group_id, {rule_id: WIDENED}, identity=BOB)
    config.add_response(
        "get_resource_config_history",
        {"configurationItems": [config_item(group_id, BEFORE_THE_EDIT)]},
    )
    with Stubber(lambda_function.client("cloudtrail", "us-east-1")) as trail:
        trail.add_client_error("lookup_events", code)
        result = lambda_handler(eventbridge(event), CONTEXT)
    assert (False, "tcp", 22, 22, "0.0.0.0/0") not in rule_set(ec2, group_id)
    assert "put its old value back by hand" in result["reason"]


@pytest.mark.parametrize("locked", [False, True], ids=["unlocked", "locked"])
def test_a_narrowing_edit_is_not_revoked_because_event_history_cannot_be_read(
    ec2, group_id, config, conditions, locked
):
    """A narrowing edit opens nothing: with history throttled after the edit's record was
    confirmed, the guard revoked it, an outage, and in a locked group a rule the guard takes
    out itself and never puts back (a seventh review). It is raised for Lambda's retry
    instead, and told; the rule stays as the edit left it."""
    if locked:
        conditions(LOCKED_GROUP_IDS=[group_id])
    rule_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    event = modify(
        ec2, group_id, {rule_id: {**WIDENED, "CidrIpv4": "192.0.2.0/25"}}, identity=BOB
    )
    for _ in range(2):
        config.add_response(
            "get_resource_config_history",
            {"configurationItems": [config_item(group_id, BEFORE_THE_EDIT)]},
        )
    with Stubber(lambda_function.client("cloudtrail", "us-east-1")) as trail:
        trail.add_response("lookup_events", lookup([event]))  # the edit, confirmed
        trail.add_client_error("lookup_events", "ThrottlingException")
        with pytest.raises(ClientError):
            lambda_handler(eventbridge(event), CONTEXT)
    held = {r["SecurityGroupRuleId"]: r.get("CidrIpv4") for r in rules_of(ec2, group_id)}
    assert held[rule_id] == "192.0.2.0/25"


ALL_OUT = {  # the egress rule every group is created with, as a Config item writes it
    "ipProtocol": "-1",
    "ipRanges": ["0.0.0.0/0"],
    "ipv4Ranges": [{"cidrIp": "0.0.0.0/0"}],
    "ipv6Ranges": [],
    "prefixListIds": [],
    "userIdGroupPairs": [],
}


def test_a_narrowed_rule_in_the_same_edit_does_not_shield_a_widened_one(ec2, group_id, config):
    """One call narrows the egress rule and widens the bastion to SSH from the world, and
    event history is throttled once the edit is confirmed: the narrowed rule made the whole
    event wait, SSH from the world left open as an error (a sixth review). Only an edit
    that widens nothing waits; this one is revoked, and told."""
    bastion = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    (out,) = [r for r in rules_of(ec2, group_id) if r["IsEgress"]]
    narrowed = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIpv4": "10.0.0.0/8"}
    edits = {out["SecurityGroupRuleId"]: narrowed, bastion: WIDENED}
    event = modify(ec2, group_id, edits, identity=BOB)
    for _ in range(2):
        config.add_response(
            "get_resource_config_history",
            {"configurationItems": [config_item(group_id, BEFORE_THE_EDIT, [ALL_OUT])]},
        )
    with Stubber(lambda_function.client("cloudtrail", "us-east-1")) as trail:
        trail.add_response("lookup_events", lookup([event]))  # the edit, confirmed
        trail.add_client_error("lookup_events", "ThrottlingException")
        lambda_handler(eventbridge(event), CONTEXT)
    assert (False, "tcp", 22, 22, "0.0.0.0/0") not in rule_set(ec2, group_id)


def test_a_description_only_edit_is_not_revoked_for_a_throttled_history(
    ec2, group_id, config, conditions
):
    """In a locked group Bob renames the bastion rule only: it opens nothing. With event
    history throttled, Config's value (the same: not "wider") was dropped and the rule
    revoked, where the guard never puts it back (a sixth review). It waits, told."""
    conditions(LOCKED_GROUP_IDS=[group_id])
    rule_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    same = {**WIDENED, "CidrIpv4": "192.0.2.0/24", "Description": "bastion (renamed)"}
    event = modify(ec2, group_id, {rule_id: same}, identity=BOB)
    config.add_response(
        "get_resource_config_history",
        {"configurationItems": [config_item(group_id, BEFORE_THE_EDIT)]},
    )
    with Stubber(lambda_function.client("cloudtrail", "us-east-1")) as trail:
        trail.add_client_error("lookup_events", "ThrottlingException")
        with pytest.raises(ClientError):
            lambda_handler(eventbridge(event), CONTEXT)
    held = {r["SecurityGroupRuleId"]: r.get("CidrIpv4") for r in rules_of(ec2, group_id)}
    assert held.get(rule_id) == "192.0.2.0/24"
