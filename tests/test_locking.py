"""Lock mode: a locked group does not change at all; removals are put back, on moto."""

from __future__ import annotations

import datetime

import pytest
from cloudtrail import (
    ACCOUNT,
    HISTORY,
    SSH,
    assumed_role,
    authorize,
    camel,
    eventbridge,
    made,
    modify,
    record,
    revoke,
    rule_set,
    rules_of,
)
from conftest import CONTEXT, WIDENED, bastion_of

import lambda_function
from lambda_function import lambda_handler

BASTION = {
    "IpProtocol": "tcp",
    "FromPort": 22,
    "ToPort": 22,
    "IpRanges": [{"CidrIp": "192.0.2.0/24"}],
}
BASTION_RULE = (False, "tcp", 22, 22, "192.0.2.0/24")


@pytest.fixture
def locked(group_id, conditions, history):
    """A locked group, and the event history a put-back is confirmed against."""
    conditions(LOCKED_GROUP_IDS=[group_id])
    return group_id


def run(event):
    return lambda_handler(eventbridge(event), CONTEXT)


def described(ec2, group_id):
    return {r.get("CidrIpv4"): r.get("Description") for r in rules_of(ec2, group_id)}


def test_a_removal_from_a_locked_group_is_put_back_with_its_description(ec2, locked, calls):
    before = rule_set(ec2, locked)
    result = run(revoke(ec2, locked, [BASTION]))
    assert result["decision"] == "reverted"
    assert result["rules"] == ["tcp 22 from 192.0.2.0/24, authorized again"]
    assert "new rule IDs" in result["reason"]
    assert rule_set(ec2, locked) == before
    assert described(ec2, locked)["192.0.2.0/24"] == "bastion"
    assert calls == ["AuthorizeSecurityGroupIngress"]


def test_an_old_record_without_the_rule_set_is_put_back_from_its_request(ec2, locked):
    before = rule_set(ec2, locked)
    result = run(revoke(ec2, locked, [BASTION], modern=False))
    assert result["decision"] == "reverted"
    assert rule_set(ec2, locked) == before


def test_a_removal_named_by_rule_ids_alone_is_reported_unreadable(ec2, locked):
    (bastion,) = [r for r in rules_of(ec2, locked) if r.get("CidrIpv4") == "192.0.2.0/24"]
    ec2.revoke_security_group_ingress(
        GroupId=locked, SecurityGroupRuleIds=[bastion["SecurityGroupRuleId"]]
    )
    params = {
        "groupId": locked,
        "securityGroupRuleIds": {
            "items": [{"securityGroupRuleId": bastion["SecurityGroupRuleId"]}]
        },
    }
    event = record("RevokeSecurityGroupIngress", params, {"_return": True})
    result = run(event)
    assert result["decision"] == "unreadable"
    assert BASTION_RULE not in rule_set(ec2, locked)


def test_removals_from_groups_that_are_not_locked_stay_removed(ec2, group_id, calls):
    result = run(revoke(ec2, group_id, [BASTION]))
    assert (result["decision"], result["reason"]) == (
        "kept",
        "removals are undone only in locked groups",
    )
    assert BASTION_RULE not in rule_set(ec2, group_id)
    assert calls == []


@pytest.mark.parametrize(
    "settings",
    [
        {"ALLOWED_RULES": [{"cidr": "0.0.0.0/0"}]},
        {"REVERT_EGRESS": False},
        {"NEVER_GROUP_IDS": ["sg-0123456789abcdef0"]},
    ],
)
def test_nothing_is_allowed_to_stay_in_a_locked_group(ec2, locked, conditions, settings):
    conditions(**settings)
    before = rule_set(ec2, locked)
    run(authorize(ec2, locked, [SSH]))
    run(authorize(ec2, locked, [SSH], egress=True))
    assert rule_set(ec2, locked) == before


