"""Reading the event: records in every shape become the exact rules the call added (no AWS)."""

from __future__ import annotations

import copy

import pytest
from cloudtrail import ACCOUNT, assumed_role, camel, eventbridge, record

from lambda_function import BadEvent, cidr_version, describe, read_change

GROUP = "sg-0123456789abcdef0"
OTHER = "sg-0fedcba9876543210"


def ingress(permissions, response=None, **request):
    params = {"groupId": GROUP, "ipPermissions": camel(permissions), **request}
    return record("AuthorizeSecurityGroupIngress", params, response or {"_return": True})


def rules_in(event):
    return [describe(rule) for rule in read_change(event)["rules"]]


SSH_ANYWHERE = {
    "IpProtocol": "tcp",
    "FromPort": 22,
    "ToPort": 22,
    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
}


@pytest.mark.parametrize(
    ("permissions", "expected"),
    [
        pytest.param([SSH_ANYWHERE], ["tcp 22 from 0.0.0.0/0"], id="ipv4"),
        pytest.param(
            [
                {
                    "IpProtocol": "tcp",
                    "FromPort": 3389,
                    "ToPort": 3389,
                    "Ipv6Ranges": [{"CidrIpv6": "::/0"}],
                }
            ],
            ["tcp 3389 from ::/0"],
            id="ipv6",
        ),
        pytest.param(
            [
                {
                    "IpProtocol": "tcp",
                    "FromPort": 443,
                    "ToPort": 443,
                    "PrefixListIds": [{"PrefixListId": "pl-0123abcd"}],
                }
            ],
            ["tcp 443 from pl-0123abcd"],
            id="prefix-list",
        ),
        pytest.param(
            [
                {
                    "IpProtocol": "-1",
                    "UserIdGroupPairs": [{"GroupId": OTHER, "UserId": ACCOUNT}],
                }
            ],
            [f"all traffic from {OTHER} (account {ACCOUNT})"],
            id="group-reference",
        ),
        pytest.param(
            [
                {
                    "IpProtocol": "-1",
                    "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "everyone"}],
                    "Ipv6Ranges": [{"CidrIpv6": "::/0", "Description": "everyone"}],
                }
            ],
            ["all traffic from 0.0.0.0/0", "all traffic from ::/0"],
            id="several-kinds-in-one-permission",
        ),
        pytest.param(
            [
                SSH_ANYWHERE,
                {
                    "IpProtocol": "udp",
                    "FromPort": 53,
                    "ToPort": 53,
                    "IpRanges": [{"CidrIp": "10.1.0.0/16"}],
                },
            ],
            ["tcp 22 from 0.0.0.0/0", "udp 53 from 10.1.0.0/16"],
            id="many-permissions",
        ),
        pytest.param(
            [
                {
                    "IpProtocol": "icmp",
                    "FromPort": 8,
                    "ToPort": -1,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                }
            ],
            ["icmp type 8 from 0.0.0.0/0"],
            id="icmp",
        ),
        pytest.param(
            [
                {
                    "IpProtocol": "icmpv6",
                    "FromPort": -1,
                    "ToPort": -1,
                    "Ipv6Ranges": [{"CidrIpv6": "::/0"}],
                }
            ],
            ["icmpv6 from ::/0"],
            id="icmpv6",
        ),
        pytest.param(
            [
                {
                    "IpProtocol": "6",
                    "FromPort": 80,
                    "ToPort": 81,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                }
            ],
            ["tcp 80-81 from 0.0.0.0/0"],
            id="protocol-number",
        ),
        pytest.param(
            [{"IpProtocol": "50", "IpRanges": [{"CidrIp": "203.0.113.0/24"}]}],
            ["protocol 50, all ports from 203.0.113.0/24"],
            id="esp-without-ports",
        ),
        pytest.param(
            [
                {
                    "IpProtocol": "-1",
                    "FromPort": 0,
                    "ToPort": 65535,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                }
            ],
            ["all traffic from 0.0.0.0/0"],
            id="old-console-all-with-ports",
        ),
    ],
)
def test_request_permissions_become_one_rule_per_source(permissions, expected):
    assert rules_in(ingress(permissions)) == expected


