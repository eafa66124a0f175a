"""Edges a sampled mutation check (bench/mutate.py, docs/mutation.md) found untested.

Each test judges by what moto holds afterwards. Where moto has no answer, botocore's Stubber
gives the one the API documents: CloudTrail LookupEvents (Events[].CloudTrailEvent, the
record as a JSON string, newest first), and EC2's error answer to a revoke in a group that
does not exist (an error response whose Code is InvalidGroup.NotFound, or
InvalidGroupId.NotFound, HTTP 400, as in EC2's error codes reference).
"""

from __future__ import annotations

import copy
import datetime
import json

import boto3
import pytest
from botocore.stub import Stubber
from cloudtrail import (
    OPEN,
    SSH,
    EventHistory,
    add_entries,
    assumed_role,
    authorize,
    camel,
    eventbridge,
    made,
    modify,
    record,
    rule_set,
    rules_of,
    serve_associations,
)
from conftest import CONTEXT, WIDENED, bastion_of
from test_sweeping import sent_by_lambda

import lambda_function
from lambda_function import (
    ConditionsError,
    check_conditions,
    lambda_handler,
    read_change,
    widens,
)

BOB = assumed_role("Developer", "bob")


def run(event):
    return lambda_handler(eventbridge(event), CONTEXT)


def late(event, seconds):
    """The record as a retry, a redrive or a replay brings it: the same, `seconds` old."""
    made = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
    return {**event, "eventTime": made.strftime("%Y-%m-%dT%H:%M:%SZ")}


def items_of(event):
    return event["responseElements"]["securityGroupRuleSet"]["items"]


def now_by_id(ec2, group_id):
    return {r["SecurityGroupRuleId"]: r for r in rules_of(ec2, group_id)}


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


def tcp(low, high, cidr="10.70.0.0/16"):
    return {
        "IpProtocol": "tcp",
        "FromPort": low,
        "ToPort": high,
        "IpRanges": [{"CidrIp": cidr}],
    }


# ---- 1. Ports widened on one side only ------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "widened"),
    [
        ((443, 443), (443, 8443), True),  # the upper end only
        ((443, 443), (1, 443), True),  # the lower end only
        ((8000, 8443), (8000, 8100), False),  # narrowed at the upper end
        ((8000, 8443), (8100, 8443), False),  # narrowed at the lower end
    ],
    ids=["wider-above", "wider-below", "narrower-above", "narrower-below"],
)
def test_ports_widened_on_one_side_go_back_and_narrowed_on_one_side_stay(
    ec2, group_id, history, old, new, widened
):
    created = authorize(ec2, group_id, [tcp(*old)])
    (item,) = items_of(created)
    rule_id = item["securityGroupRuleId"]
    value = {
        "IpProtocol": "tcp",
        "FromPort": new[0],
        "ToPort": new[1],
        "CidrIpv4": "10.70.0.0/16",
    }
    event = modify(ec2, group_id, {rule_id: value}, identity=BOB)
    history.add_response("lookup_events", lookup([created]))
    result = run(event)
    now = now_by_id(ec2, group_id)[rule_id]
    assert result["decision"] == ("reverted" if widened else "kept")
    assert (now["FromPort"], now["ToPort"]) == (old if widened else new)
    assert now["CidrIpv4"] == "10.70.0.0/16"


# ---- 2. A new value that cannot be read is revoked by its ID, never "changed since" ---------


def edit_with_odd_value(ec2, group_id, odd):
    rule_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    event = modify(ec2, group_id, {rule_id: dict(WIDENED)}, identity=BOB)
    request = event["requestParameters"]["ModifySecurityGroupRulesRequest"]
    request["SecurityGroupRule"]["SecurityGroupRule"].update(odd)
    return event, rule_id


@pytest.mark.parametrize(
    "odd",
    [{"IpProtocol": "a-protocol-from-the-future"}, {"FromPort": "twenty-two"}],
    ids=["protocol", "port"],
)
def test_an_edit_whose_new_value_cannot_be_read_is_revoked_by_its_id(ec2, group_id, odd):
    event, rule_id = edit_with_odd_value(ec2, group_id, odd)
    result = run(event)
    assert result["decision"] == "reverted"
    assert result["rules"][0].startswith(f"rule {rule_id} (")
    assert rule_id not in now_by_id(ec2, group_id)
    assert (False, "tcp", 443, 443, "10.0.0.0/8") in rule_set(ec2, group_id)


@pytest.mark.parametrize(
    "odd",
    [{"ipProtocol": "a-protocol-from-the-future"}, {"fromPort": "twenty-two"}],
    ids=["protocol", "port"],
)
def test_a_late_event_whose_rule_cannot_be_read_is_revoked_by_its_id(
    ec2, group_id, calls, odd
):
    before = rule_set(ec2, group_id)
    event = authorize(ec2, group_id, [SSH])
    items_of(event)[0].update(odd)
    calls.clear()
    result = run(late(event, 1800))
    assert result["decision"] == "reverted"
    assert result["rules"][0].startswith("rule sgr-")
    assert rule_set(ec2, group_id) == before
    assert calls == ["DescribeSecurityGroupRules", "RevokeSecurityGroupIngress"]