def test_an_exempt_principal_may_change_a_locked_group(ec2, locked, conditions):
    conditions(EXEMPT_PRINCIPALS=[f"arn:aws:iam::{ACCOUNT}:role/NetworkAdmin"])
    admin = assumed_role("NetworkAdmin", "carol")
    result = run(revoke(ec2, locked, [BASTION], identity=admin))
    assert result["decision"] == "kept"
    assert BASTION_RULE not in rule_set(ec2, locked)


def test_a_narrowing_edit_of_a_locked_group_is_put_back_too(ec2, locked, conditions):
    conditions(RESTORE_FROM_CLOUDTRAIL=True)
    created = authorize(
        ec2,
        locked,
        [
            {
                **SSH,
                "FromPort": 8080,
                "ToPort": 8080,
                "IpRanges": [{"CidrIp": "10.9.0.0/16"}],
            }
        ],
    )
    (item,) = created["responseElements"]["securityGroupRuleSet"]["items"]
    narrower = {
        "IpProtocol": "tcp",
        "FromPort": 8080,
        "ToPort": 8080,
        "CidrIpv4": "10.9.1.0/24",
    }
    event = modify(ec2, locked, {item["securityGroupRuleId"]: narrower})
    result = run(event)
    assert result["rules"] == [
        "tcp 8080 from 10.9.1.0/24, restored to tcp 8080 from 10.9.0.0/16"
    ]
    assert (False, "tcp", 8080, 8080, "10.9.0.0/16") in rule_set(ec2, locked)


def test_a_group_locked_by_tag_is_found_with_one_lookup(
    ec2, group_id, conditions, calls, history
):
    conditions(LOCKED_TAGGED={"lock": None})
    ec2.create_tags(Resources=[group_id], Tags=[{"Key": "lock", "Value": "yes"}])
    before = rule_set(ec2, group_id)
    run(revoke(ec2, group_id, [BASTION]))
    assert rule_set(ec2, group_id) == before
    assert calls == ["DescribeSecurityGroups", "AuthorizeSecurityGroupIngress"]


def test_a_rule_someone_put_back_already_is_left_as_it_is(ec2, locked):
    event = revoke(ec2, locked, [BASTION])
    ec2.authorize_security_group_ingress(GroupId=locked, IpPermissions=[BASTION])
    result = run(event)
    assert result["decision"] == "kept"
    assert result["keptRules"] == ["tcp 22 from 192.0.2.0/24"]


def test_its_own_revoke_in_a_locked_group_does_not_loop(ec2, locked, as_the_function):
    """The function revokes an addition; the Revoke event it causes must not put it back."""
    opened = authorize(ec2, locked, [SSH])
    assert run(opened)["decision"] == "reverted"
    ec2.authorize_security_group_ingress(GroupId=locked, IpPermissions=[SSH])
    its_revoke = revoke(ec2, locked, [SSH], identity=as_the_function)
    result = run(its_revoke)
    assert (result["decision"], result["reason"]) == (
        "kept",
        "made by this guardrail itself",
    )
    assert (False, "tcp", 22, 22, "0.0.0.0/0") not in rule_set(ec2, locked)


def test_an_egress_removal_from_a_locked_group_is_put_back(ec2, locked):
    everything = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    before = rule_set(ec2, locked)
    result = run(revoke(ec2, locked, [everything], egress=True))
    assert result["rules"] == ["all traffic to 0.0.0.0/0, authorized again"]
    assert rule_set(ec2, locked) == before


# Guard the guard: a put-back adds access, so it happens only on AWS's own record of the
# removal (event history, by the event's ID), never on a message's word.
WORLD_SSH = (False, "tcp", 22, 22, "0.0.0.0/0")


def forged_removal(locked, event_id=None):
    """A Revoke record nobody made: 'tcp 22 from 0.0.0.0/0 was removed' from a locked group."""
    forged = record(
        "RevokeSecurityGroupIngress",
        {"groupId": locked, "ipPermissions": camel([SSH])},
        {"_return": True},
    )
    if event_id:
        forged["eventID"] = event_id
    return forged


