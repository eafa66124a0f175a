"""Deciding: which conditions keep a change, and which rules the allow-list lets stay (no AWS)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cloudtrail import ACCOUNT, assumed_role, camel, record
from conftest import ROOT

import lambda_function
from lambda_function import (
    group_exemption,
    principal_exemption,
    read_change,
    split_rules,
    unlocked_exemption,
)

GROUP = "sg-0123456789abcdef0"


def exemption(change):
    """What keeps a change before any lookup: who made it, the switches, the group's ID."""
    return principal_exemption(change) or unlocked_exemption(change)


def change_of(permissions, *, egress=False, identity=None):
    name = "AuthorizeSecurityGroupEgress" if egress else "AuthorizeSecurityGroupIngress"
    params = {"groupId": GROUP, "ipPermissions": camel(permissions)}
    return read_change(record(name, params, {"_return": True}, identity=identity))


def tcp(port, cidr):
    key, ranges = ("CidrIpv6", "Ipv6Ranges") if ":" in cidr else ("CidrIp", "IpRanges")
    return {
        "IpProtocol": "tcp",
        "FromPort": port,
        "ToPort": port,
        ranges: [{key: cidr}],
    }


SSH = tcp(22, "0.0.0.0/0")
SESSION = assumed_role("NetworkAdmin", "bob")
CFN = {**assumed_role("Stack", "cfn"), "invokedBy": "cloudformation.amazonaws.com"}
ROOT_USER = {
    "type": "Root",
    "arn": f"arn:aws:iam::{ACCOUNT}:root",
    "accountId": ACCOUNT,
}


def test_by_default_every_change_is_reverted():
    assert exemption(change_of([SSH])) is None
    assert split_rules(change_of([SSH])) == (change_of([SSH])["rules"], [])


@pytest.mark.parametrize(
    ("patterns", "identity", "kept"),
    [
        ([f"arn:aws:iam::{ACCOUNT}:user/alice"], None, True),
        (["arn:aws:iam::*:user/bob"], None, False),
        (["arn:aws:iam::*:role/NetworkAdmin"], SESSION, True),
        (["arn:aws:sts::*:assumed-role/NetworkAdmin/b*"], SESSION, True),
        (["arn:aws:sts::*:assumed-role/NetworkAdmin/carol"], SESSION, False),
        (["cloudformation.amazonaws.com"], CFN, True),
        (["cloudformation.amazonaws.com"], SESSION, False),
        (["arn:aws:iam::*:root"], ROOT_USER, True),
        (["arn:aws:iam::*:root"], None, False),
    ],
)
def test_exempt_principals_match_user_session_role_root_and_service(
    conditions, patterns, identity, kept
):
    conditions(EXEMPT_PRINCIPALS=patterns)
    reason = exemption(change_of([SSH], identity=identity))
    assert (reason is not None) == kept
    if kept:
        assert reason.startswith("exempt principal")


@pytest.mark.parametrize(
    ("setting", "kept"),
    [
        ({"ONLY_GROUP_IDS": [GROUP]}, False),
        ({"ONLY_GROUP_IDS": ["sg-0aaaaaaaaaaaaaaaa"]}, True),
        ({"NEVER_GROUP_IDS": [GROUP]}, True),
        ({"NEVER_GROUP_IDS": ["sg-0aaaaaaaaaaaaaaaa"]}, False),
    ],
)
def test_group_id_conditions(conditions, setting, kept):
    conditions(**setting)
    assert (exemption(change_of([SSH])) is not None) == kept


def test_egress_switch_keeps_egress_but_not_ingress(conditions):
    conditions(REVERT_EGRESS=False)
    assert "REVERT_EGRESS" in exemption(change_of([SSH], egress=True))
    assert exemption(change_of([SSH])) is None