# Found by this check: with an old value found, plan_edits measured the unreadable new value
# (widens() read its ipProtocol) and the handler raised KeyError; now the old value goes back,
# confirmed first against event history (the new value cannot say it adds nothing).
def test_an_edit_whose_new_value_cannot_be_read_is_undone_though_its_old_value_is_known(
    ec2, group_id, history
):
    created = authorize(ec2, group_id, [tcp(5432, 5432)])
    (item,) = items_of(created)
    rule_id = item["securityGroupRuleId"]
    wide = {**WIDENED, "FromPort": 5432, "ToPort": 5432}
    event = modify(ec2, group_id, {rule_id: wide}, identity=BOB)
    request = event["requestParameters"]["ModifySecurityGroupRulesRequest"]
    request["SecurityGroupRule"]["SecurityGroupRule"]["IpProtocol"] = "a-new-protocol"
    history.add_response("lookup_events", lookup([created]))  # the old value
    history.add_response("lookup_events", lookup([event]))  # the edit, by its event ID
    history.add_response("lookup_events", lookup([created]))  # decided anew on AWS's record
    result = run(event)
    assert result["decision"] == "reverted"
    assert (False, "tcp", 5432, 5432, "0.0.0.0/0") not in rule_set(ec2, group_id)


def test_an_edit_the_handler_cannot_finish_does_not_stop_the_sweep(
    ec2, group_id, conditions, monkeypatch
):
    conditions(RESTORE_FROM_CLOUDTRAIL=True)
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="sg-guardrail-failures")["QueueUrl"]
    monkeypatch.setenv("FAILURE_QUEUE_URL", url)
    created = authorize(ec2, group_id, [tcp(5432, 5432)])
    (item,) = items_of(created)
    wide = {**WIDENED, "FromPort": 5432, "ToPort": 5432}
    edit = modify(ec2, group_id, {item["securityGroupRuleId"]: wide}, identity=BOB)
    request = edit["requestParameters"]["ModifySecurityGroupRulesRequest"]
    request["SecurityGroupRule"]["SecurityGroupRule"]["IpProtocol"] = "a-new-protocol"
    missed = authorize(ec2, group_id, [SSH])
    for event in (edit, missed):
        sent_by_lambda(sqs, url, {"requestPayload": eventbridge(event)})
    trail = EventHistory([created, edit, missed])  # the edit's old value, and its record
    trail.serve(lambda_function.client("cloudtrail", "us-east-1"))
    result = lambda_handler({"sweep": {"minutes": 15}}, CONTEXT)
    assert "error" not in result["decisions"]  # the edit is finished, then the rest
    assert (False, "tcp", 5432, 5432, "0.0.0.0/0") not in rule_set(ec2, group_id)
    assert OPEN not in rule_set(ec2, group_id)


# ---- 3. All traffic is all traffic, whatever ports its record carries -----------------------

ALL_TRAFFIC = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}


@pytest.mark.parametrize(
    "entry",
    [
        {"fromPort": 443, "toPort": 443, "cidr": "0.0.0.0/0"},
        {"fromPort": 443, "toPort": 443},
        {"toPort": 443, "cidrWithin": "0.0.0.0/0"},
        {"fromPort": 1, "toPort": 65535},  # every port but 0
    ],
)
@pytest.mark.parametrize("age", [0, 1800], ids=["fresh", "late"])
def test_all_traffic_whose_record_carries_ports_is_not_kept_by_a_port_entry(
    ec2, group_id, conditions, entry, age
):
    conditions(ALLOWED_RULES=[entry])
    before = rule_set(ec2, group_id)
    event = authorize(ec2, group_id, [ALL_TRAFFIC])
    items_of(event)[0].update(fromPort=443, toPort=443)
    result = run(late(event, age))
    assert result["decision"] == "reverted"
    assert result["rules"] == ["all traffic from 0.0.0.0/0"]
    assert rule_set(ec2, group_id) == before


# ---- 4. An exemption of every principal of an account ---------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        "arn:aws:iam::111122223333:*/*",
        "arn:aws:iam::111122223333:?*",
        "arn:aws:iam::111122223333:/*",
        "arn:aws:sts::111122223333:*/*/*",
    ],
)
def test_an_exemption_of_every_principal_of_an_account_is_refused(conditions, pattern):
    conditions(EXEMPT_PRINCIPALS=[pattern])
    with pytest.raises(ConditionsError, match="would exempt everyone"):
        check_conditions()


# ---- 5. REVERT_EGRESS = False keeps edits of egress rules -----------------------------------


@pytest.mark.parametrize("with_ingress", [False, True], ids=["egress", "both"])
def test_without_revert_egress_an_edited_egress_rule_stays(
    ec2, group_id, conditions, with_ingress
):
    conditions(REVERT_EGRESS=False)
    (egress,) = [r for r in rules_of(ec2, group_id) if r["IsEgress"]]
    egress_id = egress["SecurityGroupRuleId"]
    bastion_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    smtp = {"IpProtocol": "tcp", "FromPort": 25, "ToPort": 25, "CidrIpv4": "0.0.0.0/0"}
    edits = {egress_id: smtp, **({bastion_id: dict(WIDENED)} if with_ingress else {})}
    result = run(modify(ec2, group_id, edits, identity=BOB))
    assert result["decision"] == ("reverted" if with_ingress else "kept")
    assert result["keptRules"] == ["tcp 25 to 0.0.0.0/0"]
    after = now_by_id(ec2, group_id)
    assert (after[egress_id]["IpProtocol"], after[egress_id]["FromPort"]) == ("tcp", 25)
    assert (bastion_id in after) is not with_ingress


# ---- 6. LATE_AFTER_SECONDS at its edge -------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "checked"), [(290, False), (310, True)], ids=["younger", "older"]
)
def test_late_after_seconds_at_its_edge(ec2, group_id, calls, age, checked):
    assert lambda_function.SETTINGS.LATE_AFTER_SECONDS == 300
    before = rule_set(ec2, group_id)
    event = authorize(ec2, group_id, [SSH])
    calls.clear()
    assert run(late(event, age))["decision"] == "reverted"
    assert rule_set(ec2, group_id) == before
    expected = ["DescribeSecurityGroupRules"] if checked else []
    assert calls == [*expected, "RevokeSecurityGroupIngress"]