def test_a_forged_removal_authorizes_nothing_and_says_it_waits(ec2, locked, inbox):
    before = rule_set(ec2, locked)
    with pytest.raises(lambda_function.Unconfirmed):
        run(forged_removal(locked))
    assert rule_set(ec2, locked) == before
    assert WORLD_SSH not in before
    (told,) = inbox()
    assert told["Subject"].startswith("NOT reverted yet (error)")
    assert "waiting for CloudTrail event history" in told["Message"]


def test_a_real_event_id_in_a_forged_message_puts_back_what_aws_recorded(ec2, locked):
    real = revoke(ec2, locked, [BASTION])
    result = run(forged_removal(locked, event_id=real["eventID"]))
    assert result["rules"] == ["tcp 22 from 192.0.2.0/24, authorized again"]
    assert BASTION_RULE in rule_set(ec2, locked)
    assert WORLD_SSH not in rule_set(ec2, locked)


def test_a_removal_history_does_not_hold_yet_is_put_back_on_the_retry(ec2, locked, history):
    real = revoke(ec2, locked, [BASTION])
    history.records = []  # CloudTrail has not delivered it to event history yet
    with pytest.raises(lambda_function.Unconfirmed):
        run(real)
    assert BASTION_RULE not in rule_set(ec2, locked)
    history.records = HISTORY  # a minute later, Lambda's retry
    assert run(real)["decision"] == "reverted"
    assert BASTION_RULE in rule_set(ec2, locked)


# ---- Add, then remove: a removal of what an unapproved addition had just made ---------------
# (an attacker's review: alice adds SSH from anywhere to a locked group and removes it herself
# before the guard acts; putting the removal back opened it for good, told as "Reverted".)

WORLD_SSH = (False, "tcp", 22, 22, "0.0.0.0/0")


def handled_live(added, removed):
    return [lambda_handler(eventbridge(event), CONTEXT) for event in (added, removed)]


def handled_in_reverse(added, removed):
    return [lambda_handler(eventbridge(event), CONTEXT) for event in (removed, added)]


def handled_in_one_batch(added, removed):
    from test_buffering import batch

    lambda_handler(batch(added, removed), CONTEXT)
    return []


@pytest.mark.parametrize(
    "handled",
    [handled_live, handled_in_reverse, handled_in_one_batch],
    ids=["add-then-remove", "remove-first", "one-batch"],
)
def test_a_rule_added_and_removed_by_alice_is_not_put_back(ec2, locked, inbox, handled):
    before = rule_set(ec2, locked)
    added = authorize(ec2, locked, [SSH])  # alice, not exempt
    removed = revoke(ec2, locked, [SSH])  # alice again, before the guard acts
    results = handled(added, removed)
    assert WORLD_SSH not in rule_set(ec2, locked)
    assert rule_set(ec2, locked) == before
    for result in results:
        assert result["decision"] in ("already-gone", "kept")
    assert not any("authorized again" in m["Message"] for m in inbox())


def test_the_canarys_group_is_not_opened_by_an_add_and_a_remove(
    ec2, vpc_id, group_id, conditions, history, monkeypatch
):
    canary = ec2.create_security_group(GroupName="canary", Description="canary", VpcId=vpc_id)[
        "GroupId"
    ]
    monkeypatch.setenv("CANARY_GROUP_ID", canary)  # counted as locked
    conditions(LOCKED_GROUP_IDS=[group_id])  # some lock: the Revoke calls are delivered
    handled_live(authorize(ec2, canary, [SSH]), revoke(ec2, canary, [SSH]))
    assert WORLD_SSH not in rule_set(ec2, canary)