def test_modified_rules_switch(conditions):
    request = {
        "ModifySecurityGroupRulesRequest": {
            "GroupId": GROUP,
            "SecurityGroupRule": {
                "SecurityGroupRuleId": "sgr-0123456789abcdef0",
                "SecurityGroupRule": {"IpProtocol": "-1", "CidrIpv4": "0.0.0.0/0"},
            },
        }
    }
    change = read_change(record("ModifySecurityGroupRules", request, None))
    assert exemption(change) is None
    conditions(REVERT_MODIFIED_RULES=False)
    assert "REVERT_MODIFIED_RULES" in exemption(change)


@pytest.mark.parametrize(
    ("setting", "facts", "kept"),
    [
        (
            {"ONLY_VPC_IDS": ["vpc-0123456789abcdef0"]},
            {"vpcId": "vpc-0123456789abcdef0"},
            False,
        ),
        (
            {"ONLY_VPC_IDS": ["vpc-0123456789abcdef0"]},
            {"vpcId": "vpc-0aaaaaaaaaaaaaaaa"},
            True,
        ),
        (
            {"NEVER_VPC_IDS": ["vpc-0123456789abcdef0"]},
            {"vpcId": "vpc-0123456789abcdef0"},
            True,
        ),
        (
            {"NEVER_VPC_IDS": ["vpc-0123456789abcdef0"]},
            {"vpcId": "vpc-0aaaaaaaaaaaaaaaa"},
            False,
        ),
        ({"ONLY_TAGGED": {"guardrail": "on"}}, {"tags": {"guardrail": "on"}}, False),
        ({"ONLY_TAGGED": {"guardrail": "on"}}, {"tags": {"guardrail": "off"}}, True),
        ({"ONLY_TAGGED": {"guardrail": None}}, {"tags": {"guardrail": "off"}}, False),
        ({"ONLY_TAGGED": {"guardrail": None}}, {"tags": {}}, True),
        ({"NEVER_TAGGED": {"guardrail": "off"}}, {"tags": {"guardrail": "off"}}, True),
        ({"NEVER_TAGGED": {"guardrail": "off"}}, {"tags": {"guardrail": "on"}}, False),
        ({"NEVER_TAGGED": {"team": None}}, {"tags": {"team": "db"}}, True),
    ],
)
def test_vpc_and_tag_conditions(conditions, setting, facts, kept):
    conditions(**setting)
    change = {**change_of([SSH]), "vpcId": None, "tags": {}, **facts}
    assert (group_exemption(change) is not None) == kept


ALLOW_HTTPS = {"ipProtocol": "tcp", "fromPort": 443, "toPort": 443, "cidr": "0.0.0.0/0"}
ALLOW_INTERNAL = {"isEgress": False, "cidrWithin": "10.0.0.0/8"}


@pytest.mark.parametrize(
    ("permission", "allowed"),
    [
        (tcp(443, "0.0.0.0/0"), True),
        (tcp(443, "::/0"), False),
        (tcp(444, "0.0.0.0/0"), False),
        ({**tcp(443, "0.0.0.0/0"), "FromPort": 80}, False),  # 80-443 is wider than 443
        ({**tcp(443, "0.0.0.0/0"), "IpProtocol": "udp"}, False),
        ({**tcp(443, "0.0.0.0/0"), "IpProtocol": "6"}, True),
        (tcp(22, "10.20.0.0/16"), True),
        (tcp(22, "10.0.0.0/7"), False),  # wider than 10/8
        (tcp(22, "11.0.0.0/8"), False),
        ({"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.1.2.3/32"}]}, True),
        ({"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, False),
        (
            {
                "IpProtocol": "tcp",
                "FromPort": 443,
                "ToPort": 443,
                "PrefixListIds": [{"PrefixListId": "pl-0123abcd"}],
            },
            False,
        ),
    ],
)
def test_allow_list_keeps_only_matching_rules(conditions, permission, allowed):
    conditions(ALLOWED_RULES=[ALLOW_HTTPS, ALLOW_INTERNAL])
    revoke, keep = split_rules(change_of([permission]))
    assert (len(keep), len(revoke)) == ((1, 0) if allowed else (0, 1))