# ---- 7. udp is read like tcp -----------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
@pytest.mark.parametrize(
    ("odd", "readable"),
    [
        ({}, True),
        ({"toPort": None}, False),
        ({"fromPort": None}, False),
        ({"fromPort": 54, "toPort": 53}, False),
        ({"fromPort": 0, "toPort": 65535}, True),
        ({"toPort": 65536}, False),
        ({"fromPort": -2}, False),
    ],
    ids=[
        "both-ports",
        "no-toPort",
        "no-fromPort",
        "from-above-to",
        "every-port",
        "above-65535",
        "below-minus-1",
    ],
)
def test_tcp_and_udp_without_both_ports_in_order_are_unreadable(
    ec2, group_id, conditions, protocol, odd, readable
):
    # The entry allows every port of the protocol: only a rule that cannot be read is
    # revoked all the same.
    conditions(ALLOWED_RULES=[{"ipProtocol": protocol, "cidr": "0.0.0.0/0"}])
    before = rule_set(ec2, group_id)
    event = authorize(ec2, group_id, [{**SSH, "IpProtocol": protocol, **PORT_53}])
    (item,) = items_of(event)
    for key, value in odd.items():
        if value is None:
            del item[key]
        else:
            item[key] = value
    result = run(event)
    if readable:
        assert result["decision"] == "kept"
        assert (False, protocol, 53, 53, "0.0.0.0/0") in rule_set(ec2, group_id)
    else:
        assert result["decision"] == "reverted"
        assert result["rules"][0].startswith(f"rule {item['securityGroupRuleId']} (")
        assert rule_set(ec2, group_id) == before


PORT_53 = {"FromPort": 53, "ToPort": 53}


# ---- 8. No groupId, and rules of two groups: nothing revoked on a guess ---------------------


@pytest.mark.parametrize("group", ["sg-../../etc", None, "missing"])
def test_rules_of_two_groups_without_a_readable_group_id_are_all_reported(
    ec2, group_id, vpc_id, calls, group
):
    other = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc_id)
    other_id = other["GroupId"]
    first = authorize(ec2, group_id, [SSH])
    second = authorize(ec2, other_id, [SSH])
    event = copy.deepcopy(first)
    items_of(event).extend(items_of(second))
    if group == "missing":
        del event["requestParameters"]["groupId"]
    else:
        event["requestParameters"]["groupId"] = group
    held = rule_set(ec2, group_id), rule_set(ec2, other_id)
    calls.clear()
    result = run(event)
    assert result["decision"] == "unreadable"
    assert result["rules"] == []
    assert result["unreadable"].count("tcp 22 from 0.0.0.0/0") == 2
    assert (rule_set(ec2, group_id), rule_set(ec2, other_id)) == held
    assert (False, "tcp", 22, 22, "0.0.0.0/0") in held[1]
    assert calls == []


# ---- 9. A group not found, by either code, is already gone ----------------------------------


@pytest.mark.parametrize("code", ["InvalidGroup.NotFound", "InvalidGroupId.NotFound"])
def test_a_revoke_answered_group_not_found_is_already_gone(ec2, group_id, code):
    event = authorize(ec2, group_id, [SSH])
    with Stubber(lambda_function.client("ec2", "us-east-1")) as stub:
        stub.add_client_error(
            "revoke_security_group_ingress",
            service_error_code=code,
            service_message="The security group does not exist",
            http_status_code=400,
        )
        result = run(event)
        stub.assert_no_pending_responses()
    assert result["decision"] == "already-gone"
    assert result["alreadyGone"] == ["tcp 22 from 0.0.0.0/0"]


# ---- Survivors of make mutate (docs/mutation.md) ---------------------------------------------


def test_a_tag_put_back_goes_on_the_security_groups_of_the_call_only(
    ec2, group_id, vpc_id, conditions
):
    """DeleteTags names every resource it untagged: a VPC beside the groups is not ours.
    The log line names the first group; the tag goes back on each."""
    conditions(ONLY_TAGGED={"guardrail": "on"})
    other = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc_id)
    untagged = [vpc_id, group_id, other["GroupId"]]
    ec2.create_tags(Resources=untagged, Tags=[{"Key": "guardrail", "Value": "on"}])
    ec2.delete_tags(Resources=untagged, Tags=[{"Key": "guardrail"}])
    resources = {"resourcesSet": {"items": [{"resourceId": r} for r in untagged]}}
    created = {**resources, "tagSet": {"items": [{"key": "guardrail", "value": "on"}]}}
    deleted = {**resources, "tagSet": {"items": [{"key": "guardrail"}]}}
    made(record("CreateTags", created, {"_return": True}))
    removed = made(record("DeleteTags", deleted, {"_return": True}))
    EventHistory().serve(lambda_function.client("cloudtrail", "us-east-1"))
    result = run(removed)
    assert (result["decision"], result["groupId"]) == ("reverted", group_id)
    groups = ec2.describe_security_groups(GroupIds=untagged[1:])["SecurityGroups"]
    assert [tags_of([group]) for group in groups] == [{"guardrail": "on"}] * 2
    assert not tags_of(ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"])


def tags_of(found):
    (one,) = found
    return {tag["Key"]: tag["Value"] for tag in one.get("Tags", [])}


OFFICE = "198.51.100.0/24"
PORT_5432 = {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432}


@pytest.fixture
def office(ec2, group_id):
    """pl-office, one reviewed entry, which the guarded group's tcp 5432 rule uses."""
    listed = ec2.create_managed_prefix_list(
        PrefixListName="office",
        AddressFamily="IPv4",
        MaxEntries=10,
        Entries=[{"Cidr": OFFICE, "Description": "office"}],
    )["PrefixList"]["PrefixListId"]
    ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[{**PORT_5432, "PrefixListIds": [{"PrefixListId": listed}]}],
    )
    serve_associations(ec2)
    return listed