def test_legacy_flat_form_is_read():
    params = {
        "groupId": GROUP,
        "ipPermissions": {},
        "cidrIp": "0.0.0.0/0",
        "ipProtocol": "tcp",
        "fromPort": 22,
        "toPort": 22,
    }
    event = record("AuthorizeSecurityGroupIngress", params, {"_return": True})
    assert rules_in(event) == ["tcp 22 from 0.0.0.0/0"]


def test_legacy_source_group_name_grants_tcp_udp_and_icmp():
    params = {
        "groupName": "web",
        "sourceSecurityGroupName": "lb",
        "sourceSecurityGroupOwnerId": ACCOUNT,
    }
    change = read_change(record("AuthorizeSecurityGroupIngress", params, {"_return": True}))
    assert change["groupId"] is None
    assert change["groupName"] == "web"
    assert [describe(r) for r in change["rules"]] == [
        f"tcp 0-65535 from lb (account {ACCOUNT})",
        f"udp 0-65535 from lb (account {ACCOUNT})",
        f"icmp from lb (account {ACCOUNT})",
    ]


def test_response_rule_ids_are_preferred_over_the_request():
    response = {
        "_return": True,
        "securityGroupRuleSet": camel(
            [
                {
                    "GroupOwnerId": ACCOUNT,
                    "GroupId": GROUP,
                    "SecurityGroupRuleId": "sgr-0123456789abcdef0",
                    "IsEgress": False,
                    "IpProtocol": "tcp",
                    "FromPort": 22,
                    "ToPort": 22,
                    "CidrIpv4": "0.0.0.0/0",
                }
            ]
        ),
    }
    change = read_change(ingress([SSH_ANYWHERE], response))
    assert [r["securityGroupRuleId"] for r in change["rules"]] == ["sgr-0123456789abcdef0"]


def test_group_id_comes_from_the_rule_set_when_the_request_names_the_group():
    response = {
        "_return": True,
        "securityGroupRuleSet": {
            "items": [
                {
                    "groupId": GROUP,
                    "securityGroupRuleId": "sgr-0123456789abcdef0",
                    "isEgress": False,
                    "ipProtocol": "tcp",
                    "fromPort": 22,
                    "toPort": 22,
                    "cidrIpv4": "0.0.0.0/0",
                }
            ]
        },
    }
    params = {"groupName": "default", "ipPermissions": camel([SSH_ANYWHERE])}
    change = read_change(record("AuthorizeSecurityGroupIngress", params, response))
    assert change["groupId"] == GROUP


def test_egress_is_marked_as_egress():
    params = {"groupId": GROUP, "ipPermissions": camel([{**SSH_ANYWHERE}])}
    change = read_change(record("AuthorizeSecurityGroupEgress", params, {"_return": True}))
    assert change["isEgress"] is True
    assert rules_in(record("AuthorizeSecurityGroupEgress", params, None)) == [
        "tcp 22 to 0.0.0.0/0"
    ]


def test_modification_reads_every_edited_rule_with_its_new_value():
    request = {
        "ModifySecurityGroupRulesRequest": {
            "GroupId": GROUP,
            "SecurityGroupRule": [
                {
                    "SecurityGroupRuleId": "sgr-0123456789abcdef0",
                    "SecurityGroupRule": {
                        "IpProtocol": "tcp",
                        "FromPort": "22",
                        "ToPort": "22",
                        "CidrIpv4": "0.0.0.0/0",
                    },
                    "tag": 1,
                },
                {
                    "SecurityGroupRuleId": "sgr-0123456789abcdef1",
                    "SecurityGroupRule": {
                        "IpProtocol": "-1",
                        "ReferencedGroupId": OTHER,
                    },
                    "tag": 2,
                },
            ],
        }
    }
    change = read_change(record("ModifySecurityGroupRules", request, None))
    assert change["groupId"] == GROUP
    assert change["isEgress"] is None
    assert [r["securityGroupRuleId"] for r in change["rules"]] == [
        "sgr-0123456789abcdef0",
        "sgr-0123456789abcdef1",
    ]
    assert rules_in(record("ModifySecurityGroupRules", request, None)) == [
        "tcp 22 from/to 0.0.0.0/0",
        f"all traffic from/to {OTHER}",
    ]


