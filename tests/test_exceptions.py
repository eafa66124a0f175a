"""Exceptions that expire: a rule an approver tags sg-guardrail:expires (and :reason) is kept
until then, and the sweep revokes it after; everyone else's tags keep nothing and revoke
nothing. Judged by what moto holds afterwards.

Records: Authorize* with TagSpecifications are recorded as requestParameters.tagSpecification
Set {"items": [{"resourceType": "security-group-rule", "tags": [{"key", "value"}]}]}, the
layout CloudTrail gives other EC2 calls' TagSpecifications (RunInstances records read by public
parsers; tests/cloudtrail.py create_group) and an assumption for these calls: no real record of
a tagged Authorize was found. The {"items": [...]} form of "tags" is read too (test below).
CreateTags/DeleteTags on sgr-… rules: resourcesSet and tagSet item lists, as on groups
(../shared/cloudtrail-format.md). Event history is cloudtrail.EventHistory, in the shape the
CloudTrail API reference documents for LookupEvents (Events[].CloudTrailEvent, a JSON string,
newest first), looked up by EventId, EventName and ResourceName (the group of a rule call,
each resource a tag call names)."""

from __future__ import annotations

import copy
import datetime
import json

import pytest
from cloudtrail import (
    ALICE,
    HISTORY,
    SSH,
    assumed_role,
    authorize,
    eventbridge,
    rules_of,
    tag,
)
from conftest import CONTEXT, bastion_of

import lambda_function
from lambda_function import EXPIRES_KEY, REASON_KEY, ConditionsError, lambda_handler

APPROVER_ROLE = "arn:aws:iam::123456789012:role/SecurityApprover"
CAROL = assumed_role("SecurityApprover", "carol")  # an approver, through her role
VENDOR = {**SSH, "IpRanges": [{"CidrIp": "203.0.113.7/32"}]}  # 22 from the vendor


def utc(delta: datetime.timedelta = datetime.timedelta(0)) -> str:
    moment = datetime.datetime.now(datetime.UTC) + delta
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


HOURS = datetime.timedelta(hours=1)


def grant(hours: float = 2, reason: str = "vendor patch window, ticket 4711") -> dict:
    return {EXPIRES_KEY: utc(hours * HOURS), REASON_KEY: reason}


@pytest.fixture
def approvers(conditions, history):
    conditions(APPROVERS=[APPROVER_ROLE], MAX_EXCEPTION_HOURS=24)
    return history


def vendor_rule(ec2, group_id):
    return [r for r in rules_of(ec2, group_id) if r.get("CidrIpv4") == "203.0.113.7/32"]


def rule_tags(ec2, rule_id):
    (rule,) = ec2.describe_security_group_rules(SecurityGroupRuleIds=[rule_id])[
        "SecurityGroupRules"
    ]
    return {t["Key"]: t["Value"] for t in rule.get("Tags", [])}


def sweep():
    return lambda_handler({"sweep": {"minutes": 15}}, CONTEXT)


def aged(found: dict, hours: float) -> dict:
    """The record as if the call had been made `hours` ago (in event history too)."""
    moment = datetime.datetime.now(datetime.UTC) - hours * HOURS
    found["eventTime"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return found


# ---- the switch, and the common path ---------------------------------------------------------


def test_off_by_default_a_tagged_rule_is_reverted_in_one_call(ec2, group_id, calls):
    found = authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=grant())
    result = lambda_handler(eventbridge(found), CONTEXT)
    assert result["decision"] == "reverted"
    assert vendor_rule(ec2, group_id) == []
    assert calls == ["RevokeSecurityGroupIngress"]


def test_with_approvers_an_untagged_rule_still_costs_one_call(ec2, group_id, approvers, calls):
    found = authorize(ec2, group_id, [VENDOR], identity=CAROL)
    assert lambda_handler(eventbridge(found), CONTEXT)["decision"] == "reverted"
    assert calls == ["RevokeSecurityGroupIngress"]
    assert approvers.lookups == []


# ---- granting --------------------------------------------------------------------------------