def entries_of(ec2, prefix_list_id):
    found = ec2.get_managed_prefix_list_entries(PrefixListId=prefix_list_id)
    return sorted(entry["Cidr"] for entry in found["Entries"])


@pytest.mark.parametrize(
    ("removed", "added"),
    [("198.51.100.7/24", OFFICE), (OFFICE, "198.51.100.9/24")],
    ids=["removed", "added"],
)
def test_an_entry_re_described_as_written_with_host_bits_is_still_the_same_entry(
    ec2, office, removed, added
):
    """The record holds the CIDRs as the caller wrote them; a host part is not a new
    network (and must not stop the handler)."""
    ec2.modify_managed_prefix_list(
        PrefixListId=office,
        CurrentVersion=1,
        RemoveEntries=[{"Cidr": OFFICE}],
        AddEntries=[{"Cidr": OFFICE, "Description": "office, 2nd floor"}],
    )
    request = {
        "RemoveEntry": {"cidr": removed, "tag": "1"},
        "AddEntry": {"cidr": added, "Description": "office, 2nd floor", "tag": "1"},
        "PrefixListId": office,
        "CurrentVersion": "1",
    }
    body = {"ModifyManagedPrefixListRequest": request}
    result = run(record("ModifyManagedPrefixList", body, None))
    assert result["decision"] == "kept"
    assert entries_of(ec2, office) == [OFFICE]


@pytest.mark.parametrize("version", ["v1", "1.0"])
def test_an_odd_current_version_is_no_version(ec2, office, version):
    event = add_entries(ec2, office, ["0.0.0.0/0"])
    event["requestParameters"]["ModifyManagedPrefixListRequest"]["CurrentVersion"] = version
    assert run(event)["decision"] == "reverted"
    assert entries_of(ec2, office) == [OFFICE]


@pytest.mark.parametrize(("length", "decision"), [(255, "reverted"), (256, "unreadable")])
def test_a_group_name_is_at_most_255_characters(ec2, calls, length, decision):
    name = "n" * length
    params = {"groupName": name, "ipPermissions": camel([SSH])}
    if length <= 255:  # AWS's longest group name; a longer one exists nowhere
        default = ec2.create_security_group(GroupName=name, Description="d")
        ec2.authorize_security_group_ingress(GroupName=name, IpPermissions=[SSH])
    calls.clear()
    result = run(record("AuthorizeSecurityGroupIngress", params, {"_return": True}))
    assert result["decision"] == decision
    if length <= 255:
        assert OPEN not in rule_set(ec2, default["GroupId"])
    else:
        assert result["unreadable"] == [
            "no readable groupId or groupName",
            "tcp 22 from 0.0.0.0/0",
        ]
        assert calls == []


def test_a_referenced_group_with_an_empty_name_is_reported_and_the_rest_revoked(ec2, group_id):
    before = rule_set(ec2, group_id)
    event = authorize(ec2, group_id, [SSH], modern=False)
    (permission,) = event["requestParameters"]["ipPermissions"]["items"]
    permission["groups"] = {"items": [{"groupName": ""}]}
    result = run(event)
    assert result["decision"] == "unreadable"
    assert result["rules"] == ["tcp 22 from 0.0.0.0/0"]
    assert result["unreadable"] == [
        "ipPermissions item 1, groups: a referenced group without groupId or groupName"
    ]
    assert rule_set(ec2, group_id) == before


def test_a_rule_set_naming_only_another_groups_rule_is_reported_as_just_that(
    ec2, group_id, vpc_id, calls
):
    other = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc_id)
    event = authorize(ec2, other["GroupId"], [SSH])
    event["requestParameters"]["groupId"] = group_id
    held = rule_set(ec2, other["GroupId"])
    calls.clear()
    result = run(event)
    assert result["decision"] == "unreadable"
    assert result["unreadable"] == ["tcp 22 from 0.0.0.0/0 of another group"]
    assert rule_set(ec2, other["GroupId"]) == held
    assert calls == []


def test_an_edit_that_cannot_be_identified_is_named_by_its_place_in_the_call(ec2, group_id):
    bastion_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    (https,) = [r for r in rules_of(ec2, group_id) if r.get("FromPort") == 443]
    wide_https = {**WIDENED, "FromPort": 443, "ToPort": 443}
    edits = {bastion_id: dict(WIDENED), https["SecurityGroupRuleId"]: wide_https}
    event = modify(ec2, group_id, edits, identity=BOB)
    request = event["requestParameters"]["ModifySecurityGroupRulesRequest"]
    request["SecurityGroupRule"][1]["SecurityGroupRuleId"] = "sgr-?"
    result = run(event)
    assert result["decision"] == "unreadable"
    assert result["rules"] == ["tcp 22 from 0.0.0.0/0"]
    assert result["unreadable"] == [
        "SecurityGroupRule 2: SecurityGroupRuleId is missing or malformed: 'sgr-?'"
    ]
    assert bastion_id not in now_by_id(ec2, group_id)


def test_an_empty_event_id_or_time_is_none():
    params = {"groupId": "sg-0123456789abcdef0", "ipPermissions": camel([SSH])}
    found = record("AuthorizeSecurityGroupIngress", params, {"_return": True})
    change = read_change({**found, "eventID": "", "eventTime": ""})
    assert (change["eventId"], change["eventTime"]) == (None, None)


