"""Property-based fuzzing: real-format events, generated and mutated, through the handler on moto.

Properties:
- nothing escapes the handler but a deliberate, logged AWS error;
- no rule outside the event's own rules is ever removed, in the event's group or any other;
- an event that was not mutated is still fully reverted.

`HYPOTHESIS_PROFILE=thorough make test` runs ten times the examples of the CI profile (twenty
for the two largest tests, whose CI share is half).
"""

from __future__ import annotations

import copy
import ipaddress
import itertools
import os
import traceback
from collections import Counter

import pytest
from botocore.exceptions import BotoCoreError, ClientError
from cloudtrail import (
    add_entries,
    authorize,
    camel,
    eventbridge,
    record,
    rule_set,
    rules_of,
    serve_associations,
)
from conftest import CONTEXT
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from lambda_function import (
    HANDLED_EVENTS,
    LEFT_OPEN,
    RULE_ID,
    BadEvent,
    describe,
    lambda_handler,
    read_change,
    rule_from_aws,
    same_rule,
)

settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile("thorough", parent=settings.get_profile("ci"), derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
SCALE = 10 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 1
# make test runs half the examples of the two largest tests (it must stay under five minutes
# on two cores, #20); the thorough profile runs them all.
CI_SHARE = 2 if SCALE == 1 else 1
OUTCOMES: Counter = Counter()  # what the examples did, for the README's reliability figures

# Generated changes cover the whole domain the EC2 API accepts: every protocol name and
# number, ports at their edges, ICMP type and code from -1 to 255 in either order. A generated
# rule equal to a legitimate one is refused as a duplicate (a failed call), so a removed
# legitimate rule can only mean the handler removed something the event did not add.
ports = st.one_of(
    st.sampled_from([0, 1, 22, 443, 1023, 1024, 65534, 65535]), st.integers(0, 65535)
)
port_pair = st.tuples(ports, ports).map(sorted)
icmp_value = st.one_of(st.sampled_from([-1, 0, 8, 255]), st.integers(-1, 255))
ipv4 = st.builds(
    lambda address, prefix: str(ipaddress.ip_network(f"{address}/{prefix}", strict=False)),
    st.ip_addresses(v=4),
    st.integers(0, 32),
)
ipv6 = st.builds(
    lambda address, prefix: str(ipaddress.ip_network(f"{address}/{prefix}", strict=False)),
    st.ip_addresses(v=6),
    st.integers(0, 128),
)
prefix_list = st.from_regex(r"pl-[0-9a-f]{8}", fullmatch=True)
description = st.none() | st.text(
    st.characters(codec="ascii", categories=["L", "N"]), max_size=20
)


def with_description(entry, text):
    return {**entry, "Description": text} if text else entry


shape = st.one_of(
    st.builds(
        lambda proto, pair: {
            "IpProtocol": proto,
            "FromPort": pair[0],
            "ToPort": pair[1],
        },
        st.sampled_from(["tcp", "udp", "6", "17"]),
        port_pair,
    ),
    st.builds(  # type and code in any order: echo request is type 8 code 0
        lambda proto, kind, code: {
            "IpProtocol": proto,
            "FromPort": kind,
            "ToPort": code,
        },
        st.sampled_from(["icmp", "icmpv6", "1", "58"]),
        icmp_value,
        icmp_value,
    ),
    st.builds(  # every other protocol number: all ports, with or without port fields
        lambda number, pair: (
            {"IpProtocol": str(number)}
            | ({"FromPort": pair[0], "ToPort": pair[1]} if pair else {})
        ),
        st.integers(0, 255).filter(lambda n: n not in (1, 6, 17, 58)),
        st.none() | port_pair,
    ),
    st.builds(
        lambda pair: (
            {"IpProtocol": "-1"} | ({"FromPort": pair[0], "ToPort": pair[1]} if pair else {})
        ),
        st.none() | st.just((-1, -1)) | st.just((0, 65535)),
    ),
)


@st.composite
def permissions(draw, other_group):
    drawn = []
    for _ in range(draw(st.integers(1, 4))):
        permission = dict(draw(shape))
        kinds = draw(st.sets(st.sampled_from(["v4", "v6", "pl", "sg"]), min_size=1))
        if "v4" in kinds:
            cidrs = draw(st.lists(ipv4, min_size=1, max_size=3, unique=True))
            permission["IpRanges"] = [
                with_description({"CidrIp": c}, draw(description)) for c in cidrs
            ]
        if "v6" in kinds:
            cidrs = draw(st.lists(ipv6, min_size=1, max_size=2, unique=True))
            permission["Ipv6Ranges"] = [{"CidrIpv6": c} for c in cidrs]
        if "pl" in kinds:
            permission["PrefixListIds"] = [{"PrefixListId": draw(prefix_list)}]
        if "sg" in kinds:
            permission["UserIdGroupPairs"] = [{"GroupId": other_group}]
        drawn.append(permission)
    return drawn


WEIRD = st.one_of(
    st.none(),
    st.just(""),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.just("x" * 5000),
    st.just("\u202e\U0001f4a5\x00"),
    st.just([]),
    st.just({}),
    st.just({"items": None}),
    st.just({"items": "0.0.0.0/0"}),
    st.just({"items": [None] * 500}),
)


def paths(value, prefix=()):
    """Every place in a JSON tree that a mutation can hit."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, (*prefix, index))


@st.composite
def mutated(draw, event):
    """The event with 1 to 3 places dropped, replaced by odd values, or repeated many times."""
    event = copy.deepcopy(event)
    for _ in range(draw(st.integers(1, 3))):
        places = [p for p in paths(event) if p]
        if not places:
            break
        *parents, last = draw(st.sampled_from(places))
        target = event
        for key in parents:
            target = target[key]
        action = draw(st.sampled_from(["drop", "replace", "repeat"]))
        if action == "drop" and isinstance(target, dict):
            del target[last]
        elif action == "repeat" and isinstance(target[last], list):
            target[last] = target[last] * draw(st.integers(2, 300))
        else:
            target[last] = copy.deepcopy(draw(WEIRD))  # st.just shares one object
    return event


def escaped_from_the_emulator(error):
    """moto crashes on some shapes real AWS accepts: those examples say nothing about us."""
    frames = traceback.extract_tb(error.__traceback__)
    return any(f"{os.sep}moto{os.sep}" in frame.filename for frame in frames)


NAMES = itertools.count()
LEGIT = [
    {
        "IpProtocol": "tcp",
        "FromPort": 443,
        "ToPort": 443,
        "IpRanges": [{"CidrIp": "10.0.0.0/8"}],
    },
    {
        "IpProtocol": "tcp",
        "FromPort": 22,
        "ToPort": 22,
        "IpRanges": [{"CidrIp": "192.0.2.0/24"}],
    },
]

LEGIT_RULES = {
    (False, "tcp", 443, 443, "10.0.0.0/8"),
    (False, "tcp", 22, 22, "192.0.2.0/24"),
}
DEFAULT_EGRESS = (True, "-1", -1, -1, "0.0.0.0/0")


@pytest.fixture
def neighbour(ec2, vpc_id):
    """Another group with a rule of its own, which no event here may touch."""
    other = ec2.create_security_group(GroupName="other", Description="o", VpcId=vpc_id)[
        "GroupId"
    ]
    ec2.authorize_security_group_ingress(GroupId=other, IpPermissions=LEGIT)
    assert rule_set(ec2, other) == LEGIT_RULES | {DEFAULT_EGRESS}
    return other


@settings(max_examples=400 * SCALE // CI_SHARE)
@given(data=st.data())
def test_generated_and_mutated_events_never_remove_what_they_did_not_add(
    ec2, vpc_id, neighbour, data
):
    group = ec2.create_security_group(
        GroupName=f"guarded-{next(NAMES)}", Description="g", VpcId=vpc_id
    )["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=LEGIT)
    try:
        check_one_example(ec2, group, neighbour, data)
    finally:
        ec2.delete_security_group(GroupId=group)  # keeps moto's state, and each example, small


def check_one_example(ec2, group, neighbour, data):
    legit, other = LEGIT_RULES | {DEFAULT_EGRESS}, LEGIT_RULES | {DEFAULT_EGRESS}
    drawn = data.draw(permissions(neighbour), "permissions")
    egress, modern = (
        data.draw(st.booleans(), "egress"),
        data.draw(st.booleans(), "modern"),
    )
    if egress and not modern and any("Ipv6Ranges" in p for p in drawn):
        reject()  # moto answers success to revoking IPv6 egress by permission, and keeps it
    try:
        event = authorize(ec2, group, drawn, egress=egress, modern=modern)
    except Exception as error:
        if escaped_from_the_emulator(error):
            reject()  # moto crashes on a protocol number without ports; AWS takes it
        raise
    if event.get("errorCode") and rule_set(ec2, group) != legit:
        reject()  # moto applied part of a call it refused; AWS refuses a call whole
    if data.draw(st.booleans(), "envelope"):
        event = eventbridge(event)
    mutate = data.draw(st.booleans(), "mutate")
    if mutate:
        event = data.draw(mutated(event), "mutated event")
        if egress and any("Ipv6Ranges" in p for p in drawn) and not rule_ids_in(event):
            reject()  # the mutation made it an old record: the same moto gap as above
    try:
        decision = lambda_handler(event, CONTEXT)["decision"]
    except ClientError as error:  # deliberate: logged, told, raised for Lambda to retry
        decision = "raised " + error.response["Error"]["Code"]
    except BotoCoreError as error:  # likewise: no time left for botocore's own retries
        decision = "raised " + type(error).__name__
    except Exception as error:
        if escaped_from_the_emulator(error):
            reject()
        raise
    OUTCOMES[("mutated: " if mutate else "valid: ") + decision] += 1
    after = rule_set(ec2, group)
    assert legit <= after, "a rule the event did not add was removed"
    assert rule_set(ec2, neighbour) == other, "another group was touched"
    if not mutate:
        assert after == legit, "a valid event was not fully reverted"
    if decision == "ignored":
        assert changed_nothing(event), "a successful change was ignored"
    elif decision not in LEFT_OPEN and not decision.startswith("raised"):
        # A mutation may hide a rule from the record (nothing can find it then); every
        # rule the record still names is gone, unless the result says it is open.
        now = [rule_from_aws(r) for r in rules_of(ec2, group)]
        for rule in read_change(event)["rules"]:
            assert not any(same_rule(rule, found) for found in now), (
                f"{describe(rule)} stayed open silently ({decision})"
            )


def rule_ids_in(event):
    """Does the (mutated) record still hold a response rule set, to revoke by rule ID?"""
    found = event.get("detail", event) if isinstance(event, dict) else None
    response = found.get("responseElements") if isinstance(found, dict) else None
    rule_set_found = (
        response.get("securityGroupRuleSet") if isinstance(response, dict) else None
    )
    # As the reader sees it: an "items" that is no list is no rule set (found by the thorough
    # profile: {"items": "…"} sent the revoke down the permission path, into moto's IPv6 gap).
    listed = rule_set_found.get("items") if isinstance(rule_set_found, dict) else None
    return isinstance(listed, list) and bool(listed)


def changed_nothing(event):
    """What the record itself says, independent of the reader: not a successful change."""
    if not isinstance(event, dict):
        return True
    if "detail" in event:
        if event.get("source", "aws.ec2") != "aws.ec2":
            return True
        event = event["detail"]
    return (
        not isinstance(event, dict)
        or event.get("eventSource") != "ec2.amazonaws.com"
        or event.get("eventName") not in HANDLED_EVENTS
        or bool(event.get("errorCode"))
    )


@settings(max_examples=2000 * SCALE // CI_SHARE)
@given(data=st.data())
def test_reading_any_mutation_raises_nothing_but_bad_event(data):
    group, other = "sg-0123456789abcdef0", "sg-0fedcba9876543210"
    drawn = data.draw(permissions(other))
    params = {"groupId": group, "ipPermissions": camel(drawn)}
    response = {"_return": True}
    if data.draw(st.booleans(), "rule set"):
        response["securityGroupRuleSet"] = {
            "items": [response_item(group, permission) for permission in drawn]
        }
    event = record("AuthorizeSecurityGroupIngress", params, response)
    event = data.draw(mutated(event))
    try:
        change = read_change(event)
    except BadEvent:
        assert changed_nothing(event)
        OUTCOMES["read: changed nothing (BadEvent)"] += 1
        return
    assert not changed_nothing(event)
    described = [describe(rule) for rule in change["rules"]]
    OUTCOMES["read: unreadable parts" if change["unreadable"] else "read: whole"] += 1
    assert change["rules"] or change["unreadable"], "a change that names nothing"
    assert all(isinstance(problem, str) for problem in change["unreadable"])
    assert len(described) == len(change["rules"])
    for rule in change["rules"]:
        if "securityGroupRuleId" in rule:
            assert RULE_ID.fullmatch(rule["securityGroupRuleId"])
        if "unreadable" in rule:
            assert "securityGroupRuleId" in rule, "a rule without values nor ID"
            continue
        assert (
            rule["ipProtocol"] in {"tcp", "udp", "icmp", "icmpv6", "-1"}
            or rule["ipProtocol"].isdigit()
        )
        assert all(-1 <= rule.get(key, -1) <= 65535 for key in ("fromPort", "toPort"))


def response_item(group, permission):
    """A securityGroupRuleSet item for the permission's first source, as AWS writes it."""
    source = (
        {"cidrIpv4": permission["IpRanges"][0]["CidrIp"]}
        if "IpRanges" in permission
        else {"cidrIpv6": permission["Ipv6Ranges"][0]["CidrIpv6"]}
        if "Ipv6Ranges" in permission
        else {"prefixListId": permission["PrefixListIds"][0]["PrefixListId"]}
        if "PrefixListIds" in permission
        else {"referencedGroupInfo": {"groupId": permission["UserIdGroupPairs"][0]["GroupId"]}}
    )
    ports = {k[0].lower() + k[1:]: v for k, v in permission.items() if k.endswith("Port")}
    return {
        "groupId": group,
        "securityGroupRuleId": f"sgr-{next(NAMES):017x}",
        "isEgress": False,
        "ipProtocol": permission["IpProtocol"],
        **ports,
        **source,
    }


# ModifyManagedPrefixList: any entry AWS accepts (IPv4 and IPv6, /0 to the host), in any of
# the layouts a record may use, mixed with entries that are no CIDR at all.
def any_cidr():
    v4 = st.builds(
        lambda address, length: str(
            ipaddress.ip_network(f"{ipaddress.IPv4Address(address)}/{length}", False)
        ),
        st.integers(0, 2**32 - 1),
        st.integers(0, 32),
    )
    v6 = st.builds(
        lambda address, length: str(
            ipaddress.ip_network(f"{ipaddress.IPv6Address(address)}/{length}", False)
        ),
        st.integers(0, 2**128 - 1),
        st.integers(0, 128),
    )
    return v4 | v6


ENTRY_NOISE = st.one_of(
    st.none(), st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=2)
)