def icmp(protocol, icmp_type, code):
    return {
        "IpProtocol": protocol,
        "FromPort": icmp_type,
        "ToPort": code,
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
    }


ALLOW_ECHO = {"ipProtocol": "icmp", "fromPort": 8, "toPort": -1}  # type 8, any code
ALLOW_UNREACHABLE = {"ipProtocol": "icmp", "fromPort": 3, "toPort": 4}


@pytest.mark.parametrize(
    ("permission", "allowed"),
    [
        (icmp("icmp", 8, 0), True),
        (icmp("1", 8, 5), True),
        (icmp("icmp", 8, -1), True),  # every code of type 8: the entry allows any code
        (icmp("icmp", 13, 0), False),  # on the old code, type 13 was "inside" 8..-1
        (icmp("icmp", 200, 0), False),
        (icmp("icmp", -1, -1), False),  # every type: only an entry's -1 allows it
        (icmp("icmp", 3, 4), True),
        (icmp("icmp", 3, 3), False),
        (icmp("icmp", 3, -1), False),  # every code of type 3, wider than code 4
        (icmp("icmpv6", 8, 0), False),
        (tcp(8, "0.0.0.0/0"), False),
    ],
)
def test_icmp_entries_match_type_and_code_exactly(conditions, permission, allowed):
    conditions(ALLOWED_RULES=[ALLOW_ECHO, ALLOW_UNREACHABLE])
    revoke, keep = split_rules(change_of([permission]))
    assert (len(keep), len(revoke)) == ((1, 0) if allowed else (0, 1))


def test_an_icmp_entry_of_any_type_and_code(conditions):
    conditions(ALLOWED_RULES=[{"ipProtocol": "icmpv6", "fromPort": -1, "toPort": -1}])
    assert split_rules(change_of([icmp("58", -1, -1)]))[0] == []
    assert split_rules(change_of([icmp("icmpv6", 128, 0)]))[0] == []
    assert split_rules(change_of([icmp("icmp", 8, 0)]))[1] == []


def test_a_rule_known_only_by_its_id_is_never_allowed(conditions):
    conditions(ALLOWED_RULES=[{"cidrWithin": "0.0.0.0/0"}, {"isEgress": False}])
    odd = {"securityGroupRuleId": "sgr-0123456789abcdef0", "isEgress": False}
    change = {**change_of([SSH]), "rules": [{**odd, "unreadable": "0 sources"}]}
    assert split_rules(change) == (change["rules"], [])


@pytest.mark.parametrize("spelled", ["tcp", "TCP", "Tcp", "6"])
def test_an_entrys_protocol_matches_however_it_is_spelled(conditions, spelled):
    conditions(ALLOWED_RULES=[{**ALLOW_HTTPS, "ipProtocol": spelled}])
    assert split_rules(change_of([tcp(443, "0.0.0.0/0")]))[0] == []


def test_allow_list_splits_a_change_of_several_rules(conditions):
    conditions(ALLOWED_RULES=[ALLOW_HTTPS])
    revoke, keep = split_rules(change_of([tcp(443, "0.0.0.0/0"), SSH]))
    assert [r["fromPort"] for r in revoke] == [22]
    assert [r["fromPort"] for r in keep] == [443]


def test_allow_list_direction_key(conditions):
    conditions(ALLOWED_RULES=[{"isEgress": True, "cidr": "0.0.0.0/0"}])
    assert split_rules(change_of([SSH], egress=True))[0] == []
    assert split_rules(change_of([SSH]))[1] == []


@pytest.mark.parametrize(
    "entry",
    [{"port": 22}, {"fromPort": "22"}, {"cidr": "not-a-cidr"}, {"isEgress": "yes"}],
)
def test_a_typo_in_the_allow_list_fails_loudly(conditions, entry):
    conditions(ALLOWED_RULES=[entry])
    with pytest.raises((ValueError, TypeError)):
        lambda_function.check_conditions()