def test_an_approvers_grant_keeps_the_rule_on_event_historys_word_and_tells(
    ec2, group_id, approvers, inbox
):
    found = authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=grant())
    result = lambda_handler(eventbridge(found), CONTEXT)
    assert result["decision"] == "kept"
    (_rule,) = vendor_rule(ec2, group_id)
    assert result["exception"] == result["reason"]
    assert "kept until " in result["reason"]
    assert f"granted by {CAROL['arn']}" in result["reason"]
    assert "because 'vendor patch window, ticket 4711'" in result["reason"]
    assert [lookup["LookupAttributes"] for lookup in approvers.lookups] == [
        [{"AttributeKey": "EventId", "AttributeValue": found["eventID"]}]
    ]
    (told,) = inbox()
    assert told["Subject"].startswith("Kept under an exception")
    assert "kept until" in told["Message"]


def test_the_tags_read_in_the_items_layout_too(ec2, group_id, approvers):
    found = authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=grant())
    (spec,) = found["requestParameters"]["tagSpecificationSet"]["items"]
    spec["tags"] = {"items": spec["tags"]}
    assert lambda_handler(eventbridge(found), CONTEXT)["decision"] == "kept"
    assert vendor_rule(ec2, group_id)


def test_until_event_history_holds_the_call_nothing_is_kept_for_good_lambda_retries(
    ec2, group_id, approvers, inbox
):
    """Confirm-first, as for put-backs: the rule is neither kept nor revoked on the message;
    the event fails for Lambda's retry (told), and is kept once history holds it."""
    found = authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=grant())
    HISTORY.remove(found)
    with pytest.raises(lambda_function.Unconfirmed):
        lambda_handler(eventbridge(found), CONTEXT)
    (told,) = inbox()
    assert "waiting for CloudTrail event history" in told["Message"]
    HISTORY.append(found)
    assert lambda_handler(eventbridge(found), CONTEXT)["decision"] == "kept"
    assert vendor_rule(ec2, group_id)


def test_a_forged_message_naming_an_approver_keeps_nothing(ec2, group_id, approvers):
    """Alice adds the rule and its tags; a message claims Carol did, under Alice's event ID.
    Event history holds Alice's record: decided anew on it, the rule goes."""
    real = authorize(ec2, group_id, [VENDOR], identity=ALICE, tags=grant())
    forged = copy.deepcopy(real)
    forged["userIdentity"] = CAROL
    result = lambda_handler(eventbridge(forged), CONTEXT)
    assert result["decision"] == "reverted"
    assert "not in APPROVERS" in result["reason"]
    assert vendor_rule(ec2, group_id) == []


def test_a_forged_message_with_an_id_of_its_own_waits_and_the_real_event_reverts(
    ec2, group_id, approvers
):
    real = authorize(ec2, group_id, [VENDOR], identity=ALICE, tags=grant())
    forged = {**copy.deepcopy(real), "userIdentity": CAROL, "eventID": "f" * 36}
    with pytest.raises(lambda_function.Unconfirmed):
        lambda_handler(eventbridge(forged), CONTEXT)
    assert lambda_handler(eventbridge(real), CONTEXT)["decision"] == "reverted"
    assert vendor_rule(ec2, group_id) == []


def test_a_message_claiming_tags_the_rule_does_not_carry_keeps_nothing(
    ec2, group_id, approvers
):
    untagged = authorize(ec2, group_id, [VENDOR], identity=CAROL)
    claimed = copy.deepcopy(untagged)
    claimed["requestParameters"]["tagSpecificationSet"] = {
        "items": [
            {
                "resourceType": "security-group-rule",
                "tags": [{"key": k, "value": v} for k, v in grant().items()],
            }
        ]
    }
    result = lambda_handler(eventbridge(claimed), CONTEXT)
    assert result["decision"] == "reverted"
    assert "do not carry the tags" in result["reason"]
    assert vendor_rule(ec2, group_id) == []
    assert approvers.lookups == []  # refused before event history is asked


@pytest.mark.parametrize(
    ("tags", "says"),
    [
        (grant(hours=-1), "is past"),
        (grant(hours=25), "more than MAX_EXCEPTION_HOURS (24)"),
        ({**grant(), EXPIRES_KEY: "tomorrow"}, "is not a UTC time"),
        ({**grant(), EXPIRES_KEY: utc(HOURS).replace("Z", "+02:00")}, "UTC time"),
        ({**grant(), EXPIRES_KEY: "2026-02-30T10:00:00Z"}, "is not a UTC time"),
        ({EXPIRES_KEY: utc(HOURS)}, f"needs its {REASON_KEY} tag"),
    ],
)
def test_a_time_unreadable_past_or_too_far_keeps_nothing_and_is_told(
    ec2, group_id, approvers, inbox, tags, says
):
    found = authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=tags)
    result = lambda_handler(eventbridge(found), CONTEXT)
    assert result["decision"] == "reverted"
    assert says in result["exception"]
    assert vendor_rule(ec2, group_id) == []
    (told,) = inbox()
    assert says in told["Message"]