def test_eventbridge_envelope_and_bare_record_read_the_same():
    bare = ingress([SSH_ANYWHERE])
    assert read_change(eventbridge(bare)) == read_change(bare)


def test_actor_names_cover_session_role_and_service():
    identity = assumed_role("Deployer", "ci-42")
    identity["invokedBy"] = "cloudformation.amazonaws.com"
    event = ingress([SSH_ANYWHERE])
    event["userIdentity"] = identity
    change = read_change(event)
    assert change["actor"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/Deployer/ci-42"
    assert change["principals"] == [
        f"arn:aws:sts::{ACCOUNT}:assumed-role/Deployer/ci-42",
        f"arn:aws:iam::{ACCOUNT}:role/Deployer",
        "cloudformation.amazonaws.com",
    ]


def test_lower_cased_identity_keys_are_read():
    event = ingress([SSH_ANYWHERE])
    event["userIdentity"] = {
        "type": "AssumedRole",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/Admin/bob",
        "sessioncontext": {"sessionissuer": {"arn": f"arn:aws:iam::{ACCOUNT}:role/Admin"}},
    }
    assert read_change(event)["principals"][1] == f"arn:aws:iam::{ACCOUNT}:role/Admin"


def _set(path, value):
    def edit(event):
        *parents, last = path
        target = event
        for key in parents:
            target = target[key]
        if value is _DROP:
            del target[last]
        else:
            target[last] = value

    return edit


_DROP = object()
PERMISSION = ("requestParameters", "ipPermissions", "items", 0)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_set(("errorCode",), "Client.InvalidPermission.Duplicate"), "the call failed"),
        (_set(("eventName",), "DescribeSecurityGroups"), "not a security-group change"),
        (_set(("eventName",), "DeleteSecurityGroup"), "not a security-group change"),
        (_set(("eventSource",), "s3.amazonaws.com"), "not a security-group change"),
    ],
)
def test_records_that_changed_nothing_are_rejected_with_a_reason(edit, reason):
    event = copy.deepcopy(ingress([SSH_ANYWHERE]))
    edit(event)
    with pytest.raises(BadEvent, match=reason):
        read_change(event)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_set(("awsRegion",), "us-northeast-1r"), "awsRegion"),
        (_set(("awsRegion",), None), "awsRegion"),
        (_set(("recipientAccountId",), "12345"), "account"),
        (_set(("requestParameters",), None), "requestParameters"),
        (_set(("requestParameters", "groupId"), "sg-nothex!"), "groupId"),
        (_set(("requestParameters", "groupId"), _DROP), "groupId"),
        (_set(("requestParameters", "ipPermissions"), []), "ipPermissions"),
        (_set(("requestParameters", "ipPermissions"), {}), "no rule"),
        (_set((*PERMISSION, "ipProtocol"), "gre"), "ipProtocol"),
        (_set((*PERMISSION, "ipProtocol"), None), "ipProtocol"),
        (_set((*PERMISSION, "ipProtocol"), "256"), "ipProtocol"),
        (_set((*PERMISSION, "fromPort"), 70000), "fromPort"),
        (_set((*PERMISSION, "fromPort"), "22; drop"), "fromPort"),
        (_set((*PERMISSION, "fromPort"), True), "fromPort"),
        (_set((*PERMISSION, "fromPort"), 30), "fromPort is above toPort"),
        (_set((*PERMISSION, "toPort"), _DROP), "without both ports"),
        (_set((*PERMISSION, "ipRanges", "items", 0, "cidrIp"), "0.0.0.0/33"), "CIDR"),
        (
            _set((*PERMISSION, "ipRanges", "items", 0, "cidrIp"), "::/0"),
            "wrong IP version",
        ),
        (_set((*PERMISSION, "ipRanges", "items", 0, "cidrIp"), None), "missing"),
        (_set((*PERMISSION, "ipRanges"), {}), "without any source"),
        (_set((*PERMISSION, "ipRanges", "items"), "0.0.0.0/0"), "item list"),
        (_set((*PERMISSION, "ipRanges", "items", 0), "0.0.0.0/0"), "not an object"),
    ],
)
def test_an_odd_successful_record_is_unreadable_never_ignored(edit, reason):
    event = copy.deepcopy(ingress([SSH_ANYWHERE]))
    edit(event)
    change = read_change(event)
    assert change["rules"] == []
    assert any(reason in problem for problem in change["unreadable"]), change