def test_the_groups_other_events_in_history_are_passed_over(ec2, group_id, history):
    """Event history by the group's ID also holds its creation and its tags."""
    created = authorize(ec2, group_id, [tcp(5432, 5432)])
    (item,) = items_of(created)
    rule_id = item["securityGroupRuleId"]
    wide = {**WIDENED, "FromPort": 5432, "ToPort": 5432}
    event = modify(ec2, group_id, {rule_id: wide}, identity=BOB)
    tagged = record(
        "CreateTags",
        {
            "resourcesSet": {"items": [{"resourceId": group_id}]},
            "tagSet": {"items": [{"key": "team", "value": "db"}]},
        },
        {"_return": True},
    )
    group_made = record(
        "CreateSecurityGroup",
        {"groupName": "web", "groupDescription": "web"},
        {"_return": True, "groupId": group_id},
    )
    history.add_response("lookup_events", lookup([tagged, created, group_made]))
    result = run(event)
    assert result["rules"] == [
        "tcp 5432 from 0.0.0.0/0, restored to tcp 5432 from 10.70.0.0/16"
    ]
    assert now_by_id(ec2, group_id)[rule_id]["CidrIpv4"] == "10.70.0.0/16"


@pytest.mark.parametrize("entry", [{"cidr": "192.0.2.77/24"}, {"cidrWithin": "192.0.2.77/16"}])
def test_an_allowed_cidr_written_with_host_bits_is_its_network(
    ec2, group_id, conditions, entry
):
    conditions(ALLOWED_RULES=[{"isEgress": False, **entry}])
    check_conditions()  # accepted at load, as the network it names
    partner = {**SSH, "FromPort": 2222, "ToPort": 2222}
    partner["IpRanges"] = [{"CidrIp": "192.0.2.0/24"}]
    result = run(authorize(ec2, group_id, [partner, SSH]))
    assert result["keptRules"] == ["tcp 2222 from 192.0.2.0/24"]
    assert result["rules"] == ["tcp 22 from 0.0.0.0/0"]
    assert (False, "tcp", 2222, 2222, "192.0.2.0/24") in rule_set(ec2, group_id)
    assert OPEN not in rule_set(ec2, group_id)


@pytest.mark.parametrize(("length", "decision"), [(255, "reverted"), (256, "unreadable")])
def test_a_referenced_group_name_is_at_most_255_characters(ec2, calls, length, decision):
    name = "n" * length
    app = ec2.create_security_group(GroupName="app", Description="app")["GroupId"]
    by_name = {**PORT_5432, "UserIdGroupPairs": [{"GroupName": name}]}
    if length <= 255:  # in the default VPC, where a group may be named as a source
        ec2.create_security_group(GroupName=name, Description="d")
        event = authorize(ec2, app, [by_name], modern=False)
    else:
        params = {"groupId": app, "ipPermissions": camel([by_name])}
        event = record("AuthorizeSecurityGroupIngress", params, {"_return": True})
    calls.clear()
    result = run(event)
    assert result["decision"] == decision
    assert not [r for r in rules_of(ec2, app) if not r["IsEgress"]]
    if length > 255:
        assert calls == []


def source(kind, value):
    found = {"isEgress": False, "ipProtocol": "tcp", "fromPort": 22, "toPort": 22}
    if kind == "group":
        return {**found, "referencedGroupInfo": {"groupId": value}}
    return {**found, kind: value}


@pytest.mark.parametrize(
    ("new", "old", "wider"),
    [
        (
            source("cidrIpv4", "10.0.0.0/8"),
            source("prefixListId", "pl-0123abcd"),
            True,
        ),
        (
            source("cidrIpv4", "10.0.0.0/8"),
            source("group", "sg-0123456789abcdef0"),
            True,
        ),
        (
            source("group", "sg-0123456789abcdef0"),
            source("cidrIpv4", "0.0.0.0/0"),
            True,
        ),
        (
            source("group", "sg-0123456789abcdef1"),
            source("group", "sg-0123456789abcdef0"),
            True,
        ),
        (
            source("group", "sg-0123456789abcdef0"),
            source("group", "sg-0123456789abcdef0"),
            False,
        ),
    ],
    ids=["cidr-over-list", "cidr-over-group", "group-over-cidr", "other-group", "same"],
)
def test_an_edit_to_another_kind_of_source_widens(new, old, wider):
    assert widens(new, old) is wider


@pytest.mark.parametrize(
    ("entry", "kept"),
    [
        ({"fromPort": 0, "toPort": 443, "cidr": "0.0.0.0/0"}, False),
        ({"ipProtocol": "47", "fromPort": 0, "toPort": 65535}, True),
    ],
    ids=["some-ports", "every-port"],
)
@pytest.mark.parametrize("ports", ["-1", "absent"])
def test_a_protocol_without_ports_opens_them_all(
    ec2, group_id, conditions, entry, kept, ports
):
    """A rule of protocol 47 (GRE) has no ports (-1, or none in the record): it opens
    every port, which only an entry of every port covers."""
    conditions(ALLOWED_RULES=[entry])
    before = rule_set(ec2, group_id)
    gre = {**ALL_TRAFFIC, "IpProtocol": "47", "FromPort": -1, "ToPort": -1}
    event = authorize(ec2, group_id, [gre])
    if ports == "absent":  # moto cannot make such a rule: the record says so alone
        (item,) = items_of(event)
        del item["fromPort"], item["toPort"]
    result = run(event)
    assert result["decision"] == ("kept" if kept else "reverted")
    assert ((False, "47", -1, -1, "0.0.0.0/0") in rule_set(ec2, group_id)) is kept
    if not kept:
        assert rule_set(ec2, group_id) == before


@pytest.mark.parametrize(
    "entry",
    [
        {"ipProtocol": "icmp", "fromPort": 0, "toPort": -1},
        {"ipProtocol": "icmp", "fromPort": -1, "toPort": 0},
    ],
    ids=["type-0", "code-0"],
)
def test_an_icmp_rule_without_type_and_code_is_every_type_and_code(
    ec2, group_id, conditions, entry
):
    conditions(ALLOWED_RULES=[{**entry, "cidr": "0.0.0.0/0"}])
    before = rule_set(ec2, group_id)
    echo = {**ALL_TRAFFIC, "IpProtocol": "icmp", "FromPort": 8, "ToPort": -1}
    event = authorize(ec2, group_id, [echo])
    (item,) = items_of(event)
    del item["fromPort"], item["toPort"]  # moto cannot make an ICMP rule without them
    result = run(event)
    assert result["rules"] == ["icmp from 0.0.0.0/0"]
    assert rule_set(ec2, group_id) == before


