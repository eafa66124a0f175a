"""Security-group guardrail: undo unapproved security-group changes seconds after they happen.

An EventBridge rule (event_pattern.json) sends this function the CloudTrail record of every
successful AuthorizeSecurityGroupIngress, AuthorizeSecurityGroupEgress and
ModifySecurityGroupRules call. The function reads which rules the call added, checks them
against the CONDITIONS block below, and revokes exactly those rules: by the rule IDs in the
response when CloudTrail has them, otherwise by the permissions rebuilt from the request.
It never touches a rule the call did not add, and a failed call (errorCode) is left alone.

Deploy: zip this one file, create a Lambda function (Python 3.12+, handler
lambda_function.lambda_handler) with a role holding iam_policy.json, and point an EventBridge
rule with event_pattern.json at it. The README has the commands.

Environment: DRY_RUN=true decides and logs, but changes nothing; the other settings are
listed below the CONDITIONS block. Every event produces one JSON log line; the handler
returns the same summary. Run locally: python lambda_function.py --help.
"""

from __future__ import annotations

import datetime
import fnmatch
import functools
import ipaddress
import json
import math
import os
import re
import sys
import time
from typing import Any

# boto3 (some 200 ms to import) waits for the first AWS call: the many events that need none
# (failed calls, unrelated or exempt ones) never load it. Its exceptions are cheap.
from botocore.exceptions import BotoCoreError, ClientError

# =============================================================================================
# CONDITIONS: edit this block. Every list empty means "revert every change" (the default).
# =============================================================================================

# Changes made by these principals are kept. Shell-style patterns (* and ?), matched against
# the caller's ARN, its role's ARN (sessionIssuer.arn) and the AWS service that acted for it
# (invokedBy).
EXEMPT_PRINCIPALS: list[str] = [
    # "arn:aws:iam::111122223333:user/alice",          # one IAM user
    # "arn:aws:iam::*:role/NetworkAdmin",              # every session of a role
    # "arn:aws:sts::*:assumed-role/Deployer/ci-*",     # some sessions of a role
    # "arn:aws:iam::*:root",                           # the root user
    # "cloudformation.amazonaws.com",                  # changes made by CloudFormation stacks
]

# Groups: guard only these (empty: every group), and never touch those.
ONLY_GROUP_IDS: list[str] = []  # e.g. ["sg-0123456789abcdef0"]
NEVER_GROUP_IDS: list[str] = []  # e.g. ["sg-0fedcba9876543210"]

# VPCs: guard only groups in these (empty: every VPC), and never groups in those.
ONLY_VPC_IDS: list[str] = []  # e.g. ["vpc-0123456789abcdef0"]
NEVER_VPC_IDS: list[str] = []  # e.g. ["vpc-0fedcba9876543210"]

# Tags: guard only groups carrying one of these (empty: every group), never those carrying
# one of those. A key with a value, or with None for "any value".
ONLY_TAGGED: dict[str, str | None] = {}  # e.g. {"guardrail": "on"}
NEVER_TAGGED: dict[str, str | None] = {}  # e.g. {"guardrail": "off", "team": None}

# Rules that may stay. A rule is kept when it matches every key of one entry. Keys:
# isEgress, ipProtocol ("tcp", "udp", "icmp", "icmpv6", "-1" or a number), fromPort/toPort
# (the rule's ports must lie inside), cidr (exactly this range), cidrWithin (a range inside
# this one), prefixListId, referencedGroupId.
ALLOWED_RULES: list[dict[str, Any]] = [
    # {"ipProtocol": "tcp", "fromPort": 443, "toPort": 443, "cidr": "0.0.0.0/0"},  # HTTPS, IPv4
    # {"ipProtocol": "tcp", "fromPort": 443, "toPort": 443, "cidr": "::/0"},       # HTTPS, IPv6
    # {"isEgress": False, "cidrWithin": "10.0.0.0/8"},  # any inbound traffic from inside 10/8
    # {"isEgress": True, "prefixListId": "pl-0123456789abcdef0"},  # outbound to a prefix list
]

REVERT_EGRESS = True  # False: leave AuthorizeSecurityGroupEgress changes alone
# ModifySecurityGroupRules edits a rule in place and the event lacks the old value, so the
# safe undo is to revoke the edited rule. False: leave such edits alone.
REVERT_MODIFIED_RULES = True

# Many accounts (template.yaml): an event from another account is handled by assuming this
# role in that account. Empty: such events are ignored.
MEMBER_ROLE_NAME = ""  # e.g. "sg-guardrail-member"


def should_revert(change: dict[str, Any]) -> bool:
    """The last word on a change the conditions above would revert. False keeps it.

    `change` holds eventId, eventName, eventTime, actor, principals, account, region, groupId,
    groupName, isEgress, rules (the rules about to be revoked) and, when the VPC or tag
    conditions are set, vpcId and tags.
    """
    # e.g. return not change["actor"].endswith("/break-glass")
    return True


# Settings a deployment gives in the environment (template.yaml's parameters) add to the above:
# EXEMPT_PRINCIPALS (comma-separated patterns), REVERT_EGRESS=false, MEMBER_ROLE_NAME; and
# DRY_RUN=true, NOTIFY_TOPIC_ARN, LOG_RAW_EVENT=true, read at each invocation.
EXEMPT_PRINCIPALS = EXEMPT_PRINCIPALS + [
    pattern.strip()
    for pattern in os.environ.get("EXEMPT_PRINCIPALS", "").split(",")
    if pattern.strip()
]
REVERT_EGRESS = (
    REVERT_EGRESS and os.environ.get("REVERT_EGRESS", "").strip().lower() != "false"
)
MEMBER_ROLE_NAME = os.environ.get("MEMBER_ROLE_NAME", "").strip() or MEMBER_ROLE_NAME


# =============================================================================================
# Reading the event: CloudTrail record -> change (pure; raises BadEvent on anything odd)
# =============================================================================================

HANDLED_EVENTS = (
    "AuthorizeSecurityGroupIngress",
    "AuthorizeSecurityGroupEgress",
    "ModifySecurityGroupRules",
)
PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}
PROTOCOLS = {
    name: name for name in ("tcp", "udp", "icmp", "icmpv6", "-1")
} | PROTOCOL_NAMES
PROTOCOL_NUMBER = re.compile(r"[0-9]{1,3}")
PORT = re.compile(r"-?[0-9]{1,5}")
SOURCE_KEYS = ("cidrIpv4", "cidrIpv6", "prefixListId", "referencedGroupInfo")