def test_an_odd_permission_leaves_the_rest_of_the_call_readable():
    odd = {**SSH_ANYWHERE, "IpProtocol": "gre", "FromPort": 3389, "ToPort": 3389}
    change = read_change(ingress([odd, SSH_ANYWHERE]))
    assert [describe(rule) for rule in change["rules"]] == ["tcp 22 from 0.0.0.0/0"]
    assert change["unreadable"] == ["ipPermissions item 1: unknown ipProtocol 'gre'"]


def test_an_odd_source_leaves_the_other_sources_of_its_permission_readable():
    both = {**SSH_ANYWHERE, "IpRanges": [{"CidrIp": "0.0.0.0/0"}, {"CidrIp": "x/0"}]}
    change = read_change(ingress([both]))
    assert [describe(rule) for rule in change["rules"]] == ["tcp 22 from 0.0.0.0/0"]
    assert change["unreadable"] == [
        "ipPermissions item 1, ipRanges: cidrIpv4 is not a CIDR: 'x/0'"
    ]


def response_item(rule_id="sgr-0123456789abcdef0", **values):
    return {
        "groupOwnerId": ACCOUNT,
        "groupId": GROUP,
        "securityGroupRuleId": rule_id,
        "isEgress": False,
        "ipProtocol": "tcp",
        "fromPort": 22,
        "toPort": 22,
        "cidrIpv4": "0.0.0.0/0",
        **values,
    }


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"ipProtocol": "a-new-protocol"}, "ipProtocol"),
        ({"cidrIpv4": None, "someFutureSource": "x"}, "0 sources"),
        ({"fromPort": None}, "without both ports"),
        ({"isEgress": True}, "isEgress"),
        ({"prefixListId": "pl-0123abcd"}, "2 sources"),
    ],
)
def test_a_response_rule_with_odd_values_is_still_undone_by_its_id(values, reason):
    response = {"securityGroupRuleSet": {"items": [response_item(**values)]}}
    change = read_change(ingress([SSH_ANYWHERE], response))
    assert change["unreadable"] == []
    (rule,) = change["rules"]
    assert rule["securityGroupRuleId"] == "sgr-0123456789abcdef0"
    assert rule["isEgress"] is False
    assert reason in rule["unreadable"]
    assert describe(rule).startswith("rule sgr-0123456789abcdef0 (")


@pytest.mark.parametrize("rule_id", [None, "sgr-XYZ", "sgr-0123456789abcdef0;x", 7])
def test_a_malformed_rule_id_is_never_used_and_is_reported(rule_id):
    items = [response_item(rule_id), response_item("sgr-0123456789abcdef1")]
    change = read_change(ingress([SSH_ANYWHERE], {"securityGroupRuleSet": {"items": items}}))
    assert [r["securityGroupRuleId"] for r in change["rules"]] == ["sgr-0123456789abcdef1"]
    assert "securityGroupRuleId is missing or malformed" in change["unreadable"][0]


def test_the_response_names_the_group_when_the_requests_group_id_is_odd():
    event = ingress([SSH_ANYWHERE], {"securityGroupRuleSet": {"items": [response_item()]}})
    event["requestParameters"]["groupId"] = "sg-?"
    change = read_change(event)
    assert change["groupId"] == GROUP
    assert [r["securityGroupRuleId"] for r in change["rules"]] == ["sgr-0123456789abcdef0"]


def test_a_rule_of_another_group_in_the_response_is_reported_not_revoked():
    items = [response_item(), response_item("sgr-0123456789abcdef1", groupId=OTHER)]
    change = read_change(ingress([SSH_ANYWHERE], {"securityGroupRuleSet": {"items": items}}))
    assert [r["securityGroupRuleId"] for r in change["rules"]] == ["sgr-0123456789abcdef0"]
    assert change["unreadable"] == ["tcp 22 from 0.0.0.0/0 of another group"]