@pytest.mark.parametrize("description", ["reviewed: CHG-1234", None])
def test_should_revert_sees_the_entries_added_as_the_record_has_them(
    ec2, office, conditions, description
):
    event = add_entries(ec2, office, ["0.0.0.0/0"])
    entry = event["requestParameters"]["ModifyManagedPrefixListRequest"]["AddEntry"]
    if description:
        entry["Description"] = description
    else:
        del entry["Description"]
    seen = [{"cidr": "0.0.0.0/0", **({"description": description} if description else {})}]
    conditions(should_revert=lambda change: change["prefixList"]["added"] != seen)
    assert run(event)["decision"] == "kept"
    assert "0.0.0.0/0" in entries_of(ec2, office)


@pytest.mark.parametrize(
    ("first_by", "allowed", "old_value"),
    [
        ("bob", [], "10.50.0.0/16"),
        ("member-role-name", [], "10.50.0.0/16"),
        ("bob", [{"cidrWithin": "10.0.0.0/8"}], "10.99.0.0/16"),
        ("the-guardrail", [], "10.99.0.0/16"),
    ],
    ids=["bob", "member-role-name", "an-allowed-value", "the-guardrails-own"],
)
def test_an_earlier_edit_is_the_old_value_only_if_approved(
    ec2, group_id, as_the_function, history, conditions, first_by, allowed, old_value
):
    """A rule created at 10.50.0.0/16, edited to 10.99.0.0/16, then by Bob to the world:
    it goes back to the first edit's value only if that edit was approved (a value the
    conditions allow, or the guardrail's own), else to the value it was created with.
    Its own session, once seen, teaches the function its ARN (GetCallerIdentity), and the
    member role's session is its own in a member account only (here anyone allowed to
    create roles could name one so): neither makes another's edit approved."""
    conditions(MEMBER_ROLE_NAME="sg-guardrail-member", ALLOWED_RULES=allowed)
    bastion_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    same = {**WIDENED, "CidrIpv4": "192.0.2.0/24"}
    own = modify(ec2, group_id, {bastion_id: same}, identity=as_the_function)
    assert run(own)["reason"] == "made by this guardrail itself"
    assert lambda_function._own_arn == as_the_function["arn"]
    created = authorize(ec2, group_id, [tcp(9000, 9000, "10.50.0.0/16")])
    (item,) = items_of(created)
    rule_id = item["securityGroupRuleId"]
    edited = {**WIDENED, "FromPort": 9000, "ToPort": 9000, "CidrIpv4": "10.99.0.0/16"}
    identity = {
        "bob": BOB,
        "member-role-name": assumed_role("sg-guardrail-member", "sg-guardrail"),
        "the-guardrail": as_the_function,
    }[first_by]
    first = modify(ec2, group_id, {rule_id: edited}, identity=identity)
    second = modify(
        ec2, group_id, {rule_id: {**edited, "CidrIpv4": "0.0.0.0/0"}}, identity=BOB
    )
    history.add_response("lookup_events", lookup([second, first, created]))
    result = run(second)
    assert result["rules"] == [
        f"tcp 9000 from 0.0.0.0/0, restored to tcp 9000 from {old_value}"
    ]
    assert (False, "tcp", 9000, 9000, old_value) in rule_set(ec2, group_id)


def test_a_late_addition_already_gone_says_nothing_was_left_to_undo(ec2, group_id):
    event = authorize(ec2, group_id, [SSH])
    ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=[SSH])
    result = run(late(event, 1800))
    assert (result["decision"], result["reason"]) == (
        "already-gone",
        "nothing left to undo",
    )


@pytest.mark.parametrize(
    ("name", "body", "unreadable"),
    [
        (
            "ModifyManagedPrefixList",
            {"AddEntry": {"Cidr": "0.0.0.0/0"}, "PrefixListId": "pl-office"},
            "entries ['0.0.0.0/0'] added to an unreadable PrefixListId",
        ),
        pytest.param(
            "RestoreManagedPrefixListVersion",
            {
                "PrefixListId": "pl-office",
                "PreviousVersion": "1",
                "CurrentVersion": "2",
            },
            "a prefix list restored, its PrefixListId unreadable",
        ),
        pytest.param(
            "RestoreManagedPrefixListVersion",
            {"PrefixListId": "pl-0123456789abcdef0", "PreviousVersion": "latest"},
            "pl-0123456789abcdef0 restored from an unreadable version",
        ),
    ],
    ids=["modify", "restore", "restore-version"],
)
def test_a_prefix_list_change_that_cannot_be_read_is_reported_and_never_sent(
    aws, calls, name, body, unreadable
):
    result = run(record(name, {f"{name}Request": body}, None))
    assert (result["decision"], result.get("unreadable")) == (
        "unreadable",
        [unreadable],
    )
    assert calls == []


@pytest.mark.parametrize("group", [None, 7, "missing"])
def test_a_rule_set_item_without_a_readable_group_id_is_of_the_requests_group(
    ec2, group_id, group
):
    before = rule_set(ec2, group_id)
    event = authorize(ec2, group_id, [SSH])
    (item,) = items_of(event)
    if group == "missing":
        del item["groupId"]
    else:
        item["groupId"] = group
    result = run(event)
    assert (result["decision"], result["rules"]) == (
        "reverted",
        ["tcp 22 from 0.0.0.0/0"],
    )
    assert rule_set(ec2, group_id) == before


