"""Property-based fuzzing: real-format events, generated and mutated, through the handler on moto.

Properties:
- nothing escapes the handler but a deliberate, logged AWS error;
- no rule outside the event's own rules is ever removed, in the event's group or any other;
- an event that was not mutated is still fully reverted.

`HYPOTHESIS_PROFILE=thorough make test` runs ten times the examples of the CI profile.
"""

from __future__ import annotations

import copy
import ipaddress
import itertools
import os
import traceback
from collections import Counter

import pytest
from botocore.exceptions import ClientError
from cloudtrail import authorize, camel, eventbridge, record, rule_set
from conftest import CONTEXT
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from lambda_function import BadEvent, lambda_handler, read_change

settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile(
    "thorough", parent=settings.get_profile("ci"), derandomize=False
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
SCALE = 10 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 1
OUTCOMES: Counter = (
    Counter()
)  # what the examples did, for the README's reliability figures

# Legitimate rules live on ports below 1024; generated changes use ports above, so that a
# removed legitimate rule can only mean the handler removed something the event did not add.
ports = st.integers(1024, 65535)
port_pair = st.tuples(ports, ports).map(sorted)
ipv4 = st.builds(
    lambda address, prefix: str(
        ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    ),
    st.ip_addresses(v=4),
    st.integers(0, 32),
)
ipv6 = st.builds(
    lambda address, prefix: str(
        ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    ),
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
    st.builds(
        lambda proto, kind: {"IpProtocol": proto, "FromPort": kind, "ToPort": -1},
        st.sampled_from(["icmp", "icmpv6"]),
        st.integers(-1, 255),
    ),
    st.just({"IpProtocol": "-1"}),
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


@settings(max_examples=400 * SCALE)
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
        ec2.delete_security_group(
            GroupId=group
        )  # keeps moto's state, and each example, small


def check_one_example(ec2, group, neighbour, data):
    legit, other = LEGIT_RULES | {DEFAULT_EGRESS}, LEGIT_RULES | {DEFAULT_EGRESS}
    drawn = data.draw(permissions(neighbour), "permissions")
    egress, modern = (
        data.draw(st.booleans(), "egress"),
        data.draw(st.booleans(), "modern"),
    )
    if egress and not modern and any("Ipv6Ranges" in p for p in drawn):
        reject()  # moto answers success to revoking IPv6 egress by permission, and keeps it
    event = authorize(ec2, group, drawn, egress=egress, modern=modern)
    if event.get("errorCode") and rule_set(ec2, group) != legit:
        reject()  # moto applied part of a call it refused; AWS refuses a call whole
    if data.draw(st.booleans(), "envelope"):
        event = eventbridge(event)
    mutate = data.draw(st.booleans(), "mutate")
    if mutate:
        event = data.draw(mutated(event), "mutated event")
    try:
        decision = lambda_handler(event, CONTEXT)["decision"]
    except ClientError as error:  # deliberate: logged, and raised for Lambda to retry
        decision = "raised " + error.response["Error"]["Code"]
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


@settings(max_examples=2000 * SCALE)
@given(data=st.data())
def test_reading_any_mutation_raises_nothing_but_bad_event(data):
    group, other = "sg-0123456789abcdef0", "sg-0fedcba9876543210"
    params = {"groupId": group, "ipPermissions": camel(data.draw(permissions(other)))}
    event = record("AuthorizeSecurityGroupIngress", params, {"_return": True})
    event = data.draw(mutated(event))
    try:
        change = read_change(event)
    except BadEvent:
        OUTCOMES["read: rejected as BadEvent"] += 1
        return
    OUTCOMES["read: still valid"] += 1
    for rule in change["rules"]:
        assert (
            rule["ipProtocol"] in {"tcp", "udp", "icmp", "icmpv6", "-1"}
            or rule["ipProtocol"].isdigit()
        )
        assert all(-1 <= rule.get(key, -1) <= 65535 for key in ("fromPort", "toPort"))


def test_zz_report_fuzz_outcomes(capsys):
    """Prints what the examples did (run with -s); the README's figures come from here."""
    with capsys.disabled():
        print("\nfuzz outcomes:", dict(sorted(OUTCOMES.items())))