def test_the_most_hours_count_from_the_grants_time_not_from_now(ec2, group_id, approvers):
    """A grant made 20 hours ago (its event retried, or replayed) for 23 hours from now is 43
    hours after the grant: no exception, although it is within 24 hours of now."""
    found = aged(authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=grant(hours=23)), 20)
    result = lambda_handler(eventbridge(found), CONTEXT)
    assert result["decision"] == "reverted"
    assert "more than MAX_EXCEPTION_HOURS" in result["exception"]


def test_a_grant_by_anyone_else_keeps_nothing(ec2, group_id, approvers):
    dave = assumed_role("SecurityApprover-not", "dave")
    found = authorize(ec2, group_id, [VENDOR], identity=dave, tags=grant())
    result = lambda_handler(eventbridge(found), CONTEXT)
    assert result["decision"] == "reverted"
    assert "not in APPROVERS" in result["reason"]


def test_exceptions_never_apply_to_a_locked_group(ec2, group_id, approvers, conditions):
    conditions(LOCKED_GROUP_IDS=[group_id])
    found = authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=grant())
    result = lambda_handler(eventbridge(found), CONTEXT)
    assert result["decision"] == "reverted"
    assert "locked" in result["exception"]
    assert vendor_rule(ec2, group_id) == []


def test_an_exempt_principal_stays_as_it_is(ec2, group_id, approvers, conditions):
    conditions(EXEMPT_PRINCIPALS=[ALICE["arn"]])
    found = authorize(ec2, group_id, [VENDOR], identity=ALICE, tags=grant())
    result = lambda_handler(eventbridge(found), CONTEXT)
    assert result["decision"] == "kept"
    assert result["reason"] == f"exempt principal {ALICE['arn']}"


def test_a_dry_run_keeps_nothing_it_has_not_confirmed(ec2, group_id, approvers, monkeypatch):
    monkeypatch.setenv("DRY_RUN", "true")
    found = authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=grant())
    result = lambda_handler(eventbridge(found), CONTEXT)
    assert result["decision"] == "dry-run"
    assert "once event history confirms it" in result["exception"]
    assert vendor_rule(ec2, group_id)  # a dry run changes nothing


# ---- expiry: the sweep -----------------------------------------------------------------------


def test_the_sweep_revokes_an_expired_exception_and_tells(ec2, group_id, approvers, inbox):
    before = {r["SecurityGroupRuleId"] for r in rules_of(ec2, group_id)}
    found = authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=grant(hours=-1))
    aged(found, 3)  # granted 3 hours ago for 2 hours
    (rule,) = vendor_rule(ec2, group_id)
    result = sweep()
    assert result["decisions"] == {"reverted": 1}
    assert {r["SecurityGroupRuleId"] for r in rules_of(ec2, group_id)} == before
    (told,) = inbox()
    assert f"the exception of {rule['SecurityGroupRuleId']} expired" in told["Message"]
    assert f"granted by {CAROL['arn']}" in told["Message"]


def test_a_rule_not_yet_expired_is_left_and_nothing_is_asked_of_history(
    ec2, group_id, approvers
):
    authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=grant())
    before = len(approvers.lookups)
    sweep()
    assert vendor_rule(ec2, group_id)
    resource_lookups = [
        lookup
        for lookup in approvers.lookups[before:]
        if lookup["LookupAttributes"][0]["AttributeKey"] == "ResourceName"
    ]
    assert resource_lookups == []