def test_a_late_rule_without_ports_in_its_record_is_the_rule_of_no_ports_now(ec2, group_id):
    """AWS describes a rule of protocol 47 with ports -1; the record may carry none."""
    before = rule_set(ec2, group_id)
    gre = {**ALL_TRAFFIC, "IpProtocol": "47", "FromPort": -1, "ToPort": -1}
    event = authorize(ec2, group_id, [gre])
    (item,) = items_of(event)
    del item["fromPort"], item["toPort"]
    result = run(late(event, 1800))
    assert (result["decision"], result["rules"]) == (
        "reverted",
        ["protocol 47, all ports from 0.0.0.0/0"],
    )
    assert rule_set(ec2, group_id) == before


@pytest.mark.parametrize(("length", "sent"), [(255, True), (256, False)])
def test_an_old_description_goes_back_only_if_aws_would_take_it(
    ec2, group_id, history, length, sent
):
    """AWS takes rule descriptions of up to 255 characters (moto takes longer ones): a
    longer one in a record is not sent back, and the rule keeps the one it has."""
    old = "d" * length
    described = {
        **PORT_5432,
        "IpRanges": [{"CidrIp": "10.70.0.0/16", "Description": old}],
    }
    created = authorize(ec2, group_id, [described])
    (item,) = items_of(created)
    rule_id = item["securityGroupRuleId"]
    wide = {**PORT_5432, "CidrIpv4": "0.0.0.0/0", "Description": "opened"}
    event = modify(ec2, group_id, {rule_id: wide}, identity=BOB)
    history.add_response("lookup_events", lookup([created]))
    assert run(event)["decision"] == "reverted"
    now = now_by_id(ec2, group_id)[rule_id]
    assert (now["CidrIpv4"], now["Description"]) == (
        "10.70.0.0/16",
        old if sent else "opened",
    )


@pytest.mark.parametrize(("protocol", "readable"), [("255", True), ("256", False)])
def test_protocol_numbers_go_up_to_255(ec2, group_id, conditions, protocol, readable):
    conditions(ALLOWED_RULES=[{"cidr": "0.0.0.0/0"}])
    before = rule_set(ec2, group_id)
    ports = {"FromPort": -1, "ToPort": -1}
    event = authorize(ec2, group_id, [{**ALL_TRAFFIC, "IpProtocol": "255", **ports}])
    items_of(event)[0]["ipProtocol"] = protocol  # 256: no such protocol, nor rule
    result = run(event)
    if readable:
        assert result["decision"] == "kept"
        assert (False, "255", -1, -1, "0.0.0.0/0") in rule_set(ec2, group_id)
    else:
        assert result["rules"][0].startswith("rule sgr-")
        assert rule_set(ec2, group_id) == before


@pytest.mark.parametrize("empty", ["missing", "null"])
def test_a_config_item_without_its_empty_lists_still_gives_the_old_value(
    ec2, group_id, conditions, empty
):
    """Config items of other ages leave an empty source list out, or write null."""
    conditions(RESTORE_FROM_CONFIG=True)
    rule_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    event = modify(ec2, group_id, {rule_id: dict(WIDENED)}, identity=BOB)

    def permission(port, cidr, description):
        found = {
            "fromPort": port,
            "toPort": port,
            "ipProtocol": "tcp",
            "ipRanges": [cidr],
            "ipv4Ranges": [{"cidrIp": cidr, "description": description}],
        }
        if empty == "null":
            found |= {
                "ipv6Ranges": None,
                "prefixListIds": None,
                "userIdGroupPairs": None,
            }
        return found

    configuration = {
        "groupId": group_id,
        "ipPermissions": [
            permission(443, "10.0.0.0/8", "internal HTTPS"),
            permission(22, "192.0.2.0/24", "bastion"),
        ],
    }
    item = {
        "configurationItemCaptureTime": datetime.datetime(2026, 11, 1),
        "configurationItemStatus": "OK",
        "resourceType": "AWS::EC2::SecurityGroup",
        "resourceId": group_id,
        "configuration": json.dumps(configuration),
    }
    # Event history, read to see that the group did not change after the item was captured.
    EventHistory().serve(lambda_function.client("cloudtrail", "us-east-1"))
    with Stubber(lambda_function.client("config", "us-east-1")) as stub:
        stub.add_response("get_resource_config_history", {"configurationItems": [item]})
        result = run(event)
    assert result["rules"] == ["tcp 22 from 0.0.0.0/0, restored to tcp 22 from 192.0.2.0/24"]
    assert bastion_of(ec2, group_id)["SecurityGroupRuleId"] == rule_id


def test_a_record_without_its_region_is_read_in_the_envelopes(ec2, group_id):
    """EventBridge's envelope names the region; a record without awsRegion is undone there."""
    before = rule_set(ec2, group_id)
    event = eventbridge(authorize(ec2, group_id, [SSH]))
    del event["detail"]["awsRegion"]
    result = lambda_handler(event, CONTEXT)
    assert (result["decision"], result["region"]) == ("reverted", "us-east-1")
    assert rule_set(ec2, group_id) == before


def test_an_egress_rule_named_by_group_name_alone_is_unreadable_never_looked_up(ec2, calls):
    """Egress rules exist in VPCs only, where a group is named by its ID: a record that names
    an egress call's group by name alone is odd, reported, and no group of that name (here
    the default VPC's "default") is looked up or touched."""
    (default,) = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"]
    event = authorize(ec2, default["GroupId"], [SSH], egress=True, modern=False)
    params = event["requestParameters"]
    params["groupName"] = params.pop("groupId") and "default"
    before = rules_of(ec2, default["GroupId"])
    result = run(event)
    assert result["decision"] == "unreadable"
    assert "no readable groupId or groupName" in result["unreadable"]
    assert calls == []
    assert rules_of(ec2, default["GroupId"]) == before