@settings(max_examples=300 * SCALE)
@given(
    cidrs=st.lists(any_cidr(), min_size=1, max_size=5, unique=True),
    noise=st.lists(ENTRY_NOISE, max_size=2),
    key=st.sampled_from(["Cidr", "cidr", "CIDR"]),
    as_list=st.booleans(),
)
def test_every_prefix_list_entry_added_is_read_or_reported(cidrs, noise, key, as_list):
    entries = [{key: cidr, "tag": str(n)} for n, cidr in enumerate(cidrs, 1)]
    entries += [{key: value} for value in noise]
    added = entries if as_list or len(entries) > 1 else entries[0]
    body = {
        "ModifyManagedPrefixListRequest": {
            "AddEntry": added,
            "PrefixListId": "pl-0123456789abcdef0",
        }
    }
    change = read_change(record("ModifyManagedPrefixList", body, None))
    assert [entry["cidr"] for entry in change["prefixList"]["added"]] == cidrs
    assert len(change["unreadable"]) == len(noise)


@settings(max_examples=60 * SCALE)
@given(cidrs=st.lists(any_cidr(), min_size=1, max_size=4, unique=True))
def test_any_entries_added_to_a_guarded_list_are_all_taken_out(ec2, vpc_id, cidrs):
    """On moto: whatever is added, IPv4 or IPv6, the list ends as it was reviewed."""
    family = "IPv6" if ":" in cidrs[0] else "IPv4"
    reviewed = "2001:db8::/32" if family == "IPv6" else "198.51.100.0/24"
    added = [c for c in cidrs if (":" in c) == (family == "IPv6") and c != reviewed]
    if not added:
        reject()
    group = ec2.create_security_group(
        GroupName=f"uses-{next(NAMES)}", Description="g", VpcId=vpc_id
    )["GroupId"]
    listed = ec2.create_managed_prefix_list(
        PrefixListName=f"l-{next(NAMES)}",
        AddressFamily=family,
        MaxEntries=10,
        Entries=[{"Cidr": reviewed}],
    )["PrefixList"]["PrefixListId"]
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[{"IpProtocol": "-1", "PrefixListIds": [{"PrefixListId": listed}]}],
    )
    serve_associations(ec2)
    try:
        result = lambda_handler(add_entries(ec2, listed, added), CONTEXT)
        OUTCOMES[f"prefix list: {result['decision']}"] += 1
        assert result["decision"] == "reverted"
        found = ec2.get_managed_prefix_list_entries(PrefixListId=listed)["Entries"]
        assert [entry["Cidr"] for entry in found] == [reviewed]
    finally:
        ec2.delete_security_group(GroupId=group)