GROUP_ID = re.compile(r"sg-[0-9a-f]{8}(?:[0-9a-f]{9})?")
RULE_ID = re.compile(r"sgr-[0-9a-f]{8}(?:[0-9a-f]{9})?")
PREFIX_LIST_ID = re.compile(r"pl-[0-9a-f]{8}(?:[0-9a-f]{9})?")
ACCOUNT_ID = re.compile(r"\d{12}")
REGION = re.compile(r"[a-z]{2,4}(?:-[a-z]+)+-\d{1,2}")
USER_ID = re.compile(r"\d{12}|amazon-elb")
OCTET = r"(0|[1-9][0-9]{0,2})"
IPV4_CIDR = re.compile(rf"{OCTET}\.{OCTET}\.{OCTET}\.{OCTET}/(0|[1-9][0-9]?)")


class BadEvent(ValueError):
    """The event is unrelated, failed, or malformed: log it, change nothing, don't retry."""


def read_change(event: Any) -> dict[str, Any]:
    """Turn an EventBridge event or a bare CloudTrail record into the change it made."""
    record = unwrap(event)
    name = record.get("eventName")
    if record.get("eventSource") != "ec2.amazonaws.com" or name not in HANDLED_EVENTS:
        raise BadEvent(f"not a security-group change: {str(name)[:80]}")
    if record.get("errorCode"):
        raise BadEvent(
            f"the call failed ({str(record['errorCode'])[:80]}); nothing changed"
        )
    params = as_dict(record.get("requestParameters"), "requestParameters")
    response = as_dict(record.get("responseElements") or {}, "responseElements")
    change: dict[str, Any] = {
        "eventId": text(record.get("eventID"), "eventID", 128),
        "eventName": name,
        "eventTime": record.get("eventTime")
        if isinstance(record.get("eventTime"), str)
        else None,
        "region": checked(record.get("awsRegion"), REGION, "awsRegion"),
        "account": checked(
            record.get("recipientAccountId") or event.get("account"),
            ACCOUNT_ID,
            "account",
        ),
        **read_actor(record.get("userIdentity")),
    }
    if name == "ModifySecurityGroupRules":
        change.update(read_modification(params))
    else:
        change.update(read_authorization(params, response, name.endswith("Egress")))
    return change


def unwrap(event: Any) -> dict[str, Any]:
    """The CloudTrail record inside an EventBridge event, or the event itself if it is one."""
    if not isinstance(event, dict):
        raise BadEvent(f"event is a {type(event).__name__}, not a JSON object")
    if "detail" not in event:
        return event
    if event.get("source", "aws.ec2") != "aws.ec2":
        raise BadEvent(f"not an EC2 event: source {str(event.get('source'))[:80]}")
    return as_dict(event["detail"], "detail")


def read_actor(identity: Any) -> dict[str, Any]:
    """Who made the change, and every name an exemption pattern may match."""
    identity = identity if isinstance(identity, dict) else {}
    issuer = field(field(field(identity, "sessionContext"), "sessionIssuer"), "arn")
    names = [field(identity, "arn"), issuer, field(identity, "invokedBy")]
    principals = [n for n in names if isinstance(n, str) and n]
    return {
        "actor": principals[0] if principals else "unknown",
        "principals": principals,
    }


def field(d: Any, key: str) -> Any:
    """d[key], tolerating the lower-cased keys some log pipelines write."""
    if not isinstance(d, dict):
        return None
    if key in d:
        return d[key]
    return next(
        (v for k, v in d.items() if isinstance(k, str) and k.lower() == key.lower()),
        None,
    )


def read_authorization(params: dict, response: dict, is_egress: bool) -> dict[str, Any]:
    """Group and rules of an Authorize* call: response rule IDs first, else the request."""
    group_id = params.get("groupId")
    group_name = params.get("groupName")
    rule_set = response.get("securityGroupRuleSet")
    if rule_set not in (None, {}):
        rules = [
            read_response_rule(item, is_egress) for item in items(rule_set, "ruleSet")
        ]
        group_id = group_id or (rules[0]["groupId"] if rules else None)
        if any(rule["groupId"] != group_id for rule in rules):
            raise BadEvent("response rules belong to another group than the request")
    else:
        rules = read_request_rules(params, is_egress)
    if not rules:
        raise BadEvent("the call added no rules")
    if group_id is not None:
        group_id = checked(group_id, GROUP_ID, "groupId")
        group_name = group_name if isinstance(group_name, str) else None
    elif is_egress or group_name is None:
        raise BadEvent("no groupId in the request")
    else:
        group_name = text(group_name, "groupName", 255)
    return {
        "groupId": group_id,
        "groupName": group_name,
        "isEgress": is_egress,
        "rules": rules,
    }


def read_response_rule(item: Any, is_egress: bool) -> dict[str, Any]:
    """One securityGroupRuleSet item: a rule the call created, with its ID."""
    item = as_dict(item, "securityGroupRuleSet item")
    if item.get("isEgress", is_egress) is not is_egress:
        raise BadEvent("response rule direction differs from the call")
    rule = {
        "securityGroupRuleId": checked(
            item.get("securityGroupRuleId"), RULE_ID, "ruleId"
        ),
        "groupId": checked(item.get("groupId"), GROUP_ID, "groupId"),
        "isEgress": is_egress,
        **read_protocol_and_ports(item),
    }
    sources = [key for key in SOURCE_KEYS if item.get(key) is not None]
    if len(sources) != 1:
        raise BadEvent(f"response rule has {len(sources)} sources, not one")
    kind = sources[0]
    if kind == "referencedGroupInfo":
        info = as_dict(item[kind], kind)
        return {**rule, **group_source(info.get("groupId"), info.get("userId"), None)}
    return {**rule, **read_source(kind, item[kind])}