def test_the_tags_a_group_was_created_with_are_its_own_specifications_only():
    """tagSpecificationSet items that are not the security group's (another resource type,
    or no object at all) give it no tag, and do not stop the reading."""
    params = {
        "tagSpecificationSet": {
            "items": [
                "odd",
                {"resourceType": "vpc", "tags": [{"key": "guardrail", "value": "off"}]},
                {
                    "resourceType": "security-group",
                    "tags": {"items": [{"key": "guardrail", "value": "on"}]},
                },
            ]
        }
    }
    assert lambda_function.created_with(params) == {"guardrail": "on"}


# ---- A late event naming more than 200 rules ------------------------------------------------
# (an attacker's review: rules_by_id put every rule ID in one filter, which EC2 refuses past
# 200 values, so such an event ended in error on every try and no sweep could close it.)


def test_a_late_event_with_201_rules_is_read_200_ids_a_call_and_revoked_whole(
    ec2, group_id, monkeypatch
):
    from botocore.exceptions import ClientError
    from moto.ec2.models.security_groups import SecurityGroupBackend

    # A raised rules-per-group quota (moto holds the default, 60).
    monkeypatch.setattr(
        SecurityGroupBackend,
        "_verify_group_will_respect_rule_count_limit",
        lambda *_, **__: None,
    )
    before = rule_set(ec2, group_id)
    sources = [{"CidrIp": f"10.{n // 250}.{n % 250}.0/24"} for n in range(201)]
    event = authorize(ec2, group_id, [{**SSH, "IpRanges": sources}])
    asked = []

    def like_ec2(params, **_):  # EC2's limit: 200 values a filter (its API reference)
        for given in params.get("Filters", []):
            asked.append(len(given["Values"]))
            if len(given["Values"]) > 200:
                error = {"Code": "FilterLimitExceeded", "Message": "at most 200"}
                raise ClientError({"Error": error}, "DescribeSecurityGroupRules")

    lambda_function.client("ec2", "us-east-1").meta.events.register(
        "provide-client-params.ec2.DescribeSecurityGroupRules", like_ec2
    )
    result = lambda_handler(eventbridge(late(event, 600)), CONTEXT)
    assert result["decision"] == "reverted"
    assert len(result["rules"]) == 201
    assert asked == [200, 1]
    assert rule_set(ec2, group_id) == before


# ---- Survivors of run 8 (docs/mutation.md) --------------------------------------------------


@pytest.mark.parametrize("account", [None, 42, "12345"], ids=["missing", "number", "short"])
def test_a_record_whose_account_cannot_be_read_is_told_by_name_not_raised(
    ec2, group_id, conditions, account
):
    """No account: nothing can be undone (nowhere to act), and the exemptions are still
    asked, with the pattern that names {account} matching nothing."""
    conditions(EXEMPT_PRINCIPALS=["arn:aws:iam::{account}:role/NetworkAdmin"])
    event = authorize(ec2, group_id, [SSH])
    event["recipientAccountId"] = account
    result = lambda_handler(event, CONTEXT)  # a bare record: no envelope's account
    assert result["decision"] == "unreadable"
    assert any("account" in problem for problem in result["unreadable"])


@pytest.mark.parametrize(
    "pattern, kept",
    [
        ("arn:aws:iam::{account}:role/NetworkAdmin", True),  # that account's role
        ("arn:aws:iam::123456789012:role/NetworkAdmin", True),  # named outright
        ("arn:aws:iam::210987654321:role/NetworkAdmin", False),  # another account's
    ],
)
def test_an_exemption_matches_in_the_changes_own_account(
    ec2, group_id, conditions, pattern, kept
):
    conditions(EXEMPT_PRINCIPALS=[pattern])
    event = authorize(ec2, group_id, [SSH], identity=assumed_role("NetworkAdmin", "carol"))
    result = run(event)
    assert (result["decision"] == "kept") is kept
    assert (OPEN in rule_set(ec2, group_id)) is kept


def test_an_edit_aws_config_has_no_item_for_gives_no_old_value(ec2, group_id, conditions):
    """GetResourceConfigHistory may answer with no item (the group not recorded): no old
    value, so the edited rule is revoked (fail closed), never an error."""
    conditions(RESTORE_FROM_CONFIG=True)
    rule_id = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    event = modify(ec2, group_id, {rule_id: dict(WIDENED)}, identity=BOB)
    with Stubber(lambda_function.client("config", "us-east-1")) as stub:
        stub.add_response("get_resource_config_history", {"configurationItems": []})
        result = run(event)
    assert result["decision"] == "reverted"
    assert "no source gave the old value" in result["reason"]
    assert rule_id not in [r["SecurityGroupRuleId"] for r in rules_of(ec2, group_id)]


def test_a_kept_tag_change_is_told_in_its_own_words(ec2, group_id, conditions):
    """keptRules names what the tag call did: its tags, or "all" for a DeleteTags that
    named none (it deletes every user tag)."""
    conditions(ONLY_TAGGED={"guardrail": "on"})
    resources = {"resourcesSet": {"items": [{"resourceId": group_id}]}}
    some = {**resources, "tagSet": {"items": [{"key": "team", "value": "web"}]}}
    result = run(record("CreateTags", some, {"_return": True}))
    assert result["keptRules"] == [f"tags team=web on {group_id}"]
    conditions(EXEMPT_PRINCIPALS=["arn:aws:iam::123456789012:role/NetworkAdmin"])
    every = record("DeleteTags", resources, {"_return": True})
    every["userIdentity"] = assumed_role("NetworkAdmin", "carol")
    assert run(every)["keptRules"] == [f"tags all on {group_id}"]