def test_the_attack_a_past_time_tagged_on_a_long_held_rule_revokes_nothing(
    ec2, group_id, approvers, inbox
):
    """Anyone allowed ec2:CreateTags tags the bastion rule, held for years, with a past
    time: were the sweep to believe the tag, it would cut the bastion off. It is no
    approver's grant: the rule stays, and that is told. The tag stays too: with no
    approver's value in what event history returns, taking it off could end a real grant
    whose record was pushed out of reach (the attacker's flood of 500 calls)."""
    bastion = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    aged(tag(ec2, "CreateTags", bastion, {EXPIRES_KEY: utc(-HOURS)}), 2)
    result = sweep()
    assert bastion_of(ec2, group_id)["SecurityGroupRuleId"] == bastion
    assert EXPIRES_KEY in rule_tags(ec2, bastion)
    assert result["decisions"] == {"unreadable": 1}
    (told,) = inbox()
    assert "event history shows no approver's value: not revoked" in told["Message"]


def test_the_attack_before_event_history_holds_the_tag_revokes_nothing_and_tells(
    ec2, group_id, approvers, inbox
):
    bastion = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    HISTORY.remove(tag(ec2, "CreateTags", bastion, {EXPIRES_KEY: utc(-HOURS)}))
    result = sweep()
    assert bastion_of(ec2, group_id)["SecurityGroupRuleId"] == bastion
    assert result["decisions"] == {"unreadable": 1}
    (told,) = inbox()
    assert "event history holds no call that set it: not revoked" in told["Message"]


def test_the_attack_on_an_exception_moving_its_time_to_the_past_revokes_nothing(
    ec2, group_id, approvers
):
    """An approver's exception runs until tomorrow; Alice sets it to an hour ago. The sweep
    puts the approver's time back and leaves the rule."""
    aged(authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=grant(hours=20)), 1)
    (rule,) = vendor_rule(ec2, group_id)
    rule_id = rule["SecurityGroupRuleId"]
    approved = rule_tags(ec2, rule_id)[EXPIRES_KEY]
    aged(tag(ec2, "CreateTags", rule_id, {EXPIRES_KEY: utc(-HOURS)}), 0.5)
    sweep()
    assert vendor_rule(ec2, group_id)
    assert rule_tags(ec2, rule_id)[EXPIRES_KEY] == approved


def test_the_functions_own_put_back_in_event_history_still_ties_the_exception(
    ec2, group_id, approvers
):
    """Alice moved the time, the function put Carol's back (its own CreateTags, in event
    history too, by the function's role): the tag is still Carol's word, and the sweep
    revokes the rule when it expires."""
    carol = aged(authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=grant(hours=-1)), 3)
    (rule,) = vendor_rule(ec2, group_id)
    rule_id = rule["SecurityGroupRuleId"]
    approved = rule_tags(ec2, rule_id)[EXPIRES_KEY]
    aged(tag(ec2, "CreateTags", rule_id, {EXPIRES_KEY: utc(20 * HOURS)}), 2.5)
    own = assumed_role("sg-guardrail-function", "sg-guardrail")
    aged(tag(ec2, "CreateTags", rule_id, {EXPIRES_KEY: approved}, identity=own), 2.4)
    assert carol in HISTORY
    sweep()
    assert vendor_rule(ec2, group_id) == []


# ---- tag changes on rules --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "value"),
    [("DeleteTags", None), ("CreateTags", utc(20 * HOURS))],
    ids=["deleted", "extended"],
)
def test_an_exceptions_time_changed_by_someone_else_goes_back_to_the_approvers(
    ec2, group_id, approvers, call, value
):
    """Deleted, the rule would stay for good (the sweep finds exceptions by its time);
    extended, it would stay past the time an approver gave it."""
    authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=grant())
    (rule,) = vendor_rule(ec2, group_id)
    rule_id = rule["SecurityGroupRuleId"]
    approved = rule_tags(ec2, rule_id)[EXPIRES_KEY]
    changed = tag(ec2, call, rule_id, {EXPIRES_KEY: value})
    result = lambda_handler(eventbridge(changed), CONTEXT)
    assert result["decision"] == "reverted"
    assert "who is not in APPROVERS: undone" in result["reason"]
    assert rule_tags(ec2, rule_id)[EXPIRES_KEY] == approved