def read_request_rules(params: dict, is_egress: bool) -> list[dict[str, Any]]:
    """Rules rebuilt from ipPermissions and from the legacy flat form."""
    rules = [
        {"isEgress": is_egress, **source, **read_protocol_and_ports(perm)}
        for perm in dict_items(params, "ipPermissions")
        for source in read_permission_sources(perm)
    ]
    if params.get("cidrIp") is not None:
        rules.append(
            {
                "isEgress": is_egress,
                **read_source("cidrIpv4", params["cidrIp"]),
                **read_protocol_and_ports(params),
            }
        )
    if params.get("sourceSecurityGroupName") is not None:
        # Without a protocol the API grants the source group full TCP, UDP and ICMP access.
        source = group_source(
            None,
            params.get("sourceSecurityGroupOwnerId"),
            params["sourceSecurityGroupName"],
        )
        if params.get("ipProtocol") is not None:
            shapes = [read_protocol_and_ports(params)]
        else:
            shapes = [
                {"ipProtocol": "tcp", "fromPort": 0, "toPort": 65535},
                {"ipProtocol": "udp", "fromPort": 0, "toPort": 65535},
                {"ipProtocol": "icmp", "fromPort": -1, "toPort": -1},
            ]
        rules.extend({"isEgress": is_egress, **source, **shape} for shape in shapes)
    return rules


def read_permission_sources(perm: dict) -> list[dict[str, Any]]:
    """Each source of one permission: several kinds may stand in one permission."""
    sources = [
        read_source("cidrIpv4", i.get("cidrIp")) for i in dict_items(perm, "ipRanges")
    ]
    sources += [
        read_source("cidrIpv6", i.get("cidrIpv6"))
        for i in dict_items(perm, "ipv6Ranges")
    ]
    sources += [
        read_source("prefixListId", i.get("prefixListId"))
        for i in dict_items(perm, "prefixListIds")
    ]
    sources += [
        group_source(i.get("groupId"), i.get("userId"), i.get("groupName"))
        for i in dict_items(perm, "groups")
    ]
    if not sources:
        raise BadEvent("a permission without any source")
    return sources


def read_modification(params: dict) -> dict[str, Any]:
    """ModifySecurityGroupRules: the edited rules with their new values; direction unknown."""
    request = as_dict(
        params.get("ModifySecurityGroupRulesRequest"), "ModifySecurityGroupRulesRequest"
    )
    entries = request.get("SecurityGroupRule")
    entries = entries if isinstance(entries, list) else [entries]
    rules = []
    for entry in entries:
        entry = as_dict(entry, "SecurityGroupRule")
        new = as_dict(entry.get("SecurityGroupRule"), "SecurityGroupRule value")
        camel = {k[:1].lower() + k[1:]: v for k, v in new.items() if isinstance(k, str)}
        sources = [
            key
            for key in (*SOURCE_KEYS[:3], "referencedGroupId")
            if camel.get(key) is not None
        ]
        if len(sources) != 1:
            raise BadEvent(f"modified rule has {len(sources)} sources, not one")
        kind = sources[0]
        if kind == "referencedGroupId":
            source = group_source(camel[kind], None, None)
        else:
            source = read_source(kind, camel[kind])
        rules.append(
            {
                "securityGroupRuleId": checked(
                    entry.get("SecurityGroupRuleId"), RULE_ID, "ruleId"
                ),
                "isEgress": None,
                **source,
                **read_protocol_and_ports(camel),
            }
        )
    if not rules:
        raise BadEvent("the call modified no rules")
    group_id = checked(request.get("GroupId"), GROUP_ID, "GroupId")
    return {"groupId": group_id, "groupName": None, "isEgress": None, "rules": rules}


def read_protocol_and_ports(d: dict) -> dict[str, Any]:
    """ipProtocol normalized to a name where AWS has one; ports only where given."""
    given = d.get("ipProtocol")
    text_form = str(given) if type(given) is int else given
    if not isinstance(text_form, str):
        raise BadEvent("missing ipProtocol")
    protocol = PROTOCOLS.get(text_form.lower())
    if (
        protocol is None
        and PROTOCOL_NUMBER.fullmatch(text_form)
        and int(text_form) <= 255
    ):
        protocol = text_form
    if protocol is None:
        raise BadEvent(f"unknown ipProtocol {text_form[:20]!r}")
    shape: dict[str, Any] = {"ipProtocol": protocol}
    low, high = d.get("fromPort"), d.get("toPort")
    if low is not None:
        shape["fromPort"] = low = port(low, "fromPort")
    if high is not None:
        shape["toPort"] = high = port(high, "toPort")
    if low is not None and high is not None and high != -1 and low > high:
        raise BadEvent("fromPort is above toPort")
    if protocol in ("tcp", "udp") and (low is None or high is None):
        raise BadEvent(f"{protocol} rule without both ports")
    return shape


def port(value: Any, name: str) -> int:
    """A port (or ICMP type/code): -1..65535, as an int or a string of digits."""
    if type(value) is str and PORT.fullmatch(value):
        value = int(value)
    if type(value) is not int or not -1 <= value <= 65535:
        raise BadEvent(f"{name} is not a port: {str(value)[:20]!r}")
    return value


def read_source(kind: str, value: Any) -> dict[str, str]:
    """A CIDR or prefix-list source, validated; the value is kept as the caller wrote it."""
    if kind == "prefixListId":
        return {kind: checked(value, PREFIX_LIST_ID, kind)}
    if not isinstance(value, str):
        raise BadEvent(f"{kind} is missing")
    version = cidr_version(value)
    if version is None:
        raise BadEvent(f"{kind} is not a CIDR: {value[:50]!r}")
    if version != (4 if kind == "cidrIpv4" else 6):
        raise BadEvent(f"{kind} has the wrong IP version: {value[:50]!r}")
    return {kind: value}


# Cached: the same few CIDRs (0.0.0.0/0, ::/0) come again and again.
@functools.lru_cache(maxsize=1024)
def cidr_version(value: str) -> int | None:
    """4 or 6 for a CIDR, None for anything else. IPv4 by a regex: ipaddress is 30x slower."""
    found = IPV4_CIDR.fullmatch(value)
    if found:
        octets_ok = all(int(octet) <= 255 for octet in found.groups()[:4])
        return 4 if octets_ok and int(found[5]) <= 32 else None
    # AWS wants a prefix length; ipaddress would take a bare address.
    if "/" not in value:
        return None
    try:
        return ipaddress.ip_network(value, strict=False).version
    except ValueError:
        return None