@pytest.mark.parametrize(
    ("identity", "minutes_before", "put_back"),
    [
        (None, 5, False),  # alice's, just before: the guard had not yet revoked it
        (None, 90, True),  # alice's, long before: there when the guard handled it
        ("NetworkAdmin", 5, True),  # an exempt principal's: approved
    ],
    ids=["unapproved-fresh", "unapproved-old", "exempt-fresh"],
)
def test_what_decides_a_put_back_is_who_added_the_rule_and_when(
    ec2, locked, conditions, identity, minutes_before, put_back
):
    admin = assumed_role("NetworkAdmin", "bob")
    conditions(EXEMPT_PRINCIPALS=[admin["sessionContext"]["sessionIssuer"]["arn"]])
    added = authorize(ec2, locked, [SSH], **({"identity": admin} if identity else {}))
    made_at = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=minutes_before)
    added["eventTime"] = made_at.strftime("%Y-%m-%dT%H:%M:%SZ")  # as history holds it
    result = lambda_handler(eventbridge(revoke(ec2, locked, [SSH])), CONTEXT)
    assert (WORLD_SSH in rule_set(ec2, locked)) is put_back
    assert result["decision"] == ("reverted" if put_back else "kept")


def test_a_removal_put_back_in_the_canarys_group_is_told_not_taken_for_routine(
    ec2, vpc_id, group_id, conditions, history, inbox, monkeypatch
):
    """Only the canary's own Authorize reverted is routine (logged, not told)."""
    canary = ec2.create_security_group(GroupName="canary", Description="canary", VpcId=vpc_id)[
        "GroupId"
    ]
    monkeypatch.setenv("CANARY_GROUP_ID", canary)
    conditions(LOCKED_GROUP_IDS=[group_id])
    ec2.authorize_security_group_ingress(GroupId=canary, IpPermissions=[BASTION])
    result = lambda_handler(eventbridge(revoke(ec2, canary, [BASTION])), CONTEXT)
    assert result["decision"] == "reverted"
    assert BASTION_RULE in rule_set(ec2, canary)
    assert len(inbox()) == 1


# ---- A second attacker's review of the put-back -----------------------------------------------


APP = {"IpProtocol": "tcp", "FromPort": 2222, "ToPort": 2222}