def test_a_tag_changed_again_since_is_left_to_that_change(ec2, group_id, approvers):
    """Alice's change is handled after Dave changed the tag again: Alice's event leaves
    it; Dave's own event undoes Dave's change."""
    authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=grant())
    (rule,) = vendor_rule(ec2, group_id)
    rule_id = rule["SecurityGroupRuleId"]
    approved = rule_tags(ec2, rule_id)[EXPIRES_KEY]
    by_alice = tag(ec2, "CreateTags", rule_id, {EXPIRES_KEY: utc(20 * HOURS)})
    dave = assumed_role("Developer", "dave")
    later = utc(3 * HOURS)
    by_dave = tag(ec2, "CreateTags", rule_id, {EXPIRES_KEY: later}, identity=dave)
    lambda_handler(eventbridge(by_alice), CONTEXT)
    assert rule_tags(ec2, rule_id)[EXPIRES_KEY] == later
    lambda_handler(eventbridge(by_dave), CONTEXT)
    assert rule_tags(ec2, rule_id)[EXPIRES_KEY] == approved


def test_a_tag_change_on_rules_is_undone_only_on_event_historys_word(ec2, group_id, approvers):
    bastion = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    granted = grant()
    tag(ec2, "CreateTags", bastion, granted, identity=CAROL)
    extended = utc(20 * HOURS)
    found = tag(ec2, "CreateTags", bastion, {EXPIRES_KEY: extended})  # alice's
    HISTORY.remove(found)
    with pytest.raises(lambda_function.Unconfirmed):
        lambda_handler(eventbridge(found), CONTEXT)
    assert rule_tags(ec2, bastion)[EXPIRES_KEY] == extended  # nothing on a message's word
    HISTORY.append(found)
    assert lambda_handler(eventbridge(found), CONTEXT)["decision"] == "reverted"
    assert rule_tags(ec2, bastion)[EXPIRES_KEY] == granted[EXPIRES_KEY]


def test_an_approver_tagging_a_rule_afterwards_grants_an_exception_and_tells(
    ec2, group_id, approvers, inbox
):
    bastion = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    found = tag(ec2, "CreateTags", bastion, grant(), identity=CAROL)
    result = lambda_handler(eventbridge(found), CONTEXT)
    assert result["decision"] == "kept"
    assert f"{bastion}: kept until" in result["reason"]
    assert len(inbox()) == 1
    sweep()
    assert bastion_of(ec2, group_id)  # not yet


def test_the_sweep_ends_an_exception_an_approver_tagged_afterwards(ec2, group_id, approvers):
    bastion = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    aged(tag(ec2, "CreateTags", bastion, grant(hours=-1), identity=CAROL), 3)
    sweep()
    assert [r for r in rules_of(ec2, group_id) if r["SecurityGroupRuleId"] == bastion] == []


def test_the_sweep_never_revokes_for_an_exception_in_a_locked_group(
    ec2, group_id, approvers, conditions, inbox
):
    conditions(LOCKED_GROUP_IDS=[group_id])
    bastion = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    aged(tag(ec2, "CreateTags", bastion, grant(hours=-1), identity=CAROL), 3)
    assert sweep()["decisions"] == {"unreadable": 1}
    assert bastion_of(ec2, group_id)["SecurityGroupRuleId"] == bastion
    (told,) = inbox()
    assert "in a locked group, where exceptions never apply" in told["Message"]


def test_an_approver_ending_an_exception_leaves_the_rule_and_tells(
    ec2, group_id, approvers, inbox
):
    authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=grant())
    (rule,) = vendor_rule(ec2, group_id)
    rule_id = rule["SecurityGroupRuleId"]
    ended = tag(ec2, "DeleteTags", rule_id, {EXPIRES_KEY: None}, identity=CAROL)
    result = lambda_handler(eventbridge(ended), CONTEXT)
    assert result["decision"] == "kept"
    assert "the exception ended by" in result["reason"]
    assert EXPIRES_KEY not in rule_tags(ec2, rule_id)
    assert vendor_rule(ec2, group_id)
    assert len(inbox()) == 1


def test_a_deletetags_missed_live_is_undone_by_the_sweep(ec2, group_id, approvers):
    authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=grant())
    (rule,) = vendor_rule(ec2, group_id)
    rule_id = rule["SecurityGroupRuleId"]
    tag(ec2, "DeleteTags", rule_id, {EXPIRES_KEY: None})  # its event never delivered
    sweep()
    assert EXPIRES_KEY in rule_tags(ec2, rule_id)