def test_an_envelope_from_another_account_than_the_record_is_unreadable():
    event = eventbridge(ingress([SSH_ANYWHERE]))
    event["account"] = "210987654321"
    change = read_change(event)
    assert change["rules"] == []
    assert "envelope's account '210987654321'" in change["unreadable"][0]
    assert change["unreadable"][1] == "tcp 22 from 0.0.0.0/0"


@pytest.mark.parametrize(
    "event",
    [
        None,
        "text",
        42,
        [],
        {},
        {"detail": None},
        {"detail": "x"},
        {"source": "aws.s3", "detail": {}},
    ],
)
def test_things_that_are_not_records_are_rejected(event):
    with pytest.raises(BadEvent):
        read_change(event)


@pytest.mark.parametrize(
    ("value", "version"),
    [
        ("0.0.0.0/0", 4),
        ("255.255.255.255/32", 4),
        ("10.0.0.1/8", 4),  # host bits set: AWS takes it, so do we
        ("::/0", 6),
        ("2001:db8::/32", 6),
        ("::ffff:1.2.3.4/128", 6),
        ("256.0.0.0/8", None),
        ("1.2.3.4/33", None),
        ("01.2.3.4/8", None),
        ("1.2.3/8", None),
        ("1.2.3.4", None),
        ("2001:db8::", None),
        ("2001:db8::/129", None),
        ("1.2.3.4/0 ", None),
        ("\u0661.2.3.4/8", None),  # an Arabic-Indic digit is not an octet
        ("", None),
    ],
)
def test_cidrs_are_checked_like_aws_does(value, version):
    assert cidr_version(value) == version


def icmp(protocol, icmp_type, code, cidr="0.0.0.0/0"):
    ranges = ("Ipv6Ranges", "CidrIpv6") if ":" in cidr else ("IpRanges", "CidrIp")
    return {
        "IpProtocol": protocol,
        "FromPort": icmp_type,
        "ToPort": code,
        ranges[0]: [{ranges[1]: cidr}],
    }


@pytest.mark.parametrize(
    ("permission", "expected"),
    [
        (icmp("icmp", 8, 0), "icmp type 8 code 0 from 0.0.0.0/0"),
        (icmp("icmp", 11, 0), "icmp type 11 code 0 from 0.0.0.0/0"),
        (icmp("1", 3, 4), "icmp type 3 code 4 from 0.0.0.0/0"),
        (icmp("ICMP", 255, 255), "icmp type 255 code 255 from 0.0.0.0/0"),
        (icmp("icmpv6", 128, 0, "::/0"), "icmpv6 type 128 code 0 from ::/0"),
        (icmp("58", 1, -1, "::/0"), "icmpv6 type 1 from ::/0"),
        (icmp("icmp", -1, -1), "icmp from 0.0.0.0/0"),
    ],
)
def test_icmp_type_and_code_are_read_in_any_order(permission, expected):
    change = read_change(ingress([permission]))
    assert change["unreadable"] == []
    assert [describe(rule) for rule in change["rules"]] == [expected]


def test_an_icmp_rule_never_shields_the_rest_of_its_call():
    """On the old code, echo request (type 8 > code 0) made the whole call 'malformed'."""
    change = read_change(ingress([icmp("icmp", 8, 0), SSH_ANYWHERE]))
    assert [describe(rule) for rule in change["rules"]] == [
        "icmp type 8 code 0 from 0.0.0.0/0",
        "tcp 22 from 0.0.0.0/0",
    ]


def test_an_icmp_edit_is_read():
    request = {
        "ModifySecurityGroupRulesRequest": {
            "GroupId": GROUP,
            "SecurityGroupRule": {
                "SecurityGroupRuleId": "sgr-0123456789abcdef0",
                "SecurityGroupRule": {
                    "IpProtocol": "icmp",
                    "FromPort": 8,
                    "ToPort": 0,
                    "CidrIpv4": "0.0.0.0/0",
                },
                "tag": 1,
            },
        }
    }
    change = read_change(record("ModifySecurityGroupRules", request, None))
    assert [describe(rule) for rule in change["rules"]] == [
        "icmp type 8 code 0 from/to 0.0.0.0/0"
    ]