def group_source(group_id: Any, user_id: Any, group_name: Any) -> dict[str, Any]:
    """A referenced security group, by ID or (default VPC) by name, with its owner if given."""
    info: dict[str, str] = {}
    if group_id is not None:
        info["groupId"] = checked(group_id, GROUP_ID, "referenced groupId")
    elif group_name is not None:
        info["groupName"] = text(group_name, "referenced groupName", 255)
    else:
        raise BadEvent("a referenced group without groupId or groupName")
    if user_id is not None:
        info["userId"] = checked(user_id, USER_ID, "userId")
    return {"referencedGroupInfo": info}


def items(collection: Any, name: str) -> list:
    """CloudTrail's {"items": [...]} collections; {} and absent mean empty."""
    if collection is None or collection == {}:
        return []
    if isinstance(collection, dict) and isinstance(collection.get("items"), list):
        return collection["items"]
    raise BadEvent(f"{name} is not a CloudTrail item list")


def dict_items(d: dict, key: str) -> list[dict]:
    return [as_dict(item, f"{key} item") for item in items(d.get(key), key)]


def as_dict(value: Any, name: str) -> dict:
    if not isinstance(value, dict):
        raise BadEvent(f"{name} is not an object")
    return value


def checked(value: Any, pattern: re.Pattern, name: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BadEvent(f"{name} is missing or malformed: {str(value)[:80]!r}")
    return value


def text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise BadEvent(f"{name} is missing or malformed")
    return value


# =============================================================================================
# Deciding: change -> plan (pure)
# =============================================================================================


def exemption(change: dict[str, Any]) -> str | None:
    """Why the change is kept, from the event alone; None when no condition keeps it."""
    for principal in change["principals"]:
        if any(
            fnmatch.fnmatchcase(principal, pattern) for pattern in EXEMPT_PRINCIPALS
        ):
            return f"exempt principal {principal}"
    if change["isEgress"] and not REVERT_EGRESS:
        return "egress changes are not reverted (REVERT_EGRESS)"
    if change["eventName"] == "ModifySecurityGroupRules" and not REVERT_MODIFIED_RULES:
        return "modified rules are not reverted (REVERT_MODIFIED_RULES)"
    return group_id_exemption(change["groupId"])


def group_id_exemption(group_id: str | None) -> str | None:
    if group_id is None:  # only a name so far: checked again once the ID is known
        return None
    if ONLY_GROUP_IDS and group_id not in ONLY_GROUP_IDS:
        return f"{group_id} is not in ONLY_GROUP_IDS"
    if group_id in NEVER_GROUP_IDS:
        return f"{group_id} is in NEVER_GROUP_IDS"
    return None


def needs_group_facts(change: dict[str, Any]) -> bool:
    """VPC and tag conditions, and a group known only by name, need one DescribeSecurityGroups."""
    return bool(
        change["groupId"] is None
        or ONLY_VPC_IDS
        or NEVER_VPC_IDS
        or ONLY_TAGGED
        or NEVER_TAGGED
    )


def group_exemption(change: dict[str, Any]) -> str | None:
    """Why the change is kept, from the group's ID, VPC and tags."""
    vpc, tags = change.get("vpcId"), change.get("tags") or {}
    if ONLY_VPC_IDS and vpc not in ONLY_VPC_IDS:
        return f"{vpc} is not in ONLY_VPC_IDS"
    if vpc in NEVER_VPC_IDS:
        return f"{vpc} is in NEVER_VPC_IDS"
    if ONLY_TAGGED and not carries_any(tags, ONLY_TAGGED):
        return "the group lacks the ONLY_TAGGED tags"
    if carries_any(tags, NEVER_TAGGED):
        return "the group carries a NEVER_TAGGED tag"
    return group_id_exemption(change["groupId"])


def carries_any(tags: dict[str, str], wanted: dict[str, str | None]) -> bool:
    return any(
        key in tags and value in (None, tags[key]) for key, value in wanted.items()
    )


ALLOWED_RULE_KEYS = {
    "isEgress": bool,
    "ipProtocol": str,
    "fromPort": int,
    "toPort": int,
    "cidr": str,
    "cidrWithin": str,
    "prefixListId": str,
    "referencedGroupId": str,
}


def check_conditions() -> None:
    """Fail at import, loudly, on a typo in ALLOWED_RULES rather than keep rules by mistake."""
    for entry in ALLOWED_RULES:
        for key, value in entry.items():
            if key not in ALLOWED_RULE_KEYS:
                raise ValueError(f"ALLOWED_RULES: unknown key {key!r}")
            if not isinstance(value, ALLOWED_RULE_KEYS[key]):
                raise TypeError(
                    f"ALLOWED_RULES: {key} must be a {ALLOWED_RULE_KEYS[key].__name__}"
                )
            if key in ("cidr", "cidrWithin"):
                ipaddress.ip_network(value, strict=False)


def is_allowed(rule: dict[str, Any]) -> bool:
    return any(matches(rule, entry) for entry in ALLOWED_RULES)


def matches(rule: dict[str, Any], entry: dict[str, Any]) -> bool:
    """Does the rule fit one ALLOWED_RULES entry? Every key the entry names must agree."""
    cidr = rule.get("cidrIpv4") or rule.get("cidrIpv6")
    network = ipaddress.ip_network(cidr, strict=False) if cidr else None
    low, high = port_range(rule)
    checks = {
        "isEgress": lambda want: rule["isEgress"] is want,
        "ipProtocol": lambda want: (
            rule["ipProtocol"] == PROTOCOL_NAMES.get(str(want), str(want))
        ),
        "fromPort": lambda want: low >= port_range({"fromPort": want})[0],
        "toPort": lambda want: high <= port_range({"toPort": want})[1],
        "cidr": lambda want: network == ipaddress.ip_network(want, strict=False),
        "cidrWithin": lambda want: (
            network is not None
            and network.version == ipaddress.ip_network(want, strict=False).version
            and network.subnet_of(ipaddress.ip_network(want, strict=False))
        ),
        "prefixListId": lambda want: rule.get("prefixListId") == want,
        "referencedGroupId": lambda want: (
            rule.get("referencedGroupInfo", {}).get("groupId") == want
        ),
    }
    return all(key in checks and checks[key](want) for key, want in entry.items())


def port_range(rule: dict[str, Any]) -> tuple[int, int]:
    """The ports a rule opens; all of them for protocol -1 or where a port is -1 or absent."""
    if rule.get("ipProtocol") == "-1":
        return (0, 65535)
    low, high = rule.get("fromPort", -1), rule.get("toPort", -1)
    return (0 if low == -1 else low, 65535 if high == -1 else high)


def split_rules(change: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """(to revoke, allowed to stay). An edit may touch egress rules, hence the switch here."""
    allowed = [
        rule
        for rule in change["rules"]
        if is_allowed(rule) or (rule["isEgress"] and not REVERT_EGRESS)
    ]
    return [rule for rule in change["rules"] if rule not in allowed], allowed


def describe(rule: dict[str, Any]) -> str:
    """A rule in human terms: 'tcp 22 from 0.0.0.0/0'."""
    protocol = rule["ipProtocol"]
    low, high = rule.get("fromPort"), rule.get("toPort")
    if protocol == "-1":
        what = "all traffic"
    elif protocol in ("icmp", "icmpv6"):
        what = protocol if low in (None, -1) else f"{protocol} type {low}"
        what += "" if high in (None, -1) else f" code {high}"
    elif low is None:
        what = f"protocol {protocol}"
    else:
        what = f"{protocol} {low}" if low == high else f"{protocol} {low}-{high}"
    group = rule.get("referencedGroupInfo") or {}
    source = rule.get("cidrIpv4") or rule.get("cidrIpv6") or rule.get("prefixListId")
    source = source or group.get("groupId") or group.get("groupName")
    if group.get("userId"):
        source += f" (account {group['userId']})"
    direction = {True: "to", False: "from", None: "from/to"}[rule["isEgress"]]
    return f"{what} {direction} {source}"


# =============================================================================================
# Acting: the only code that calls AWS
# =============================================================================================

GONE = {"InvalidGroup.NotFound", "InvalidGroupId.NotFound"}
RULE_GONE = {"InvalidPermission.NotFound", "InvalidSecurityGroupRuleId.NotFound"}
# AWS saying the event's own values are wrong: retrying cannot help.
REJECTED = {
    "InvalidGroupId.Malformed",
    "InvalidSecurityGroupRuleId.Malformed",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "InvalidParameter",
    "MissingParameter",
    "InvalidPermission.Malformed",
    "InvalidGroup.Reserved",
    "VPCIdNotSpecified",
}
DENIED = {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"}
MAX_ATTEMPTS = 5  # per call, the first included; then the error goes up to Lambda
CLIENT_SETTINGS = {
    "retries": {"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
    "connect_timeout": 5,
    "read_timeout": 10,
}
# Time kept back to log and hand the event back to Lambda for a retry.
DEADLINE_MARGIN_S = 3.0
# Renew a member account's credentials this long before they expire.
CREDENTIALS_MARGIN_S = 300
_clients: dict[tuple[str, str, str | None], Any] = {}
# Assumed-role credentials, by member account.
_credentials: dict[str, dict[str, Any]] = {}
_partition = "aws"  # from the function's own ARN: aws, aws-cn, aws-us-gov
_retry_until = math.inf  # set by each invocation from the Lambda's remaining time


class DeadlineNear(BotoCoreError):
    fmt = "the Lambda's time is nearly spent; stopped retrying so the event is retried later"


def client(service: str, region: str, account: str | None = None) -> Any:
    """One client per service, region and account, kept for warm invocations.

    account=None is the function's own account; another account is reached through its
    MEMBER_ROLE_NAME role, with credentials renewed shortly before they expire.
    """
    if account is not None and not fresh(_credentials.get(account)):
        _credentials[account] = assume_member_role(account, region)
        for key in [key for key in _clients if key[2] == account]:
            del _clients[key]
    if (service, region, account) not in _clients:
        keys = {}
        if account is not None:
            found = _credentials[account]
            keys = {
                "aws_access_key_id": found["AccessKeyId"],
                "aws_secret_access_key": found["SecretAccessKey"],
                "aws_session_token": found["SessionToken"],
            }
        made = new_client(service, region, **keys)
        made.meta.events.register_first(
            f"needs-retry.{service}", stop_retrying_near_deadline
        )
        _clients[service, region, account] = made
    return _clients[service, region, account]


def new_client(service: str, region: str | None, **keys: str) -> Any:
    """A boto3 client with bounded standard-mode retries; boto3 is loaded here, on first use."""
    import boto3
    from botocore.config import Config

    config = Config(**CLIENT_SETTINGS)
    return boto3.client(service, region_name=region, config=config, **keys)


def fresh(credentials: dict[str, Any] | None) -> bool:
    if credentials is None:
        return False
    left = credentials["Expiration"] - datetime.datetime.now(datetime.UTC)
    return left.total_seconds() > CREDENTIALS_MARGIN_S


def assume_member_role(account: str, region: str) -> dict[str, Any]:
    role = f"arn:{_partition}:iam::{account}:role/{MEMBER_ROLE_NAME}"
    # IAM: sts:AssumeRole
    answer = client("sts", region).assume_role(
        RoleArn=role, RoleSessionName="sg-guardrail"
    )
    return answer["Credentials"]


def stop_retrying_near_deadline(
    attempts: int = 1, response: Any = None, caught_exception: Any = None, **_: Any
) -> None:
    """Before botocore retries a failed call: give up instead if the backoff could outrun Lambda."""
    failed = caught_exception is not None or (
        response is not None and response[0].status_code >= 400
    )
    if not failed or attempts >= MAX_ATTEMPTS:  # no retry would follow anyway
        return
    longest_backoff = min(2 ** (attempts - 1), 20)  # botocore's standard mode
    if time.monotonic() + longest_backoff + DEADLINE_MARGIN_S > _retry_until:
        raise DeadlineNear


def error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def group_facts(ec2: Any, change: dict[str, Any]) -> dict[str, Any] | None:
    """groupId, vpcId and tags of the change's group; None when the group is gone."""
    if change["groupId"]:
        query = {"GroupIds": [change["groupId"]]}
    else:  # only a name: calls by name reach the default VPC, where names are unique
        query = {"GroupNames": [change["groupName"]]}
    try:
        # IAM: ec2:DescribeSecurityGroups
        groups = ec2.describe_security_groups(**query)["SecurityGroups"]
    except ClientError as error:
        if error_code(error) in GONE:
            return None
        raise
    if not groups:
        return None
    group = groups[0]
    tags = {tag["Key"]: tag["Value"] for tag in group.get("Tags", [])}
    return {"groupId": group["GroupId"], "vpcId": group.get("VpcId"), "tags": tags}


def current_rules(ec2: Any, group_id: str) -> list[dict[str, Any]]:
    """Every rule the group holds now, in the response's vocabulary."""
    rules = []
    # IAM: ec2:DescribeSecurityGroupRules
    pages = ec2.get_paginator("describe_security_group_rules").paginate(
        Filters=[{"Name": "group-id", "Values": [group_id]}]
    )
    for page in pages:
        for found in page["SecurityGroupRules"]:
            rule = {
                "securityGroupRuleId": found["SecurityGroupRuleId"],
                "isEgress": found["IsEgress"],
                "ipProtocol": PROTOCOL_NAMES.get(
                    found["IpProtocol"], found["IpProtocol"]
                ),
                "fromPort": found.get("FromPort"),
                "toPort": found.get("ToPort"),
            }
            for key in SOURCE_KEYS[:3]:
                if found.get(key[0].upper() + key[1:]):
                    rule[key] = found[key[0].upper() + key[1:]]
            if found.get("ReferencedGroupInfo"):
                info = found["ReferencedGroupInfo"]
                rule["referencedGroupInfo"] = {
                    "groupId": info.get("GroupId"),
                    "userId": info.get("UserId"),
                }
            rules.append({k: v for k, v in rule.items() if v is not None})
    return rules


def same_rule(planned: dict[str, Any], existing: dict[str, Any]) -> bool:
    """Is `existing` the rule `planned` names: by ID when it has one, else by its values."""
    if "securityGroupRuleId" in planned:
        return planned["securityGroupRuleId"] == existing["securityGroupRuleId"]
    if (
        planned["isEgress"] != existing["isEgress"]
        or planned["ipProtocol"] != existing["ipProtocol"]
    ):
        return False
    if port_range(planned) != port_range(existing):
        return False
    for key in ("cidrIpv4", "cidrIpv6"):
        if (key in planned) != (key in existing):
            return False
        if key in planned and ipaddress.ip_network(
            planned[key], strict=False
        ) != ipaddress.ip_network(existing[key], strict=False):
            return False
    if planned.get("prefixListId") != existing.get("prefixListId"):
        return False
    mine, theirs = (
        planned.get("referencedGroupInfo"),
        existing.get("referencedGroupInfo"),
    )
    return (mine is None) == (theirs is None) and (
        mine is None or mine.get("groupId") == theirs.get("groupId")
    )


def ip_permission(rule: dict[str, Any]) -> dict[str, Any]:
    """A rule as one boto3 IpPermissions entry."""
    permission: dict[str, Any] = {"IpProtocol": rule["ipProtocol"]}
    if "fromPort" in rule:
        permission["FromPort"] = rule["fromPort"]
    if "toPort" in rule:
        permission["ToPort"] = rule["toPort"]
    if "cidrIpv4" in rule:
        permission["IpRanges"] = [{"CidrIp": rule["cidrIpv4"]}]
    if "cidrIpv6" in rule:
        permission["Ipv6Ranges"] = [{"CidrIpv6": rule["cidrIpv6"]}]
    if "prefixListId" in rule:
        permission["PrefixListIds"] = [{"PrefixListId": rule["prefixListId"]}]
    if "referencedGroupInfo" in rule:
        info = rule["referencedGroupInfo"]
        pair = (
            {"GroupId": info["groupId"]}
            if "groupId" in info
            else {"GroupName": info["groupName"]}
        )
        if "userId" in info:
            pair["UserId"] = info["userId"]
        permission["UserIdGroupPairs"] = [pair]
    return permission


def revoke(
    ec2: Any, change: dict[str, Any], rules: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Revoke the rules; returns those that were already gone. One call in the common case."""
    gone = []
    for is_egress in (False, True):
        batch = [rule for rule in rules if rule["isEgress"] is is_egress]
        if batch:
            gone += revoke_one_direction(ec2, change, batch, is_egress)
    return gone


def revoke_one_direction(
    ec2: Any, change: dict, rules: list[dict], is_egress: bool
) -> list[dict]:
    # IAM: ec2:RevokeSecurityGroupEgress / ec2:RevokeSecurityGroupIngress
    call = (
        ec2.revoke_security_group_egress
        if is_egress
        else ec2.revoke_security_group_ingress
    )
    try:
        call(GroupId=change["groupId"], **revoke_arguments(rules))
        return []
    except ClientError as error:
        if error_code(error) in GONE:
            return rules
        if error_code(error) not in RULE_GONE:
            raise
    # Someone removed some of the rules already: the call fails whole, so revoke the rest.
    existing = current_rules(ec2, change["groupId"])
    left = [e for e in existing if any(same_rule(rule, e) for rule in rules)]
    if left:
        call(
            GroupId=change["groupId"],
            SecurityGroupRuleIds=[e["securityGroupRuleId"] for e in left],
        )
    return [rule for rule in rules if not any(same_rule(rule, e) for e in left)]


def revoke_arguments(rules: list[dict[str, Any]]) -> dict[str, Any]:
    """By rule IDs when every rule has one (exact), else by permissions from the request."""
    if all("securityGroupRuleId" in rule for rule in rules):
        return {"SecurityGroupRuleIds": [rule["securityGroupRuleId"] for rule in rules]}
    return {"IpPermissions": [ip_permission(rule) for rule in rules]}


def learn_directions(ec2: Any, change: dict[str, Any]) -> None:
    """ModifySecurityGroupRules does not say ingress or egress: read the rules as they are now."""
    existing = {
        e["securityGroupRuleId"]: e for e in current_rules(ec2, change["groupId"])
    }
    change["alreadyGone"] = [
        r for r in change["rules"] if r["securityGroupRuleId"] not in existing
    ]
    change["rules"] = [
        existing[r["securityGroupRuleId"]]
        for r in change["rules"]
        if r["securityGroupRuleId"] in existing
    ]


# =============================================================================================
# The handler
# =============================================================================================


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    global _retry_until
    remaining_ms = getattr(context, "get_remaining_time_in_millis", lambda: math.inf)()
    _retry_until = time.monotonic() + remaining_ms / 1000
    dry_run = os.environ.get("DRY_RUN", "").strip().lower() in ("1", "true", "yes")
    summary = first_summary(event)
    if os.environ.get("LOG_RAW_EVENT", "").strip().lower() == "true":  # debugging only
        print(
            json.dumps({"eventId": summary["eventId"], "rawEvent": event}, default=str)
        )
    try:
        change = read_change(event)
        summary = summarize(change)
        account = member_account(change, context)
        result = outcome(summary, *handle(change, dry_run, account))
        notify(result, change)
        return log(result)
    except BadEvent as bad:
        return log(outcome(summary, "ignored", str(bad)))
    except ClientError as error:
        code = error_code(error)
        if code in REJECTED:
            return log(
                outcome(summary, "ignored", f"AWS rejected the event's values: {error}")
            )
        if code in DENIED:
            service = "sts" if error.operation_name == "AssumeRole" else "ec2"
            error_reason = (
                f"{code}: the role needs {service}:{error.operation_name} ({error})"
            )
        else:
            error_reason = f"{code}: {error}"
        log(outcome(summary, "error", error_reason))
        raise  # Lambda retries, then hands the event to the on-failure destination
    except BotoCoreError as error:  # no connection, no time left: also worth a retry
        log(outcome(summary, "error", f"{type(error).__name__}: {error}"))
        raise


def handle(
    change: dict[str, Any], dry_run: bool, account: str | None
) -> tuple[str, str, list, list, list]:
    """decision, reason, rules revoked (or to revoke), rules kept, rules already gone."""
    reason = exemption(change)
    if reason:
        return "kept", reason, [], change["rules"], []
    ec2 = client("ec2", change["region"], account)
    if needs_group_facts(change):
        facts = group_facts(ec2, change)
        if facts is None:
            return "reverted", "the group no longer exists", [], [], change["rules"]
        change.update(facts)
        reason = group_exemption(change)
        if reason:
            return "kept", reason, [], change["rules"], []
    if change["isEgress"] is None:
        learn_directions(ec2, change)
    revoking, allowed = split_rules(change)
    gone = change.get("alreadyGone", [])
    if not revoking:
        reason = "every rule is allowed" if allowed else "the rules no longer exist"
        return ("kept" if allowed else "reverted"), reason, [], allowed, gone
    try:
        approved = should_revert({**change, "rules": revoking})
    except Exception as error:  # noqa: BLE001 -- a bug in user code must not leave the hole open
        approved, reason = True, f"should_revert failed ({error!r}); reverting"
    if not approved:
        return "kept", "should_revert returned False", [], change["rules"], []
    if dry_run:
        return "dry-run", "DRY_RUN is set; nothing changed", revoking, allowed, gone
    gone += revoke(ec2, change, revoking)
    revoked = [rule for rule in revoking if rule not in gone]
    reason = reason or (
        "modified in place; the old value is not in the event, so the rule was revoked"
        if change["eventName"] == "ModifySecurityGroupRules"
        else "not approved by the conditions"
    )
    return "reverted", reason, revoked, allowed, gone


def summarize(change: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "eventId",
        "eventName",
        "eventTime",
        "actor",
        "account",
        "region",
        "groupId",
        "groupName",
    )
    return {key: change.get(key) for key in keys}


def record_of(event: Any) -> dict[str, Any]:
    """The record in an event, or {} when there is none; unlike unwrap(), it never raises."""
    record = event.get("detail", event) if isinstance(event, dict) else None
    return record if isinstance(record, dict) else {}


def first_summary(event: Any) -> dict[str, Any]:
    """What can be said of an event before reading it: so that every line names its event."""
    record = record_of(event)
    found = {"eventId": record.get("eventID"), "eventName": record.get("eventName")}
    return {
        key: value if isinstance(value, str) else None for key, value in found.items()
    }


def member_account(change: dict[str, Any], context: Any) -> str | None:
    """None to act with the function's own rights; else the member account to act in."""
    global _partition
    arn = getattr(context, "invoked_function_arn", None)
    parts = arn.split(":") if isinstance(arn, str) else []
    if (
        len(parts) < 5
        or not ACCOUNT_ID.fullmatch(parts[4])
        or parts[4] == change["account"]
    ):
        return None  # our own account, or run locally with whatever boto3 is set up for
    if not MEMBER_ROLE_NAME:
        raise BadEvent(
            f"event from account {change['account']}; no MEMBER_ROLE_NAME to act there"
        )
    _partition = parts[1]
    return change["account"]


def outcome(
    summary: dict, decision: str, reason: str, revoked=(), kept=(), gone=()
) -> dict:
    """The summary of one event: the log line and the handler's result."""
    result = {**summary, "decision": decision, "reason": reason}
    result["rules"] = [describe(rule) for rule in revoked]
    if kept:
        result["keptRules"] = [describe(rule) for rule in kept]
    if gone:
        result["alreadyGone"] = [describe(rule) for rule in gone]
    return result


def log(result: dict[str, Any]) -> dict[str, Any]:
    """One JSON line per event. It names the event, never holds credentials or the raw event."""
    print(json.dumps(result, default=str))
    return result


# =============================================================================================
# Notifying: one SNS message per reverted or dry-run change, when NOTIFY_TOPIC_ARN is set
# =============================================================================================

TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:([a-z0-9-]+):\d{12}:[\w-]{1,256}")


def notify(result: dict[str, Any], change: dict[str, Any]) -> None:
    """Publish the change; a failure is noted in the result and never undoes the revert."""
    topic = os.environ.get("NOTIFY_TOPIC_ARN", "").strip()
    if (
        not topic
        or result["decision"] not in ("reverted", "dry-run")
        or not result["rules"]
    ):
        return
    found = TOPIC_ARN.fullmatch(topic)
    if not found:
        result["notification"] = "failed: NOTIFY_TOPIC_ARN is not an SNS topic ARN"
        return
    try:
        # IAM: sns:Publish
        client("sns", found[1]).publish(TopicArn=topic, **message(result, change))
        result["notification"] = "sent"
    except (ClientError, BotoCoreError) as error:
        result["notification"] = f"failed: {error}"


def message(result: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """Subject, a body a person can act on, and attributes for subscription filters."""
    verb = "Reverted" if result["decision"] == "reverted" else "Would revert (dry run)"
    rules, kept = result["rules"], result.get("keptRules", [])
    more = f" (+{len(rules) - 1} more)" if len(rules) > 1 else ""
    who = result["actor"].rsplit("/", 1)[-1]
    subject = f"{verb}: {rules[0]}{more} on {result['groupId']} by {who}"
    subject = "".join(c if " " <= c <= "~" else "?" for c in subject)[:100]
    region, group = result["region"], result["groupId"]
    name = f" ({change['groupName']})" if change.get("groupName") else ""
    lines = [
        f"{verb} a security-group change: {result['reason']}.",
        "",
        f"Who:      {result['actor']}",
        f"When:     {result.get('eventTime') or 'unknown'}",
        f"Account:  {result['account']}",
        f"Region:   {region}",
        f"Group:    {group}{name}",
        f"VPC:      {change.get('vpcId') or 'not looked up'}",
        f"Call:     {result['eventName']}",
        "Rules:",
        *(f"  - {rule}" for rule in rules),
        *(["Kept (allowed):"] if kept else []),
        *(f"  - {rule}" for rule in kept),
        f"Event ID: {result['eventId']}",
        (
            f"Console:  https://{region}.console.aws.amazon.com/ec2/home?region={region}"
            f"#SecurityGroup:groupId={group}"
        ),
    ]
    attributes = {
        key: {"DataType": "String", "StringValue": str(result[key])}
        for key in ("decision", "eventName", "account", "region", "groupId", "actor")
    }
    return {
        "Subject": subject,
        "Message": "\n".join(lines),
        "MessageAttributes": attributes,
    }


# =============================================================================================
# Local use: replay saved events or a CloudTrail log, or audit the recent past
# =============================================================================================

USAGE = """python lambda_function.py EVENT.json | LOG.json[.gz] | - [--dry-run]
       python lambda_function.py --since 24h [--region REGION] [--dry-run]"""


def main(argv: list[str], cloudtrail: Any = None) -> int:
    """Run the handler on saved events, a CloudTrail log or recent event history.

    Acts on whatever AWS boto3 is configured for (AWS_ENDPOINT_URL reaches a moto server too).
    Exit 0 when every event was handled, 1 when some were malformed or failed, 2 when the
    input could not be read at all.
    """
    import argparse  # local use only: kept off the Lambda's cold start

    parser = argparse.ArgumentParser(prog="python lambda_function.py", usage=USAGE)
    parser.add_argument(
        "source", nargs="?", help="event or CloudTrail log file; - for stdin"
    )
    parser.add_argument("--since", help="audit CloudTrail event history: 30m, 24h, 7d")
    parser.add_argument(
        "--region", help="region of the event history (default: boto3's)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="decide and log, change nothing"
    )
    args = parser.parse_args(argv)
    if (args.source is None) == (args.since is None):
        parser.error("give one event or log file, or --since")
    if args.dry_run:
        os.environ["DRY_RUN"] = "true"
    try:
        if args.since:
            events = recent_events(args.since, args.region, cloudtrail)
        else:
            events = saved_events(args.source)
    except (OSError, ValueError, ClientError, BotoCoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return replay(events)


def saved_events(source: str) -> list[Any]:
    """One event, a list of events, or a CloudTrail log file ({"Records": [...]}, maybe gzipped)."""
    import gzip

    if source == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(source, "rb") as file:
            data = file.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        loaded = json.loads(data)
    except ValueError as error:
        raise ValueError(f"{source} is not JSON: {error}") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("Records"), list):
        wanted = [
            record
            for record in loaded["Records"]
            if not isinstance(record, dict) or record.get("eventName") in HANDLED_EVENTS
        ]
        if not wanted:
            raise ValueError(f"{source} holds no security-group records")
        return wanted
    return loaded if isinstance(loaded, list) else [loaded]


def recent_events(since: str, region: str | None, cloudtrail: Any = None) -> list[Any]:
    """Security-group changes in CloudTrail event history (LookupEvents), oldest first."""
    match = re.fullmatch(r"(\d+)([mhd])", since)
    if not match:
        raise ValueError(
            f"--since wants a number and m, h or d, like 24h; got {since!r}"
        )
    unit = {"m": "minutes", "h": "hours", "d": "days"}[match[2]]
    end = datetime.datetime.now(datetime.UTC)
    start = end - datetime.timedelta(**{unit: int(match[1])})
    if cloudtrail is None:
        cloudtrail = new_client("cloudtrail", region)
    records: list[Any] = []
    for name in HANDLED_EVENTS:  # LookupEvents filters on one attribute at a time
        # IAM (your own credentials, not the function's): cloudtrail:LookupEvents
        pages = cloudtrail.get_paginator("lookup_events").paginate(
            LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": name}],
            StartTime=start,
            EndTime=end,
        )
        for page in pages:
            for found in page["Events"]:
                try:
                    records.append(json.loads(found.get("CloudTrailEvent") or "null"))
                except ValueError:  # kept as it is: the handler reports it malformed
                    records.append(found.get("CloudTrailEvent"))
    return sorted(
        records, key=lambda r: str(r.get("eventTime")) if isinstance(r, dict) else ""
    )


def replay(events: list[Any]) -> int:
    """Handle each event in order; a failure on one does not stop the others."""
    counts: dict[str, int] = {}
    problems = []
    for event in events:
        try:
            decision = lambda_handler(event, None)["decision"]
        except (ClientError, BotoCoreError):
            decision = "error"  # the handler has logged it
        failed_call = bool(record_of(event).get("errorCode"))
        if decision == "error" or (decision == "ignored" and not failed_call):
            problems.append(first_summary(event)["eventId"] or "(no eventID)")
        counts[decision] = counts.get(decision, 0) + 1
    tally = ", ".join(f"{n} {decision}" for decision, n in sorted(counts.items()))
    print(f"summary: {len(events)} events: {tally or 'none'}", file=sys.stderr)
    if problems:
        print(f"malformed or failed: {', '.join(problems)}", file=sys.stderr)
    return 1 if problems else 0


check_conditions()

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