@pytest.mark.parametrize("order", ["edit-first", "removal-first"])
@pytest.mark.parametrize("made_in_history", [True, False], ids=["made", "older"])
def test_an_edit_then_a_removal_never_puts_back_the_edits_value(
    ec2, locked, order, made_in_history
):
    """alice widens a rule to 0.0.0.0/0, then removes it, before the guard acts: the rule
    comes back as the guard last approved it (made two hours ago, as event history holds
    it); when history does not hold how it was made, it stays out and is told."""
    app = {**APP, "IpRanges": [{"CidrIp": "192.0.2.0/24"}]}
    created = authorize(ec2, locked, [app])
    made_at = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=2)
    created["eventTime"] = made_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    if not made_in_history:
        HISTORY.remove(created)
    (item,) = created["responseElements"]["securityGroupRuleSet"]["items"]
    wide = {**APP, "CidrIpv4": "0.0.0.0/0"}
    edited = modify(ec2, locked, {item["securityGroupRuleId"]: wide})
    removed = revoke(ec2, locked, [{**APP, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    events = [edited, removed] if order == "edit-first" else [removed, edited]
    results = [lambda_handler(eventbridge(event), CONTEXT) for event in events]
    assert (False, "tcp", 2222, 2222, "0.0.0.0/0") not in rule_set(ec2, locked)
    back = (False, "tcp", 2222, 2222, "192.0.2.0/24") in rule_set(ec2, locked)
    assert back is made_in_history
    if not made_in_history:
        assert "unreadable" in [result["decision"] for result in results]


def test_a_rule_an_exempt_admin_removed_since_is_not_put_back_again(ec2, locked, conditions):
    """The sweep (or a guard tag's put-back) reads alice's removal again after the lock
    put it back and an exempt admin then removed it on purpose: the admin's removal stands."""
    admin = assumed_role("NetworkAdmin", "carol")
    conditions(EXEMPT_PRINCIPALS=[admin["sessionContext"]["sessionIssuer"]["arn"]])
    removed = revoke(ec2, locked, [BASTION])  # alice
    assert lambda_handler(eventbridge(removed), CONTEXT)["decision"] == "reverted"
    by_admin = revoke(ec2, locked, [BASTION], identity=admin)
    assert lambda_handler(eventbridge(by_admin), CONTEXT)["decision"] == "kept"
    again = lambda_function.handle_event(removed, CONTEXT, from_history=True)
    assert BASTION_RULE not in rule_set(ec2, locked)
    assert again["decision"] == "kept"


def test_a_removal_matched_by_value_goes_back_when_an_exempt_admin_made_the_value(
    ec2, locked, conditions
):
    """By value (a removal record without its rule set): alice's reverted SSH from
    anywhere, 30 minutes ago, is not what made the rule; the exempt admin's edit since is."""
    admin = assumed_role("NetworkAdmin", "carol")
    conditions(EXEMPT_PRINCIPALS=[admin["sessionContext"]["sessionIssuer"]["arn"]])
    hers = authorize(ec2, locked, [SSH])
    assert lambda_handler(eventbridge(hers), CONTEXT)["decision"] == "reverted"
    made_at = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=30)
    hers["eventTime"] = made_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    bastion = bastion_of(ec2, locked)
    edit = modify(ec2, locked, {bastion["SecurityGroupRuleId"]: WIDENED}, identity=admin)
    lambda_handler(eventbridge(edit), CONTEXT)
    removed = revoke(ec2, locked, [SSH], modern=False)
    assert lambda_handler(eventbridge(removed), CONTEXT)["decision"] == "reverted"
    assert WORLD_SSH in rule_set(ec2, locked)


# ---- A third attacker's review of the put-back ------------------------------------------------


@pytest.mark.parametrize("rule_set_given", [{}, None], ids=["empty-rule-set", "none"])
def test_a_revoke_that_found_nothing_puts_nothing_back(ec2, locked, rule_set_given):
    """A default VPC answers a revoke of a rule the group lacks with success, listing it in
    unknownIpPermissionSet (API reference, RevokeSecurityGroupIngress; the CloudTrail field
    name as for the request's sets, unverified by a real record): nothing was removed, so
    nothing is put back, and the event changed nothing."""
    response = {"_return": True, "unknownIpPermissionSet": camel([SSH])}
    if rule_set_given is not None:
        response["revokedSecurityGroupRuleSet"] = rule_set_given
    params = {"groupId": locked, "ipPermissions": camel([SSH])}
    nothing_removed = made(record("RevokeSecurityGroupIngress", params, response))
    result = lambda_handler(eventbridge(nothing_removed), CONTEXT)
    assert result["decision"] == "ignored"
    assert WORLD_SSH not in rule_set(ec2, locked)


@pytest.mark.parametrize(
    ("allowed", "permission"),
    [
        ({"cidr": "0.0.0.0/0"}, SSH),
        (
            {"ipProtocol": "tcp", "fromPort": 443, "toPort": 443},
            {**SSH, "FromPort": 443, "ToPort": 443},
        ),
    ],
    ids=["any-port-from-anywhere", "https"],
)
def test_allowed_rules_do_not_make_an_add_then_remove_stick(
    ec2, locked, conditions, allowed, permission
):
    """ALLOWED_RULES allow nothing in a locked group: not in its put-back either."""
    conditions(ALLOWED_RULES=[allowed])
    added = authorize(ec2, locked, [permission])
    removed = revoke(ec2, locked, [permission])
    handled_live(added, removed)
    port = permission["FromPort"]
    assert (False, "tcp", port, port, "0.0.0.0/0") not in rule_set(ec2, locked)


def test_an_add_and_a_remove_in_the_same_second_listed_either_way_stay_out(ec2, locked):
    """LookupEvents' order between records of one second is not documented: a rule ID's
    making counts as before its removal wherever it is listed."""
    added = authorize(ec2, locked, [SSH])
    removed = revoke(ec2, locked, [SSH])
    removed["eventTime"] = added["eventTime"]
    HISTORY[-2], HISTORY[-1] = HISTORY[-1], HISTORY[-2]  # the Authorize listed newer
    handled_live(added, removed)
    assert WORLD_SSH not in rule_set(ec2, locked)


@pytest.mark.parametrize(
    "handled", [handled_live, handled_in_one_batch], ids=["live", "one-batch"]
)
def test_a_value_added_again_before_the_put_back_does_not_lose_the_rule(ec2, locked, handled):
    """alice removes the bastion rule and adds its value again (a new rule ID, unapproved)
    before the guard acts. The put-back found it "put back already", then the guard revoked
    alice's addition and the rule was gone: now the addition is revoked first, by its ID,
    and the rule put back as the guard's own."""
    removed = revoke(ec2, locked, [BASTION])
    readded = authorize(ec2, locked, [BASTION])  # alice
    handled(removed, readded)
    assert BASTION_RULE in rule_set(ec2, locked)
    (now,) = [r for r in rules_of(ec2, locked) if r.get("CidrIpv4") == "192.0.2.0/24"]
    (alices,) = readded["responseElements"]["securityGroupRuleSet"]["items"]
    assert now["SecurityGroupRuleId"] != alices["securityGroupRuleId"]


SSH_FROM_ANYWHERE = {**BASTION, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}


@pytest.mark.parametrize(
    ("locked_before", "put_back"),
    [(False, False), (True, True)],
    ids=["lock-tag-set-only-after", "lock-tag-set-again-after"],
)
def test_a_removal_is_judged_by_the_lock_its_group_had_when_it_was_made(
    ec2, group_id, conditions, history, locked_before, put_back
):
    """A remediation role closes an old `tcp 22 from 0.0.0.0/0` in a group not locked: the
    removal stays. Someone then tags the group lock=on; the sweep reads the removal again
    and found the group locked now, and opened SSH to the world again (an attacker's
    review). A lock tag set only after the removal does not undo it: it is told. A group
    tagged lock=on before the removal stays locked, whoever sets the tag again after."""
    from cloudtrail import tag

    conditions(LOCKED_TAGGED={"lock": "on"})
    bob = assumed_role("Developer", "bob")
    if locked_before:
        earlier = tag(
            ec2, "CreateTags", group_id, {"lock": "on"}, identity=assumed_role("Admin", "a")
        )
        when = datetime.datetime.fromisoformat(earlier["eventTime"])  # a second before
        earlier["eventTime"] = (when - datetime.timedelta(seconds=1)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[SSH_FROM_ANYWHERE])
    closed = revoke(
        ec2, group_id, [SSH_FROM_ANYWHERE], identity=assumed_role("Remediation", "x")
    )
    if not locked_before:
        live = lambda_handler(eventbridge(closed), CONTEXT)
        assert live["reason"] == "removals are undone only in locked groups"
    tag(ec2, "CreateTags", group_id, {"lock": "on"}, identity=bob)
    result = lambda_handler({"sweep": {"minutes": 15}}, CONTEXT)
    assert (WORLD_SSH in rule_set(ec2, group_id)) is put_back
    if not put_back:
        assert result["decisions"].get("unreadable") == 1  # told, on the topic and counted


@pytest.mark.parametrize(
    "tagger",
    ["bob", "bob-2", "mallory"],
    ids=["the-remover", "the-removers-other-session", "another-user-of-the-role"],
)
def test_a_lock_tag_set_after_a_removal_by_anyone_leaves_it_told_not_put_back(
    ec2, group_id, conditions, history, tagger
):
    """Bob removes SSH from the world in a group with no lock that event history shows, then
    someone tags it lock=on. Whoever tags it, the removal is told, not put back. Excusing
    the remover's own tag (a third review: the remover re-tagging a long-locked group made
    his removal stick) put back SSH from the world after a clean-up then a lock, and excusing
    his role let another user of it do the same (a fifth and sixth). A lock is never taken
    for older than history shows: that would add access."""
    from cloudtrail import tag

    conditions(LOCKED_TAGGED={"lock": "on"})
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[SSH_FROM_ANYWHERE])
    removed = revoke(ec2, group_id, [SSH_FROM_ANYWHERE], identity=assumed_role("Dev", "bob"))
    tag(ec2, "CreateTags", group_id, {"lock": "on"}, identity=assumed_role("Dev", tagger))
    result = lambda_handler(eventbridge(removed), CONTEXT)
    assert WORLD_SSH not in rule_set(ec2, group_id)
    assert result["decision"] == "unreadable" and "lock tag was set" in result["unreadable"][0]


def test_a_lock_tag_set_in_the_removals_second_listed_before_it_does_not_reopen(
    ec2, group_id, conditions, history
):
    """A clean-up revokes SSH from the world, then tags the group lock=on, in one second.
    Event history orders one second's records as it likes: listed as older than the
    removal, the tag was read as a lock before it, and SSH from the world was authorized
    back (a sixth review). A lock of the removal's own second counts as set after it."""
    from cloudtrail import HISTORY, tag

    conditions(LOCKED_TAGGED={"lock": "on"})
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[SSH_FROM_ANYWHERE])
    owner = assumed_role("Admin", "alice")
    removed = revoke(ec2, group_id, [SSH_FROM_ANYWHERE], identity=owner)
    locked = tag(ec2, "CreateTags", group_id, {"lock": "on"}, identity=owner)
    locked["eventTime"] = removed["eventTime"]  # the same second
    HISTORY.remove(locked)
    HISTORY.insert(HISTORY.index(removed), locked)  # listed just older than the removal
    result = lambda_handler(eventbridge(removed), CONTEXT)
    assert WORLD_SSH not in rule_set(ec2, group_id), result


