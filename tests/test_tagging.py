"""Tags that would switch the guard off: removing an ONLY_TAGGED (or lock) tag, or adding a
NEVER_TAGGED one, is undone on moto. Records in the layout of ../shared/cloudtrail-format.md
(resourcesSet and tagSet item lists)."""

from __future__ import annotations

import pytest
from cloudtrail import (
    ACCOUNT,
    SSH,
    assumed_role,
    authorize,
    eventbridge,
    record,
    rule_set,
)
from conftest import CONTEXT

from lambda_function import lambda_handler


def tags_of(ec2, group_id):
    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    return {tag["Key"]: tag["Value"] for tag in group.get("Tags", [])}


def tag_record(name, group_id, tags, identity=None):
    items = [
        {"key": k, **({"value": v} if v is not None else {})} for k, v in tags.items()
    ]
    params = {
        "resourcesSet": {"items": [{"resourceId": group_id}]},
        "tagSet": {"items": items},
    }
    return record(name, params, {"_return": True}, identity=identity)


@pytest.fixture
def guarded(ec2, group_id, conditions):
    conditions(ONLY_TAGGED={"guardrail": "on"}, NEVER_TAGGED={"guardrail-off": None})
    ec2.create_tags(Resources=[group_id], Tags=[{"Key": "guardrail", "Value": "on"}])
    return group_id


def test_the_guard_tag_removed_is_put_back_and_the_group_stays_guarded(ec2, guarded):
    """On the old code: delete guardrail=on, then open SSH -> kept."""
    ec2.delete_tags(Resources=[guarded], Tags=[{"Key": "guardrail"}])
    result = lambda_handler(
        eventbridge(tag_record("DeleteTags", guarded, {"guardrail": None})), CONTEXT
    )
    assert result["decision"] == "reverted"
    assert result["rules"] == [f"tag guardrail=on put back on {guarded}"]
    assert tags_of(ec2, guarded)["guardrail"] == "on"
    opened = lambda_handler(eventbridge(authorize(ec2, guarded, [SSH])), CONTEXT)
    assert opened["decision"] == "reverted"


def test_the_guard_tag_given_another_value_is_set_back(ec2, guarded):
    ec2.create_tags(Resources=[guarded], Tags=[{"Key": "guardrail", "Value": "off"}])
    lambda_handler(tag_record("CreateTags", guarded, {"guardrail": "off"}), CONTEXT)
    assert tags_of(ec2, guarded)["guardrail"] == "on"


def test_a_never_tagged_tag_added_is_taken_off(ec2, guarded):
    ec2.create_tags(Resources=[guarded], Tags=[{"Key": "guardrail-off", "Value": "1"}])
    result = lambda_handler(
        tag_record("CreateTags", guarded, {"guardrail-off": "1"}), CONTEXT
    )
    assert result["rules"] == [f"tag guardrail-off taken off {guarded}"]
    assert "guardrail-off" not in tags_of(ec2, guarded)


def test_other_tag_changes_are_left_alone(ec2, guarded):
    ec2.create_tags(Resources=[guarded], Tags=[{"Key": "team", "Value": "web"}])
    result = lambda_handler(tag_record("CreateTags", guarded, {"team": "web"}), CONTEXT)
    assert (result["decision"], result["reason"]) == (
        "kept",
        "the tag change does not switch the guard off",
    )
    assert tags_of(ec2, guarded)["team"] == "web"


def test_an_exempt_principal_may_change_the_guard_tags(ec2, guarded, conditions):
    conditions(EXEMPT_PRINCIPALS=[f"arn:aws:iam::{ACCOUNT}:role/NetworkAdmin"])
    ec2.delete_tags(Resources=[guarded], Tags=[{"Key": "guardrail"}])
    admin = assumed_role("NetworkAdmin", "carol")
    event = tag_record("DeleteTags", guarded, {"guardrail": "on"}, identity=admin)
    assert lambda_handler(event, CONTEXT)["decision"] == "kept"
    assert "guardrail" not in tags_of(ec2, guarded)


def test_without_tag_conditions_tag_changes_do_nothing(ec2, group_id, calls):
    result = lambda_handler(
        tag_record("DeleteTags", group_id, {"guardrail": None}), CONTEXT
    )
    assert result["decision"] == "kept"
    assert calls == []
    assert rule_set(ec2, group_id)