def test_deployment_settings_from_the_environment_add_to_the_block():
    env = {
        **os.environ,
        "EXEMPT_PRINCIPALS": " arn:aws:iam::*:role/Admin ,cloudformation.amazonaws.com,",
        "REVERT_EGRESS": "false",
        "MEMBER_ROLE_NAME": "sg-guardrail-member",
    }
    # The last two: the environment adds to whatever the user's block holds.
    code = "import lambda_function as f; print(f.SETTINGS.EXEMPT_PRINCIPALS[-2:], f.SETTINGS.REVERT_EGRESS, f.SETTINGS.MEMBER_ROLE_NAME)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    *warnings, settings = done.stdout.splitlines()
    assert any("'arn:aws:iam::*:role/Admin' matches any" in w for w in warnings)
    assert settings == (
        "['arn:aws:iam::*:role/Admin', 'cloudformation.amazonaws.com'] False sg-guardrail-member"
    )


EKS_ON_ITS_OWN = {
    "type": "AWSService",
    "invokedBy": "eks.amazonaws.com",
}
LOAD_BALANCING_LINKED_ROLE = {
    **assumed_role("AWSServiceRoleForElasticLoadBalancing", "ElasticLoadBalancing"),
    "sessionContext": {
        "sessionIssuer": {
            "type": "Role",
            "arn": f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/"
            "elasticloadbalancing.amazonaws.com/AWSServiceRoleForElasticLoadBalancing",
        }
    },
}
# A customer role whose path holds the text (IAM paths allow any printable ASCII): not a
# service-linked role, whose path is /aws-service-role/ and which no customer may create.
ROLE_PATH_POSING_AS_A_SERVICE = {
    **assumed_role("Deployer", "mallory"),
    "sessionContext": {
        "sessionIssuer": {
            "type": "Role",
            "arn": f"arn:aws:iam::{ACCOUNT}:role/team/:role/aws-service-role/"
            "eks.amazonaws.com/Deployer",
        }
    },
}
# A person deploying a stack without a service role: CloudFormation acts with their identity.
PERSON_THROUGH_CLOUDFORMATION = {**SESSION, "invokedBy": "cloudformation.amazonaws.com"}


@pytest.mark.parametrize(
    ("identity", "guarded", "kept"),
    [
        (EKS_ON_ITS_OWN, False, True),
        (LOAD_BALANCING_LINKED_ROLE, False, True),
        (PERSON_THROUGH_CLOUDFORMATION, False, False),
        (ROLE_PATH_POSING_AS_A_SERVICE, False, False),
        (EKS_ON_ITS_OWN, True, False),
        (LOAD_BALANCING_LINKED_ROLE, True, False),
    ],
)
def test_aws_services_acting_on_their_own_are_left_alone_unless_guarded(
    conditions, identity, guarded, kept
):
    conditions(GUARD_AWS_SERVICES=guarded)
    reason = exemption(change_of([SSH], identity=identity))
    assert (reason is not None) is kept
    if kept:
        assert reason.startswith("made by an AWS service on its own")


# For any protocol but tcp, udp and ICMP, AWS opens every port whatever range the call gives
# (EC2 API reference, IpPermission.IpProtocol): such a rule is all ports, never "port 443".
@pytest.mark.parametrize("protocol", ["132", "50", "47"])
def test_a_protocol_without_ports_is_all_ports_whatever_its_record_says(conditions, protocol):
    conditions(ALLOWED_RULES=[{"fromPort": 443, "toPort": 443, "cidr": "0.0.0.0/0"}])
    sctp = {
        "IpProtocol": protocol,
        "FromPort": 443,
        "ToPort": 443,
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
    }
    change = change_of([sctp])
    revoking, allowed = split_rules(change)
    assert (len(revoking), allowed) == (1, [])
    assert lambda_function.describe(revoking[0]) == (
        f"protocol {protocol}, all ports from 0.0.0.0/0"
    )
    # tcp 443 from anywhere is what the entry allows, and stays allowed.
    assert split_rules(change_of([tcp(443, "0.0.0.0/0")]))[1] != []