MONITORING = {**BASTION, "FromPort": 9100, "ToPort": 9100}


def test_a_lock_older_than_the_removed_rule_counts_when_the_remover_tags_it_again(
    ec2, group_id, conditions, history
):
    """The group was tagged lock=on, then an exempt admin added tcp 9100 (both in event
    history). Bob removes it and tags lock=on again. The reading stopped at the rule's
    Authorize (every removed rule found) before the older lock tag, so the re-tag made the
    removal stick, told, in a group locked all along (a seventh attacker's review). It reads
    on for the lock before the removal while a lock set since wants one."""
    admin = assumed_role("NetworkAdmin", "carol")
    conditions(
        LOCKED_TAGGED={"lock": "on"},
        EXEMPT_PRINCIPALS=["arn:aws:iam::123456789012:role/NetworkAdmin"],
    )
    from cloudtrail import tag

    def seconds_earlier(found, seconds):
        when = datetime.datetime.fromisoformat(found["eventTime"])
        found["eventTime"] = (when - datetime.timedelta(seconds=seconds)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )

    seconds_earlier(tag(ec2, "CreateTags", group_id, {"lock": "on"}, identity=admin), 5)
    seconds_earlier(authorize(ec2, group_id, [MONITORING], identity=admin), 3)
    bob = assumed_role("Developer", "bob")
    removed = revoke(ec2, group_id, [MONITORING], identity=bob)
    tag(ec2, "CreateTags", group_id, {"lock": "on"}, identity=bob)  # the same value again
    result = lambda_handler(eventbridge(removed), CONTEXT)
    assert (False, "tcp", 9100, 9100, "192.0.2.0/24") in rule_set(ec2, group_id), result