def test_tag_changes_on_rules_are_left_alone_when_off(ec2, group_id, history):
    bastion = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    found = tag(ec2, "CreateTags", bastion, {EXPIRES_KEY: utc(HOURS)})
    result = lambda_handler(eventbridge(found), CONTEXT)
    assert result["decision"] != "reverted"
    assert EXPIRES_KEY in rule_tags(ec2, bastion)


# ---- buffered delivery -----------------------------------------------------------------------


def test_a_batch_decides_a_grant_alone_and_keeps_it(ec2, group_id, approvers):
    found = authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=grant())
    other = authorize(ec2, group_id, [SSH])
    batch = {
        "Records": [
            {
                "eventSource": "aws:sqs",
                "messageId": str(n),
                "body": json.dumps(eventbridge(r)),
            }
            for n, r in enumerate([found, other])
        ]
    }
    assert lambda_handler(batch, CONTEXT) == {"batchItemFailures": []}
    assert vendor_rule(ec2, group_id)
    assert not [
        r
        for r in rules_of(ec2, group_id)
        if r.get("CidrIpv4") == "0.0.0.0/0" and not r["IsEgress"]
    ]


# ---- the settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (["arn:aws:iam::*:role/SecurityApprover"], "must name its account"),
        (["arn:aws:iam::12345678901?:role/SecurityApprover"], "must name its account"),
        (["arn:aws:iam::123456789012:*"], "would make everyone an approver"),
        (["cloudformation.amazonaws.com"], "is not an IAM or STS ARN"),
        (["carol"], "is not an IAM or STS ARN"),
        ("arn:aws:iam::123456789012:role/SecurityApprover", "must be a list"),
    ],
)
def test_approvers_are_checked_at_load(conditions, value, says):
    conditions(APPROVERS=value)
    with pytest.raises(ConditionsError) as raised:
        lambda_function.check_conditions()
    assert str(raised.value).startswith("CONDITIONS: APPROVERS")
    assert says in str(raised.value)


@pytest.mark.parametrize("hours", [0, 721, "24", 2.5, True])
def test_max_exception_hours_is_checked_at_load(conditions, hours):
    conditions(MAX_EXCEPTION_HOURS=hours)
    with pytest.raises(ConditionsError, match="MAX_EXCEPTION_HOURS"):
        lambda_function.check_conditions()


def test_good_approvers_pass(conditions):
    conditions(APPROVERS=[APPROVER_ROLE, "arn:aws:sts::123456789012:assumed-role/Sec/carol-*"])
    lambda_function.check_conditions()


def test_the_environment_adds_approvers(monkeypatch, conditions):
    monkeypatch.setenv("APPROVERS", f" {APPROVER_ROLE} ,")
    monkeypatch.setenv("MAX_EXCEPTION_HOURS", "4")
    settings = lambda_function.check_conditions()
    assert settings.APPROVERS == [APPROVER_ROLE]
    assert settings.MAX_EXCEPTION_HOURS == 4
    conditions(MAX_EXCEPTION_HOURS=2)  # the block's tighter limit is not lengthened
    monkeypatch.setenv("MAX_EXCEPTION_HOURS", "24")
    assert lambda_function.check_conditions().MAX_EXCEPTION_HOURS == 2
    monkeypatch.setenv("MAX_EXCEPTION_HOURS", "four")
    with pytest.raises(ConditionsError, match="MAX_EXCEPTION_HOURS = four"):
        lambda_function.check_conditions()


@pytest.mark.parametrize(
    "scope",
    [
        {"ONLY_GROUP_IDS": ["sg-0123456789abcdef0"]},
        {"NEVER_TAGGED": {"team": None}},
    ],
    ids=["not-in-only-group-ids", "never-tagged"],
)
def test_an_expired_exception_in_a_group_the_conditions_leave_alone_stays(
    ec2, group_id, approvers, conditions, scope
):
    """The conditions say never to touch the group: its rule was kept when added, and the
    end of its exception revokes nothing either (a new user's edited block found it)."""
    ec2.create_tags(Resources=[group_id], Tags=[{"Key": "team", "Value": "web"}])
    conditions(**scope)
    aged(authorize(ec2, group_id, [VENDOR], identity=CAROL, tags=grant(-1)), 3)
    result = sweep()
    assert vendor_rule(ec2, group_id)
    assert result["decisions"] == {"kept": 1}
