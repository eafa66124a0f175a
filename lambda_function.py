"""Security-group guardrail: undo unapproved security-group changes seconds after they happen.

An EventBridge rule (event_pattern.json) sends this function the CloudTrail record of every
successful AuthorizeSecurityGroupIngress/Egress, ModifySecurityGroupRules, prefix-list change
(ModifyManagedPrefixList, RestoreManagedPrefixListVersion) and AssociateSecurityGroupVpc. It
reads what the call added, checks it against the CONDITIONS block below, and revokes exactly
those rules: by the rule IDs in the response when CloudTrail has them, otherwise by the
permissions rebuilt from the request. An edited rule gets its old value back, with its rule
ID, when a source gives it; entries added to a list guarded rules use are taken out; a group
associated into a guarded VPC is disassociated. It never touches a rule the call did not add;
a failed call (errorCode) is left alone. Where switched on (template.yaml): removals from
locked groups are put back, tag changes that would switch the guard off are undone, a sweep
handles what the live path missed, and a canary proves the chain works.

Deploy: zip this one file, create a Lambda function (runtime python3.13, handler
lambda_function.lambda_handler) with a role holding iam_policy.json, and point an EventBridge
rule with event_pattern.json at it. The README has the commands. For large estates the rule
may deliver through an SQS queue instead (template.yaml, Delivery=buffered): the handler
takes both shapes.

Fail closed: a successful call is never ignored because its record is odd. What can be
identified is undone; what cannot is reported (decision "unreadable") on the notification
topic and as a metric, like every change left open for any other reason.

Environment: DRY_RUN=true decides and logs, but changes nothing; the other settings are
listed below the CONDITIONS block. Every event produces one JSON log line (with its decision
as a CloudWatch metric); the handler returns the same summary. Run locally:
python lambda_function.py --help.

Copyright 2026 the sg-guardrail authors. Licence: Apache License 2.0 (the LICENSE file).
Version: __version__ below, in every log line and notification; CHANGELOG.md says what
changed.
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
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, TypedDict

# boto3 (some 200 ms to import) waits for the first AWS call: the many events that need none
# (failed calls, unrelated or exempt ones) never load it. Its exceptions are cheap.
from botocore.exceptions import BotoCoreError, ClientError

# In every log line, notification and the zip's name; CHANGELOG.md says what changed.
__version__ = "1.0.0"

# =============================================================================================
# CONDITIONS: edit this block. Every list empty means "revert every change" (the default).
# To use an example, delete the "# " in front of it, or put the "e.g." value in place of the
# empty one; `make format` lays out what you wrote, `make test` checks it. A typo stops the
# function from loading, with a line naming the setting: it never guards less than you meant.
# =============================================================================================

# Changes made by these principals are kept. Shell-style patterns (* and ?), matched against
# the caller's ARN, its role's ARN (sessionIssuer.arn) and the AWS service that acted for it
# (invokedBy). Name the account: with many accounts, a "*" there would let an admin of any
# member account create a role of that name and be exempt.
EXEMPT_PRINCIPALS: list[str] = [
    # "arn:aws:iam::111122223333:user/alice",  # one IAM user
    # "arn:aws:iam::111122223333:role/NetworkAdmin",  # every session of a role
    # "arn:aws:sts::111122223333:assumed-role/Deployer/ci-*",  # some sessions of a role
    # "arn:aws:iam::111122223333:role/cfn-network-deployer",  # a stack's service role
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
# (the rule's ports must lie inside; for ICMP the type and code, -1 for any), cidr (exactly
# this range), cidrWithin (a range inside this one), prefixListId, referencedGroupId.
ALLOWED_RULES: list[dict[str, Any]] = [
    # {"ipProtocol": "tcp", "fromPort": 443, "toPort": 443, "cidr": "0.0.0.0/0"},
    # {"ipProtocol": "tcp", "fromPort": 443, "toPort": 443, "cidr": "::/0"},
    # {"isEgress": False, "cidrWithin": "10.0.0.0/8"},  # anything from inside 10/8
    # {"isEgress": True, "prefixListId": "pl-0123456789abcdef0"},  # out to a prefix list
    # {"ipProtocol": "icmp", "fromPort": 8, "toPort": -1},  # ping: echo request, any code
]

# Groups that must not change at all: additions revoked, edits put back (even ones that
# narrow), removals undone (the removed rules authorized again, which gives them new rule
# IDs). Only EXEMPT_PRINCIPALS may change them. Removals reach the function only when the
# EventBridge pattern has the Revoke calls: template.yaml adds them when a lock is set.
LOCKED_GROUP_IDS: list[str] = []  # e.g. ["sg-0123456789abcdef0"]
LOCKED_TAGGED: dict[str, str | None] = {}  # e.g. {"lock": "on"}

REVERT_EGRESS = True  # False: leave AuthorizeSecurityGroupEgress changes alone
# ModifySecurityGroupRules edits a rule in place, and its event holds only the new value. An
# edit is undone by putting the old value back (same rule ID) when one of the sources below
# gives exactly one old value; an edit that widens nothing stays; without an old value the
# edited rule is revoked (fail closed). False: leave edits alone.
REVERT_MODIFIED_RULES = True
RESTORE_FROM_CONFIG = False  # True: AWS Config's history (a recorder covering groups)
RESTORE_FROM_CLOUDTRAIL = False  # True: CloudTrail event history (LookupEvents, 90 days)

# Changes an AWS service makes on its own (EMR, EKS, Directory Service... add rules by design,
# and add them again when removed) are kept: reverting them fights the service. A person acting
# through a service (CloudFormation without a service role) is judged as that person.
GUARD_AWS_SERVICES = False  # True: revert what AWS services do on their own too

# Many accounts (template.yaml): an event from another account is handled by assuming this
# role in that account. Empty: such events are reported as out of reach.
MEMBER_ROLE_NAME = ""  # e.g. "sg-guardrail-member"

# Exceptions that expire: an approver's rule is kept until the time it is tagged with, then
# revoked. Tag it (when adding it, or afterwards) sg-guardrail:expires, a UTC time such as
# 2026-12-01T18:00:00Z at most MAX_EXCEPTION_HOURS after the call, and sg-guardrail:reason.
# Patterns as in EXEMPT_PRINCIPALS, each naming its account. Empty: no exceptions.
APPROVERS: list[str] = []  # e.g. ["arn:aws:iam::111122223333:role/SecurityApprover"]
MAX_EXCEPTION_HOURS = 24  # e.g. 4


def should_revert(change: dict[str, Any]) -> bool:
    """The last word on a change the conditions above would revert. Only False keeps it:
    None (a forgotten return), any other value, or an exception reverts, and the log says why.

    `change` holds eventId, eventName, eventTime, actor, principals, account, region, groupId,
    groupName, isEgress, rules (the rules about to be revoked) and, when the VPC or tag
    conditions are set, vpcId and tags. For a prefix-list change, prefixList (prefixListId and
    the entries added) and, as rules, the guarded rules that use the list. actorRole is the
    role's name when a role session made the change (arn:aws:sts::1:assumed-role/NAME/...),
    else None; account is where the change happened (a role name alone is any account's).
    """
    # e.g. return change["actorRole"] != "break-glass"  # emergency sessions keep theirs
    return True


# An event older than this (a retry, a redrive, a replay) has its rules checked against what
# AWS holds now before anything is revoked: a rule changed since is left and reported.
LATE_AFTER_SECONDS = 300  # e.g. 900 (lower: more events read AWS first, one call each)


# =============================================================================================
# The default path: one event, from the handler to the revoke and its report
#
# One plain change (an Authorize by someone not exempt, no optional feature on) runs only
# the code from here to the line "The rest is optional": handler -> read -> decide -> act
# (one RevokeSecurityGroupIngress or Egress call) -> report (one JSON log line, a metric
# and, with NOTIFY_TOPIC_ARN, one SNS message). tests/test_default_path.py holds it to that.
# SETTINGS.X is the block's X plus what the deployment's environment adds to it, built once
# when the file loads (Settings, in "Loading the conditions"); the block is never rebound.
# =============================================================================================


# ---------------------------------------------------------------------------------------------
# The shapes that pass from stage to stage, defined once. They are plain dicts at run time
# (should_revert receives a Change as documented in the CONDITIONS block); what was read from
# the record stays as read, and what is learned from AWS is added beside it under its own key.
# ---------------------------------------------------------------------------------------------


class Rule(TypedDict, total=False):
    """One rule, in CloudTrail's camelCase names for it (securityGroupRuleSet items)."""

    securityGroupRuleId: str | None  # the response's rule ID: what is revoked when known
    groupId: str  # the rule's group when the response names it
    isEgress: bool | None  # None: an edit, whose direction is asked of AWS
    ipProtocol: str  # a name where AWS has one (tcp, udp, icmp, icmpv6, -1), else a number
    fromPort: int  # ports, or ICMP type and code, as given (absent: every port)
    toPort: int
    cidrIpv4: str  # exactly one source: a CIDR, a prefix list or a group
    cidrIpv6: str
    prefixListId: str
    referencedGroupInfo: dict[str, str]  # groupId (or, default VPC, groupName); userId
    description: str
    unreadable: str  # what could not be read of it: it is revoked by ID, never allowed
    previous: Rule  # an edit: the value AWS held before (Config or event history)


class Change(TypedDict, total=False):
    """What one successful call changed: read from the record (read_change), then the facts
    learned from AWS beside it. should_revert receives it."""

    eventId: str | None
    eventName: str
    eventTime: str | None
    actor: str  # the identity's ARN (or "unknown")
    principals: list[str]  # every name an exemption may match: ARN, session issuer, service
    byAwsService: bool  # an AWS service or a service-linked role made the change
    account: str | None  # recipientAccountId, checked against the envelope's
    region: str | None
    groupId: str | None
    groupName: str | None
    isEgress: bool | None
    removal: bool  # a Revoke: undone only in locked groups
    rules: list[Rule]  # the rules the call added, edited or removed
    unreadable: list[str]  # what the call did that could not be identified: reported
    # Learned from AWS, only when a condition needs them (group_facts):
    vpcId: str | None
    tags: dict[str, str]
    # Set by optional features' readers (each section says which):
    tagging: dict[str, Any]  # CreateTags / DeleteTags
    prefixList: dict[str, Any]  # ModifyManagedPrefixList / RestoreManagedPrefixListVersion
    association: dict[str, str]  # AssociateSecurityGroupVpc
    confirmedBy: str  # the change was read again from AWS's own record (event history)


class Done(TypedDict, total=False):
    """What the handler did with a change (or would do, in a dry run), and why."""

    reason: str
    revoked: list[Rule]
    restored: list[Rule]  # edits put back (each with its previous value)
    reauthorized: list[Rule]  # removals from a locked group put back
    kept: list[Rule | str]  # rules, or a feature's words for what stays
    gone: list[Rule | str]  # already gone: success
    changedSince: list[dict[str, Rule | str]]  # {"recorded", "now"}: left, reported
    unreadable: list[str]
    leftOpen: list[Rule]  # could not be undone at all
    retagged: list[str]  # the features' own words for what they undid
    unwidened: list[str]
    disassociated: list[str]


class Outcome(TypedDict, total=False):
    """One event's log line and the handler's result (the keys users' alarms and queries
    read: they do not change)."""

    eventId: str | None
    eventName: str | None
    eventTime: str | None
    actor: str | None
    account: str | None
    region: str | None
    groupId: str | None
    groupName: str | None
    prefixListId: str | None
    decision: str  # reverted, already-gone, dry-run, kept, ignored, unreadable, ...
    reason: str
    rules: list[str]  # what was undone, in words
    keptRules: list[str]
    alreadyGone: list[str]
    changedSince: list[dict[str, str]]
    leftOpen: list[str]
    unreadable: list[str]


# The exceptions that pass between stages, in one place: what is ignored (BadEvent), what
# is reported (Unreadable, OutOfReach) and what is raised for Lambda's retry (RETRY_LATER).


class OutOfReach(Exception):
    """The change is in an account this function has no way to act in."""


class BadEvent(ValueError):
    """The event changed nothing (unrelated, or a failed call): log it, don't retry."""


class Unreadable(ValueError):
    """Part of a successful change that cannot be read: reported, never silently dropped."""


class NotRevoked(Exception):
    """AWS answered a revoke without an error, but said it did not revoke: retry the event."""


class DeadlineNear(BotoCoreError):
    fmt = "the Lambda's time is nearly spent; stopped retrying so the event is retried later"


class ConfirmFirst(Exception):
    """Raised before any write, where what follows would add access on a message's word."""


class Unconfirmed(Exception):
    """Event history does not hold the change (yet): a put-back waits for the retry."""


# What is raised for Lambda's retry: AWS's errors, no connection or time, no revoke, no record.
RETRY_LATER = (ClientError, BotoCoreError, NotRevoked, Unconfirmed)


# ---------------------------------------------------------------------------------------------
# The handler: one event, from reading it to its log line
# ---------------------------------------------------------------------------------------------


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    global _retry_until
    remaining_ms = getattr(context, "get_remaining_time_in_millis", lambda: math.inf)()
    _retry_until = time.monotonic() + remaining_ms / 1000
    if isinstance(event, dict) and set(event) == {"sweep"}:  # the schedule's input
        return sweep(event["sweep"], context)
    if isinstance(event, dict) and set(event) == {"audit"}:  # AuditSchedule's input
        return scheduled_audit(event["audit"], context)
    if isinstance(event, dict) and "Records" in event and is_sqs_batch(event):
        # Delivery=buffered: EventBridge -> SQS -> Lambda
        return handle_batch(event["Records"], context)
    return handle_event(event, context)


DRY_RUN_REASON = "DRY_RUN is set; nothing changed"
OFFLINE_REASON = "--offline: decided on the record alone; nothing changed"


def dry_run_reason() -> str:
    """Why nothing changed: DRY_RUN, or an offline replay (--offline sets DRY_RUN too)."""
    return OFFLINE_REASON if _offline else DRY_RUN_REASON


def is_dry_run() -> bool:
    return os.environ.get("DRY_RUN", "").strip().lower() in ("1", "true", "yes")


def switched_on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def handle_event(event: Any, context: Any, from_history: bool = False) -> Outcome:
    """One event, from reading to the log line; an error is told, then raised for a retry.
    from_history: the event is a record event history returned (the sweep), AWS's own."""
    dry_run = is_dry_run()
    summary, change = first_summary(event), {}
    if switched_on("LOG_RAW_EVENT"):  # debugging only
        log_raw_event(summary, event)
    try:
        change = read_change(event)
        if from_history:
            change["confirmedBy"] = "CloudTrail event history (the sweep)"
        summary = summarize(change)
        done = handle(change, dry_run, context)
    except BadEvent as bad:
        return log(outcome(summary, "ignored", {"reason": str(bad)}))
    except OutOfReach as far:
        return report(summary, change, "out-of-reach", left_open(change, str(far)))
    except ClientError as error:
        if error_code(error) not in REJECTED:
            report_error(summary, change, error_reason(error))
            raise  # Lambda retries, then hands the event to the on-failure destination
        why = f"AWS rejected the undo as malformed, so it cannot be retried: {error}"
        return report(summary, change, "unreadable", left_open(change, why))
    except (BotoCoreError, NotRevoked, Unconfirmed) as error:
        # no connection, no time left, no revoke, a put-back not yet in event history
        report_error(summary, change, error_reason(error))
        raise
    return report_done(summary, change, done, dry_run)


# ---------------------------------------------------------------------------------------------
# Reading the event: CloudTrail record -> change (pure)
#
# A record that changed nothing (another service, a read, a failed call) raises BadEvent and
# is ignored. Past that point the call succeeded, so nothing odd in the record makes the whole
# change go away: every rule that can be identified is read, a rule whose values are odd but
# whose ID is valid is kept by its ID alone (it cannot be allowed, so it goes), and whatever
# cannot be identified at all is listed in change["unreadable"] to be reported.
# ---------------------------------------------------------------------------------------------


def first_summary(event: Any) -> dict[str, Any]:
    """What can be said of an event before reading it: so that every line names its event."""
    record = record_of(event)
    found = {"eventId": record.get("eventID"), "eventName": record.get("eventName")}
    return {key: value if isinstance(value, str) else None for key, value in found.items()}


def record_of(event: Any) -> dict[str, Any]:
    """The record in an event, or {} when there is none; unlike unwrap(), it never raises."""
    record = event.get("detail", event) if isinstance(event, dict) else None
    return record if isinstance(record, dict) else {}


# What every log line says of its change:
SUMMARY_KEYS = ("eventId", "eventName", "eventTime", "actor")  # which event, by whom
SUMMARY_KEYS += ("account", "region", "groupId", "groupName")  # where


def summarize(change: Change) -> dict[str, Any]:
    summary = {key: change.get(key) for key in SUMMARY_KEYS}
    if "prefixList" in change:
        summary["prefixListId"] = change["prefixList"]["prefixListId"]
    return summary


CHANGE_EVENTS = (  # event_pattern.json
    "AuthorizeSecurityGroupIngress",
    "AuthorizeSecurityGroupEgress",
    "ModifySecurityGroupRules",
    # A prefix list's entries are the sources of every rule that references it: an entry
    # added there opens those rules with no security-group call at all; so does a restore
    # of an earlier version that held an entry taken out since.
    "ModifyManagedPrefixList",
    "RestoreManagedPrefixListVersion",
    # A group used in another VPC of the account and region (2024): its rules reach a VPC
    # the conditions guard without any rule change.
    "AssociateSecurityGroupVpc",
)

REMOVAL_EVENTS = (  # added to the pattern where a lock is set
    "RevokeSecurityGroupIngress",
    "RevokeSecurityGroupEgress",
)

# Tag calls on security groups, and a group created with tags: a rule of their own (GuardTags
# in template.yaml).
TAG_EVENTS = ("CreateTags", "DeleteTags")
CREATION_EVENTS = ("CreateSecurityGroup",)

HANDLED_EVENTS = CHANGE_EVENTS + REMOVAL_EVENTS + TAG_EVENTS + CREATION_EVENTS

PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}

PROTOCOLS = {name: name for name in ("tcp", "udp", "icmp", "icmpv6", "-1")} | PROTOCOL_NAMES

ICMP = ("icmp", "icmpv6")  # fromPort is the ICMP type, toPort the code; -1 is any

PROTOCOL_NUMBER = re.compile(r"[0-9]{1,3}")

PORT = re.compile(r"-?[0-9]{1,5}")

SOURCE_KEYS = ("cidrIpv4", "cidrIpv6", "prefixListId", "referencedGroupInfo")

GROUP_ID = re.compile(r"sg-[0-9a-f]{8}(?:[0-9a-f]{9})?")

RULE_ID = re.compile(r"sgr-[0-9a-f]{8}(?:[0-9a-f]{9})?")

PREFIX_LIST_ID = re.compile(r"pl-[0-9a-f]{8}(?:[0-9a-f]{9})?")

VPC_ID = re.compile(r"vpc-[0-9a-f]{8}(?:[0-9a-f]{9})?")

ACCOUNT_ID = re.compile(r"\d{12}")

REGION = re.compile(r"[a-z]{2,4}(?:-[a-z]+)+-\d{1,2}")

USER_ID = re.compile(r"\d{12}|amazon-elb")

OCTET = r"(0|[1-9][0-9]{0,2})"

IPV4_CIDR = re.compile(rf"{OCTET}\.{OCTET}\.{OCTET}\.{OCTET}/(0|[1-9][0-9]?)")


def read_change(event: Any) -> Change:
    """Turn an EventBridge event or a bare CloudTrail record into the change it made."""
    record = unwrap(event)
    name = record.get("eventName")
    if record.get("eventSource") != "ec2.amazonaws.com" or name not in HANDLED_EVENTS:
        raise BadEvent(f"not a security-group change: {str(name)[:80]}")
    if record.get("errorCode"):
        raise BadEvent(f"the call failed ({str(record['errorCode'])[:80]}); nothing changed")
    # From here on the call succeeded: what cannot be read is reported, never ignored.
    envelope = event if "detail" in event else {}
    change: Change = {
        "eventId": optional_text(record.get("eventID"), 128),
        "eventName": name,
        "eventTime": optional_text(record.get("eventTime"), 64),
        **read_actor(record.get("userIdentity")),
        **dict.fromkeys(("region", "account", "groupId", "groupName")),  # None until read
        "isEgress": None if name.startswith(UNDIRECTED) else name.endswith("Egress"),
        "removal": name in REMOVAL_EVENTS,
        "rules": [],
        "unreadable": [],
    }
    region = record.get("awsRegion") or envelope.get("region")
    change["region"] = readable(change, checked, region, REGION, "awsRegion")
    change["account"] = readable(change, read_account, record, envelope)
    readable(change, read_rules, record, change)
    if change["rules"] and not (change["region"] and change["account"]):
        # Known rules, but not where they are: nothing can be undone.
        change["unreadable"] += [describe(rule) for rule in change["rules"]]
        change["rules"] = []
    return change


UNDIRECTED = ("Modify", "Restore", "Associate")  # calls whose record says no direction


def readable(change: Change, read: Any, *args: Any) -> Any:
    """read(*args), or None with what could not be read of the change listed to report."""
    try:
        return read(*args)
    except Unreadable as problem:
        change["unreadable"].append(str(problem))
        return None


def optional_text(value: Any, limit: int) -> str | None:
    """A string kept for the log (event ID, time), or None when it is anything else."""
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def unwrap(event: Any) -> dict[str, Any]:
    """The CloudTrail record inside an EventBridge event, or the event itself if it is one."""
    if not isinstance(event, dict):
        raise BadEvent(f"event is a {type(event).__name__}, not a JSON object")
    if "detail" not in event:
        return event
    if event.get("source", "aws.ec2") != "aws.ec2":
        raise BadEvent(f"not an EC2 event: source {str(event.get('source'))[:80]}")
    if not isinstance(event["detail"], dict):
        raise BadEvent("the event's detail is not a CloudTrail record")
    return event["detail"]


def read_account(record: dict, envelope: dict) -> str:
    """The account the change was made in; the envelope and the record must agree."""
    recorded, delivered = record.get("recipientAccountId"), envelope.get("account")
    if recorded is not None and delivered is not None and recorded != delivered:
        raise Unreadable(
            f"the envelope's account {str(delivered)[:20]!r} is not the record's "
            f"recipientAccountId {str(recorded)[:20]!r}"
        )
    return checked(recorded or delivered, ACCOUNT_ID, "account")


def read_actor(identity: Any) -> dict[str, Any]:
    """Who made the change, and every name an exemption pattern may match."""
    identity = identity if isinstance(identity, dict) else {}
    issuer = field(field(field(identity, "sessionContext"), "sessionIssuer"), "arn")
    names = [field(identity, "arn"), issuer, field(identity, "invokedBy")]
    principals = [n for n in names if isinstance(n, str) and n]
    # A service-linked role's path is /aws-service-role/, which no customer role may take;
    # the text elsewhere in an ARN (any path may hold it) proves nothing.
    service = field(identity, "type") == "AWSService" or (
        isinstance(issuer, str) and SERVICE_LINKED_ROLE.fullmatch(issuer) is not None
    )
    return {
        "actor": principals[0] if principals else "unknown",
        "principals": principals,
        "byAwsService": service,
        "actorRole": role_name_of(field(identity, "arn")),
    }


ASSUMED_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:sts::\d{12}:assumed-role/([^/]+)/.+")


def role_name_of(arn: Any) -> str | None:
    """The role's name in a role session's ARN (what should_revert most often asks)."""
    found = ASSUMED_ROLE_ARN.fullmatch(arn) if isinstance(arn, str) else None
    return found[1] if found else None


SERVICE_LINKED_ROLE = re.compile(
    r"arn:aws[a-z-]*:iam::\d{12}:role/aws-service-role/[\w.-]+/[\w+=,.@-]+"
)


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


def read_rules(record: dict, change: Change) -> None:
    """Fill in the change's group and rules from the request and the response."""
    params = as_dict(record.get("requestParameters"), "requestParameters")
    response = record.get("responseElements")
    if change["eventName"] in FEATURE_READERS:  # each read in its feature's section
        FEATURE_READERS[change["eventName"]](params, response, change)
    else:
        read_authorization(params, response if isinstance(response, dict) else {}, change)


def read_authorization(params: dict, response: dict, change: Change) -> None:
    """Group and rules of an Authorize* call: the response's rule IDs first, else the request."""
    is_egress = change["isEgress"]
    if SETTINGS.APPROVERS:  # an exception's tags (Exceptions that expire)
        read_rule_tags(params, change)
    rules = read_rule_set(response, is_egress, change["unreadable"])
    if rules is None:  # records before mid-2021, or a rule set that is no list
        rules = read_request_rules(params, is_egress, change["unreadable"])
    change["groupId"] = read_group_id(params.get("groupId"), rules)
    if change["groupId"] is None and not read_group_name(params, change, rules):
        return
    for rule in rules:
        if rule.setdefault("groupId", change["groupId"]) != change["groupId"]:
            change["unreadable"].append(f"{describe(rule)} of another group")
        else:
            change["rules"].append(rule)
    if not change["rules"] and not change["unreadable"]:
        change["unreadable"].append("the record names no rule the call added")


def read_group_id(requested: Any, rules: list[dict]) -> str | None:
    """The request's groupId; when it is unreadable, the one the response's rules name."""
    if isinstance(requested, str) and GROUP_ID.fullmatch(requested):
        return requested
    named = {rule.get("groupId") for rule in rules} - {None}
    return named.pop() if len(named) == 1 else None


def read_rule_set(response: dict, is_egress: bool, problems: list) -> list[dict] | None:
    """The rules in securityGroupRuleSet, each with its ID; None when there is no such list."""
    try:
        found = items(response.get("securityGroupRuleSet"), "securityGroupRuleSet")
    except Unreadable:
        return None
    if not found:
        return None
    rules = []
    for number, item in enumerate(found, 1):
        try:
            rules.append(read_response_rule(item, is_egress))
        except Unreadable as problem:
            problems.append(f"securityGroupRuleSet item {number}: {problem}")
    return rules


def read_response_rule(item: Any, is_egress: bool) -> dict[str, Any]:
    """One securityGroupRuleSet item. A valid rule ID is enough to undo it: odd values
    only mark it `unreadable`, so that it is revoked by its ID and cannot be allowed."""
    item = as_dict(item, "item")
    rule: Rule = {
        "securityGroupRuleId": checked(
            item.get("securityGroupRuleId"), RULE_ID, "securityGroupRuleId"
        ),
        "isEgress": is_egress,  # the call adds rules in its own direction only
    }
    if isinstance(item.get("groupId"), str) and GROUP_ID.fullmatch(item["groupId"]):
        rule["groupId"] = item["groupId"]
    try:
        if item.get("isEgress", is_egress) is not is_egress:
            raise Unreadable("isEgress differs from the call")
        values = {**read_protocol_and_ports(item), **read_one_source(item)}
        return {**rule, **values, **description_of(item)}
    except Unreadable as problem:
        return {**rule, "unreadable": str(problem)}


def read_one_source(item: dict) -> dict[str, Any]:
    """The one source of a response rule (or, as referencedGroupId, of an edited rule)."""
    kinds = [key for key in (*SOURCE_KEYS, "referencedGroupId") if item.get(key)]
    if len(kinds) != 1:
        raise Unreadable(f"{len(kinds)} sources, not one")
    kind = kinds[0]
    if kind == "referencedGroupId":
        return group_source(item[kind], None, None)
    if kind == "referencedGroupInfo":
        info = as_dict(item[kind], kind)
        return group_source(info.get("groupId"), info.get("userId"), None)
    return read_source(kind, item[kind])


def read_protocol_and_ports(d: dict) -> dict[str, Any]:
    """ipProtocol normalized to a name where AWS has one; ports (ICMP type, code) as given."""
    given = d.get("ipProtocol")
    text_form = str(given) if type(given) is int else given
    if not isinstance(text_form, str):
        raise Unreadable("missing ipProtocol")
    protocol = PROTOCOLS.get(text_form.lower())
    if protocol is None and PROTOCOL_NUMBER.fullmatch(text_form) and int(text_form) <= 255:
        protocol = text_form
    if protocol is None:
        raise Unreadable(f"unknown ipProtocol {text_form[:20]!r}")
    shape: dict[str, Any] = {"ipProtocol": protocol}
    low, high = d.get("fromPort"), d.get("toPort")
    if low is not None:
        shape["fromPort"] = low = port(low, "fromPort")
    if high is not None:
        shape["toPort"] = high = port(high, "toPort")
    if protocol in ("tcp", "udp"):
        if low is None or high is None:
            raise Unreadable(f"{protocol} rule without both ports")
        if low > high:  # ICMP is not checked: type 8 code 0 is a normal rule
            raise Unreadable("fromPort is above toPort")
    return shape


def port(value: Any, name: str) -> int:
    """A port (or ICMP type/code): -1..65535, as an int or a string of digits."""
    if type(value) is str and PORT.fullmatch(value):
        value = int(value)
    if type(value) is not int or not -1 <= value <= 65535:
        raise Unreadable(f"{name} is not a port: {str(value)[:20]!r}")
    return value


def read_source(kind: str, value: Any) -> dict[str, str]:
    """A CIDR or prefix-list source, validated; the value is kept as the caller wrote it."""
    if kind == "prefixListId":
        return {kind: checked(value, PREFIX_LIST_ID, kind)}
    if not isinstance(value, str):
        raise Unreadable(f"{kind} is missing")
    version = cidr_version(value)
    if version is None:
        raise Unreadable(f"{kind} is not a CIDR: {value[:50]!r}")
    if version != (4 if kind == "cidrIpv4" else 6):
        raise Unreadable(f"{kind} has the wrong IP version: {value[:50]!r}")
    return {kind: value}


def description_of(item: dict) -> dict[str, str]:
    """A rule's description, kept so that a restored rule gets it back."""
    found = item.get("description")
    return {"description": found} if isinstance(found, str) and len(found) <= 255 else {}


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


def items(collection: Any, name: str) -> list:
    """CloudTrail's {"items": [...]} collections; {} and absent mean empty."""
    if collection is None or collection == {}:
        return []
    if isinstance(collection, dict) and isinstance(collection.get("items"), list):
        return collection["items"]
    raise Unreadable(f"{name} is not a CloudTrail item list")


def as_dict(value: Any, name: str) -> dict:
    if not isinstance(value, dict):
        raise Unreadable(f"{name} is not an object")
    return value


def checked(value: Any, pattern: re.Pattern, name: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise Unreadable(f"{name} is missing or malformed: {str(value)[:80]!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Deciding: change -> what to undo (pure, but for the group's facts and the account)
# ---------------------------------------------------------------------------------------------


def handle(change: Change, dry_run: bool, context: Any) -> Done:
    """Undo the change. Where undoing it would add access (authorize a removed rule, write a
    tag, put a wider old value back), the change is first read again from AWS's own record
    of it, and everything is decided anew on that record: never on the message's word."""
    account = member_account(change, context) if may_undo(change) else None
    try:
        return handle_as_read(change, dry_run, account)
    except ConfirmFirst:
        confirmed = confirmed_change(change, account)
    if confirmed["groupId"] == change["groupId"]:  # its VPC and tags, learned already
        confirmed |= {key: change[key] for key in ("vpcId", "tags") if key in change}
    return handle_as_read(confirmed, dry_run, account)


def handle_as_read(change: Change, dry_run: bool, account: str | None) -> Done:
    """Undo the change: what was revoked, restored or authorized again (or would be), kept,
    already gone, changed since, and what could not be read, with the reason."""
    done: Done = {"reason": "", "revoked": [], "restored": [], "reauthorized": [], "kept": []}
    done |= {"gone": [], "changedSince": [], "unreadable": list(change["unreadable"])}
    # Never react to itself (or lock mode would loop), nor to an exempt principal.
    reason = "made by this guardrail itself" if is_own(change, account) else None
    reason = reason or principal_exemption(change)
    if reason:  # kept whole, whatever could or could not be read of it
        return {**done, "reason": reason, "kept": kept_whole(change), "unreadable": []}
    if FEATURE_KEYS & change.keys():  # tags, prefix lists, VPCs: each in its own section
        return handle_feature(change, done, dry_run, account)
    if not change["rules"]:
        return {**done, "reason": "the record does not say which rules to undo"}
    if needs_group_facts(change) and "tags" not in change:
        return with_group_facts(change, done, dry_run, account)
    reason = unlocked_exemption(change)
    if reason:
        return {**done, "reason": reason, "kept": change["rules"]}
    if change["removal"]:  # Locked groups
        return put_back(
            client("ec2", change["region"], account), change, done, dry_run, account
        )
    return undo(change, done, dry_run, account)


# A change read by an optional feature's reader carries its key (Change, above).
FEATURE_KEYS = {"tagging", "prefixList", "association"}


def may_undo(change: Change) -> bool:
    """Might the change need undoing, and so an account to act in?"""
    if FEATURE_KEYS & change.keys():  # tags, prefix lists, VPCs
        return feature_may_undo(change)
    return bool(change["rules"])


def member_account(change: Change, context: Any) -> str | None:
    """None to act with the function's own rights; else the member account to act in."""
    global _partition
    arn = getattr(context, "invoked_function_arn", None)
    parts = arn.split(":") if isinstance(arn, str) else []
    if len(parts) < 5 or not ACCOUNT_ID.fullmatch(parts[4]) or parts[4] == change["account"]:
        return None  # our own account, or run locally with whatever boto3 is set up for
    if not SETTINGS.MEMBER_ROLE_NAME:
        raise OutOfReach(
            f"the change is in account {change['account']}, and no MEMBER_ROLE_NAME is "
            "set to act there"
        )
    _partition = parts[1]
    return change["account"]


# The member role's session name, when the function acts in a member account.
SESSION = "sg-guardrail"

ASSUMED_ROLE = re.compile(r"arn:aws[a-z-]*:sts::(\d{12}):assumed-role/([\w+=,.@-]+)/(.+)")


def own_session(change: Change, function_name: str | None) -> str | None:
    """Is the change perhaps the guardrail's own (a revoke, a restore)? "member": surely, the
    member role's session; "maybe": a session named like the function, which only the
    function's own role ARN can confirm; None: no."""
    found = ASSUMED_ROLE.fullmatch(change["principals"][0] if change["principals"] else "")
    if not found:
        return None
    if SETTINGS.MEMBER_ROLE_NAME and (found[2], found[3]) == (
        SETTINGS.MEMBER_ROLE_NAME,
        SESSION,
    ):
        return "member"
    return "maybe" if function_name and found[3] == function_name else None


def is_own(change: Change, account: str | None) -> bool:
    """The guardrail's own change, told by its session: the member role's, only in a member
    account it acts in (in its own account anyone allowed to create roles could make one of
    that name); a session named like the function, confirmed against the function's own
    identity (one call, once)."""
    seen = own_session(change, os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
    if seen != "maybe":
        return seen == "member" and account is not None
    return change["principals"][0] == own_identity(change["region"])[0]


def principal_exemption(change: Change) -> str | None:
    """Why the change is kept, from who made it; None when no exemption matches."""
    if change["byAwsService"] and not SETTINGS.GUARD_AWS_SERVICES:
        return f"made by an AWS service on its own ({change['actor']}; GUARD_AWS_SERVICES)"
    for principal in change["principals"]:
        if any(
            fnmatch.fnmatchcase(principal, pattern) for pattern in exemption_patterns(change)
        ):
            return f"exempt principal {principal}"
    return None


ACCOUNT_TOKEN = "{account}"


def exemption_patterns(change: dict[str, Any]) -> list[str]:
    """EXEMPT_PRINCIPALS for this change: {account} in a pattern's account field becomes
    the account the change happened in (one line for a role of one name in every account);
    such a pattern matches nothing while that account is unknown."""
    account = change.get("account")
    known = isinstance(account, str) and ACCOUNT_ID.fullmatch(account) is not None
    return [
        pattern.replace(f"::{ACCOUNT_TOKEN}:", f"::{account}:") if known else pattern
        for pattern in SETTINGS.EXEMPT_PRINCIPALS
        if known or ACCOUNT_TOKEN not in pattern
    ]


def needs_group_facts(change: Change) -> bool:
    """VPC and tag conditions, and a group known only by name, need one DescribeSecurityGroups."""
    return bool(
        change["groupId"] is None
        or SETTINGS.ONLY_VPC_IDS
        or SETTINGS.NEVER_VPC_IDS
        or SETTINGS.ONLY_TAGGED
        or SETTINGS.NEVER_TAGGED
        or SETTINGS.LOCKED_TAGGED
    )


def unlocked_exemption(change: Change) -> str | None:
    """Why a change to a group that is not locked is kept: the switches and the group's
    ID, VPC and tags. A locked group must not change at all: none of these apply to it."""
    if is_locked(change):
        return None
    if change["removal"]:
        return "removals are undone only in locked groups"
    if change["isEgress"] and not SETTINGS.REVERT_EGRESS:
        return "egress changes are not reverted (REVERT_EGRESS)"
    if (
        change["eventName"] == "ModifySecurityGroupRules"
        and not SETTINGS.REVERT_MODIFIED_RULES
    ):
        return "modified rules are not reverted (REVERT_MODIFIED_RULES)"
    return group_id_exemption(change["groupId"]) or group_exemption(change)


def is_locked(change: Change) -> bool:
    """Locked groups, and the canary's group (template.yaml, Canary=true): its rule must
    go whatever the conditions say, or the canary would prove nothing."""
    group_id = change["groupId"]
    return (
        group_id in SETTINGS.LOCKED_GROUP_IDS
        or carries_any(change.get("tags") or {}, SETTINGS.LOCKED_TAGGED)
        or (group_id is not None and group_id == canary_group_id())
    )


def canary_group_id() -> str:
    return os.environ.get("CANARY_GROUP_ID", "").strip()


def group_id_exemption(group_id: str | None) -> str | None:
    if group_id is None:  # only a name so far: checked again once the ID is known
        return None
    if SETTINGS.ONLY_GROUP_IDS and group_id not in SETTINGS.ONLY_GROUP_IDS:
        return f"{group_id} is not in ONLY_GROUP_IDS"
    if group_id in SETTINGS.NEVER_GROUP_IDS:
        return f"{group_id} is in NEVER_GROUP_IDS"
    return None


def group_exemption(change: Change) -> str | None:
    """Why the change is kept, from the group's VPC and tags (when they were looked up)."""
    vpc, tags = change.get("vpcId"), change.get("tags") or {}
    if SETTINGS.ONLY_VPC_IDS and vpc not in SETTINGS.ONLY_VPC_IDS:
        return f"{vpc} is not in ONLY_VPC_IDS"
    if vpc in SETTINGS.NEVER_VPC_IDS:
        return f"{vpc} is in NEVER_VPC_IDS"
    if SETTINGS.ONLY_TAGGED and not carries_any(tags, SETTINGS.ONLY_TAGGED):
        return "the group lacks the ONLY_TAGGED tags"
    if carries_any(tags, SETTINGS.NEVER_TAGGED):
        return "the group carries a NEVER_TAGGED tag"
    return None


def carries_any(tags: dict[str, str], wanted: dict[str, str | None]) -> bool:
    return any(key in tags and value in (None, tags[key]) for key, value in wanted.items())


def is_late(change: Change, now: datetime.datetime) -> bool:
    """Older than LATE_AFTER_SECONDS (a retry, a redrive, a replay)? An unreadable time is."""
    made = time_of(change)
    return made is None or (now - made).total_seconds() > SETTINGS.LATE_AFTER_SECONDS


def time_of(change: Change) -> datetime.datetime | None:
    """The event's time, when it is a time with its zone (CloudTrail writes ...Z)."""
    try:
        made = datetime.datetime.fromisoformat(change["eventTime"])
    except (TypeError, ValueError):
        return None
    return made if made.tzinfo else None


def split_rules(change: Change) -> tuple[list[dict], list[dict]]:
    """(to revoke, allowed to stay). An edit may touch egress rules, hence the switch here.
    Nothing is allowed to stay in a locked group."""
    if is_locked(change):
        return change["rules"], []
    allowed = [
        rule
        for rule in change["rules"]
        if is_allowed(rule) or (rule["isEgress"] and not SETTINGS.REVERT_EGRESS)
    ]
    return [rule for rule in change["rules"] if rule not in allowed], allowed


def is_allowed(rule: Rule) -> bool:
    """May the rule stay? A rule whose values could not be read never may."""
    if "unreadable" in rule:
        return False
    return any(matches(rule, entry) for entry in SETTINGS.ALLOWED_RULES)


def opens_every_port(protocol: Any) -> bool:
    """-1 and every protocol but tcp, udp and ICMP: ports given for them mean nothing."""
    return protocol is not None and protocol not in ("tcp", "udp", *ICMP)


def verdict_of_should_revert(change: Change) -> tuple[bool, str]:
    """(revert?, why). Only an exact False keeps the change; anything else reverts."""
    try:
        verdict = should_revert(change)
    except Exception as error:  # noqa: BLE001 -- a bug in user code must not leave the hole open
        return True, f"should_revert failed ({error!r}); reverting"
    if verdict is False:
        return False, "should_revert returned False"
    if verdict is True:
        return True, ""
    return True, f"should_revert returned {verdict!r}, not True or False; reverting"


# ---------------------------------------------------------------------------------------------
# Acting: the revoke (the only call a plain change makes)
# ---------------------------------------------------------------------------------------------


def undo(change: Change, done: Done, dry_run: bool, account: str | None) -> Done:
    """An addition or an edit: plan what to revoke and put back, then (not in a dry run)
    do it. Its words are the caller's, once it is done (reason_of)."""
    ec2 = client("ec2", change["region"], account)
    done = plan_undo(ec2, change, done, dry_run, account)
    if not dry_run:
        act(ec2, change, done)
    return done


def plan_undo(
    ec2: Any, change: Change, done: Done, dry_run: bool, account: str | None
) -> Done:
    """What to revoke (done["revoked"]) and put back (done["restored"]); AWS is read (a
    late event's rules, an edit's old value), never written."""
    rules = change["rules"]
    now = datetime.datetime.now(datetime.UTC)
    if change["isEgress"] is None or "confirmedBy" in change or is_late(change, now):
        # An edit does not say its direction; a late event's rules, or a record read back
        # from event history (however recent), may have changed since.
        rules, done["gone"], done["changedSince"] = compare_with_now(
            change, rules_by_id(ec2, rules)
        )
    revoking, done["kept"] = split_rules({**change, "rules": rules})
    if SETTINGS.APPROVERS:  # Exceptions that expire
        revoking = keep_under_exception(ec2, change, revoking, done, dry_run)
    restoring, narrowed = [], []
    if change["eventName"] == "ModifySecurityGroupRules" and revoking:  # Late events and edits
        revoking, restoring, narrowed = plan_edit_undo(ec2, change, revoking, account, dry_run)
        done["kept"] += narrowed
    if not revoking and not restoring:
        done["reason"] = done.get("exception") or reason_kept(done["kept"], narrowed)
        return done
    approved, done["reason"] = verdict_of_should_revert(
        {**change, "rules": restoring + revoking}
    )
    if not approved:
        return {**done, "kept": rules}
    if any("unreadable" in r or widens(r["previous"], r) for r in restoring):
        confirm_first(change, dry_run)  # the old value lets through what the new does not
    done["revoked"], done["restored"] = revoking, restoring
    done["reason"] = done["reason"] or done.get("exception", "")
    return done


def act(ec2: Any, change: Change, done: Done) -> None:
    """Revoke and put back what the plan holds; a rule already gone is success."""
    gone = revoke(ec2, change, done["revoked"])
    if done["restored"]:
        restore(ec2, change, done["restored"])
    done["gone"] += gone
    done["revoked"] = [rule for rule in done["revoked"] if rule not in gone]


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


def revoke(ec2: Any, change: Change, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Revoke the rules; returns those that were already gone. One call in the common case."""
    gone = []
    for is_egress in (False, True):
        batch = [rule for rule in rules if rule["isEgress"] is is_egress]
        if batch:
            gone += revoke_one_direction(ec2, change, batch, is_egress)
    return gone


def revoke_one_direction(
    ec2: Any, change: Change, rules: list[dict], is_egress: bool
) -> list[dict]:
    """One revoke call; returns the rules that were already gone."""
    # IAM: ec2:RevokeSecurityGroupEgress / ec2:RevokeSecurityGroupIngress
    call = ec2.revoke_security_group_egress if is_egress else ec2.revoke_security_group_ingress
    try:
        answer = call(GroupId=change["groupId"], **revoke_arguments(rules))
    except ClientError as error:
        if error_code(error) in GONE:
            return rules
        if error_code(error) not in RULE_GONE:
            raise
        return revoke_the_rest(ec2, change, rules, call)  # some were removed already
    return not_revoked(answer, rules, is_egress, call.__name__)


def revoke_arguments(rules: list[dict[str, Any]]) -> dict[str, Any]:
    """By rule IDs when every rule has one (exact), else by permissions from the request."""
    if all("securityGroupRuleId" in rule for rule in rules):
        return {"SecurityGroupRuleIds": [rule["securityGroupRuleId"] for rule in rules]}
    return {"IpPermissions": [ip_permission(rule) for rule in rules]}


def not_revoked(
    answer: dict[str, Any], rules: list[dict], is_egress: bool, operation: str
) -> list[dict]:
    """The rules AWS says it did not find. In a default VPC a revoke by permission succeeds
    and lists those in UnknownIpPermissions; Return false with none listed is a failure."""
    unknown = [
        found
        for permission in answer.get("UnknownIpPermissions") or []
        for found in rules_of_permission(permission, is_egress)
    ]
    if answer.get("Return") is False and not unknown:
        raise NotRevoked(f"AWS answered Return=false to {operation}")
    return [rule for rule in rules if any(same_rule(rule, u) for u in unknown)]


def error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


# ---------------------------------------------------------------------------------------------
# Reporting: the decision, its words, the log line and the notification
# ---------------------------------------------------------------------------------------------

# Decisions, and the ones that mean a change stays open although no condition kept it:
# these are notified and counted as such.
LEFT_OPEN = ("unreadable", "changed-since", "out-of-reach", "error")

# The sweep's word for a trail stopped or the canary left in place.
BLIND_SPOT = "blind-spot"


# What a Done lists as undone: revoked (the default path) and the optional features' words.
UNDONE_BY_FEATURES = ("restored", "reauthorized", "retagged", "unwidened", "disassociated")
UNDONE = ("revoked", *UNDONE_BY_FEATURES)


def decision_of(done: Done, dry_run: bool) -> str:
    """What happened, from what was done: the worst of it first."""
    if done["unreadable"]:
        return "unreadable"
    if done["changedSince"]:
        return "changed-since"
    if any(done.get(key) for key in UNDONE):
        return "dry-run" if dry_run else "reverted"
    if done["kept"]:
        return "kept"
    return "already-gone"


def reason_of(change: Change, done: Done, dry_run: bool) -> str:
    if dry_run:
        return dry_run_reason()
    if not done["revoked"] and not done["restored"]:
        return "the rules were already gone"
    if done["unreadable"]:
        return "reverted what could be read; the rest of the record could not be"
    if done["changedSince"]:
        return "some rules were changed since the event and were left as they are now"
    if change["eventName"] == "ModifySecurityGroupRules":
        return edit_reason(done)  # Late events and edits
    return "not approved by the conditions"


def describe(rule: Rule) -> str:
    """A rule in human terms: 'tcp 22 from 0.0.0.0/0', 'icmp type 8 code 0 from ::/0'."""
    if "ipProtocol" not in rule:  # known by its ID alone
        return f"rule {rule['securityGroupRuleId']} ({rule.get('unreadable', '')})"
    protocol = rule["ipProtocol"]
    low, high = rule.get("fromPort"), rule.get("toPort")
    if protocol == "-1":
        what = "all traffic"
    elif protocol in ICMP:
        what = protocol if low in (None, -1) else f"{protocol} type {low}"
        what += "" if high in (None, -1) else f" code {high}"
    elif opens_every_port(protocol):  # any ports given mean nothing: AWS opens them all
        what = f"protocol {protocol}, all ports"
    else:
        what = f"{protocol} {low}" if low == high else f"{protocol} {low}-{high}"
    group = rule.get("referencedGroupInfo") or {}
    source = rule.get("cidrIpv4") or rule.get("cidrIpv6") or rule.get("prefixListId")
    source = source or group.get("groupId") or group.get("groupName") or "?"
    if group.get("userId"):
        source += f" (account {group['userId']})"
    direction = {True: "to", False: "from", None: "from/to"}[rule["isEgress"]]
    return f"{what} {direction} {source}"


def report_done(summary: dict, change: Change, done: Done, dry_run: bool) -> Outcome:
    """What was done, in words: the decision and, when no stage gave one, the reason."""
    done["reason"] = done["reason"] or reason_of(change, done, dry_run)
    return report(summary, change, decision_of(done, dry_run), done)


def report(summary: dict, change: Change, decision: str, done: Done) -> Outcome:
    """The log line, the SNS message and (SECURITY_HUB_FINDINGS) the finding: after the
    undo, never before it; a finding's failure never stops the message."""
    result = outcome(summary, decision, done)
    notify(result, change)
    if switched_on("SECURITY_HUB_FINDINGS"):
        report_finding(result, change)
    return log(result)


def outcome(summary: dict, decision: str, done: Done) -> Outcome:
    """The summary of one event: the log line and the handler's result."""
    result = {**summary, "decision": decision, "reason": done["reason"]}
    result["rules"] = in_words(done.get("revoked", []))
    if any(done.get(key) for key in UNDONE_BY_FEATURES):
        result["rules"] += undone_by_features(done)
    for key, name in (
        ("kept", "keptRules"),
        ("gone", "alreadyGone"),
        ("leftOpen", "leftOpen"),
    ):
        if done.get(key):
            result[name] = in_words(done[key])
    if done.get("changedSince"):
        result["changedSince"] = [
            {"recorded": in_words([pair["recorded"]])[0], "now": in_words([pair["now"]])[0]}
            for pair in done["changedSince"]
        ]
    for key in ("unreadable", "exception"):  # exception: Exceptions that expire
        if done.get(key):
            result[key] = done[key]
    return result


def in_words(items: list[Rule | str]) -> list[str]:
    """Rules described; a feature's words (a tag, a prefix-list entry) as they are."""
    return [item if isinstance(item, str) else describe(item) for item in items]


METRICS_NAMESPACE = "sg-guardrail"

# The metric in each log line: Events, counted by decision.
EVENTS_METRIC = {"Namespace": METRICS_NAMESPACE, "Dimensions": [["decision"]]}
EVENTS_METRIC["Metrics"] = [{"Name": "Events", "Unit": "Count"}]


def log(result: dict[str, Any]) -> dict[str, Any]:
    """One JSON line per event: it names the event, never holds credentials or the raw event,
    and carries the count of its decision as a CloudWatch metric (Embedded Metric Format),
    so that alarms need no API call."""
    metrics = {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [EVENTS_METRIC]}
    line = {**result, "version": __version__, "Events": 1, "_aws": metrics}
    print(json.dumps(line, default=str))
    return result


def notify(result: dict[str, Any], change: Change) -> None:
    """Publish the change on NOTIFY_TOPIC_ARN, when one is set (publish, in "Notifying")."""
    topic = os.environ.get("NOTIFY_TOPIC_ARN", "").strip()
    if topic:
        publish(topic, result, change)


# ---------------------------------------------------------------------------------------------
# The AWS client: one per service, region and account, reused; retries stop before the
# deadline
# ---------------------------------------------------------------------------------------------

# Per call, the first included; then the error goes up to Lambda, whose retry comes a minute
# later. make burst: with 5, a thousand changes in minutes left 9-17 events to Lambda's retry
# (rules open up to 100-217 s); with 10, 0-2. The deadline still bounds it.
MAX_ATTEMPTS = 10

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


def client(service: str, region: str, account: str | None = None) -> Any:
    """One client per service, region and account, kept for warm invocations.

    account=None is the function's own account; another account is reached through its
    MEMBER_ROLE_NAME role, with credentials renewed shortly before they expire.
    """
    keys = member_keys(account) if account is not None else {}  # Many accounts
    if (service, region, account) not in _clients:
        made = new_client(service, region, **keys)
        made.meta.events.register_first(f"needs-retry.{service}", stop_retrying_near_deadline)
        _clients[service, region, account] = made
    return _clients[service, region, account]


def new_client(service: str, region: str | None, **keys: str) -> Any:
    """A boto3 client with bounded standard-mode retries; boto3 is loaded here, on first use."""
    import boto3
    from botocore.config import Config

    config = Config(**CLIENT_SETTINGS)
    made = boto3.client(service, region_name=region, config=config, **keys)
    made.meta.events.register_first(f"needs-retry.{service}", stop_if_unsupported)
    if _offline:  # python lambda_function.py --offline: decisions on the record alone
        made.meta.events.register_first(f"before-call.{service}", refuse_offline)
    return made


def stop_retrying_near_deadline(
    attempts: int = 1, response: Any = None, caught_exception: Any = None, **_: Any
) -> None:
    """Before botocore retries a failed call: give up instead if the backoff could outrun
    Lambda. Only for what botocore would retry: an answer such as "rule not found" must
    reach the code that handles it, however little time is left."""
    if not would_retry(response, caught_exception) or attempts >= MAX_ATTEMPTS:
        return
    longest_backoff = min(2 ** (attempts - 1), 20)  # botocore's standard mode
    if time.monotonic() + longest_backoff + DEADLINE_MARGIN_S > _retry_until:
        raise DeadlineNear


RETRIED_CODES = {  # botocore's standard mode retries these besides 5xx and lost connections
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "EC2ThrottledException",
    "RequestTimeout",
    "RequestTimeoutException",
    "PriorRequestNotComplete",
    "TransactionInProgressException",
    "IDPCommunicationError",
}


def would_retry(response: Any, caught_exception: Any) -> bool:
    if caught_exception is not None:
        return True
    if response is None:
        return False
    status = response[0].status_code
    code = (response[1] or {}).get("Error", {}).get("Code", "")
    return status >= 500 or status == 429 or code in RETRIED_CODES


# Answers that say the call itself does not exist there: retrying cannot help.
UNSUPPORTED = {"NotImplemented", "UnsupportedOperation", "InvalidAction"}


def stop_if_unsupported(response: Any = None, operation: Any = None, **_: Any) -> None:
    """Before botocore retries: an answer that the call is not implemented is raised at
    once. An emulator (AWS_ENDPOINT_URL; moto answers an HTML 500 for a call it lacks)
    gets the same for a 500 that is no AWS error at all."""
    if response is None or operation is None:
        return
    http, parsed = response
    code = (parsed or {}).get("Error", {}).get("Code", "")
    emulated = bool(os.environ.get("AWS_ENDPOINT_URL"))
    not_aws = http.status_code == 500 and code == "500"  # no AWS error in the body
    if code in UNSUPPORTED or http.status_code == 501 or (emulated and not_aws):
        raise ClientError(parsed, operation.name)


# ---------------------------------------------------------------------------------------------
# The default path's other turns: what one plain change does not run, but others do, in the
# order of the stages above: an error told before it is raised; a call by group name; the
# VPC and tag conditions, and how a rule matches an ALLOWED_RULES entry; a revoke that finds
# some rules gone; what the optional features undid, in words
# ---------------------------------------------------------------------------------------------


def report_error(summary: dict, change: Change, reason: str) -> None:
    """An error is logged and notified before it is raised for Lambda to retry."""
    report(summary, change, "error", left_open(change, reason))


# The calls of other services than EC2 that an event may make, for a denial's words.
SERVICE_OF = {"AssumeRole": "sts", "GetCallerIdentity": "sts", "Publish": "sns"}
SERVICE_OF |= {"LookupEvents": "cloudtrail", "GetResourceConfigHistory": "config"}
SERVICE_OF |= dict.fromkeys(("ReceiveMessage", "DeleteMessage", "SendMessage"), "sqs")
SERVICE_OF |= {"ListAccounts": "organizations", "BatchImportFindings": "securityhub"}


def error_reason(error: Exception) -> str:
    if isinstance(error, Unconfirmed):
        return (
            f"waiting for CloudTrail event history to confirm the change ({error}): "
            "nothing is added on a message's word; Lambda retries (about 1 and 3 "
            "minutes later), then the sweep"
        )
    if not isinstance(error, ClientError):  # no connection, no time left, no revoke
        return f"{type(error).__name__}: {error}"
    code = error_code(error)
    if code in DENIED:
        service = SERVICE_OF.get(error.operation_name, "ec2")
        return f"{code}: the role needs {service}:{error.operation_name} ({error})"
    return f"{code}: {error}"


def left_open(change: Change, reason: str) -> dict[str, Any]:
    """What is reported when the change could not be undone at all."""
    return {
        "reason": reason,
        "leftOpen": change.get("rules", []),
        "unreadable": change.get("unreadable", []),
    }


def read_group_name(params: dict, change: Change, rules: list[Rule]) -> bool:
    """A call by group name (ingress to the default VPC's groups): the name is kept, for the
    group to be looked up; without one either, the rules are unreadable (False)."""
    name = params.get("groupName")
    if change["isEgress"] or not isinstance(name, str) or not 0 < len(name) <= 255:
        change["unreadable"].append("no readable groupId or groupName")
        change["unreadable"] += [describe(rule) for rule in rules]
        return False
    change["groupName"] = name
    return True


def kept_whole(change: Change) -> list[Rule | str]:
    """All that a kept change did: its rules, what could not be read, the features' words."""
    kept = change["rules"] + change["unreadable"] + tags_changed(change)
    return kept + entries_changed(change) + associated(change)


def with_group_facts(change: Change, done: Done, dry_run: bool, account: str | None) -> Done:
    """The VPC and tag conditions, or a group known by its name alone: the group's ID, VPC
    and tags are looked up first (one DescribeSecurityGroups), then the change is decided
    with them."""
    facts = group_facts(client("ec2", change["region"], account), change)
    if facts is None:
        return {**done, "reason": "the group no longer exists", "gone": change["rules"]}
    change.update(facts)  # the report names the group's ID, VPC and tags too
    return handle_as_read(change, dry_run, account)


def group_facts(ec2: Any, change: Change) -> dict[str, Any] | None:
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


def matches(rule: Rule, entry: dict[str, Any]) -> bool:
    """Does the rule fit one ALLOWED_RULES entry? Every key the entry names must agree.

    Ports: the rule's range must lie inside the entry's. ICMP: fromPort/toPort are the type
    and code, matched exactly; -1 in the entry means any type (or code), in the rule it
    means every type, which only an entry's -1 allows.
    """
    cidr = rule.get("cidrIpv4") or rule.get("cidrIpv6")
    network = ipaddress.ip_network(cidr, strict=False) if cidr else None
    icmp = rule["ipProtocol"] in ICMP
    low, high = port_range(rule)
    checks = {
        "isEgress": lambda want: rule["isEgress"] is want,
        "ipProtocol": lambda want: rule["ipProtocol"] == allowed_protocol(want),
        "fromPort": lambda want: (
            want == -1 or rule.get("fromPort", -1) == want
            if icmp
            else low >= port_range({"fromPort": want})[0]
        ),
        "toPort": lambda want: (
            want == -1 or rule.get("toPort", -1) == want
            if icmp
            else high <= port_range({"toPort": want})[1]
        ),
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


def port_range(rule: Rule) -> tuple[int, int]:
    """The ports a rule opens; all of them for protocol -1 or where a port is -1 or absent,
    and for any protocol but tcp and udp (ICMP's type and code are matched apart): AWS
    opens every port of such a protocol whatever range is given (API reference,
    IpPermission.IpProtocol), so an SCTP rule "for 443" opens every SCTP port."""
    if opens_every_port(rule.get("ipProtocol")):
        return (0, 65535)
    low, high = rule.get("fromPort", -1), rule.get("toPort", -1)
    return (0 if low == -1 else low, 65535 if high == -1 else high)


def revoke_the_rest(ec2: Any, change: Change, rules: list[dict], call: Any) -> list[dict]:
    """Someone removed some of the rules already: the call fails whole, so the rest is
    revoked by the IDs AWS holds for them now. Returns those that were gone."""
    existing = rules_now(ec2, group_id=[change["groupId"]])
    left = [e for e in existing if any(same_rule(rule, e) for rule in rules)]
    if left:
        call(
            GroupId=change["groupId"],
            SecurityGroupRuleIds=[e["securityGroupRuleId"] for e in left],
        )
    return [rule for rule in rules if not any(same_rule(rule, e) for e in left)]


def filter_chunks(values: list[str]) -> Iterator[list[str]]:
    """The values 200 at a time: an EC2 filter takes 200 values, and a call (a tag call,
    a burst) may name more; what is past the 200th must not be taken for gone."""
    for start in range(0, len(values), 200):
        yield values[start : start + 200]


def undone_by_features(done: Done) -> list[str]:
    """What the optional features undid, in words: an edit put back (Late events and
    edits), a removal authorized again (Locked groups), and their own words."""
    words = [
        f"{describe(rule)}, restored to {describe(rule['previous'])}"
        for rule in done.get("restored", [])
    ]
    words += [f"{describe(rule)}, authorized again" for rule in done.get("reauthorized", [])]
    for key in ("retagged", "unwidened", "disassociated"):
        words += done.get(key, [])
    return words


# =============================================================================================
# The rest is optional: each section below is one feature, switched off unless its
# setting is on. A section you have not switched on is one you may skip.
# =============================================================================================


def handle_feature(change: Change, done: Done, dry_run: bool, account: str | None) -> Done:
    """A tag call, a prefix list's change or a VPC association: its feature undoes it."""
    if "tagging" in change and rule_tags_at_stake(change):  # Exceptions that expire
        return retag_rules(change, done, dry_run, account)
    if "tagging" in change:  # Guard tags
        return retag(change, done, dry_run, account)
    if "prefixList" in change:  # Prefix lists
        return unwiden(change, done, dry_run, account)
    return disassociate(change, done, dry_run, account)  # VPC associations


def feature_may_undo(change: Change) -> bool:
    """Might a tag call, a prefix list's change or a VPC association need undoing?"""
    if "tagging" in change:
        return any(tags_at_stake(change["tagging"], change["eventName"])) or (
            rule_tags_at_stake(change)  # Exceptions that expire
        )
    listed = change.get("prefixList", {})
    return bool(
        change["rules"]
        or listed.get("added")
        or listed.get("restored")
        or "association" in change
    )


# =============================================================================================
# Rule shapes: the one place a rule changes vocabulary, between CloudTrail's (a Rule, above)
# and the API's (IpPermissions, a SecurityGroupRuleRequest, a DescribeSecurityGroupRules
# answer), and where two rules are compared. Used by the sections below, on with them.
# =============================================================================================


def same_rule(planned: dict[str, Any], existing: dict[str, Any]) -> bool:
    """Is `existing` the rule `planned` names: by ID when it has one, else by its values."""
    if "securityGroupRuleId" in planned:
        return planned["securityGroupRuleId"] == existing["securityGroupRuleId"]
    return same_value(planned, existing)


def same_value(rule: Rule, other: Rule) -> bool:
    """The same direction, and the same traffic let through (descriptions aside)."""
    return rule["isEgress"] == other["isEgress"] and network_key(rule) == network_key(other)


def network_key(rule: Rule) -> tuple:
    """What a rule lets through, for comparing two rules: protocol, ports, source."""
    protocol = rule.get("ipProtocol")
    ports = (
        None
        if opens_every_port(protocol)
        else (rule.get("fromPort", -1), rule.get("toPort", -1))
    )
    cidr = rule.get("cidrIpv4") or rule.get("cidrIpv6")
    group = rule.get("referencedGroupInfo") or {}
    source = (
        ipaddress.ip_network(cidr, strict=False) if cidr else None,
        rule.get("prefixListId"),
        group.get("groupId") or group.get("groupName"),
    )
    return protocol, ports, source


def ip_permission(rule: Rule, described: bool = False) -> dict[str, Any]:
    """A rule as one boto3 IpPermissions entry (with its description, to create it)."""
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
    if described and rule.get("description"):
        for key in ("IpRanges", "Ipv6Ranges", "PrefixListIds", "UserIdGroupPairs"):
            for source in permission.get(key, []):
                source["Description"] = rule["description"]
    return permission


def permissions_of(rules: list[dict]) -> list[dict]:
    return [ip_permission(rule, described=True) for rule in rules]


def rules_of_permission(permission: dict[str, Any], is_egress: bool) -> list[dict]:
    """A boto3 IpPermissions entry (as UnknownIpPermissions lists them) as rules."""
    shape = {
        "isEgress": is_egress,
        "ipProtocol": PROTOCOL_NAMES.get(
            str(permission.get("IpProtocol")), str(permission.get("IpProtocol"))
        ),
    }
    for key in ("FromPort", "ToPort"):
        if permission.get(key) is not None:
            shape[key[0].lower() + key[1:]] = permission[key]
    sources = [{"cidrIpv4": r.get("CidrIp")} for r in permission.get("IpRanges", [])]
    sources += [{"cidrIpv6": r.get("CidrIpv6")} for r in permission.get("Ipv6Ranges", [])]
    sources += [
        {"prefixListId": r.get("PrefixListId")} for r in permission.get("PrefixListIds", [])
    ]
    sources += [
        {
            "referencedGroupInfo": {
                "groupId": p.get("GroupId"),
                "groupName": p.get("GroupName"),
            }
        }
        for p in permission.get("UserIdGroupPairs", [])
    ]
    return [{**shape, **source} for source in sources]


def rule_from_aws(found: dict[str, Any]) -> dict[str, Any]:
    """One DescribeSecurityGroupRules answer as a rule in CloudTrail's vocabulary."""
    rule = {
        "securityGroupRuleId": found["SecurityGroupRuleId"],
        "isEgress": found["IsEgress"],
        "ipProtocol": PROTOCOL_NAMES.get(found["IpProtocol"], found["IpProtocol"]),
        "fromPort": found.get("FromPort"),
        "toPort": found.get("ToPort"),
        "description": found.get("Description"),
    }
    for key in SOURCE_KEYS[:3]:
        rule[key] = found.get(key[0].upper() + key[1:])
    if found.get("ReferencedGroupInfo"):
        info = found["ReferencedGroupInfo"]
        rule["referencedGroupInfo"] = {
            "groupId": info.get("GroupId"),
            "userId": info.get("UserId"),
        }
    return {k: v for k, v in rule.items() if v is not None}


def rule_value(rule: Rule) -> dict[str, Any]:
    """A rule as ModifySecurityGroupRules' SecurityGroupRuleRequest."""
    value: dict[str, Any] = {"IpProtocol": rule["ipProtocol"]}
    value["FromPort"], value["ToPort"] = (
        rule.get("fromPort", -1),
        rule.get("toPort", -1),
    )
    for key in ("cidrIpv4", "cidrIpv6", "prefixListId", "description"):
        if rule.get(key):
            value[key[0].upper() + key[1:]] = rule[key]
    if rule.get("referencedGroupInfo", {}).get("groupId"):
        value["ReferencedGroupId"] = rule["referencedGroupInfo"]["groupId"]
    return value


# =============================================================================================
# Older and odder records: rules rebuilt from the request, when the record has no rule set
#
# Switch: always on. Events: an Authorize whose record has no securityGroupRuleSet (older
# records). IAM actions: the default path's revoke only.
# =============================================================================================


def read_request_rules(params: dict, is_egress: bool, problems: list) -> list[dict[str, Any]]:
    """Rules rebuilt from ipPermissions and from the legacy flat form, one per source."""
    rules = []
    try:
        permissions = items(params.get("ipPermissions"), "ipPermissions")
    except Unreadable as problem:
        problems.append(str(problem))
        permissions = []
    for number, permission in enumerate(permissions, 1):
        try:
            shape = read_protocol_and_ports(as_dict(permission, "permission"))
            sources = read_permission_sources(permission, problems, number)
        except Unreadable as problem:
            problems.append(f"ipPermissions item {number}: {problem}")
            continue
        rules += [{"isEgress": is_egress, **source, **shape} for source in sources]
    try:
        rules += read_flat_form(params, is_egress)
    except Unreadable as problem:
        problems.append(f"top-level permission: {problem}")
    return rules


def read_flat_form(params: dict, is_egress: bool) -> list[dict[str, Any]]:
    """The legacy form: cidrIp, or sourceSecurityGroupName, beside ipProtocol and ports."""
    rules = []
    if params.get("cidrIp") is not None:
        source = read_source("cidrIpv4", params["cidrIp"])
        rules.append({"isEgress": is_egress, **source, **read_protocol_and_ports(params)})
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


def read_permission_sources(
    permission: dict, problems: list, number: int
) -> list[dict[str, Any]]:
    """Each source of one permission (several kinds may stand in one); odd ones reported."""
    readers = {
        "ipRanges": lambda i: read_source("cidrIpv4", i.get("cidrIp")),
        "ipv6Ranges": lambda i: read_source("cidrIpv6", i.get("cidrIpv6")),
        "prefixListIds": lambda i: read_source("prefixListId", i.get("prefixListId")),
        "groups": lambda i: group_source(
            i.get("groupId"), i.get("userId"), i.get("groupName")
        ),
    }
    sources, seen = [], 0
    for key, reader in readers.items():
        for item in items(permission.get(key), key):
            seen += 1
            try:
                sources.append(reader(as_dict(item, f"{key} item")))
            except Unreadable as problem:
                problems.append(f"ipPermissions item {number}, {key}: {problem}")
    if not seen:
        raise Unreadable("a permission without any source")
    return sources


def group_source(group_id: Any, user_id: Any, group_name: Any) -> dict[str, Any]:
    """A referenced security group, by ID or (default VPC) by name, with its owner if given."""
    info: dict[str, str] = {}
    if group_id is not None:
        info["groupId"] = checked(group_id, GROUP_ID, "referenced groupId")
    elif isinstance(group_name, str) and 0 < len(group_name) <= 255:
        info["groupName"] = group_name
    else:
        raise Unreadable("a referenced group without groupId or groupName")
    if user_id is not None:
        info["userId"] = checked(user_id, USER_ID, "userId")
    return {"referencedGroupInfo": info}


# =============================================================================================
# Late events and edits: what AWS holds now, and putting edited rules back
#
# Switch: REVERT_MODIFIED_RULES (on), RESTORE_FROM_CONFIG, RESTORE_FROM_CLOUDTRAIL (off),
# LATE_AFTER_SECONDS. Events: ModifySecurityGroupRules, and any event older than
# LATE_AFTER_SECONDS. IAM actions: ec2:DescribeSecurityGroupRules,
# ec2:ModifySecurityGroupRules, config:GetResourceConfigHistory, cloudtrail:LookupEvents.
# Template: RestoreFromConfig, RestoreFromCloudTrail.
# =============================================================================================


def read_modification(params: dict, _response: Any, change: Change) -> None:
    """ModifySecurityGroupRules: the edited rules with their new values; direction unknown."""
    request = as_dict(
        params.get("ModifySecurityGroupRulesRequest"), "ModifySecurityGroupRulesRequest"
    )
    change["groupId"] = checked(request.get("GroupId"), GROUP_ID, "GroupId")
    entries = request.get("SecurityGroupRule")
    for number, entry in enumerate(entries if isinstance(entries, list) else [entries], 1):
        try:
            change["rules"].append(read_edited_rule(as_dict(entry, "entry")))
        except Unreadable as problem:
            change["unreadable"].append(f"SecurityGroupRule {number}: {problem}")


def read_edited_rule(entry: dict) -> dict[str, Any]:
    """One edited rule: its ID, and its new value when that can be read."""
    rule: Rule = {
        "securityGroupRuleId": checked(
            entry.get("SecurityGroupRuleId"), RULE_ID, "SecurityGroupRuleId"
        ),
        "isEgress": None,  # learned from AWS before acting
    }
    try:
        new = as_dict(entry.get("SecurityGroupRule"), "the new value")
        camel = {k[:1].lower() + k[1:]: v for k, v in new.items() if isinstance(k, str)}
        values = {**read_protocol_and_ports(camel), **read_one_source(camel)}
        return {**rule, **values, **description_of(camel)}
    except Unreadable as problem:
        return {**rule, "unreadable": str(problem)}


def compare_with_now(
    change: Change, now_by_id: dict[str, dict[str, Any]]
) -> tuple[list[dict], list[dict], list[dict]]:
    """(still as the event left them, gone, changed since) for rules known by ID.

    A rule found now takes its direction from AWS (an edit does not say it). A rule whose
    values the event did not let us read cannot be compared: it is revoked (fail closed).
    An edit's rule that holds now nothing the edit let through beyond what it holds (put
    back already, as by the guard's own restore, or narrowed since) is gone: what that edit
    opened is no longer there, and the later change was an event of its own.
    """
    same, gone, changed = [], [], []
    edit = change["eventName"] == "ModifySecurityGroupRules"
    for rule in change["rules"]:
        now = now_by_id.get(rule.get("securityGroupRuleId"))
        if "securityGroupRuleId" not in rule:
            same.append(rule)  # revoked by value: AWS matches it exactly
        elif now is None:
            gone.append(rule)
        elif "unreadable" in rule or network_key(rule) == network_key(now):
            same.append({**rule, "isEgress": now["isEgress"]})
        elif edit and not widens(now, rule):
            gone.append({**rule, "isEgress": now["isEgress"]})
        else:
            changed.append({"recorded": rule, "now": now})
    return same, gone, changed


def rules_now(ec2: Any, **query: Any) -> list[dict[str, Any]]:
    """Rules as AWS holds them now, in the response's vocabulary: by group or by rule ID."""
    name, values = next(iter(query.items()))
    rules = []
    # IAM: ec2:DescribeSecurityGroupRules
    pages = ec2.get_paginator("describe_security_group_rules").paginate(
        Filters=[{"Name": name.replace("_", "-"), "Values": values}]
    )
    for page in pages:
        rules += [rule_from_aws(found) for found in page["SecurityGroupRules"]]
    return rules


def rules_by_id(ec2: Any, rules: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The change's rules as they are now, by rule ID: one call; absent ones are gone."""
    ids = [rule["securityGroupRuleId"] for rule in rules if "securityGroupRuleId" in rule]
    found = [  # 200 IDs a call: a filter takes no more, and the 201st is not gone
        rule
        for chunk in filter_chunks(ids)
        for rule in rules_now(ec2, security_group_rule_id=chunk)
    ]
    return {rule["securityGroupRuleId"]: rule for rule in found}


def widens(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Does the edited rule let through anything its old value did not? Same protocol (or
    the old one all traffic), ports within the old ones, source within the old one."""
    if old["ipProtocol"] != "-1" and new["ipProtocol"] != old["ipProtocol"]:
        return True
    if old["ipProtocol"] in ICMP:
        for key in ("fromPort", "toPort"):  # type, code: -1 is any
            if old.get(key, -1) != -1 and new.get(key, -1) != old.get(key, -1):
                return True
    elif old["ipProtocol"] != "-1":
        low, high = port_range(new)
        old_low, old_high = port_range(old)
        if low < old_low or high > old_high:
            return True
    return not source_within(new, old)


def source_within(new: dict[str, Any], old: dict[str, Any]) -> bool:
    cidr, old_cidr = (rule.get("cidrIpv4") or rule.get("cidrIpv6") for rule in (new, old))
    if cidr and old_cidr:
        network, old_network = (
            ipaddress.ip_network(value, strict=False) for value in (cidr, old_cidr)
        )
        return network.version == old_network.version and network.subnet_of(old_network)
    return network_key(new)[2] == network_key(old)[2]


def plan_edit_undo(
    ec2: Any, change: Change, rules: list[dict], account: str | None, dry_run: bool
) -> tuple[list[dict], list[dict], list[dict]]:
    """(revoke, restore, keep) for the edited rules, from their old values (plan_edits)."""
    previous = previous_values(ec2, change, rules, account, dry_run)
    return plan_edits(rules, previous, is_locked(change))


def plan_edits(
    rules: list[dict], previous: dict[str, dict], locked: bool
) -> tuple[list[dict], list[dict], list[dict]]:
    """(revoke: no old value known, restore: widened, keep: widens nothing) for edits. In a
    locked group every edit is put back."""
    revoking, restoring, narrowed = [], [], []
    for rule in rules:
        old = previous.get(rule["securityGroupRuleId"])
        if old is None:
            revoking.append(rule)
            continue
        old = {**old, "isEgress": rule["isEgress"]}  # an edit's record does not say
        if locked or "unreadable" in rule or widens(rule, old):  # unknown new: put back
            restoring.append({**rule, "previous": old})
        else:
            narrowed.append({**rule, "previous": old})
    return revoking, restoring, narrowed


def edit_reason(done: Done) -> str:
    """What was done with an edit, once done: its old value put back, or the rule revoked."""
    if done["revoked"]:
        return (
            "edited in place, and no source gave the old value: the edited rule was "
            "revoked; put its old value back by hand"
        )
    return "edited in place: the old value was put back, rule ID kept"


def reason_kept(kept: list[dict], narrowed: list[dict]) -> str:
    if narrowed and len(narrowed) == len(kept):
        return "the edit widens nothing the old value allowed: kept"
    return "every rule is allowed" if kept else "nothing left to undo"


def restore(ec2: Any, change: Change, rules: list[dict]) -> None:
    """Put edited rules back to their old values, rule IDs kept: one call for all."""
    entries = [
        {
            "SecurityGroupRuleId": rule["securityGroupRuleId"],
            "SecurityGroupRule": rule_value(rule["previous"]),
        }
        for rule in rules
    ]
    # IAM: ec2:ModifySecurityGroupRules
    ec2.modify_security_group_rules(GroupId=change["groupId"], SecurityGroupRules=entries)


HISTORY_PAGES = 10  # at most 500 earlier events of the group, at LookupEvents' 2 per second


def previous_values(
    ec2: Any, change: Change, rules: list[dict], account: str | None, dry_run: bool
) -> dict[str, dict]:
    """The old value of each edited rule, by rule ID, from the sources switched on."""
    found: dict[str, dict] = {}
    if SETTINGS.RESTORE_FROM_CONFIG:
        found |= current_config_values(ec2, change, rules, account, dry_run)
    missing = [rule for rule in rules if rule["securityGroupRuleId"] not in found]
    if missing and SETTINGS.RESTORE_FROM_CLOUDTRAIL:
        found |= previous_from_cloudtrail(change, missing, account)
    return found


def current_config_values(
    ec2: Any, change: Change, rules: list[dict], account: str | None, dry_run: bool
) -> dict[str, dict]:
    """Config's old values that can be trusted. A Config item names no rule IDs and may be
    older than the group's latest changes (Config lags; daily recording): its "one rule no
    other holds now" can be a rule removed since. So its values are used only where event
    history shows no other change to the group's rules since the item was captured;
    otherwise each rule is asked of event history's own values (RESTORE_FROM_CLOUDTRAIL), or
    revoked. A value that lets through nothing the edit's new value does not is used at once
    (putting it back only narrows the rule: history's last minutes may be missing); a wider
    one would keep the edit or widen the rule, so it waits for event history to hold the
    edit (ConfirmFirst) and everything before it."""
    found, captured = previous_from_config(ec2, change, rules, account)
    edited = {rule["securityGroupRuleId"]: rule for rule in rules}
    wider = {
        rule_id
        for rule_id, old in found.items()
        if "unreadable" in edited[rule_id] or widens(old, edited[rule_id])
    }
    if wider:
        confirm_first(change, dry_run)
    try:
        current = not found or unchanged_since(change, captured, account)
    except RETRY_LATER:  # history denied or throttled: not known unchanged
        harmless = {  # the edit widens nothing Config's value let through (equal too)
            rule_id
            for rule_id, old in found.items()
            if "unreadable" not in edited[rule_id] and not widens(edited[rule_id], old)
        }
        if found and set(edited) <= harmless:  # every rule of the edit, or none waits
            raise  # a narrowing edit is no hole: retried and told, never revoked for it
        current = False  # a widening one is closed now: the rule revoked, and told
    return found if current else {}  # the group changed since the item: not its old values


def unchanged_since(change: Change, captured: Any, account: str | None) -> bool:
    """Does event history show no rule change to the group from the Config item's capture
    to the change, but the change itself? A history cut short, or a capture time that cannot
    be read, is not known to be unchanged."""
    if not isinstance(captured, datetime.datetime):
        return False
    since = captured if captured.tzinfo else captured.replace(tzinfo=datetime.UTC)
    for record in group_records(change, account, since=since):
        if record is CUT_SHORT:
            return False
        try:
            other = read_change(record)
        except BadEvent:  # a failed call changed nothing
            continue
        if other["eventId"] == change["eventId"] or other["groupId"] != change["groupId"]:
            continue
        if other["eventName"] in RULE_CALLS:
            return False
    return True


RULE_CALLS = (  # the calls that change a group's rules
    "AuthorizeSecurityGroupIngress",
    "AuthorizeSecurityGroupEgress",
    "ModifySecurityGroupRules",
    *REMOVAL_EVENTS,
)


def previous_from_config(
    ec2: Any, change: Change, rules: list[dict], account: str | None
) -> tuple[dict[str, dict], Any]:
    """From the group's latest configuration item at or before the edit: the old values,
    and when the item was captured."""
    config = client("config", change["region"], account)
    try:
        # IAM: config:GetResourceConfigHistory
        items = config.get_resource_config_history(
            resourceType="AWS::EC2::SecurityGroup",
            resourceId=change["groupId"],
            laterTime=event_time(change),
            limit=1,
        )["configurationItems"]
    except ClientError as error:
        if error_code(error) in NO_CONFIG_HISTORY:
            return {}, None
        raise
    if not items or items[0].get("configurationItemStatus") not in (None, "OK"):
        return {}, None  # not recorded, or recorded as deleted
    try:
        then = rules_of_config_item(items[0])
    except (Unreadable, ValueError, AttributeError, KeyError, TypeError):
        return {}, None  # an item we cannot read gives no old value
    now = rules_now(ec2, group_id=[change["groupId"]])
    captured = items[0].get("configurationItemCaptureTime")
    return old_values_from_config(then, now, rules), captured


NO_CONFIG_HISTORY = {
    "ResourceNotDiscoveredException",
    "NoAvailableConfigurationRecorderException",
}


def old_values_from_config(
    then: list[dict], now: list[dict], edited: list[dict]
) -> dict[str, dict]:
    """Old values from a Config item of the group before the edit. Its rules carry no IDs:
    the old value is the one rule of the item that none of the group's other rules holds
    now. Used only with one edit in a direction and one such rule; else nothing is known."""
    ids = {rule["securityGroupRuleId"] for rule in edited}
    found = {}
    for direction in (False, True):
        mine = [rule for rule in edited if rule["isEgress"] is direction]
        others = {
            network_key(rule)
            for rule in now
            if rule["isEgress"] is direction and rule["securityGroupRuleId"] not in ids
        }
        candidates = [
            rule
            for rule in then
            if rule["isEgress"] is direction and network_key(rule) not in others
        ]
        if len(mine) == 1 and len(candidates) == 1:
            found[mine[0]["securityGroupRuleId"]] = candidates[0]
    return found


def rules_of_config_item(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The rules of an AWS::EC2::SecurityGroup configuration item (its `configuration`
    holds ipPermissions and ipPermissionsEgress as DescribeSecurityGroups has them, in
    camelCase, sometimes as a JSON string)."""
    configuration = item.get("configuration")
    if isinstance(configuration, str):
        configuration = json.loads(configuration)
    rules = []
    for key, is_egress in (("ipPermissions", False), ("ipPermissionsEgress", True)):
        for permission in configuration.get(key) or []:
            shape = {
                "isEgress": is_egress,
                **read_protocol_and_ports(permission),
            }
            sources = [
                ("cidrIpv4", "cidrIp", permission.get("ipv4Ranges")),
                ("cidrIpv6", "cidrIpv6", permission.get("ipv6Ranges")),
                ("prefixListId", "prefixListId", permission.get("prefixListIds")),
            ]
            for kind, field_name, entries in sources:
                rules += [
                    {**shape, kind: e[field_name], "description": e.get("description")}
                    for e in entries or []
                ]
            rules += [
                {
                    **shape,
                    "referencedGroupInfo": {"groupId": pair.get("groupId")},
                    "description": pair.get("description"),
                }
                for pair in permission.get("userIdGroupPairs") or []
            ]
    return [{k: v for k, v in rule.items() if v is not None} for rule in rules]


def previous_from_cloudtrail(
    change: Change, rules: list[dict], account: str | None
) -> dict[str, dict]:
    """From the records that set each rule ID, back to the Authorize call that created it:
    the value the guard last approved (approved_value). Event history is searched by the
    group's ID, newest first."""
    wanted = {rule["securityGroupRuleId"] for rule in rules}
    seen: dict[str, list] = {rule_id: [] for rule_id in wanted}  # newest first
    created: set[str] = set()
    for record in group_records(change, account):
        set_here = values_set_by(record, change["eventId"], _own_arn, account is not None)
        for rule_id, value in set_here.items():
            if rule_id in wanted and rule_id not in created:
                seen[rule_id].append(value)
                if record.get("eventName") != "ModifySecurityGroupRules":
                    created.add(rule_id)  # nothing set it before its creation
        if created >= wanted:
            break
    locked = is_locked(change)
    found = {rule_id: approved_value(values[::-1], locked) for rule_id, values in seen.items()}
    return {rule_id: value for rule_id, value in found.items() if value is not None}


def group_records(
    change: Change, account: str | None, since: datetime.datetime | None = None
) -> Iterator[Any]:
    """The group's records in event history up to the change's time (since a time, or as
    far back as history goes), newest first: at most HISTORY_PAGES pages, and none once the
    deadline is near (what was read is used)."""
    end = event_time(change)
    return history_records(
        client("cloudtrail", change["region"], account),
        {"AttributeKey": "ResourceName", "AttributeValue": change["groupId"]},
        since or end - datetime.timedelta(days=HISTORY_DAYS),
        end,
    )


def history_records(
    cloudtrail: Any, attribute: dict, start: datetime.datetime, end: datetime.datetime
) -> Iterator[Any]:
    """The records of one lookup attribute between two times, newest first, at LookupEvents'
    two requests a second: at most HISTORY_PAGES pages, then CUT_SHORT if history holds more
    or the deadline is near (what was read is used). A record that cannot be read ends the
    reading there, CUT_SHORT too: passing over it would let an older value stand for it."""
    # IAM: cloudtrail:LookupEvents
    pages = cloudtrail.get_paginator("lookup_events").paginate(
        LookupAttributes=[attribute],
        StartTime=start,
        EndTime=end,
        PaginationConfig={"MaxItems": HISTORY_PAGES * 50, "PageSize": 50},
    )
    for number, page in enumerate(pages):
        if number:  # LookupEvents takes 2 requests a second
            time.sleep(PAGE_INTERVAL_S)
        for event in page["Events"]:
            try:
                record = json.loads(event.get("CloudTrailEvent") or "null")
            except (TypeError, ValueError):
                yield CUT_SHORT  # what history holds past it is not known
                return
            yield record
        if time.monotonic() + 5 > _retry_until:
            yield CUT_SHORT  # the time ran out before the end of history
            return
    if pages.resume_token:  # HISTORY_PAGES read, and history holds more
        yield CUT_SHORT


# What history_records yields last when it stopped before the end of what history holds.
CUT_SHORT = object()


def event_time(change: Change) -> datetime.datetime:
    """Where a search for earlier values ends: the event's time, or now when unreadable."""
    return time_of(change) or datetime.datetime.now(datetime.UTC)


def values_set_by(
    record: Any, event_id: str | None, own_arn: str | None, in_member_account: bool
) -> dict[str, tuple[dict, bool]]:
    """The rule values an earlier record set, by rule ID, each with whether the guard
    approves of it whatever it was before: a rule an Authorize call created (it still
    exists, so it was kept), an edit by an exempt principal or by the guardrail itself."""
    if not isinstance(record, dict) or record.get("errorCode"):
        return {}
    if record.get("eventID") == event_id:
        return {}
    try:
        change = read_change(record)
    except BadEvent:
        return {}
    approved = change["eventName"] != "ModifySecurityGroupRules" or bool(
        principal_exemption(change)
        or (in_member_account and own_session(change, None) == "member")
        or (own_arn and change["principals"][:1] == [own_arn])
    )
    return {
        rule["securityGroupRuleId"]: (rule, approved)
        for rule in change["rules"]
        if "securityGroupRuleId" in rule and "unreadable" not in rule
    }


def approved_value(values: list[tuple[dict, bool]], locked: bool = False) -> dict | None:
    """The value the guard last let a rule have, from the values records set, oldest first.
    An edit by anyone else counts only if it widened nothing, or its value is allowed (in a
    group that is not locked: a locked one allows nothing): so that an unapproved edit (left
    open because it was edited again before the guard got to it) never becomes the "old
    value" a later edit is measured against."""
    approved = None
    for value, by_approved in values:
        narrows = approved is not None and not widens(value, approved)
        allowed = not locked and is_allowed({**value, "isEgress": None})
        if by_approved or narrows or allowed:
            approved = value
    return approved


# =============================================================================================
# Confirming first: nothing that adds access on a message's word
#
# Switch: on wherever a put-back is (locks, tags, wider old values). Before such a write the
# change is read again from CloudTrail event history by its event ID and decided anew on
# AWS's own record. IAM actions: cloudtrail:LookupEvents.
# =============================================================================================


def confirm_first(change: Change, dry_run: bool) -> None:
    """Before a write that adds access: stop unless AWS's own record is what was read."""
    if not dry_run and "confirmedBy" not in change:
        raise ConfirmFirst


def confirmed_change(change: Change, account: str | None) -> Change:
    """The change as event history records it under the event's ID (a forger may reuse a
    real ID: the record AWS returns is read, not the message's copy). Not there yet, raise
    Unconfirmed: Lambda retries, then the sweep; history lags the event by minutes."""
    event_id = change["eventId"]
    if not event_id:
        raise Unconfirmed("the record has no eventID to find it by in event history")
    trail = client("cloudtrail", change["region"], account)
    # IAM: cloudtrail:LookupEvents
    found = trail.lookup_events(
        LookupAttributes=[{"AttributeKey": "EventId", "AttributeValue": event_id}],
        MaxResults=1,
    )["Events"]
    try:
        record = json.loads(found[0]["CloudTrailEvent"]) if found else None
    except (KeyError, TypeError, ValueError):
        record = None
    same = isinstance(record, dict) and all(
        record.get(key) == value
        for key, value in (
            ("eventID", event_id),
            ("eventName", change["eventName"]),
            ("awsRegion", change["region"]),
            ("recipientAccountId", change["account"]),
        )
    )
    if not same:
        raise Unconfirmed(f"event {event_id} is not (yet) in CloudTrail event history as read")
    return {**read_change(record), "confirmedBy": "CloudTrail event history"}


# =============================================================================================
# Locked groups: removals put back
#
# A removed rule goes back unless an unapproved addition made it just before (add, then
# remove: putting it back would open it for good); event history says who made it and when.
# Switch: LOCKED_GROUP_IDS, LOCKED_TAGGED. Events: RevokeSecurityGroupIngress/Egress.
# IAM actions: ec2:AuthorizeSecurityGroupIngress/Egress, cloudtrail:LookupEvents. Template:
# LockedGroupIds, LockedTagKey.
# =============================================================================================


def read_removal(params: dict, response: Any, change: Change) -> None:
    """Revoke*: the rules it removed, from the response's revokedSecurityGroupRuleSet
    (values and IDs, descriptions too), else from the request's permissions. A request that
    names rules by ID alone, with no rule set in the response, says no values to put back."""
    response = response if isinstance(response, dict) else {}
    listed = response.get("revokedSecurityGroupRuleSet")
    rules = read_rule_set(
        {"securityGroupRuleSet": listed}, change["isEgress"], change["unreadable"]
    )
    if rules is None and listed not in (None, {}):  # a rule set that lists nothing
        rules = []
    elif rules is None:
        rules = removed_as_requested(params, response, change)
    change["groupId"] = read_group_id(params.get("groupId"), rules)
    if change["groupId"] is None:
        raise Unreadable("no readable groupId")
    for rule in rules:
        if "unreadable" in rule:  # an ID alone cannot be authorized again
            change["unreadable"].append(describe(rule))
        else:
            change["rules"].append({**rule, "groupId": change["groupId"]})
    if not rules and not change["unreadable"]:
        change["unreadable"].append("the record names no rule the call removed")


def removed_as_requested(params: dict, response: dict, change: Change) -> list[Rule]:
    """The request's permissions, but for those AWS answered it did not find: a revoke of a
    rule the group lacks succeeds in a default VPC and lists it in unknownIpPermissionSet
    (API reference, RevokeSecurityGroupIngress). Putting that back would open a rule that
    never was; a call that found none of them changed nothing."""
    rules = read_request_rules(params, change["isEgress"], change["unreadable"])
    unknown = read_request_rules(
        {"ipPermissions": response.get("unknownIpPermissionSet")},
        change["isEgress"],
        [],
    )
    found = [r for r in rules if not any(same_value(r, u) for u in unknown)]
    if rules and unknown and not found and not change["unreadable"]:
        raise BadEvent("the revoke found none of the rules it named; nothing changed")
    return found


def put_back(ec2: Any, change: Change, done: Done, dry_run: bool, account: str | None) -> dict:
    """A removal from a locked group: authorize the removed rules again, each with the value
    the guard last approved (put_back_plan), never one an unapproved change gave it."""
    approved, done["reason"] = verdict_of_should_revert(change)
    if not approved:
        return {**done, "kept": change["rules"]}
    confirm_first(change, dry_run)
    rules, left_out, cannot, readded = put_back_plan(change, account)
    # An unapproved addition of a value since its removal holds its place: the guard would
    # revoke it (nothing may be added here), and then the rule would be gone. It is revoked
    # first, by its ID, and the rule put back as the guard's own.
    readded = [r for r in readded if any(same_value(r, rule) for rule in rules)]
    if readded and not dry_run:
        gone = revoke(ec2, change, readded)
        done["revoked"] += [rule for rule in readded if rule not in gone]
    present = [] if dry_run or not rules else reauthorize(ec2, change, rules)
    done["kept"] = present + left_out  # put back already by someone; or not to be
    done["reauthorized"] = [rule for rule in rules if rule not in present]
    done["unreadable"] += cannot
    if not done["reauthorized"]:
        why = "not the guard's to put back" if left_out or cannot else "put back already"
        done["reason"] = done["reason"] or f"the removed rules were {why}"
    elif dry_run:
        done["reason"] = done["reason"] or dry_run_reason()
    else:
        done["reason"] = done["reason"] or (
            "the group is locked: the removed rules were authorized again (new rule IDs)"
        )
    return done


# A removed rule created by an unapproved addition less than this before its removal is not
# put back: the guard had not yet revoked that addition (add, then remove, then the guard
# would open it for good). An older one was there when the guard handled its addition.
ADDED_JUST_BEFORE_S = 3600


def put_back_plan(
    change: Change, account: str | None
) -> tuple[list[Rule], list[Rule], list[str], list[Rule]]:
    """(to authorize again, left out, what cannot be put back, in words, and the rules
    unapproved additions made since with a removed value), from the group's
    event history, newest first. Before the removal, each rule's own records (by rule ID:
    its edits back to the Authorize that made it; by value: the newest that made it) give
    the value the guard last approved (approved_value): an unapproved edit's value is never
    put back, nor a rule an unapproved addition made just before (ADDED_JUST_BEFORE_S).
    After it, an exempt principal's removal of the same rule stands. A rule with no record
    in history was there before it: it goes back as removed."""
    rules = change["rules"]
    removed_at = event_time(change)
    chains: list[list[tuple[Rule, bool, bool]]] = [[] for _ in rules]  # newest first
    created, removed_since, same_second, readded = set(), set(), set(), []
    cut_short, seen = False, False
    # A group locked by a tag set only at or after the removal was not locked when it was
    # made: the lock must not undo it (a later sweep or a redrive reads it again).
    locked_since, locked_before = False, None
    window = {**change, "eventTime": None}  # up to now: what came after counts too
    for record in group_records(window, account):
        if record is CUT_SHORT:
            cut_short = True
            break
        try:
            other = read_change(record)
        except BadEvent:
            continue
        made_at = time_of(other) or removed_at
        lock = lock_tagging(other, change["groupId"])
        after_it = made_at >= removed_at and (not seen or made_at == removed_at)
        if lock and after_it and not is_own(other, account):
            # The removal's own second, listed before or after it: which came first is not
            # known, so it counts as set after (never as a lock before the removal).
            # Whoever set it (the remover too: a clean-up, then a lock), unless the guard's
            # own put-back of a lock tag taken off. Tagging again what was locked already
            # leaves the removal told, not put back: a lock is never taken for older than
            # history shows, which would add access.
            locked_since = True
        elif lock is not None and seen and locked_before is None:
            locked_before = lock  # the newest before the removal: locked then, or not
        if other["groupId"] != change["groupId"]:
            continue  # another group's record, which names this one
        other |= {key: change[key] for key in ("vpcId", "tags") if key in change}
        if other["eventId"] == change["eventId"]:
            seen = True  # newest first: what came before this came after the removal
            continue
        after = not seen and made_at >= removed_at
        if after and other["removal"] and exempt_actor(other):
            # an exempt removal since: by value, as a put-back has a new rule ID
            removed_since |= {n for n, r in enumerate(rules) if made(r, other, True)}
        authorizes = other["eventName"].startswith("Authorize")
        if not (authorizes or other["eventName"] == "ModifySecurityGroupRules"):
            continue
        values = {n: made(rule, other) for n, rule in enumerate(rules) if n not in created}
        values = {n: value for n, value in values.items() if value is not None}
        readding = [  # the removed value added again since, under a new rule ID
            added
            for added in (other["rules"] if after and authorizes else [])
            if "securityGroupRuleId" in added and "unreadable" not in added
            if any(same_value(rule, added) for rule in rules)
        ]
        if not values and not readding:
            continue
        approved = addition_approved(other, account)  # asked once a record
        readded += [] if approved else readding
        fresh = (removed_at - made_at).total_seconds() < ADDED_JUST_BEFORE_S
        for n, value in values.items():
            by_id = "securityGroupRuleId" in rules[n]
            if after and not by_id:  # the same second, in either order: undecidable
                if made_at == removed_at:
                    same_second.add(n)
                continue
            # A rule ID's making and edits came before its removal, wherever listed.
            chains[n].append((value, approved or (authorizes and not fresh), fresh))
            if authorizes or not by_id:
                created.add(n)  # its making; by value, the newest that made it is enough
        # Every rule found: stop, unless a lock set since still wants the lock before it.
        if len(created) == len(rules) and not (locked_since and locked_before is None):
            break
    back, left_out, cannot = [], [], []
    locked_later = (
        locked_since
        and not locked_before
        and change["groupId"] not in SETTINGS.LOCKED_GROUP_IDS
        and change["groupId"] != canary_group_id()
    )
    for n, rule in enumerate(rules):
        chain = chains[n]
        if locked_later and n not in removed_since:
            why = "its lock tag was set at or after the removal, and is not known before it"
            cannot.append(f"{describe(rule)}: {why}; put it back by hand if it was locked")
        elif n in removed_since:
            left_out.append(rule)
        elif n in same_second and n not in created:
            why = "made and removed in the same second: which came first is not known"
            cannot.append(f"{describe(rule)}: {why}; put it back by hand")
        elif not chain and not cut_short:
            back.append(rule)  # older than event history: as it was removed
        elif not chain or (n not in created and cut_short):
            why = "too much event history to tell who made it"
            cannot.append(f"{describe(rule)}: {why}; put it back by hand")
        else:
            values = [(v, approved) for v, approved, _ in chain[::-1]]
            value = approved_value(values, locked=True)
            if value is not None:
                back.append(
                    {**value, "isEgress": rule["isEgress"], "groupId": rule["groupId"]}
                )
            elif n in created and not chain[-1][1] and chain[-1][2] and len(chain) == 1:
                left_out.append(rule)  # an unapproved addition, made just before
            else:
                why = "its value is one the guard reverts, and no earlier one is known"
                cannot.append(f"{describe(rule)}: {why}; put it back by hand")
    return back, left_out, cannot, readded


def lock_tagging(other: Change, group_id: str | None) -> bool | None:
    """What a record did to the group's LOCKED_TAGGED keys: True, it set one to a value the
    lock takes (a CreateTags, or the group's creation); False, it took one off or set one to
    a value the lock does not take; None, it touched none."""
    tagging = other.get("tagging") or {}
    if group_id is None or group_id not in tagging.get("groupIds", []):
        return None
    keys = [key for key in tagging.get("tags", {}) if key in SETTINGS.LOCKED_TAGGED]
    if other["eventName"] == "DeleteTags":
        return False if keys or tagging.get("allTags") else None
    if not keys:
        return None
    return any(satisfies(SETTINGS.LOCKED_TAGGED[k], tagging["tags"][k] or "") for k in keys)


def made(removed: Rule, other: Change, by_value: bool = False) -> Rule | None:
    """The rule of `other` that is the removed one: by ID where both have one (a rule ID is
    never reused), else (or by_value) by direction (an edit says none) and what it lets
    through."""
    for rule in other["rules"]:
        if "unreadable" in rule:
            continue
        ids = [r.get("securityGroupRuleId") for r in (removed, rule)]
        if not by_value and None not in ids:
            same = ids[0] == ids[1]
        else:
            direction = rule["isEgress"] in (None, removed["isEgress"])
            same = direction and network_key(removed) == network_key(rule)
        if same:
            return {k: v for k, v in rule.items() if k != "securityGroupRuleId"}
    return None


def exempt_actor(other: Change) -> bool:
    """An exempt principal, or an AWS service left alone: its removal stands (the guard's own
    revoke of an addition does not count: it undoes the addition, not the rule)."""
    aws_service = other["byAwsService"] and not SETTINGS.GUARD_AWS_SERVICES
    return aws_service or principal_exemption(other) is not None


def addition_approved(added: Change, account: str | None) -> bool:
    """Does the guard let this addition stand, whoever made it (as handle_as_read asks)?"""
    if added["byAwsService"] and not SETTINGS.GUARD_AWS_SERVICES:
        return True
    if principal_exemption(added):
        return True
    if is_own(added, account):  # an earlier put-back of its own
        return True
    return verdict_of_should_revert(added)[0] is False


def reauthorize(ec2: Any, change: Change, rules: list[dict]) -> list[dict]:
    """Authorize removed rules again; returns those someone put back already."""
    present = []
    for is_egress in (False, True):
        batch = [rule for rule in rules if rule["isEgress"] is is_egress]
        # IAM: ec2:AuthorizeSecurityGroupIngress / ec2:AuthorizeSecurityGroupEgress
        call = (
            ec2.authorize_security_group_egress
            if is_egress
            else ec2.authorize_security_group_ingress
        )
        if not batch:
            continue
        try:
            call(GroupId=change["groupId"], IpPermissions=permissions_of(batch))
        except ClientError as error:
            if error_code(error) != "InvalidPermission.Duplicate":
                raise
            present += authorize_one_by_one(call, change["groupId"], batch)
    return present


def authorize_one_by_one(call: Any, group_id: str, rules: list[dict]) -> list[dict]:
    """Some rules exist already, which fails the whole call: the rest, one at a time."""
    present = []
    for rule in rules:
        try:
            call(GroupId=group_id, IpPermissions=permissions_of([rule]))
        except ClientError as error:
            if error_code(error) != "InvalidPermission.Duplicate":
                raise
            present.append(rule)
    return present


# =============================================================================================
# Guard tags: tag changes that would switch the guard off are undone
#
# With the tags back, the group's rule changes made since the tag change (kept live on the
# tags they found) are decided again, from event history, and undone where due.
# Switch: ONLY_TAGGED, NEVER_TAGGED, LOCKED_TAGGED; with GUARD_TAGS=true the sweep tells a
# group a lost tag call left off. Events: CreateTags, DeleteTags on security groups, and
# CreateSecurityGroup with tags (a NEVER_TAGGED tag given at creation). IAM actions:
# ec2:CreateTags, ec2:DeleteTags, ec2:DescribeSecurityGroups, cloudtrail:LookupEvents.
# Template: GuardTags (which sets GUARD_TAGS).
# =============================================================================================


def read_tagging(params: dict, _response: Any, change: Change) -> None:
    """CreateTags/DeleteTags: the security groups it tagged (other resources are not ours)
    and the tags, a value of None where DeleteTags named a key alone."""
    groups = [
        item.get("resourceId")
        for item in items(params.get("resourcesSet"), "resourcesSet")
        if isinstance(item, dict)
    ]
    tags = {}
    for item in items(params.get("tagSet"), "tagSet"):
        key, value = field(item, "key"), field(item, "value")
        if not isinstance(key, str) or not (value is None or isinstance(value, str)):
            change["unreadable"].append(f"a tag that cannot be read: {str(item)[:80]}")
        elif change["eventName"] == "CreateTags":
            tags[key] = value or ""  # CreateTags without a value sets an empty one
        else:
            tags[key] = value  # DeleteTags: a key alone (None) deletes whatever its value
    change["tagging"] = {
        "groupIds": [g for g in groups if isinstance(g, str) and GROUP_ID.fullmatch(g)],
        "ruleIds": [r for r in groups if isinstance(r, str) and RULE_ID.fullmatch(r)],
        "tags": tags,
        # DeleteTags without a tag list deletes every user tag of the resource (EC2 API
        # reference, DeleteTags): no key is named, every key is gone.
        "allTags": change["eventName"] == "DeleteTags" and not tags,
    }
    change["groupId"] = (change["tagging"]["groupIds"] or [None])[0]


def read_creation(params: dict, response: Any, change: Change) -> None:
    """CreateSecurityGroup: the tags the new group was given (TagSpecifications), read as a
    CreateTags on it. A NEVER_TAGGED tag given at creation switches the guard off as surely
    as one added later, and makes no CreateTags call. A tag that cannot be read is told."""
    tags = created_with(params, change["unreadable"])
    group_id = response.get("groupId") if isinstance(response, dict) else None
    known = isinstance(group_id, str) and GROUP_ID.fullmatch(group_id) is not None
    change["tagging"] = {"groupIds": [group_id] if known else [], "ruleIds": [], "tags": tags}
    change["tagging"]["allTags"] = False
    change["groupId"] = group_id if known else None
    if not known and (tags or change["unreadable"]):
        raise Unreadable(
            f"the created group's ID is missing or malformed: {str(group_id)[:80]!r}"
        )


def tags_at_stake(tagging: dict[str, Any], event_name: str) -> tuple[list, dict]:
    """(ONLY_TAGGED or LOCKED_TAGGED keys the change may have taken away, NEVER_TAGGED tags
    it added): the request says only which keys to look at. Whether a key was really taken
    away, and the value it had, is learned from AWS (tag_before), never from the request:
    a DeleteTags that removed nothing must not make the function write the value it names."""
    wanted = guard_tag_keys()
    tags = tagging["tags"]
    if event_name == "DeleteTags":
        keys = wanted if tagging["allTags"] else [k for k in tags if k in wanted]
        return list(dict.fromkeys(keys)), {}
    lost = [k for k, v in tags.items() if k in wanted and not meets_guard(k, v)]
    lost = lost if event_name == "CreateTags" else []  # a new group had no tag to lose
    added = {
        k: v
        for k, v in tags.items()
        if k in SETTINGS.NEVER_TAGGED and satisfies(SETTINGS.NEVER_TAGGED[k], v)
    }
    return lost, added


def guard_tag_keys() -> list[str]:
    """The keys the guard needs on a group: ONLY_TAGGED's and LOCKED_TAGGED's."""
    return [*SETTINGS.ONLY_TAGGED, *SETTINGS.LOCKED_TAGGED]


def meets_guard(key: str, value: str | None) -> bool:
    """Does a value of a guard's key meet ONLY_TAGGED's or LOCKED_TAGGED's condition for it
    (a key in both, as guardrail=on and guardrail=locked: either one)?"""
    return any(
        key in wanted and satisfies(wanted[key], value)
        for wanted in (SETTINGS.ONLY_TAGGED, SETTINGS.LOCKED_TAGGED)
    )


def satisfies(wanted: str | None, value: str | None) -> bool:
    """Does a tag's value (None: the tag is absent) meet a condition's (None: any value)?"""
    return value is not None and wanted in (None, value)


def tag_before(
    records: list[Any], group_id: str, key: str, made: Any = None
) -> tuple[bool, str | None]:
    """(known, value) of a group's tag just before a change, from the earlier records of
    the group in event history, newest first: the last CreateTags that set it, a DeleteTags
    that removed it, or the group's creation with its tags. Not known when history does
    not reach back that far."""
    deleted_if = []  # later DeleteTags naming a value: they removed it only if it matched
    tied = []  # values set in the change's own second: not known to be before it
    for record in records:
        name = record.get("eventName")
        same = made is not None and time_of_record(record) == made
        params = record.get("requestParameters") or {}
        if name in TAG_EVENTS:
            try:
                change = read_change(record)
            except BadEvent:
                continue
            tagging = change.get("tagging") or {}
            if group_id not in tagging.get("groupIds", []):
                continue
            if same:
                if name == "CreateTags" and key in tagging["tags"]:
                    tied.append(tagging["tags"][key] or "")
                continue
            if name == "DeleteTags" and tagging["allTags"]:
                return guard_value(tied, key, None)
            if key not in tagging["tags"]:
                continue
            value = tagging["tags"][key]
            if name == "DeleteTags" and value is None:
                return guard_value(tied, key, None)
            if name == "DeleteTags":
                deleted_if.append(value)
                continue
            value = value or ""  # CreateTags without a value sets an empty one
        elif name == "CreateSecurityGroup" and not record.get("errorCode"):
            created = (record.get("responseElements") or {}).get("groupId")
            if created != group_id:
                continue
            value = created_with(params).get(key)
        else:
            continue
        return guard_value(tied, key, None if value in deleted_if else value)
    return guard_value(tied, key, None) if any(usable(key, v) for v in tied) else (False, None)


def usable(key: str, value: Any) -> bool:
    """A value the guard may put back: it meets the guard, and is no NEVER_TAGGED value."""
    return meets_guard(key, value) and not (
        key in SETTINGS.NEVER_TAGGED and satisfies(SETTINGS.NEVER_TAGGED[key], value)
    )


def guard_value(tied: list, key: str, value: Any) -> tuple[bool, Any]:
    """In one second CloudTrail cannot order calls: a tied value the guard accepts wins."""
    return True, next((v for v in tied if usable(key, v)), value)


def created_with(params: dict[str, Any], problems: list[str] | None = None) -> dict[str, str]:
    """The tags a CreateSecurityGroup request gave the group (tagSpecificationSet). With a
    list for problems, what cannot be read is listed there (a tag's value that is no string
    is left out, not taken for an empty one); without, it is passed over (history)."""
    found: dict[str, str] = {}
    odd = [] if problems is None else problems
    specs = params.get("tagSpecificationSet") if isinstance(params, dict) else None
    if specs in (None, {}, []):
        return found
    spec_list = specs.get("items") if isinstance(specs, dict) else None
    if not isinstance(spec_list, list):
        odd.append("tagSpecificationSet is not a CloudTrail item list")
        return found
    for spec in spec_list:
        if not isinstance(spec, dict) or spec.get("resourceType") != "security-group":
            if not isinstance(spec, dict) or not isinstance(spec.get("resourceType"), str):
                odd.append("a tag specification without a resourceType")
            continue
        tags = spec.get("tags")
        tags = tags.get("items") if isinstance(tags, dict) else tags
        if not isinstance(tags, list):
            odd.append("a security-group tag specification whose tags are not a list")
            continue
        for tag in tags:
            key, value = field(tag, "key"), field(tag, "value")
            if not isinstance(key, str) or not (value is None or isinstance(value, str)):
                odd.append(f"a tag given at creation that cannot be read: {str(tag)[:80]}")
                if problems is None and isinstance(key, str):
                    found[key] = ""  # history: as before
                continue
            found[key] = value or ""  # no value: AWS sets an empty one
    return found


def tags_changed(change: Change) -> list[str]:
    """A tag change in words, for the result: 'tags team=web on sg-…'."""
    if "tagging" not in change:
        return []
    tags = (
        "all"
        if change["tagging"]["allTags"]
        else ", ".join(
            key if value is None else f"{key}={value}"
            for key, value in change["tagging"]["tags"].items()
        )
    )
    at = " (given at its creation)" if change["eventName"] in CREATION_EVENTS else ""
    tags = tags or "none"
    return [f"tags {tags} on {', '.join(change['tagging']['groupIds']) or '?'}{at}"]


def retag(change: Change, done: Done, dry_run: bool, account: str | None) -> dict:
    """A tag change on security groups: undo what would switch the guard off. A tag is put
    back only where AWS's records show the group had it, with the value it had."""
    tagging = change["tagging"]
    lost, added = tags_at_stake(tagging, change["eventName"])
    if not tagging["groupIds"] or not (lost or added):
        reason = "the tag change does not switch the guard off"
        return {**done, "reason": reason, "kept": tags_changed(change)}
    groups = ", ".join(tagging["groupIds"])
    if dry_run:  # what a live run would check against AWS, and perhaps undo
        done["retagged"] = [f"tag {k} put back on {groups} if it had it" for k in lost]
        done["retagged"] += [f"tag {k} taken off {groups}" for k in added]
        return {**done, "reason": dry_run_reason()}
    confirm_first(change, dry_run)
    ec2 = client("ec2", change["region"], account)
    done["retagged"], done["kept"] = [], tags_changed(change)
    guarded = guard_tag_keys()
    for group_id, now in tags_now(ec2, tagging["groupIds"]).items():
        if now is None:
            done["gone"].append(f"tags of {group_id} (the group is gone)")
            continue
        take_off = {k: v for k, v in added.items() if k in now and now[k] == v}
        # A NEVER_TAGGED value written over a guard key (team=sandbox over team=web) is
        # taken off and the key's earlier value put back: taking it off alone would leave
        # the group without the key the guard needs. CreateTags overwrites the value.
        guard_keys = [k for k in take_off if k in guarded and k not in lost]
        put_back, left = tags_to_put_back(
            change, group_id, lost + guard_keys, now, done, account, taking=take_off
        )
        take_off = {k: v for k, v in take_off.items() if k not in put_back and k not in left}
        if put_back:
            # IAM: ec2:CreateTags
            ec2.create_tags(
                Resources=[group_id],
                Tags=[{"Key": k, "Value": v} for k, v in put_back.items()],
            )
        if take_off:
            # IAM: ec2:DeleteTags
            ec2.delete_tags(
                Resources=[group_id],
                Tags=[{"Key": k, "Value": v} for k, v in take_off.items()],
            )
        done["retagged"] += [
            f"tag {k}={v} put back on {group_id}" for k, v in put_back.items()
        ]
        done["retagged"] += [f"tag {k} taken off {group_id}" for k in take_off]
        undo_while_off(change, group_id, done, account)
    done["reason"] = (
        "a tag change would have switched the guard off: undone"
        if done["retagged"]
        else "the tag change took away no tag the guard relies on"
    )
    if done["revoked"] or done["restored"] or done["reauthorized"]:
        done["reason"] += "; and the rule changes made while it was off"
    if done["unreadable"]:
        done["reason"] = "some tags, or their values before the change, are not known"
    return done


# A rule change made shortly before the tag change may be delivered after it, and decided on
# the tags as they were then (off): the re-read starts this long before the tag change. What
# it reads again is compared with what AWS holds, so a change decided rightly stays decided.
DELIVERED_LATE_S = 900


def undo_while_off(change: Change, group_id: str, done: Done, account: str | None) -> None:
    """The rule changes made in the group since (shortly before) the tag change, decided
    again now that the guard's tags are back: what was kept only because they were off (the
    live path decided on the tags it found, and the put-back waited for event history) is
    undone. Each is AWS's own record, from event history, and what it undoes joins this
    event's report."""
    since = time_of(change) or datetime.datetime.now(datetime.UTC)
    since -= datetime.timedelta(seconds=DELIVERED_LATE_S)
    window = {**change, "groupId": group_id, "eventTime": None}  # up to now
    for record in group_records(window, account, since=since):
        if record is CUT_SHORT:
            why = "not all of the rule changes since the tag change could be read again"
            done["unreadable"].append(f"{group_id}: {why} (the sweep reads them)")
            break
        try:
            later = read_change(record)
        except BadEvent:
            continue
        if later["eventId"] == change["eventId"] or not later["rules"]:
            continue
        if FEATURE_KEYS & later.keys() or later["groupId"] != group_id:
            continue
        later["confirmedBy"] = "CloudTrail event history (a guard tag put back)"
        again = handle_as_read(later, False, account)
        for key in (
            "revoked",
            "restored",
            "reauthorized",
            "changedSince",
            "unreadable",
        ):
            done[key] += again.get(key, [])


def sweep_guard_tags(
    since: datetime.timedelta, listed: Any, regions: list[str], context: Any
) -> list[str]:
    """The sweep's look at the guard's tag calls (GUARD_TAGS=true; template: GuardTags),
    after every account's and region's history pass, in words: a tag call or a creation that
    switched the guard off on a security group, by someone not exempt, where the group is
    still off now. Its delivery was lost, or its undo failed: it is told as a blind spot, never
    undone here. A replay cannot tell the guard's own answers from an exempt admin's later
    choice key by key (an attacker's review of an undoing pass showed both ways to go wrong),
    so a person looks."""
    if not switched_on("GUARD_TAGS") or is_dry_run():  # a dry run leaves the guard off
        return []
    spots = []
    for account, region, where in sweep_places(listed, regions, context):
        try:
            spots += guard_left_off(since, region, account, where)
        except RETRY_LATER as error:
            spots.append(
                f"the tag calls of {where} in {region} could not be checked: "
                f"{error_reason(error)}"
            )
    return spots


# The rarer calls first: a flood of CreateTags (recorded for every kind of EC2 resource, and
# failed ones need no permission) must not keep a DeleteTags from being read.
GUARD_TAG_CALLS = ("DeleteTags", "CreateSecurityGroup", "CreateTags")


def guard_left_off(since: datetime.timedelta, region: str, account: Any, where: str) -> list:
    """One region's tag calls at stake whose groups are still off now, in words."""
    trail = client("cloudtrail", region, account)
    records, whole = read_history(since, trail, GUARD_TAG_CALLS)
    at_stake = []
    for record in records:
        try:
            change = read_change(record)
        except BadEvent:  # a failed call, another service's
            continue
        tagging = change.get("tagging")
        if not tagging or not tagging["groupIds"] or principal_exemption(change):
            continue
        if is_own(change, account):
            continue
        lost, added = tags_at_stake(tagging, change["eventName"])
        if lost or added:
            at_stake.append((change, lost, added))
    spots, unlooked = [], 0
    now = {}
    if at_stake:
        groups = sorted(
            {g for change, _, _ in at_stake for g in change["tagging"]["groupIds"]}
        )
        now = tags_now(client("ec2", region, account), groups)
    for change, lost, added in at_stake:
        off = {}  # group -> its keys still off, in words
        for group_id in change["tagging"]["groupIds"]:
            if now.get(group_id) is None or group_id_exemption(group_id):
                continue  # gone, or not guarded by its ID
            if time.monotonic() + SWEEP_RESERVE_S > _retry_until:
                unlooked += 1
                continue
            try:
                found = still_off(change, group_id, now[group_id], lost, added, account)
            except RETRY_LATER:  # throttled, say: what was found is still told
                unlooked += 1
                continue
            if found:
                off[group_id] = found
        if off:  # one line per call, however many groups it names
            named = [f"{g} ({', '.join(keys)})" for g, keys in off.items()]  # every one
            spots.append(
                f"{change['actor']}'s {change['eventName']} at {change['eventTime']} switched "
                f"the guard off on {len(off)} group(s) of {where} in {region} that are still "
                f"off: {'; '.join(named)}. The call was not undone live (its delivery "
                "lost, or its undo failed): set the tags by hand"
            )
    if unlooked:
        spots.append(
            f"{unlooked} group(s) that tag calls of {where} in {region} may have switched off "
            "could not be looked at (the deadline, or event history's rate); the next sweep "
            "looks again"
        )
    if not whole:
        spots.append(
            f"not all tag calls of {where} in {region} could be read before the deadline: "
            "the oldest of them may leave event history's window unread"
        )
    return spots


def still_off(
    change: Change, group_id: str, tags: dict, lost: list, added: dict, account: Any
) -> list[str]:
    """The keys at stake that switch the guard off on the group as it is now, in words. A
    guard key missing now counts only if the group had it, as wanted, before the call (its
    earlier records in event history, as the live path reads them): a DeleteTags of every
    tag takes no lock from a group that never had one."""
    off = [f"{key}={tags[key]}" for key, value in added.items() if tags.get(key) == value]
    missing = [key for key in lost if not meets_guard(key, tags.get(key))]
    if missing:
        time.sleep(PAGE_INTERVAL_S)  # LookupEvents takes 2 requests a second
    earlier = tag_history(change, group_id, account) if missing else []
    for key in missing:
        if exempt_choice(earlier, group_id, key, change, tags.get(key)):
            continue  # left live too: an exempt admin's choice in the same second
        known, before = tag_before(earlier, group_id, key, time_of(change))
        if not known:
            off.append(f"{key} not as the guard wants; whether the group had it is not known")
        elif usable(key, before):  # a NEVER_TAGGED value is never asked back
            off.append(f"{key}={before} taken away")
    return off


def tags_now(ec2: Any, group_ids: list[str]) -> dict[str, dict[str, str] | None]:
    """Each group's tags as AWS holds them now; None for a group that is gone."""
    found = {}
    for chunk in filter_chunks(group_ids):
        # IAM: ec2:DescribeSecurityGroups
        pages = ec2.get_paginator("describe_security_groups").paginate(
            Filters=[{"Name": "group-id", "Values": chunk}]
        )
        for page in pages:
            for group in page["SecurityGroups"]:
                tags = {tag["Key"]: tag["Value"] for tag in group.get("Tags", [])}
                found[group["GroupId"]] = tags
    return {group_id: found.get(group_id) for group_id in group_ids}


def tags_to_put_back(
    change: Change,
    group_id: str,
    lost: list[str],
    now: dict,
    done: Done,
    account: Any,
    taking: dict | None = None,
) -> tuple[dict[str, str], set[str]]:
    """(the guard's tags the change took from the group, each with the value it had before;
    the keys left as an exempt principal set them in the change's own second). A tag the
    group holds now as the condition wants stays; one whose earlier value event history
    does not reach is reported, never guessed. taking: the tags about to be taken off, which
    the group holds now but will not."""
    after = {k: v for k, v in now.items() if k not in (taking or {})}
    missing = [key for key in lost if not meets_guard(key, after.get(key))]
    if not missing:
        return {}, set()
    earlier = tag_history(change, group_id, account)
    put_back, left = {}, set()
    for key in missing:
        if exempt_choice(earlier, group_id, key, change, now.get(key)):
            done["kept"].append(
                f"tag {key}={now[key]} on {group_id}, set by an exempt principal in the "
                "change's own second (CloudTrail cannot order the two): left as it is"
            )
            left.add(key)
            continue
        known, value = tag_before(earlier, group_id, key, time_of(change))
        if not known:
            done["unreadable"].append(
                f"tag {key} of {group_id}: event history does not say whether the group "
                "had it before the change; put it back by hand if it did"
            )
        elif usable(key, value) and value != after.get(key):
            put_back[key] = value
    return put_back, left


def exempt_choice(
    records: list[Any], group_id: str, key: str, change: Change, held: str | None
) -> bool:
    """Is the value the group holds now an exempt principal's choice, made in the change's
    own second, that nothing else in that second could be? Only when none of that admin's
    values there meets the guard: an unlock and relock in one second leaves the relock as
    the admin's last word, whoever copied the unlock's value."""
    values = exempt_values_in_its_second(records, group_id, key, change)
    return held in values and not any(usable(key, value) for value in values)


def exempt_values_in_its_second(
    records: list[Any], group_id: str, key: str, change: Change
) -> set[str]:
    """The values an exempt principal gave the key with CreateTags in the change's own
    second."""
    made, found = time_of(change), set()
    for record in records:
        if made is None or time_of_record(record) != made:
            continue
        try:
            other = read_change(record)
        except BadEvent:
            continue
        tagging = other.get("tagging") or {}
        if (
            other["eventName"] == "CreateTags"
            and group_id in tagging.get("groupIds", [])
            and key in tagging.get("tags", {})
            and principal_exemption(other)
        ):
            found.add(tagging["tags"][key] or "")
    return found


def tag_history(change: Change, group_id: str, account: str | None) -> list[Any]:
    """The group's records in event history before the change, newest first."""
    return [
        record
        for record in group_records({**change, "groupId": group_id}, account)
        if isinstance(record, dict) and record.get("eventID") != change["eventId"]
    ]


# =============================================================================================
# Prefix lists: entries added that guarded rules reference are taken out
#
# Switch: always on (a prefix list referenced by a guarded rule, or named by ALLOWED_RULES).
# Events: ModifyManagedPrefixList, RestoreManagedPrefixListVersion. IAM actions:
# ec2:GetManagedPrefixListAssociations, ec2:GetManagedPrefixListEntries,
# ec2:DescribeManagedPrefixLists, ec2:DescribeSecurityGroups, ec2:ModifyManagedPrefixList.
# =============================================================================================


def read_prefix_list_change(params: dict, _response: Any, change: Change) -> None:
    """ModifyManagedPrefixList: the list and the entries it added (removals narrow, a new
    name or size opens nothing). Recorded as {"ModifyManagedPrefixListRequest": {"PrefixListId",
    "AddEntry": {"Cidr", "Description"}}}, one entry a dict, several probably a list."""
    request = field(params, "ModifyManagedPrefixListRequest")
    request = request if isinstance(request, dict) else params
    change["prefixList"] = {"prefixListId": None, "added": []}
    added = field(request, "AddEntry")
    added = field(request, "AddEntries") if added is None else added
    if isinstance(added, dict) and "items" in added:
        added = added["items"]
    for entry in added if isinstance(added, list) else [added] if added else []:
        cidr = field(entry, "Cidr")
        if isinstance(cidr, str) and cidr_version(cidr):
            description = optional_text(field(entry, "Description"), 255)
            found = {
                "cidr": cidr,
                **({"description": description} if description else {}),
            }
            change["prefixList"]["added"].append(found)
        else:
            change["unreadable"].append(f"prefix list entry {str(entry)[:80]}")
    if added is not None and not isinstance(added, (dict, list)):
        change["unreadable"].append(f"prefix list entries {str(added)[:80]}")
    # Removals narrow; they matter only where the same call adds a CIDR back (a new
    # description), which the list held before if CurrentVersion says so.
    removed = field(request, "RemoveEntry")
    removed = field(request, "RemoveEntries") if removed is None else removed
    if isinstance(removed, dict) and "items" in removed:
        removed = removed["items"]
    change["prefixList"]["removed"] = [
        cidr
        for entry in (removed if isinstance(removed, list) else [removed])
        if isinstance(cidr := field(entry, "Cidr"), str) and cidr_version(cidr)
    ]
    version = field(request, "CurrentVersion")
    if isinstance(version, (int, str)) and str(version).isdigit():
        change["prefixList"]["currentVersion"] = int(version)
    listed = field(request, "PrefixListId")
    if isinstance(listed, str) and PREFIX_LIST_ID.fullmatch(listed):
        change["prefixList"]["prefixListId"] = listed
    elif change["prefixList"]["added"] or change["unreadable"]:
        entries = [entry["cidr"] for entry in change["prefixList"]["added"]]
        change["prefixList"]["added"] = []
        raise Unreadable(f"entries {entries} added to an unreadable PrefixListId")


def read_prefix_list_restore(params: dict, _response: Any, change: Change) -> None:
    """RestoreManagedPrefixListVersion: the list, and the version its entries came back from
    (PreviousVersion) over the one they replaced (CurrentVersion); which entries that added
    is asked of AWS. Layout assumed like ModifyManagedPrefixList's (unverified)."""
    request = field(params, "RestoreManagedPrefixListVersionRequest")
    request = request if isinstance(request, dict) else params
    # Unreadable below leaves a list that adds nothing, removes nothing, restores nothing.
    change["prefixList"] = {"prefixListId": None, "added": [], "removed": []}
    listed = field(request, "PrefixListId")
    versions = [field(request, key) for key in ("PreviousVersion", "CurrentVersion")]
    versions = [
        int(v) if isinstance(v, (int, str)) and str(v).isdigit() else None for v in versions
    ]
    if not (isinstance(listed, str) and PREFIX_LIST_ID.fullmatch(listed)):
        raise Unreadable("a prefix list restored, its PrefixListId unreadable")
    change["prefixList"]["prefixListId"] = listed
    if None in versions:
        raise Unreadable(f"{listed} restored from an unreadable version")
    change["prefixList"]["restored"] = {"from": versions[0], "over": versions[1]}


def entries_changed(change: Change) -> list[str]:
    """A prefix-list change in words, for the result: 'entry 0.0.0.0/0 added to pl-…'."""
    if "prefixList" not in change:
        return []
    listed = change["prefixList"]
    if "restored" in listed and not listed["added"]:  # an exempt restore, not looked up
        return [f"{listed['prefixListId']} restored from version {listed['restored']['from']}"]
    return [
        f"entry {entry['cidr']} added to {listed['prefixListId']}" for entry in listed["added"]
    ]


def unwiden(change: Change, done: Done, dry_run: bool, account: str | None) -> dict:
    """Entries added to a prefix list that guarded groups reference: take out the ones
    their rules would not be allowed with."""
    listed = change["prefixList"]
    ec2 = client("ec2", change["region"], account)
    added, versions = listed["added"], None
    if "restored" in listed:  # what a restore brought back is learned from AWS (once)
        versions = list_versions(ec2, listed)
        added = listed["restoredEntries"] = restored_entries(versions)
    elif re_described(listed):  # removed and added back: was it there before?
        added = listed["newEntries"] = new_entries(ec2, listed)
    locks = SETTINGS.LOCKED_GROUP_IDS or SETTINGS.LOCKED_TAGGED
    taken = taken_out(listed, versions) if locks else []  # read only where a lock is set
    uses = references(ec2, listed["prefixListId"], change["account"]) if added or taken else []
    done["unreadable"] += locked_takeouts(listed, taken, uses)
    if not added:
        reason = "the prefix-list change added no entry"
        if done["unreadable"]:
            reason = (
                "a locked group's rule lost entries of its prefix list: told, not put back"
            )
        return {**done, "reason": reason, "kept": [f"{listed['prefixListId']} changed"]}
    guarded = guarded_references(uses) + allowed_through(listed["prefixListId"])
    removing, keeping = entries_to_remove(added, guarded)
    words = entries_changed({"prefixList": {**listed, "added": keeping}})
    done["kept"] = words
    if not removing:
        done["reason"] = (
            "every entry is allowed in the guarded rules that reference the list"
            if guarded
            else "no guarded group references the list"
        )
        return done
    approved, done["reason"] = verdict_of_should_revert({**change, "rules": guarded})
    if not approved:
        return {**done, "kept": entries_changed(change)}
    gone, again = [], []
    if not dry_run:
        made = version_made(listed)
        gone, again = remove_entries(ec2, listed["prefixListId"], removing, made)
    used = ", ".join(
        sorted({rule["groupId"] or "rules ALLOWED_RULES keeps" for rule in guarded})
    )
    done["unwidened"] = [
        f"entry {entry['cidr']} taken out of {listed['prefixListId']} (used by {used})"
        for entry in removing
        if entry not in gone and entry not in again
    ]
    done["changedSince"] += [
        {
            "recorded": f"entry {entry['cidr']} added to {listed['prefixListId']}",
            "now": f"entry {entry['cidr']}, taken out and added again since: left as it is",
        }
        for entry in again
    ]
    done["gone"] = entries_changed({"prefixList": {**listed, "added": gone}})
    done["reason"] = done["reason"] or (
        dry_run_reason()
        if dry_run
        else "the prefix list is a source of guarded rules: the entries they would not "
        "be allowed with were taken out"
    )
    return done


def taken_out(listed: dict[str, Any], versions: dict[str, dict] | None) -> list[str]:
    """The CIDRs a prefix-list change took out: a restore's, what the version it replaced
    held that the restored one lacks (nothing, the list gone); a call's, its removals that
    it does not add back (those are a new description)."""
    if "restored" in listed:
        versions = versions or {"from": {}, "over": {}}
        return [cidr for cidr in versions["over"] if cidr not in versions["from"]]
    added = {entry["cidr"] for entry in listed["added"]}
    return [cidr for cidr in listed.get("removed", []) if cidr not in added]


def locked_takeouts(listed: dict[str, Any], taken: list[str], uses: list[dict]) -> list[str]:
    """The entries taken out of a list that a locked group's rules use (uses: the rules
    that reference the list), in words. A lock says the group must not change, but putting
    an entry back would add access (to every group using the list) on the record's word: it
    is told (unreadable: on the topic, as a metric), for a person to put back."""
    locked = sorted({rule["groupId"] for rule in uses if is_locked(rule)})
    if not locked:
        return []
    return [
        f"entry {cidr} taken out of {listed['prefixListId']}, which locked "
        f"{', '.join(locked)} uses: not put back (put it back by hand)"
        for cidr in taken
    ]


def guarded_references(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules referencing a prefix list that the conditions guard: each carries its
    group's ID, VPC and tags. A group of another account (a shared list) cannot be looked
    at: it counts as guarded, with all traffic both ways, unless its ID is exempt."""
    return [
        rule
        for rule in rules
        if (
            group_id_exemption(rule["groupId"])
            if "foreignAccount" in rule
            else unlocked_exemption({**rule, "removal": False, "eventName": ""})
        )
        is None
    ]


def allowed_through(prefix_list_id: str) -> list[dict[str, Any]]:
    """The widest rules an ALLOWED_RULES entry naming the list would keep: such a list is
    guarded whether or not a group uses it today, or it could be widened while unused and
    a rule from it authorized later, allowed. No group: nothing to look up."""
    rules = []
    for entry in SETTINGS.ALLOWED_RULES:
        if entry.get("prefixListId") != prefix_list_id:
            continue
        protocol = allowed_protocol(entry.get("ipProtocol", "-1")) or "-1"
        shape: dict[str, Any] = {"ipProtocol": protocol}
        if protocol in ICMP:
            shape |= {key: entry.get(key, -1) for key in ("fromPort", "toPort")}
        elif not opens_every_port(protocol):
            low, high = port_range(entry)
            shape |= {"fromPort": low, "toPort": high}
        directions = [entry["isEgress"]] if "isEgress" in entry else [False, True]
        rules += [
            {"groupId": None, "isEgress": is_egress, "prefixListId": prefix_list_id} | shape
            for is_egress in directions
        ]
    return rules


def re_described(listed: dict[str, Any]) -> list[dict[str, str]]:
    """The added entries the same call also removed: a new description for an entry the
    list held, if the version the call changed held it."""
    removed = {ipaddress.ip_network(cidr, strict=False) for cidr in listed["removed"]}
    return [
        entry
        for entry in listed["added"]
        if ipaddress.ip_network(entry["cidr"], strict=False) in removed
    ]


def entries_to_remove(
    added: list[dict[str, str]], guarded: list[dict[str, Any]]
) -> tuple[list[dict], list[dict]]:
    """(to remove, to keep) of the entries a prefix-list change added. An entry stays only
    when every guarded rule referencing the list would be allowed with the entry as its
    source; none stays where a locked group references the list, all stay where no guarded
    group does."""
    removing, keeping = [], []
    for entry in added:
        family = "cidrIpv6" if cidr_version(entry["cidr"]) == 6 else "cidrIpv4"
        opened = [
            {
                **{k: v for k, v in rule.items() if k != "prefixListId"},
                family: entry["cidr"],
            }
            for rule in guarded
        ]
        if any(is_locked(rule) or not is_allowed(rule) for rule in opened):
            removing.append(entry)
        else:
            keeping.append(entry)
    return removing, keeping


def references(ec2: Any, prefix_list_id: str, account: str) -> list[dict[str, Any]]:
    """Every security-group rule that references the prefix list, with its group's ID, VPC
    and tags; a group of another account as all traffic both ways, its rules unknown."""
    group_ids, found = [], []
    # IAM: ec2:GetManagedPrefixListAssociations
    pages = ec2.get_paginator("get_managed_prefix_list_associations")
    for page in pages.paginate(PrefixListId=prefix_list_id):
        for association in page.get("PrefixListAssociations", []):
            group_id, owner = (
                association.get("ResourceId"),
                association.get("ResourceOwner"),
            )
            if not (isinstance(group_id, str) and GROUP_ID.fullmatch(group_id)):
                continue  # not a security group (a route table holds no rules)
            if owner in (None, account):
                group_ids.append(group_id)
            else:
                shape = {
                    "groupId": group_id,
                    "ipProtocol": "-1",
                    "foreignAccount": owner,
                }
                found += [{**shape, "isEgress": egress} for egress in (False, True)]
    for chunk in filter_chunks(group_ids):
        # IAM: ec2:DescribeSecurityGroups
        pages = ec2.get_paginator("describe_security_groups").paginate(
            Filters=[{"Name": "group-id", "Values": chunk}]
        )
        for group in (group for page in pages for group in page["SecurityGroups"]):
            facts = {
                "groupId": group["GroupId"],
                "vpcId": group.get("VpcId"),
                "tags": {tag["Key"]: tag["Value"] for tag in group.get("Tags", [])},
            }
            for key, is_egress in (
                ("IpPermissions", False),
                ("IpPermissionsEgress", True),
            ):
                found += [
                    {**rule, **facts}
                    for permission in group.get(key, [])
                    for rule in rules_of_permission(permission, is_egress)
                    if rule.get("prefixListId") == prefix_list_id
                ]
    return found


def restored_entries(found: dict[str, dict] | None) -> list[dict[str, str]]:
    """The entries a restore brought back (found: its two versions, list_versions): in the
    version restored, not in the one it replaced. Versions do not change once made, so this
    holds however late the event is."""
    if found is None:
        return []  # the list is gone: nothing it opens
    return [
        {
            "cidr": cidr,
            **({"description": e["Description"]} if e.get("Description") else {}),
        }
        for cidr, e in found["from"].items()
        if cidr not in found["over"]
    ]


def list_versions(ec2: Any, listed: dict[str, Any]) -> dict[str, dict] | None:
    """A restore's two versions of the list ("from": the one restored, "over": the one it
    replaced), each its entries by CIDR; None when the list is gone."""
    try:
        return {
            key: entries_at(ec2, listed["prefixListId"], listed["restored"][key])
            for key in ("from", "over")
        }
    except ClientError as error:
        if error_code(error) in PREFIX_LIST_GONE:
            return None
        raise


PREFIX_LIST_GONE = {"InvalidPrefixListID.NotFound", "InvalidPrefixListId.NotFound"}


def new_entries(ec2: Any, listed: dict[str, Any]) -> list[dict[str, str]]:
    """The added entries less those only re-described: removed and added back by the same
    call, and held by the version it changed. Without that version, all count as new."""
    if "currentVersion" not in listed:
        return listed["added"]
    try:
        before = entries_at(ec2, listed["prefixListId"], listed["currentVersion"])
    except ClientError as error:
        if error_code(error) in PREFIX_LIST_GONE:
            return listed["added"]
        raise
    held = {ipaddress.ip_network(cidr, strict=False) for cidr in before}
    again = re_described(listed)
    return [
        entry
        for entry in listed["added"]
        if entry not in again or ipaddress.ip_network(entry["cidr"], strict=False) not in held
    ]


def entries_at(ec2: Any, prefix_list_id: str, version: int) -> dict[str, dict]:
    """A version of the list's entries, by CIDR as AWS writes it."""
    # IAM: ec2:GetManagedPrefixListEntries
    pages = ec2.get_paginator("get_managed_prefix_list_entries").paginate(
        PrefixListId=prefix_list_id, TargetVersion=version
    )
    return {entry["Cidr"]: entry for page in pages for entry in page.get("Entries", [])}


def version_made(listed: dict[str, Any]) -> int | None:
    """The version of the list the change made: the one after the version it changed."""
    if "restored" in listed:
        return listed["restored"]["over"] + 1
    return listed["currentVersion"] + 1 if "currentVersion" in listed else None


# Later versions of a list read at most, to find an entry taken out and added again since
# the change; past them the entries are taken out as before (a flood of edits keeps nothing).
PREFIX_LIST_VERSIONS = 10


def remove_entries(
    ec2: Any, prefix_list_id: str, entries: list[dict[str, str]], made: int | None = None
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Take the entries out of the list, at the version they were read from. Returns (those
    no longer in it, or the list gone: already gone; those a version after `made`, the one
    the change made, lacked: taken out and added again since, by a later call that decides
    them, so left). A version changed in between fails the call; Lambda retries."""
    try:
        # IAM: ec2:DescribeManagedPrefixLists
        lists = ec2.describe_managed_prefix_lists(PrefixListIds=[prefix_list_id])
        if not lists["PrefixLists"]:
            return entries, []
        version = lists["PrefixLists"][0]["Version"]
        present = {
            ipaddress.ip_network(cidr, strict=False): cidr
            for cidr in entries_at(ec2, prefix_list_id, version)
        }
        again = added_again(
            ec2, prefix_list_id, entries, range((made or version) + 1, version)
        )
    except ClientError as error:
        if error_code(error) in PREFIX_LIST_GONE:
            return entries, []
        raise
    networks = [ipaddress.ip_network(entry["cidr"], strict=False) for entry in entries]
    removing = [
        present[network]
        for entry, network in zip(entries, networks)
        if network in present and entry not in again
    ]
    if removing:
        # IAM: ec2:ModifyManagedPrefixList
        ec2.modify_managed_prefix_list(
            PrefixListId=prefix_list_id,
            CurrentVersion=version,
            RemoveEntries=[{"Cidr": cidr} for cidr in removing],
        )
    return [e for e, network in zip(entries, networks) if network not in present], again


def added_again(
    ec2: Any, prefix_list_id: str, entries: list[dict[str, str]], versions: range
) -> list[dict[str, str]]:
    """The entries one of these versions (AWS keeps each, unchanged) did not hold."""
    if not versions or len(versions) > PREFIX_LIST_VERSIONS:
        return []
    again = []
    for version in versions:
        held = {
            ipaddress.ip_network(c, strict=False)
            for c in entries_at(ec2, prefix_list_id, version)
        }
        again += [
            entry
            for entry in entries
            if entry not in again
            and ipaddress.ip_network(entry["cidr"], strict=False) not in held
        ]
    return again


# =============================================================================================
# VPC associations: a group associated with a guarded VPC is disassociated
#
# Switch: always on; ONLY_VPC_IDS and NEVER_VPC_IDS say which VPCs are guarded (every one,
# unset). Events: AssociateSecurityGroupVpc. IAM actions: ec2:DisassociateSecurityGroupVpc;
# for a late event, cloudtrail:LookupEvents (granted with the sweep, which brings them).
# =============================================================================================


def read_association(params: dict, _response: Any, change: Change) -> None:
    """AssociateSecurityGroupVpc: the group and the VPC it may now be used in. Layout assumed
    like ModifySecurityGroupRules' ({"AssociateSecurityGroupVpcRequest": {"GroupId",
    "VpcId"}}) or flat camelCase; unverified by a real record."""
    request = field(params, "AssociateSecurityGroupVpcRequest")
    request = request if isinstance(request, dict) else params
    change["groupId"] = checked(field(request, "GroupId"), GROUP_ID, "GroupId")
    vpc = checked(field(request, "VpcId"), VPC_ID, "VpcId")
    change["association"] = {"vpcId": vpc}


def associated(change: Change) -> list[str]:
    """An association in words, for the result: 'sg-… associated with vpc-…'."""
    if "association" not in change:
        return []
    return [f"{change['groupId']} associated with {change['association']['vpcId']}"]


def vpc_guarded(vpc_id: str | None) -> bool:
    return (
        not (SETTINGS.ONLY_VPC_IDS and vpc_id not in SETTINGS.ONLY_VPC_IDS)
        and vpc_id not in SETTINGS.NEVER_VPC_IDS
    )


# AWS refusing to take the group out of the VPC as things stand (in use there, say): a
# retry would fail alike, so it is reported for a person instead.
CANNOT_DISASSOCIATE = {"DependencyViolation", "OperationNotPermitted", "IncorrectState"}


def disassociate(change: Change, done: Done, dry_run: bool, account: str | None) -> dict:
    """A group associated with a VPC the conditions guard while its own VPC is not guarded:
    its rules, never judged, would reach the guarded VPC. Undone (DisassociateSecurityGroupVpc);
    what AWS refuses is reported. Without VPC conditions every VPC is guarded alike."""
    target = change["association"]["vpcId"]
    words = associated(change)
    if not vpc_guarded(target):
        return {
            **done,
            "reason": f"{target} is not a VPC the conditions guard",
            "kept": words,
        }
    ec2 = client("ec2", change["region"], account)
    facts = group_facts(ec2, change)
    if facts is None:
        return {**done, "reason": "the group no longer exists", "gone": words}
    change.update(facts)
    if vpc_guarded(change["vpcId"]):
        reason = "the group's own VPC is guarded too: its rules are judged already"
        return {**done, "reason": reason, "kept": words}
    approved, done["reason"] = verdict_of_should_revert(change)
    if not approved:
        return {**done, "kept": words}
    now = datetime.datetime.now(datetime.UTC)
    again, whole = associated_again(change, account) if is_late(change, now) else (None, True)
    if again:  # what is there now is the later call's, judged as its own event
        done["changedSince"] = [{"recorded": words[0], "now": again}]
        reason = f"{again}: left as it is, that call is judged as its own event"
        return {**done, "reason": reason}
    if not whole:
        cut_short = (
            "event history since the association could not be read whole (a flood of "
            "calls, or no time left): an association made again since may be undone too"
        )
        done["reason"] = "; ".join(filter(None, [done["reason"], cut_short]))
    if not dry_run:
        try:
            # IAM: ec2:DisassociateSecurityGroupVpc
            ec2.disassociate_security_group_vpc(GroupId=change["groupId"], VpcId=target)
        except ClientError as error:
            if error_code(error) in GONE | {"InvalidVpcID.NotFound"}:
                return {**done, "reason": "already gone", "gone": words}
            if error_code(error) not in CANNOT_DISASSOCIATE:
                raise
            done["unreadable"].append(
                f"{words[0]}: AWS refused to undo it ({error_code(error)}: {error}); "
                "undo it by hand"
            )
            return {**done, "reason": "the association could not be undone"}
    done["disassociated"] = [f"{words[0]}, disassociated again"]
    done["reason"] = done["reason"] or (
        dry_run_reason()
        if dry_run
        else f"{change['vpcId']} is not guarded, {target} is: the association was undone"
    )
    return done


def associated_again(change: Change, account: str | None) -> tuple[str | None, bool]:
    """A late association (a retry, a redrive, the sweep): (a later successful
    AssociateSecurityGroupVpc of the same group and VPC in event history, in words; whether
    history was read whole). A later association can succeed only once this one has ended, so
    undoing now would take out an association made since (an exempt admin's, say); it is left
    and told as changed-since. A later disassociation alone proves nothing: it may fail after
    its record (it is asynchronous), and the undo goes ahead, where AWS says if it is gone.
    Only calls a whole second later count (within one second CloudTrail's times cannot order
    them). History that may not be read is no answer: the undo goes ahead, as before."""
    made = time_of(change)
    if made is None:  # no time to search from: the undo goes ahead
        return None, True
    trail = client("cloudtrail", change["region"], account)
    pair = (change["groupId"], change["association"]["vpcId"])
    name = "AssociateSecurityGroupVpc"
    later = made + datetime.timedelta(seconds=1)
    try:
        for record in history_records(
            trail,
            {"AttributeKey": "EventName", "AttributeValue": name},
            later,
            datetime.datetime.now(datetime.UTC),
        ):
            if record is CUT_SHORT:
                return None, False
            if association_pair(record, name) == pair and record_after(record, made):
                by = read_actor(record.get("userIdentity"))["actor"]
                return f"associated again at {record['eventTime']} by {by}", True
        return None, True
    except ClientError as error:
        if error_code(error) not in DENIED:
            raise
        return None, True


def association_pair(record: Any, name: str) -> tuple[Any, Any] | None:
    """(GroupId, VpcId) of a successful call named name, in either layout read_association
    reads; None for a failed call (it changed nothing) or another."""
    if not isinstance(record, dict) or record.get("eventName") != name:
        return None
    if record.get("errorCode") or record.get("errorMessage"):
        return None
    params = record.get("requestParameters")
    request = field(params, f"{name}Request")
    request = request if isinstance(request, dict) else params
    return field(request, "GroupId"), field(request, "VpcId")


def record_after(record: dict, made: datetime.datetime) -> bool:
    later = time_of_record(record)
    return later is not None and later > made


# The optional features' events and their readers, above: read_rules (on the default path)
# looks an event up here, which can be written only once every reader is defined.
FEATURE_READERS = {
    "ModifySecurityGroupRules": read_modification,  # Late events and edits
    "RevokeSecurityGroupIngress": read_removal,  # Locked groups
    "RevokeSecurityGroupEgress": read_removal,
    "CreateTags": read_tagging,  # Guard tags
    "DeleteTags": read_tagging,
    "CreateSecurityGroup": read_creation,  # its tags, read as a CreateTags (Guard tags)
    "ModifyManagedPrefixList": read_prefix_list_change,  # Prefix lists
    "RestoreManagedPrefixListVersion": read_prefix_list_restore,
    "AssociateSecurityGroupVpc": read_association,  # VPC associations
}


# =============================================================================================
# Many accounts: the member role, and the function's own identity
#
# Switch: MEMBER_ROLE_NAME. Events: any, from a member account. IAM actions: sts:AssumeRole
# on the member role, sts:GetCallerIdentity. Template: Mode, MemberRoleName, OrganizationId.
# =============================================================================================


def member_keys(account: str) -> dict[str, str]:
    """The member role's keys in that account, renewed shortly before they expire (and the
    account's clients with them)."""
    if not fresh(_credentials.get(account)):
        _credentials[account] = assume_member_role(account)
        for key in [key for key in _clients if key[2] == account]:
            del _clients[key]
    found = _credentials[account]
    return {
        "aws_access_key_id": found["AccessKeyId"],
        "aws_secret_access_key": found["SecretAccessKey"],
        "aws_session_token": found["SessionToken"],
    }


def fresh(credentials: dict[str, Any] | None) -> bool:
    if credentials is None:
        return False
    left = credentials["Expiration"] - datetime.datetime.now(datetime.UTC)
    return left.total_seconds() > CREDENTIALS_MARGIN_S


def assume_member_role(account: str) -> dict[str, Any]:
    """Credentials in a member account, asked of STS in the function's own region: an
    opt-in region the central account has not enabled must not block its events."""
    role = f"arn:{_partition}:iam::{account}:role/{SETTINGS.MEMBER_ROLE_NAME}"
    # IAM: sts:AssumeRole
    answer = client("sts", own_region("us-east-1")).assume_role(
        RoleArn=role, RoleSessionName=SESSION
    )
    return answer["Credentials"]


_own_arn: str | None = None  # the function's own session ARN, asked once per cold start

_own_user_id: str | None = None  # and its role's unique ID (AROA…), to know its own messages


def own_region(fallback: str) -> str:
    """The function's own region (Lambda sets AWS_REGION), where STS always answers; a
    change's region may be an opt-in one the function's account has not enabled."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or fallback


def own_identity(region: str) -> tuple[str, str]:
    """(session ARN, role's unique ID) of the function itself: one call per cold start."""
    global _own_arn, _own_user_id
    if _own_arn is None or _own_user_id is None:
        # IAM: sts:GetCallerIdentity (allowed to every principal; named for the record)
        found = client("sts", own_region(region)).get_caller_identity()
        _own_arn, _own_user_id = found["Arn"], found["UserId"].split(":")[0]
    return _own_arn, _own_user_id


# =============================================================================================
# Buffered delivery (Delivery=buffered): EventBridge -> SQS -> Lambda, a batch at a time
#
# Each message holds one event, handled as a live one. Additions by rule ID are decided one by
# one, then revoked together: one call per group and direction for the whole batch, so that a
# burst into one group costs a call per batch, not per change. A message whose undo failed is
# reported back (ReportBatchItemFailures), and SQS delivers it again.
#
# Switch: template Delivery=buffered (the handler tells the two shapes apart by themselves).
# Events: every one, in SQS batches. IAM actions: sqs:ReceiveMessage, sqs:DeleteMessage,
# sqs:GetQueueAttributes (Lambda's event source mapping, with the function's role).
# =============================================================================================


class Planned(TypedDict):
    """One message of a batch, planned (what it would revoke), not yet revoked."""

    messageId: str | None
    summary: dict[str, Any]
    change: Change
    done: Done
    account: str | None


def handle_batch(messages: list[dict], context: Any) -> dict[str, Any]:
    """Plan each message alone, revoke once per group and direction, then report each."""
    failed, planned = [], []
    for message in messages:
        event = event_of(message)
        try:
            change = read_change(event)
        except BadEvent:
            change = None
        try:
            if is_dry_run() or change is None or not revokes_by_id(change):
                handle_event(event, context)  # reads it again: logs why it is ignored
            else:
                planned += plan_message(message.get("messageId"), event, change, context)
        except RETRY_LATER:
            failed.append(message.get("messageId"))
        except Exception as error:  # noqa: BLE001 -- one bad message never stops the others
            summary = summarize(change) if change else first_summary(event)
            report_error(summary, change or {}, f"{type(error).__name__}: {error}")
            failed.append(message.get("messageId"))
    together: dict[tuple, list[Planned]] = {}
    for item in planned:
        key = (item["change"]["region"], item["account"], item["change"]["groupId"])
        together.setdefault(key, []).append(item)
    for (region, account, group_id), items in together.items():
        by_id = {
            rule["securityGroupRuleId"]: rule
            for item in items
            for rule in item["done"]["revoked"]
        }
        rules = list(by_id.values())  # the same event twice in a batch: revoked once
        try:
            gone = revoke(client("ec2", region, account), {"groupId": group_id}, rules)
        except RETRY_LATER as error:
            reason = error_reason(error)
            for item in items:
                if item["done"]["revoked"]:
                    report_error(item["summary"], item["change"], reason)
                    failed.append(item["messageId"])
                else:
                    finish(item, [])
            continue
        for item in items:
            finish(item, gone)
    # A message without an ID fails the whole batch (SQS delivers it all again): fail closed.
    return {"batchItemFailures": [{"itemIdentifier": m or ""} for m in failed]}


def is_sqs_batch(event: Any) -> bool:
    messages = event.get("Records") if isinstance(event, dict) else None
    return (
        isinstance(messages, list)
        and bool(messages)
        and all(isinstance(m, dict) and m.get("eventSource") == "aws:sqs" for m in messages)
    )


def event_of(message: dict) -> Any:
    """The EventBridge event in a message's body; what is no JSON, or no string, stays as
    it is (ignored)."""
    body = message.get("body")
    if not isinstance(body, str):
        return body
    try:
        return json.loads(body)
    except ValueError:
        return body


def revokes_by_id(change: Change) -> bool:
    """An addition whose every rule has its ID: the kind a batch revokes together."""
    rules = change["rules"]
    return (
        change["eventName"].startswith("Authorize")
        and bool(rules)
        and not change["unreadable"]
        and all("securityGroupRuleId" in rule for rule in rules)
        # An exception is decided alone: a batch's dry run would keep nothing.
        and not claims_exception(change)
    )


def plan_message(
    message_id: str | None, event: Any, change: Change, context: Any
) -> list[Planned]:
    """The change planned (handled in dry run: what it would revoke, nothing revoked yet).
    Anything out of the way (another account out of reach, an error) is handled alone
    instead, as a live event is, and leaves nothing to revoke with the batch."""
    summary = summarize(change)  # as read, before the group's facts are added
    try:
        account = member_account(change, context)
        done = handle(change, True, context)
    except (OutOfReach, *RETRY_LATER):
        handle_event(event, context)
        return []
    return [
        {
            "messageId": message_id,
            "summary": summary,
            "change": change,
            "done": done,
            "account": account,
        }
    ]


def finish(item: Planned, gone: list[dict]) -> None:
    """The result of a change revoked with its batch: logged and told as a live one."""
    change, done = item["change"], item["done"]
    done["gone"] += [rule for rule in done["revoked"] if rule in gone]
    done["revoked"] = [rule for rule in done["revoked"] if rule not in gone]
    report_done(item["summary"], change, done, False)


# =============================================================================================
# Sweeping: what the live path missed, from event history and the failure queue, on a schedule
#
# Switch: template SweepMinutes (0: off), SweepRegions, SweepAccounts, Canary, CanaryHours,
# CanaryVpcId. Events: the schedule's {"sweep": {...}} input. IAM actions:
# cloudtrail:LookupEvents, sqs:ReceiveMessage, sqs:DeleteMessage (the failure queue),
# sns:Publish; the canary's rule is added by the scheduler's own role, not the function's.
# =============================================================================================

SWEEP_MARGIN_MINUTES = 15  # CloudTrail's own delay before event history has a record


def sweep(settings: Any, context: Any) -> dict[str, Any]:
    """Handle again, through the same path, every security-group change of the last period
    (plus a margin) in event history, and every event waiting in the failure queue. What is
    undone already is `already-gone`, what is kept stays kept: a sweep is safe to repeat."""
    settings = settings if isinstance(settings, dict) else {}
    minutes = settings.get("minutes")
    minutes = minutes if type(minutes) is int and 0 < minutes <= 1440 else 15
    since = datetime.timedelta(minutes=minutes + SWEEP_MARGIN_MINUTES)
    own_region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    regions = schedule_regions(settings, own_region)
    counts: dict[str, int] = {}
    # The canary first: its rule still in the group means the live path is blind, and the
    # history pass below must not take it out quietly before it is seen.
    try:
        blind_spots = stale_canaries(datetime.datetime.now(datetime.UTC))
    except RETRY_LATER as error:  # the blind spots below are still told
        blind_spots = [f"the canary could not be checked: {error_reason(error)}"]
    # The failure queue next: each of its events is known to have been missed.
    for message, event in failed_events():
        refused = refusal(message, event, own_region or "us-east-1")
        if refused:
            blind_spots.append(refused)
            decision = "refused"
        else:
            decision = handle_quietly(event, context)
        tally(counts, decision)
        if decision != "error":
            # IAM: sqs:DeleteMessage
            client("sqs", own_region or "us-east-1").delete_message(
                QueueUrl=os.environ["FAILURE_QUEUE_URL"],
                ReceiptHandle=message["ReceiptHandle"],
            )
    listed = listed_accounts(settings.get("accounts"), blind_spots)
    # The same accounts and window for the exceptions (SweepAccounts=organization listed).
    places = (since, listed, regions)
    blind_spots += sweep_exceptions(*places, counts, context, expire=False)
    # Expiries before the history pass too: an exception is told as expired, not as its
    # grant read again (still in the window) and found past its time.
    blind_spots += sweep_exceptions(*places, counts, context, expire=True)
    period = datetime.timedelta(minutes=minutes)
    if not SETTINGS.MEMBER_ROLE_NAME:  # each pass below skips these accounts
        blind_spots += [
            f"account {account}: no MEMBER_ROLE_NAME to sweep it"
            for account in other_accounts(listed, context)
        ]
    for account, region, where in sweep_places(listed, regions, context):
        try:
            blind_spots += sweep_history(since, period, region, account, counts, context)
        except RETRY_LATER as error:
            blind_spots.append(f"{where} in {region} could not be swept fully: {error}")
    blind_spots += sweep_guard_tags(since, listed, regions, context)  # Guard tags
    for spot in blind_spots:
        tell_blind_spot(spot)
    result = {
        "sweep": {"minutes": minutes, "regions": regions},
        "decisions": counts,
        **({"blindSpots": blind_spots} if blind_spots else {}),
    }
    print(json.dumps({**result, "version": __version__}))
    return result


def schedule_regions(settings: dict[str, Any], own_region: str | None) -> list[str]:
    """The schedule's regions (a direct invoke may give anything): the well-formed names of
    its list, or the function's own region when it gives no list."""
    listed = settings.get("regions")
    listed = listed if isinstance(listed, list) and listed else [own_region or "us-east-1"]
    return [
        region for region in listed if isinstance(region, str) and REGION.fullmatch(region)
    ]


SWEEP_RESERVE_S = 10  # time kept back to log, tell and return


def sweep_history(
    since: datetime.timedelta,
    period: datetime.timedelta,
    region: str,
    account: str | None,
    counts: dict[str, int],
    context: Any,
) -> list[str]:
    """One region's event history through the handler; returns the blind spots found.

    The oldest `period` of the window is read first and whole: it leaves the window before
    the next sweep, so nothing may crowd it out (a flood of newer failed calls, which need
    no permission and stay in history). Failed calls are dropped, not counted as changes.
    The changes whose rules are all gone already (one describe for up to 200 rules) are
    counted `already-gone` without a call each. What the deadline leaves is told, as a
    count of at least so many changes; the next sweep reads what is still in its window."""
    # IAM: cloudtrail:LookupEvents (in other accounts, their member role's)
    trail = client("cloudtrail", region, account)
    ec2 = client("ec2", region, account)
    where = f"account {account}" if account else "this account"
    spots, left, whole = [], 0, True
    # The part of the window that leaves it before the next sweep, then the rest.
    for older, newer in ((since, since - period), (since - period, None)):
        if older <= datetime.timedelta(0) or not whole:
            continue
        read, whole = read_history(older, trail, until=newer)
        records = [r for r in read if not (isinstance(r, dict) and r.get("errorCode"))]
        if len(read) > len(records):
            tally(counts, "failed-calls-skipped", len(read) - len(records))
        gone = gone_already(ec2, records)
        for record in records:
            if id(record) in gone:
                tally(counts, "already-gone")
            elif time.monotonic() + SWEEP_RESERVE_S > _retry_until:
                left += 1
            else:
                decision = handle_quietly(record, context, from_history=True)
                tally(counts, decision)
                if decision == "reverted" and is_canary_change(record):
                    spots.append(
                        f"the canary rule added at {record_of(record).get('eventTime')} "
                        f"was still in place when the sweep found it in event history "
                        f"({where}, {region}): the live path missed it; the sweep "
                        "revoked it"
                    )
    if whole:
        spots += [
            spot
            for record in read_history(since, trail, TRAIL_EVENTS)[0]
            if (spot := blinding(record))
        ]
    if left or not whole:
        spots.append(
            f"the sweep ran out of time in {where}, {region}: {left} changes of the "
            "last period were read and not handled"
            + ("" if whole else ", and the newest part of event history was not read")
            + " (the next sweep reads them again while they are in its window)"
        )
    return spots


def is_canary_change(event: Any) -> bool:
    """A change to the canary's group, which only the canary's schedule makes."""
    group = (record_of(event).get("requestParameters") or {}).get("groupId")
    return bool(canary_group_id()) and group == canary_group_id()


def gone_already(ec2: Any, records: list[Any]) -> set[int]:
    """id() of each record that added rules by ID only, all of which are gone now."""
    named: dict[int, set[str]] = {}
    for record in records:
        try:
            change = read_change(record)
        except BadEvent:
            continue
        ids = {rule.get("securityGroupRuleId") for rule in change["rules"]}
        additions = change["eventName"].startswith("Authorize") and not change["removal"]
        if additions and ids and None not in ids and not change["unreadable"]:
            named[id(record)] = ids
    wanted = sorted(set().union(*named.values())) if named else []
    present: set[str] = set()
    for chunk in filter_chunks(wanted):
        found = rules_now(ec2, security_group_rule_id=chunk)
        present |= {rule["securityGroupRuleId"] for rule in found}
    return {key for key, ids in named.items() if not ids & present}


def other_accounts(listed: Any, context: Any) -> list[str]:
    """The member accounts the sweep reads too (the schedule's "accounts"), reached through
    MEMBER_ROLE_NAME; the function's own account is swept anyway."""
    arn = getattr(context, "invoked_function_arn", None)
    own = arn.split(":")[4] if isinstance(arn, str) and arn.count(":") >= 5 else None
    listed = listed if isinstance(listed, list) else []
    return [
        account
        for account in dict.fromkeys(listed)
        if isinstance(account, str) and ACCOUNT_ID.fullmatch(account) and account != own
    ]


def sweep_places(
    listed: Any, regions: list[str], context: Any
) -> Iterator[tuple[str | None, str, str]]:
    """(account, region, where in words) for each place a sweep pass reads: this account
    (None) first, then the listed ones through MEMBER_ROLE_NAME; without that role they are
    skipped, and sweep() tells each as a blind spot."""
    for account in [None, *other_accounts(listed, context)]:
        if account is None or SETTINGS.MEMBER_ROLE_NAME:
            for region in regions:
                yield account, region, f"account {account}" if account else "this account"


TRAIL_EVENTS = ("StopLogging", "DeleteTrail", "PutEventSelectors")

# The canary (template.yaml, Canary=true): a schedule adds this rule to an empty group every
# few hours, with the time it was scheduled in the description; the live path must revert it
# within seconds. One still there after the grace period means the live path is blind.
CANARY = {"ipProtocol": "tcp", "fromPort": 9, "toPort": 9, "cidrIpv4": "192.0.2.1/32"}

CANARY_GRACE = datetime.timedelta(minutes=5)

CANARY_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def stale_canaries(now: datetime.datetime) -> list[str]:
    """The canary rules the live path left, in words; each is revoked here, so that the next
    canary can be added. A blind spot, told like a trail that stopped."""
    group_id = canary_group_id()
    if not GROUP_ID.fullmatch(group_id):
        return []
    ec2 = client("ec2", os.environ.get("AWS_REGION") or "us-east-1")
    stale = [
        rule for rule in rules_now(ec2, group_id=[group_id]) if is_stale_canary(rule, now)
    ]
    if stale:
        revoke(ec2, {"groupId": group_id}, stale)
    return [
        f"the canary rule {rule['securityGroupRuleId']} ({rule.get('description')}) "
        f"was still in {group_id} after {int(CANARY_GRACE.total_seconds() // 60)} "
        "minutes: the live path did not revert it (is the rule, the function or the "
        "trail disabled?); the sweep revoked it"
        for rule in stale
    ]


def is_stale_canary(rule: Rule, now: datetime.datetime) -> bool:
    """A canary rule older than the grace period; one whose time cannot be read counts."""
    if any(rule.get(key) != value for key, value in CANARY.items()) or rule["isEgress"]:
        return False
    found = CANARY_TIME.search(rule.get("description") or "")
    added = (
        datetime.datetime.strptime(found[0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
        if found
        else None
    )
    return added is None or now - added > CANARY_GRACE


def blinding(record: Any) -> str | None:
    """A trail change that may blind the live path, in words; None for one that does not.
    PutEventSelectors blinds only when it leaves out management write events."""
    if not isinstance(record, dict) or record.get("errorCode"):
        return None
    name, params = record.get("eventName"), record.get("requestParameters") or {}
    params = params if isinstance(params, dict) else {}
    if name == "PutEventSelectors" and management_writes_kept(params):
        return None
    if name not in TRAIL_EVENTS:
        return None
    trail = str(params.get("name") or params.get("trailName") or "?")[:200]
    who = read_actor(record.get("userIdentity"))["actor"]
    return (
        f"{name} on trail {trail} by {who} at {record.get('eventTime')} in "
        f"{record.get('awsRegion')}: the live path may miss changes; the sweep goes on"
    )


def management_writes_kept(params: dict) -> bool:
    """Do the new selectors still record management write events?"""
    basic = params.get("eventSelectors")
    if isinstance(basic, list):
        return any(
            isinstance(s, dict)
            and s.get("includeManagementEvents", True) is not False
            and s.get("readWriteType", "All") in ("All", "WriteOnly")
            for s in basic
        )
    advanced = params.get("advancedEventSelectors")
    if isinstance(advanced, list):
        return "Management" in json.dumps(advanced)
    return False


def tell_blind_spot(text: str) -> None:
    """A blind spot is logged with its metric and told on the topic, like a change left
    open."""
    log({"decision": BLIND_SPOT, "reason": text})
    topic = os.environ.get("NOTIFY_TOPIC_ARN", "").strip()
    found = TOPIC_ARN.fullmatch(topic)
    if not found:
        return
    try:
        # IAM: sns:Publish
        client("sns", found[1]).publish(
            TopicArn=topic,
            Subject="Guardrail blind spot: "
            + "".join(c if " " <= c <= "~" else "?" for c in text)[:70],
            Message=f"{text}\n\nsg-guardrail {__version__}",
        )
    except (ClientError, BotoCoreError) as error:
        failed = {"decision": BLIND_SPOT, "notification": f"failed: {error}"}
        print(json.dumps({**failed, "version": __version__}))


def handle_quietly(event: Any, context: Any, from_history: bool = False) -> str:
    """One event through the event handler (never lambda_handler: a payload in the queue
    must not start a sweep); an error is logged and told there, and the sweep goes on (the
    next sweep tries it again). An event read from event history is AWS's own record."""
    try:
        return handle_event(event, context, from_history)["decision"]
    except RETRY_LATER:
        return "error"
    except Exception as error:  # noqa: BLE001 -- one bad event never stops the others
        report_error(first_summary(event), {}, f"{type(error).__name__}: {error}")
        return "error"


def tally(counts: dict[str, int], decision: str, number: int = 1) -> None:
    counts[decision] = counts.get(decision, 0) + number


def refusal(message: dict[str, Any], event: Any, region: str) -> str | None:
    """Why a failure-queue message is not handled, in words; None for one Lambda sent (its
    on-failure destination sends with the function's own role) or the buffer dead-lettered.
    Anyone else's message is refused and told: the queue is the function's, no one's word."""
    attributes = message.get("Attributes") or {}
    sender = str(attributes.get("SenderId") or "")
    buffer = os.environ.get("BUFFER_QUEUE_ARN", "").strip()
    own = sender.split(":")[0] == own_identity(region)[1]
    dead_letter = bool(buffer) and attributes.get("DeadLetterQueueSourceArn") == buffer
    if not (own or dead_letter):
        return (
            f"a message in the failure queue from {sender[:64] or 'an unknown sender'}, "
            f"not this function nor its buffer, was refused and deleted (message "
            f"{str(message.get('MessageId'))[:64]}): who may send to the queue?"
        )
    if isinstance(event, dict) and "sweep" in event and "detail" not in event:
        return (
            "a failed sweep's own input was in the failure queue: dropped (that sweep "
            "failed; the errors alarm told it), never run again from the queue"
        )
    return None


def failed_events() -> Iterator[tuple[dict, Any]]:
    """(message, the original event) for each event Lambda gave up on, from the on-failure
    queue (FAILURE_QUEUE_URL)."""
    url = os.environ.get("FAILURE_QUEUE_URL", "").strip()
    if not url:
        return
    region = url.split(".")[1] if url.startswith("https://sqs.") else None
    sqs = client("sqs", region or os.environ.get("AWS_REGION") or "us-east-1")
    for _ in range(10):  # at most 100 a sweep; the rest wait for the next one
        if time.monotonic() + 10 > _retry_until:
            return
        # IAM: sqs:ReceiveMessage
        messages = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=60,
            MessageSystemAttributeNames=["SenderId", "DeadLetterQueueSourceArn"],
        ).get("Messages", [])
        if not messages:
            return
        for message in messages:
            try:
                body = json.loads(message.get("Body") or "null")
            except ValueError:
                body = None
            # Lambda's on-failure record holds the event as requestPayload; with buffered
            # delivery, the buffer's dead-letter queue holds the event itself.
            if isinstance(body, dict) and "requestPayload" in body:
                body = body["requestPayload"]
            yield message, body


# =============================================================================================
# The sweep's accounts: SweepAccounts=organization, every account of the organization
# =============================================================================================

ORGANIZATION = "organization"  # the schedule's "accounts": ["organization"]


def listed_accounts(listed: Any, blind_spots: list[str]) -> Any:
    """The sweep's accounts as listed, or with SweepAccounts=organization every active
    account of the organization (Organizations ListAccounts, allowed to the management
    account and a delegated administrator). An account without the member role is told
    by the sweep as a blind spot, like any account it cannot reach; an organization that
    cannot be listed is told too, and the sweep goes on with its own account."""
    if listed != [ORGANIZATION]:
        return listed
    own_region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    try:
        # IAM: organizations:ListAccounts (only with SweepAccounts=organization)
        pages = (
            client("organizations", own_region or "us-east-1")
            .get_paginator("list_accounts")
            .paginate()
        )
        found = [
            account.get("Id")
            for page in pages
            for account in page.get("Accounts", [])
            if account.get("Status", "ACTIVE") == "ACTIVE"
        ]
        if not found:
            blind_spots.append(
                "the organization lists no accounts (is this account in one?): only "
                "this account was swept"
            )
        return found
    except RETRY_LATER as error:
        blind_spots.append(
            "the organization's accounts could not be listed, so only this account "
            f"was swept: {error_reason(error)}"
        )
        return []


# =============================================================================================
# Notifying: what is told on the topic, and the words of the SNS message
#
# Switch: NOTIFY_TOPIC_ARN (notify(), on the default path, calls publish() when it is set).
# Events: every change left open, reverted or under an exception. IAM actions: sns:Publish on
# that topic. Template: NotificationTopicArn.
# =============================================================================================

TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:([a-z0-9-]+):\d{12}:[\w-]{1,256}")


def publish(topic: str, result: dict[str, Any], change: Change) -> None:
    """Publish what is worth telling; a failure is noted in the result and never undoes
    the revert."""
    told = result["decision"] in LEFT_OPEN or (
        result["decision"] in ("reverted", "dry-run") and result["rules"]
    )
    # Exceptions that expire: kept, refused, ended (one already undone is nothing to tell)
    told = told or ("exception" in result and result["decision"] != "already-gone")
    routine = (  # the canary's rule reverted, as every few hours: logged, not told
        result.get("groupId") == canary_group_id()
        and str(result.get("eventName")).startswith("Authorize")
        and result["decision"] in ("reverted", "already-gone")
    )
    if not told or routine:
        return
    found = TOPIC_ARN.fullmatch(topic)
    if not found:
        result["notification"] = "failed: NOTIFY_TOPIC_ARN is not an SNS topic ARN"
        return
    try:
        # IAM: sns:Publish
        sent = chat_form(message(result, change), result, change)
        client("sns", found[1]).publish(TopicArn=topic, **sent)
        result["notification"] = "sent"
    except (ClientError, BotoCoreError) as error:
        result["notification"] = f"failed: {error}"


VERBS = {
    "reverted": "Reverted",
    "dry-run": "Would revert (dry run)",
    "unreadable": "NOT reverted (unreadable)",
    "changed-since": "NOT reverted (changed since)",
    "out-of-reach": "NOT reverted (out of reach)",
    "error": "NOT reverted yet (error)",
    "already-gone": "Already undone",
}


def message(result: dict[str, Any], change: Change) -> dict[str, Any]:
    """Subject, a body a person can act on, and attributes for subscription filters."""
    verb = VERBS[result["decision"]]
    changed = [
        f"{pair['recorded']} (now {pair['now']})" for pair in result.get("changedSince", [])
    ]
    headline = (
        result["rules"] + result.get("leftOpen", []) + result.get("unreadable", []) + changed
    ) or ["a change"]
    more = f" (+{len(headline) - 1} more)" if len(headline) > 1 else ""
    who = str(result.get("actor") or "unknown").rsplit("/", 1)[-1]
    where = result.get("groupId") or result.get("prefixListId")
    subject = f"{verb}: {headline[0]}{more} on {where} by {who}"
    subject = "".join(c if " " <= c <= "~" else "?" for c in subject)[:100]
    region, group = result.get("region"), result.get("groupId")
    name = f" ({change['groupName']})" if change.get("groupName") else ""
    listed = [
        ("Rules:", result["rules"]),
        ("Left open (undo by hand if no retry succeeds):", result.get("leftOpen", [])),
        ("Left open, not readable (undo by hand):", result.get("unreadable", [])),
        ("Left open, changed since the event (check by hand):", changed),
        ("Kept (allowed):", result.get("keptRules", [])),
        ("Descriptions, as the change recorded them:", rule_descriptions(change)),
        ("Already gone:", result.get("alreadyGone", [])),
    ]
    lines = [
        f"{verb}: {result['reason']}.",
        "",
        f"Who:      {result.get('actor')}",
        f"When:     {result.get('eventTime') or 'unknown'}",
        f"Account:  {result.get('account')}",
        f"Region:   {region}",
        (
            f"Group:    {group}{name}"
            if group or not result.get("prefixListId")
            else f"List:     {result['prefixListId']} (a managed prefix list)"
        ),
        f"VPC:      {change.get('vpcId') or 'not looked up'}",
        f"Call:     {result.get('eventName')}",
        *(
            line
            for title, rules in listed
            if rules
            for line in (title, *(f"  - {rule}" for rule in rules))
        ),
        f"Event ID: {result.get('eventId')}",
        f"Version:  sg-guardrail {__version__}",
        (
            f"Console:  https://{region}.console.aws.amazon.com/ec2/home?region={region}"
            f"#SecurityGroup:groupId={group}"
        ),
    ]
    attributes = {
        key: {"DataType": "String", "StringValue": str(result.get(key))}
        for key in ("decision", "eventName", "account", "region", "groupId", "actor")
    }
    attributes["version"] = {"DataType": "String", "StringValue": __version__}
    return {
        "Subject": subject,
        "Message": "\n".join(lines),
        "MessageAttributes": attributes,
    }


# =============================================================================================
# Findings and chat: a Security Hub finding per change told (SECURITY_HUB_FINDINGS=true), and
# the notification rendered for chat (CHAT_NOTIFICATIONS=true); both off by default
# =============================================================================================

# Exposure, for a finding's severity: admin ports open to the world are critical.
ADMIN_PORTS = (22, 23, 3389, 5985, 5986)  # SSH, Telnet, RDP, WinRM over HTTP and HTTPS
FINDING_TYPE = (
    "Software and Configuration Checks/AWS Security Best Practices/Network Reachability"
)
ASFF_VERSION = "2018-10-08"  # the only SchemaVersion of the AWS Security Finding Format


def report_finding(result: dict[str, Any], change: dict[str, Any]) -> None:
    """After the undo and after the SNS message: the change as one Security Hub finding,
    active while it is open, resolved once reverted. Its ID is the event's, so a retry
    updates the finding instead of adding one. A failure is logged in the result, counted
    (metric FindingsFailed), and never raised: the undo is done, the SNS message sent.
    Called by report(), with SECURITY_HUB_FINDINGS on."""
    status = finding_status(result)
    if status is None:
        return
    account, region = result.get("account"), result.get("region")
    if not (account and region):
        result["finding"] = "failed: the change names no account or region to file it in"
        count_failed_finding()
        return
    try:
        finding = asff_finding(result, change, status)
        # The finding is filed in the change's account: through the member role where the
        # function acted through it; an account can import findings for itself only.
        member = account if account in _credentials else None
        hub = client("securityhub", region, member)
        # IAM: securityhub:BatchImportFindings
        answer = hub.batch_import_findings(Findings=[finding])
        if answer.get("FailedCount"):
            refused = (answer.get("FailedFindings") or [{}])[0]
            raise ValueError(f"{refused.get('ErrorCode')}: {refused.get('ErrorMessage')}")
        result["finding"] = f"imported {finding['Id']} ({status.lower()})"
    except Exception as error:  # noqa: BLE001 -- a finding never blocks or breaks the undo
        result["finding"] = f"failed: {type(error).__name__}: {str(error)[:300]}"
        count_failed_finding()


def finding_status(result: dict[str, Any]) -> str | None:
    """RESOLVED for a change reverted, NEW for one left open (a dry run's too), None for
    what the topic is not told either (kept, ignored, the canary's routine revert)."""
    decision = result["decision"]
    if result.get("groupId") == canary_group_id() and decision in (
        "reverted",
        "already-gone",
    ):
        return None
    if decision == "reverted" and result["rules"]:
        return "RESOLVED"
    if decision in LEFT_OPEN or (decision == "dry-run" and result["rules"]):
        return "NEW"
    return None


def exposure(change: dict[str, Any]) -> str:
    """A severity label from what the change's rules let in. A change whose rules cannot be
    read (or a tag, prefix-list or association change) is HIGH: its reach is unknown."""
    rules = change.get("rules") or []
    if not rules or change.get("unreadable"):
        return "HIGH"
    found = "LOW"
    for rule in rules:
        if "ipProtocol" not in rule or "unreadable" in rule:
            return "HIGH"
        cidr = rule.get("cidrIpv4") or rule.get("cidrIpv6")
        world = bool(cidr) and ipaddress.ip_network(cidr, strict=False).prefixlen == 0
        inward = rule.get("isEgress") is not True  # an edit's direction unknown: inward
        low, high = port_range(rule)
        admin = rule["ipProtocol"] not in ICMP and any(low <= p <= high for p in ADMIN_PORTS)
        if inward and world and admin:
            return "CRITICAL"
        label = "HIGH" if inward and world else "MEDIUM" if inward or world else "LOW"
        found = max(found, label, key=SEVERITIES.index)
    return found


SEVERITIES = ("INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL")


def asff_finding(
    result: dict[str, Any], change: dict[str, Any], status: str
) -> dict[str, Any]:
    """The change in the AWS Security Finding Format, with every required top-level
    attribute (Security Hub User Guide, "Required top-level ASFF attributes": SchemaVersion,
    Id, ProductArn, GeneratorId, AwsAccountId, Types, CreatedAt, UpdatedAt, Severity,
    Title, Description, Resources). Custom findings use the account's default product."""
    account, region = result["account"], result["region"]
    partition = partition_of(region)
    now = datetime.datetime.now(datetime.UTC)
    made = time_of({"eventTime": result.get("eventTime")}) or now
    told = message(result, change)
    reach = exposure(change)
    finding: dict[str, Any] = {
        "SchemaVersion": ASFF_VERSION,
        "Id": finding_id(result, change),
        "ProductArn": f"arn:{partition}:securityhub:{region}:{account}:product/{account}/default",
        "GeneratorId": "sg-guardrail",
        "AwsAccountId": account,
        "Types": [FINDING_TYPE],
        "CreatedAt": asff_time(made),
        "UpdatedAt": asff_time(now),
        # Reverted: nothing is open any more; the exposure it had is in ProductFields.
        "Severity": {"Label": "INFORMATIONAL" if status == "RESOLVED" else reach},
        "Title": told["Subject"][:256],
        "Description": told["Message"][:1024],
        "SourceUrl": console_url(region, result.get("groupId")),
        "Resources": [finding_resource(result, partition, region, account)],
        "ProductFields": {
            f"sg-guardrail/{key}": str(result.get(key) or "unknown")[:2048]
            for key in ("decision", "eventId", "eventName", "actor")
        }
        | {"sg-guardrail/exposure": reach},
        "Workflow": {"Status": status},
        # RecordState is the provider's to change (Workflow is the customer's once set):
        # a change first left open, then reverted by a retry, is archived by the update.
        "RecordState": "ARCHIVED" if status == "RESOLVED" else "ACTIVE",
    }
    if status == "NEW":
        finding["Remediation"] = {
            "Recommendation": {
                "Text": f"{VERBS[result['decision']]}: {result['reason']}"[:512]
            }
        }
    return finding


def finding_id(result: dict[str, Any], change: dict[str, Any]) -> str:
    """One ID per event, the same on every retry: the event's ID, or a digest of what the
    record says when it has none."""
    where = f"sg-guardrail/{result['region']}/{result['account']}"
    if result.get("eventId"):
        return f"{where}/{result['eventId']}"[:512]
    import hashlib  # only for records without an event ID

    said = [result.get(k) for k in ("eventName", "eventTime", "groupId", "actor")]
    said.append(sorted(describe(rule) for rule in change.get("rules") or []))
    digest = hashlib.sha256(json.dumps(said, default=str).encode()).hexdigest()
    return f"{where}/no-event-id-{digest[:32]}"


def asff_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def console_url(region: str | None, group_id: str | None) -> str:
    return (
        f"https://{region}.console.aws.amazon.com/ec2/home?region={region}"
        f"#SecurityGroup:groupId={group_id}"
    )


def partition_of(region: str) -> str:
    """The partition of a region: the ARNs of a finding filed there are in it."""
    if region.startswith("cn-"):
        return "aws-cn"
    return "aws-us-gov" if region.startswith("us-gov-") else "aws"


def finding_resource(
    result: dict[str, Any], partition: str, region: str, account: str
) -> dict:
    """The group changed (AwsEc2SecurityGroup), else the prefix list, else the event."""
    base = f"arn:{partition}:ec2:{region}:{account}"
    if result.get("groupId"):
        return {
            "Type": "AwsEc2SecurityGroup",
            "Id": f"{base}:security-group/{result['groupId']}",
            "Partition": partition,
            "Region": region,
        }
    if result.get("prefixListId"):
        kind, name = "Other", f"{base}:prefix-list/{result['prefixListId']}"
    else:
        kind, name = "Other", f"{result.get('eventName')} {result.get('eventId')}"
    return {"Type": kind, "Id": name[:512], "Partition": partition, "Region": region}


def count_failed_finding() -> None:
    """A line of its own for the metric (Embedded Metric Format), FindingsFailed=1."""
    metrics = {
        "Timestamp": int(time.time() * 1000),
        "CloudWatchMetrics": [
            {
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": [[]],
                "Metrics": [{"Name": "FindingsFailed", "Unit": "Count"}],
            }
        ],
    }
    print(json.dumps({"FindingsFailed": 1, "_aws": metrics}))


# ---------------------------------------------------------------------------------------------
# Findings and chat: the same one SNS message, rendered for chat
# ---------------------------------------------------------------------------------------------


def rule_descriptions(change: dict[str, Any]) -> list[str]:
    """Each rule's description as the change recorded it, quoted: 'tcp 22 from
    0.0.0.0/0: "debugging, remove later"'. The description is whoever made the change's
    text: json.dumps quotes it and escapes what it holds."""
    return [
        f"{describe(rule)}: {json.dumps(rule['description'])}"
        for rule in change.get("rules") or []
        if isinstance(rule, dict) and rule.get("description")
    ]


def chat_form(
    sent: dict[str, Any], result: dict[str, Any], change: dict[str, Any]
) -> dict[str, Any]:
    """With CHAT_NOTIFICATIONS=true, the same one Publish carries a rendering for chat.

    MessageStructure="json" (SNS API reference, Publish): the Message is a JSON object
    whose "default" string goes to every protocol without a key of its own, and a
    protocol's key overrides it. Amazon Q Developer in chat applications (formerly AWS
    Chatbot) subscribes to the topic over HTTPS and renders messages in its custom
    notification schema (Amazon Q Developer in chat applications Administrator Guide,
    "Custom notifications", https://docs.aws.amazon.com/chatbot/latest/adminguide/custom-notifs.html):
    version "1.0", source "custom", content {textType, title, description, nextSteps,
    keywords}, metadata. So "https" holds the chat rendering, "email" and "default" the
    text as it always was: email, SQS and Lambda subscribers get what they got before.
    Any other HTTPS subscriber (a webhook) gets the chat JSON instead of the text: that
    is why the switch exists, and is off by default."""
    if not switched_on("CHAT_NOTIFICATIONS"):
        return sent
    text = sent["Message"]
    structured = {
        "default": text,
        "email": text,
        "https": json.dumps(chat_message(sent, result, change)),
    }
    return {**sent, "Message": json.dumps(structured), "MessageStructure": "json"}


def chat_message(
    sent: dict[str, Any], result: dict[str, Any], change: dict[str, Any]
) -> dict[str, Any]:
    """The custom notification: what happened, the rules, their descriptions, and the
    console link. Text from the change (descriptions, names) goes in code spans, so that
    whoever made it cannot put a link or a mention in the team's channel."""
    region, group = result.get("region"), result.get("groupId")
    # The reason quotes what the change held (tag values, ARNs, whose paths may hold any
    # character): a code span, like every other text of the change, so no link or mention.
    lines = [f"*{VERBS[result['decision']]}*: {code_span(result['reason'])}"]
    lines.append(f"Who: {code_span(result.get('actor'))}")
    lines.append(
        f"Where: {code_span(result.get('account'))} {code_span(region)} "
        f"{code_span(group or result.get('prefixListId'))}"
    )
    for title, found in (
        ("Rules", result["rules"]),
        ("Left open", result.get("leftOpen", [])),
        ("Not readable", result.get("unreadable", [])),
        ("Kept", result.get("keptRules", [])),
        ("Descriptions", rule_descriptions(change)),
    ):
        if found:
            lines += [f"{title}:"] + [f"• {code_span(item)}" for item in found[:10]]
    console = console_url(region, group)
    steps = [f"Open the group in the console: {console}"]
    if result["decision"] == "dry-run":
        steps.insert(0, "Nothing was changed (dry run): undo it by hand if it must not stay")
    elif result["decision"] in LEFT_OPEN:
        steps.insert(0, "Undo the change by hand if no retry succeeds")
    return {
        "version": "1.0",
        "source": "custom",
        "id": str(result.get("eventId") or ""),
        "content": {
            "textType": "client-markdown",
            "title": re.sub(r"[\[\]<>`@]", "?", sent["Subject"]),  # no link, no mention
            "description": "\n".join(lines)[:3500],
            "nextSteps": steps,
            "keywords": [
                str(result["decision"]),
                str(result.get("eventName")),
                str(region),
            ],
        },
        "metadata": {
            "threadId": str(group or result.get("prefixListId") or "sg-guardrail"),
            "summary": re.sub(r"[\[\]<>`@]", "?", sent["Subject"]),
            "eventType": str(result["decision"]),
            "relatedResources": [str(group or result.get("prefixListId"))],
            "additionalContext": {"eventId": str(result.get("eventId"))},
        },
    }


def code_span(value: Any) -> str:
    """A value as inline code: backticks and line breaks taken out, length bounded."""
    text = " ".join(str(value).replace("`", "'").split())[:300]
    return f"`{text}`"


# =============================================================================================
# Audit: what is open already (python lambda_function.py --audit, --suggest)
#
# Every rule of every group, judged as if a principal who is not exempt had just added it:
# each rule becomes the CloudTrail record of an Authorize call that created it, read by
# read_change and decided by the handler's own deciding functions, so that what the audit
# says would be reverted is what the handler would revert. One paginated
# DescribeSecurityGroupRules walk per region, one DescribeSecurityGroups walk when the
# conditions need VPCs or tags. It changes nothing.
# =============================================================================================

AUDIT_COLUMNS = (
    "account",
    "region",
    "groupId",
    "securityGroupRuleId",
    "rule",
    "description",
    "verdict",
    "why",
)
AUDIT_USAGE = """python lambda_function.py --audit [--region R ...] [--accounts ID,ID ...]
                                  [--format table|json|csv]
       python lambda_function.py --suggest [--region R ...] [--accounts ID,ID ...]"""


def audit_main(argv: list[str]) -> int:
    """--audit and --suggest: read every rule, judge it, print; 1 if any rule would be
    reverted or any account or region could not be read, 0 otherwise."""
    import argparse  # local use only

    parser = argparse.ArgumentParser(
        prog="python lambda_function.py",
        usage=AUDIT_USAGE,
        description="Judge every rule open today as if a principal who is not exempt "
        "had just added it, with the CONDITIONS block as it is. Changes nothing; "
        "needs ec2:DescribeSecurityGroupRules, ec2:DescribeSecurityGroups and "
        "sts:GetCallerIdentity (with --accounts: sts:AssumeRole on the member role).",
    )
    parser.add_argument("--audit", action="store_true", help="print every verdict")
    parser.add_argument(
        "--suggest",
        action="store_true",
        help="print ALLOWED_RULES entries that would keep the rules open today",
    )
    parser.add_argument(
        "--region", action="append", help="a region to read (repeat; default: boto3's)"
    )
    parser.add_argument(
        "--accounts",
        type=account_list,
        default=[],
        help="member accounts (comma-separated), read through MEMBER_ROLE_NAME",
    )
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    args = parser.parse_args(argv)
    if not args.region:
        import boto3  # the region of your profile or environment, as boto3 finds it

        args.region = [boto3.session.Session().region_name or ""]
    regions = args.region
    if regions == [""]:
        parser.error("no region: give --region R, or set AWS_REGION or a profile's region")
    if not all(REGION.fullmatch(region) for region in regions):
        parser.error(f"not a region: {regions}")
    if args.accounts and not SETTINGS.MEMBER_ROLE_NAME:
        parser.error("--accounts needs MEMBER_ROLE_NAME (CONDITIONS or environment)")
    verdicts, unreachable = audit(regions, args.accounts)
    if args.suggest:
        print(suggestion_text(verdicts))
    else:
        print(audit_text(verdicts, args.format), end="")
    print(audit_summary(verdicts, unreachable), file=sys.stderr)
    for where, why in unreachable:
        print(f"unreachable: {where}: {why}", file=sys.stderr)
    reverted = any(verdict["verdict"] == "would revert" for verdict in verdicts)
    return 1 if reverted or unreachable else 0


def account_list(text: str) -> list[str]:
    import argparse

    accounts = [account.strip() for account in text.split(",") if account.strip()]
    if not all(ACCOUNT_ID.fullmatch(account) for account in accounts):
        raise argparse.ArgumentTypeError(f"wants 12-digit account IDs: {text!r}")
    return accounts


def audit(
    regions: list[str], accounts: list[str], deadline: float = math.inf
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """(a verdict per rule, (account or account/region, why) for each that was not read).
    The own account with the caller's credentials, then each member account through its
    member role; one that cannot be reached is named and the others are still read. Past
    the deadline (time.monotonic()), what is left is named as not read."""
    verdicts: list[dict[str, Any]] = []
    unreachable: list[tuple[str, str]] = []
    places: list[str | None] = [None, *accounts]
    for account in places:
        for region in regions:
            where = f"{account or 'own account'}/{region}"
            if time.monotonic() > deadline:
                unreachable.append((where, "not read: the time ran out"))
                continue
            try:
                found = audit_region(region, account)
            except (ClientError, BotoCoreError) as error:
                reason = error_reason(error) if isinstance(error, ClientError) else ""
                unreachable.append((where, reason or f"{type(error).__name__}: {error}"))
                if account is not None and account not in _credentials:
                    break  # the role could not be assumed: no other region will do
                continue
            verdicts += found
    return verdicts, unreachable


def audit_region(region: str, account: str | None) -> list[dict[str, Any]]:
    """Every rule of one account and region, judged."""
    ec2 = client("ec2", region, account)
    owner = account or own_identity(region)[0].split(":")[4]
    rules = []
    # IAM: ec2:DescribeSecurityGroupRules
    for page in ec2.get_paginator("describe_security_group_rules").paginate(
        PaginationConfig={"PageSize": 1000}
    ):
        rules += page["SecurityGroupRules"]
    facts = groups_in_bulk(ec2) if audit_needs_facts() else {}
    return [judge_rule(found, region, owner, facts) for found in rules]


def audit_needs_facts() -> bool:
    """The conditions that read a group's VPC or tags (needs_group_facts, for a group
    whose ID is known)."""
    return needs_group_facts({"groupId": "known"})


def groups_in_bulk(ec2: Any) -> dict[str, dict[str, Any]]:
    """groupId -> {vpcId, tags, groupName} of every group: one paginated walk."""
    found = {}
    # IAM: ec2:DescribeSecurityGroups
    for page in ec2.get_paginator("describe_security_groups").paginate():
        for group in page["SecurityGroups"]:
            found[group["GroupId"]] = {
                "vpcId": group.get("VpcId"),
                "tags": {tag["Key"]: tag["Value"] for tag in group.get("Tags", [])},
                "groupName": group.get("GroupName"),
            }
    return found


def as_authorized(found: dict[str, Any], region: str, account: str) -> dict[str, Any]:
    """The CloudTrail record of an Authorize call that created this rule just now, by a
    principal no exemption names: its one rule in the response's securityGroupRuleSet,
    in CloudTrail's vocabulary (camelCase keys), as the real records carry it."""
    item = {
        key[:1].lower() + key[1:]: value
        for key, value in found.items()
        if key not in ("Tags", "ReferencedGroupInfo")
    }
    if isinstance(found.get("ReferencedGroupInfo"), dict):
        item["referencedGroupInfo"] = {
            key[:1].lower() + key[1:]: value
            for key, value in found["ReferencedGroupInfo"].items()
        }
    egress = found.get("IsEgress") is True
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "eventSource": "ec2.amazonaws.com",
        "eventName": "AuthorizeSecurityGroup" + ("Egress" if egress else "Ingress"),
        "eventTime": now,
        "awsRegion": region,
        "recipientAccountId": account,
        "userIdentity": {"type": "IAMUser"},  # no ARN: no exemption can match it
        "requestParameters": {"groupId": found.get("GroupId")},
        "responseElements": {"securityGroupRuleSet": {"items": [item]}},
    }


def judge_rule(
    found: dict[str, Any], region: str, account: str, facts: dict[str, dict]
) -> dict[str, Any]:
    """One rule's verdict: what the handler would do had the rule just been added."""
    change = read_change(as_authorized(found, region, account))
    group_id = found.get("GroupId")
    if group_id in facts:
        change.update({k: v for k, v in facts[group_id].items() if k != "groupName"})
    elif audit_needs_facts():
        change.update({"vpcId": None, "tags": {}})  # a group gone since the walk
    verdict = {
        "account": account,
        "region": region,
        "groupId": group_id,
        "groupName": facts.get(group_id, {}).get("groupName"),
        "securityGroupRuleId": found.get("SecurityGroupRuleId"),
        "rule": describe(change["rules"][0]) if change["rules"] else "?",
        "description": found.get("Description") or "",
        "locked": group_id is not None and is_locked(change),
        "change": change,
    }
    return verdict | decide_as_added(change)


def decide_as_added(change: dict[str, Any]) -> dict[str, Any]:
    """The handler's decision on a fresh Authorize of the rule (handle_as_read, then
    undo): the group's exemptions, the rules allowed to stay, should_revert."""
    if change["unreadable"] or not change["rules"]:
        why = "; ".join(change["unreadable"]) or "no rule read"
        return {"verdict": "would revert", "why": f"unreadable: {why}", "entry": None}
    reason = principal_exemption(change) or unlocked_exemption(change)
    if reason:
        return {"verdict": "kept", "why": reason, "entry": None}
    revoking, allowed = split_rules(change)
    if allowed:
        entry = next(
            (e for e in SETTINGS.ALLOWED_RULES if matches(allowed[0], e)), None
        )  # None: REVERT_EGRESS is off
        why = (
            f"allowed by ALLOWED_RULES[{SETTINGS.ALLOWED_RULES.index(entry)}]"
            if entry is not None
            else "egress rules are not reverted (REVERT_EGRESS)"
        )
        return {"verdict": "kept", "why": why, "entry": entry}
    approved, why = verdict_of_should_revert({**change, "rules": revoking})
    if not approved:
        return {"verdict": "kept", "why": why, "entry": None}
    if is_locked(change):
        why = why or "the group is locked: nothing may be added"
    return {
        "verdict": "would revert",
        "why": why or "not approved by the conditions",
        "entry": None,
    }


def audit_text(verdicts: list[dict[str, Any]], form: str) -> str:
    """The verdicts as a table, JSON or CSV."""
    rows = [
        {
            **{key: verdict.get(key) or "" for key in AUDIT_COLUMNS},
            "groupId": (verdict["groupId"] or "?")
            + (f" ({verdict['groupName']})" if verdict.get("groupName") else ""),
        }
        for verdict in sorted(verdicts, key=audit_order)
    ]
    if form == "json":
        keys = (*AUDIT_COLUMNS, "groupName", "locked", "entry")
        found = [{key: v.get(key) for key in keys} for v in sorted(verdicts, key=audit_order)]
        return (
            json.dumps({"rules": found, "lockedGroups": locked_groups(verdicts)}, indent=2)
            + "\n"
        )
    if form == "csv":
        import csv
        import io

        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=AUDIT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    widths = {
        key: min(40, max([len(key), *(len(str(row[key])) for row in rows)]))
        for key in AUDIT_COLUMNS
    }
    lines = ["  ".join(key.ljust(widths[key]) for key in AUDIT_COLUMNS).rstrip()]
    for row in rows:
        cells = [str(row[key])[:40].ljust(widths[key]) for key in AUDIT_COLUMNS[:-1]]
        lines.append("  ".join([*cells, str(row["why"])]))
    locked = locked_groups(verdicts)
    lines.append(f"locked groups: {', '.join(locked) if locked else 'none'}")
    return "\n".join(lines) + "\n"


def audit_order(verdict: dict[str, Any]) -> tuple:
    return (
        verdict["account"],
        verdict["region"],
        verdict["groupId"] or "",
        verdict["change"]["isEgress"],
        verdict["rule"],
    )


def locked_groups(verdicts: list[dict[str, Any]]) -> list[str]:
    return sorted({v["groupId"] for v in verdicts if v["locked"] and v["groupId"]})


def audit_summary(verdicts: list[dict[str, Any]], unreachable: list[tuple[str, str]]) -> str:
    groups = {(v["account"], v["region"], v["groupId"]) for v in verdicts}
    reverted = sum(v["verdict"] == "would revert" for v in verdicts)
    locked = len(locked_groups(verdicts))
    return (
        f"summary: {counted(len(verdicts), 'rule')} in {counted(len(groups), 'group')}: "
        f"{reverted} would be reverted, {len(verdicts) - reverted} kept; "
        f"{counted(locked, 'locked group')}; {len(unreachable)} unreachable"
    )


def counted(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


# ---------------------------------------------------------------------------------------------
# Audit: ALLOWED_RULES entries that would keep what is open today
# ---------------------------------------------------------------------------------------------


def suggested_entries(
    verdicts: list[dict[str, Any]],
) -> tuple[list[tuple[dict[str, Any], list[str]]], list[str]]:
    """(entries each with the rules it keeps, rules no entry can keep). One entry per
    direction, protocol and source, its ports the rules' own: ranges that touch or
    overlap are joined, since together they open those ports already; nothing wider.
    An entry allows its rule in every guarded group, not only where it is today."""
    shapes: dict[tuple, list[tuple[dict, str]]] = {}
    cannot = []
    for verdict in verdicts:
        if verdict["verdict"] != "would revert":
            continue
        rule = (verdict["change"]["rules"] or [{}])[0]
        where = f"{verdict['groupId']} {verdict['rule']}"
        if verdict["locked"]:
            cannot.append(f"{where}: the group is locked; no entry keeps a rule there")
            continue
        source = entry_source(rule)
        if source is None:
            cannot.append(f"{where}: no ALLOWED_RULES key names its source")
            continue
        key = (rule["isEgress"], rule["ipProtocol"], *source.items())
        shapes.setdefault(key, []).append((rule, where))
    entries = []
    for (is_egress, protocol, *source), found in sorted(shapes.items(), key=str):
        base = {"isEgress": is_egress, "ipProtocol": protocol}
        for ports, kept in port_entries(protocol, found):
            entries.append(({**base, **ports, **dict(source)}, kept))
    entries.sort(key=lambda found: entry_order(found[0]))
    return entries, cannot


def entry_order(entry: dict[str, Any]) -> tuple:
    """Ingress first, then by protocol and ports, then by source."""
    ports = (entry.get("fromPort", -1), entry.get("toPort", -1))
    return (entry["isEgress"], entry["ipProtocol"], ports, json.dumps(entry))


def entry_source(rule: dict[str, Any]) -> dict[str, str] | None:
    if "unreadable" in rule or "ipProtocol" not in rule:
        return None
    cidr = rule.get("cidrIpv4") or rule.get("cidrIpv6")
    if cidr:
        return {"cidr": str(ipaddress.ip_network(cidr, strict=False))}
    if rule.get("prefixListId"):
        return {"prefixListId": rule["prefixListId"]}
    group = (rule.get("referencedGroupInfo") or {}).get("groupId")
    return {"referencedGroupId": group} if group else None


def port_entries(
    protocol: str, found: list[tuple[dict, str]]
) -> list[tuple[dict[str, int], list[str]]]:
    """The port keys of the entries for rules of one shape: ICMP type and code exactly,
    nothing for protocols whose ports mean nothing, joined ranges for tcp and udp."""
    if opens_every_port(protocol):
        return [({}, [where for _, where in found])]
    if protocol in ICMP:
        by_type: dict[tuple[int, int], list[str]] = {}
        for rule, where in found:
            key = (rule.get("fromPort", -1), rule.get("toPort", -1))
            by_type.setdefault(key, []).append(where)
        return [
            ({"fromPort": low, "toPort": high}, kept)
            for (low, high), kept in sorted(by_type.items())
        ]
    spans: list[list] = []  # [low, high, wheres], joined where they touch or overlap
    for (low, high), where in sorted((port_range(rule), where) for rule, where in found):
        if spans and low <= spans[-1][1] + 1:
            spans[-1][1] = max(spans[-1][1], high)
            spans[-1][2].append(where)
        else:
            spans.append([low, high, [where]])
    return [({"fromPort": low, "toPort": high}, kept) for low, high, kept in spans]


def suggestion_text(verdicts: list[dict[str, Any]]) -> str:
    """The entries as Python to paste over the CONDITIONS block's ALLOWED_RULES, each with
    a comment naming the rules it keeps; checked as the file checks it at load."""
    entries, cannot = suggested_entries(verdicts)
    present = [(entry, kept) for entry, kept in entries if not allowed_rule_problems(entry)]
    lines = [
        "# Suggested by python lambda_function.py --suggest: review each entry; it",
        "# allows its rule in every guarded group, not only in the groups named.",
    ]
    lines += [f"# Not kept by any entry: {line}" for line in cannot]
    lines.append("ALLOWED_RULES: list[dict[str, Any]] = [")
    if SETTINGS.ALLOWED_RULES:
        lines.append("    # Already in ALLOWED_RULES:")
        lines += [f"    {entry_literal(entry)}," for entry in SETTINGS.ALLOWED_RULES]
    for entry, kept in present:
        more = f" (+{len(kept) - 3} more)" if len(kept) > 3 else ""
        lines.append(f"    # {'; '.join(kept[:3])}{more}")
        lines.append(f"    {entry_literal(entry)},")
    lines.append("]")
    return "\n".join(lines)


def entry_literal(entry: dict[str, Any]) -> str:
    """An entry as the CONDITIONS block writes it: {"ipProtocol": "tcp", "fromPort": 443}."""
    pairs = (
        f"{json.dumps(key)}: " + (json.dumps(value) if type(value) is str else repr(value))
        for key, value in entry.items()
    )
    return "{" + ", ".join(pairs) + "}"


# ---------------------------------------------------------------------------------------------
# Audit: on a schedule (template.yaml, AuditSchedule), one summary on the topic
# ---------------------------------------------------------------------------------------------

AUDIT_LISTED = 50  # rules named in the summary; the rest are counted


def scheduled_audit(settings: Any, context: Any) -> dict[str, Any]:
    """The audit of the schedule's regions and accounts, told as ONE message on the topic
    (never one per rule), and logged as one line. It changes nothing."""
    settings = settings if isinstance(settings, dict) else {}
    own_region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    regions = schedule_regions(settings, own_region)
    not_listed: list[str] = []  # SweepAccounts=organization: listed as the sweep lists it
    listed = listed_accounts(settings.get("accounts"), not_listed)
    accounts = other_accounts(listed, context)
    if accounts and not SETTINGS.MEMBER_ROLE_NAME:
        accounts = []  # told below as unreachable
    deadline = _retry_until - 2 * SWEEP_RESERVE_S
    verdicts, unreachable = audit(regions, accounts, deadline)
    unreachable += [("the organization's accounts", why) for why in not_listed]
    if other_accounts(listed, context) and not SETTINGS.MEMBER_ROLE_NAME:
        unreachable.append(("member accounts", "no MEMBER_ROLE_NAME to reach them"))
    result = {
        "audit": audit_summary(verdicts, unreachable).removeprefix("summary: "),
        "wouldRevert": sum(v["verdict"] == "would revert" for v in verdicts),
        "rules": len(verdicts),
        "unreachable": [f"{where}: {why}" for where, why in unreachable],
    }
    result["notification"] = publish_audit(verdicts, unreachable, result)
    print(json.dumps(result, default=str))
    return result


def publish_audit(
    verdicts: list[dict[str, Any]], unreachable: list[tuple[str, str]], result: dict
) -> str:
    """The summary as one SNS message: the counts, the first AUDIT_LISTED rules that would
    be reverted, and what could not be read."""
    topic = os.environ.get("NOTIFY_TOPIC_ARN", "").strip()
    found = TOPIC_ARN.fullmatch(topic)
    if not found:
        return "failed: NOTIFY_TOPIC_ARN is not an SNS topic ARN"
    reverted = [v for v in sorted(verdicts, key=audit_order) if v["verdict"] == "would revert"]
    subject = f"Audit: {len(reverted)} of {len(verdicts)} rules would be reverted" + (
        f", {len(unreachable)} unreachable" if unreachable else ""
    )
    lines = [f"Audit of the rules open now, as if just added: {result['audit']}.", ""]
    if reverted:
        lines.append("Would be reverted:")
    for verdict in reverted[:AUDIT_LISTED]:
        described = f" ({verdict['description']})" if verdict["description"] else ""
        lines.append(
            f"  - {verdict['account']} {verdict['region']} {verdict['groupId']} "
            f"{verdict['rule']}{described}: {verdict['why']}"
        )
    if len(reverted) > AUDIT_LISTED:
        lines.append(
            f"  (+{len(reverted) - AUDIT_LISTED} more: python lambda_function.py --audit)"
        )
    if unreachable:
        lines += ["Not read:", *(f"  - {where}: {why}" for where, why in unreachable)]
    try:
        # IAM: sns:Publish
        client("sns", found[1]).publish(
            TopicArn=topic,
            Subject=subject[:100],
            Message="\n".join(lines),
            MessageAttributes={"decision": {"DataType": "String", "StringValue": "audit"}},
        )
        return "sent"
    except (ClientError, BotoCoreError) as error:
        return f"failed: {error}"


# =============================================================================================
# Exceptions that expire: a rule an approver tags is kept until its time, then revoked
#
# Switch: APPROVERS (empty: off, the default) with MAX_EXCEPTION_HOURS; in template.yaml the
# parameters Approvers and MaxExceptionHours (Condition GrantsExceptions). Events: Authorize*
# whose TagSpecifications (resource type security-group-rule) give the new rules
# sg-guardrail:expires (UTC, e.g. 2026-12-01T18:00:00Z) and sg-guardrail:reason; CreateTags
# and DeleteTags on sgr-… rules naming those keys (template.yaml's RuleTagRule); the sweep,
# which revokes the rules whose exception expired. IAM actions: ec2:CreateTags on
# security-group-rule/* (only with GrantsExceptions: a tag is put back, never taken off);
# ec2:DescribeSecurityGroupRules, ec2:RevokeSecurityGroupIngress/Egress and
# cloudtrail:LookupEvents, granted already.
#
# Keeping a rule adds access, so nothing here trusts the message: a grant keeps a rule only
# when event history holds the call under its event ID, made by an approver as AWS recorded
# it (ConfirmFirst: until then Lambda retries, then the sweep), and the rule carries the tags
# as AWS holds them now. The sweep revokes an expired rule only when event history ties its
# tag to an approver's call (or the rule was added by the call that set it); a tag anyone
# else set is put back to the approver's value where event history shows one, else left and
# told: a tag is never taken off, since a grant pushed out of history's reach would end.
# =============================================================================================

EXPIRES_KEY = "sg-guardrail:expires"
REASON_KEY = "sg-guardrail:reason"
EXCEPTION_KEYS = (EXPIRES_KEY, REASON_KEY)
# UTC only, to the minute or second: "2026-12-01T18:00:00Z" (or +00:00). A time in another
# zone, or without one, is not an exception: a reader must not have to guess.
EXPIRES_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d)?(?:Z|\+00:00)")
# Event history holds 90 days: a grant must still be there when its exception expires.
MOST_EXCEPTION_HOURS = 720
ACCOUNT_PINNED = re.compile(r"arn:aws[a-z-]*:(iam|sts)::\d{12}:.+")
VERBS["kept"] = "Kept under an exception"


def exception_setting_problems(settings: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """APPROVERS as EXEMPT_PRINCIPALS are checked, and stricter: an approver keeps rules
    open, so each pattern names its account (a "*" there would let an admin of any member
    account create a role of that name and approve) and is a person or role, not a service."""
    found = []
    approvers = settings["APPROVERS"]
    if not is_list_of(approvers, str):
        found.append(("APPROVERS", approvers, "must be a list of strings"))
    else:
        for pattern in approvers:
            matched = PRINCIPAL_PATTERN.fullmatch(pattern)
            if not matched or matched["name"] is None:
                found.append(("APPROVERS", pattern, "is not an IAM or STS ARN"))
            elif not ACCOUNT_PINNED.fullmatch(pattern):
                found.append(("APPROVERS", pattern, "must name its account"))
            elif not matched["name"].strip("*?/"):
                found.append(("APPROVERS", pattern, "would make everyone an approver"))
    hours = settings["MAX_EXCEPTION_HOURS"]
    if type(hours) is not int or not 1 <= hours <= MOST_EXCEPTION_HOURS:
        found.append(
            (
                "MAX_EXCEPTION_HOURS",
                hours,
                f"must be a whole number of hours, 1 to {MOST_EXCEPTION_HOURS}",
            )
        )
    return found


# ---------------------------------------------------------------------------------------------
# Exceptions: reading and deciding (pure)
# ---------------------------------------------------------------------------------------------


def read_rule_tags(params: dict, change: dict[str, Any]) -> None:
    """The exception's tags an Authorize* call gave its new rules (TagSpecifications of
    resource type security-group-rule), as change["ruleTags"]. CloudTrail's layout is
    assumed like CreateSecurityGroup's, unverified by a real record: tagSpecificationSet
    {"items": [{"resourceType", "tags": [{"key", "value"}]}]}, the tags a plain list or an
    {"items": [...]} collection; both are read. Only the exception's keys are kept."""
    specs = field(params, "tagSpecificationSet")
    specs = specs.get("items") if isinstance(specs, dict) else specs
    found: dict[str, str] = {}
    for spec in specs if isinstance(specs, list) else []:
        if not isinstance(spec, dict):
            continue
        if field(spec, "resourceType") != "security-group-rule":
            continue
        tags = field(spec, "tags")
        tags = tags.get("items") if isinstance(tags, dict) else tags
        for tag in tags if isinstance(tags, list) else []:
            key, value = field(tag, "key"), field(tag, "value")
            if key in EXCEPTION_KEYS:
                found[key] = value if isinstance(value, str) else ""
    if found:
        change["ruleTags"] = found


def approver_of(change: dict[str, Any]) -> str | None:
    """The caller's name that APPROVERS match (its ARN or its role's); None for anyone else.
    An AWS service acting on its own approves nothing."""
    if change.get("byAwsService"):
        return None
    for principal in change.get("principals", []):  # patterns are ARNs: no service
        if any(fnmatch.fnmatchcase(principal, pattern) for pattern in SETTINGS.APPROVERS):
            return principal
    return None


def expiry_of(
    value: Any, granted: datetime.datetime | None, now: datetime.datetime
) -> tuple[datetime.datetime | None, str]:
    """(when the exception ends, "") or (None, why it is none): a UTC time after the grant,
    at most MAX_EXCEPTION_HOURS after it (the grant's time as recorded, never now), and
    still ahead of `now`."""
    if value is None:
        return None, f"no {EXPIRES_KEY} tag"
    text = str(value)[:40]
    expires = parsed_expiry(value)
    if expires is None:
        return (
            None,
            f"{EXPIRES_KEY} {text!r} is not a UTC time like 2026-12-01T18:00:00Z",
        )
    if granted is None:
        return None, "the grant's time is unreadable"
    if expires > granted + datetime.timedelta(hours=SETTINGS.MAX_EXCEPTION_HOURS):
        return None, (
            f"{EXPIRES_KEY} {text} is more than MAX_EXCEPTION_HOURS "
            f"({SETTINGS.MAX_EXCEPTION_HOURS}) after the grant at {granted:%Y-%m-%dT%H:%M:%SZ}"
        )
    if expires <= max(now, granted):
        return None, f"{EXPIRES_KEY} {text} is past"
    return expires, ""


def expiry_order(found: dict[str, Any]) -> tuple[bool, str]:
    value = next((t["Value"] for t in found.get("Tags", []) if t["Key"] == EXPIRES_KEY), None)
    expires = parsed_expiry(value)
    return expires is None, expires.isoformat() if expires else ""


def parsed_expiry(value: Any) -> datetime.datetime | None:
    """An sg-guardrail:expires value as a time; None when it is not a UTC time."""
    if not isinstance(value, str) or not EXPIRES_FORMAT.fullmatch(value):
        return None
    try:
        return datetime.datetime.fromisoformat(value)
    except ValueError:  # 2026-02-30T00:00Z
        return None


def grant_of(
    change: dict[str, Any], now: datetime.datetime
) -> tuple[dict[str, str] | None, str]:
    """(the grant: expires, approver, reason) of an Authorize* that tagged its rules, or
    (None, why there is none). Decided on the change as read: the caller confirms it."""
    tags = change.get("ruleTags") or {}
    approver = approver_of(change)
    if approver is None:
        return None, (
            f"{EXPIRES_KEY} set by {change['actor']}, who is not in APPROVERS: no exception"
        )
    if is_locked(change):
        return None, "the group is locked: exceptions never apply to it"
    expires, why = expiry_of(tags.get(EXPIRES_KEY), time_of(change), now)
    if expires is None:
        return None, f"no exception: {why}"
    reason = (tags.get(REASON_KEY) or "").strip()
    if not reason:
        return None, f"no exception: an exception needs its {REASON_KEY} tag"
    return (
        {
            "expires": tags[EXPIRES_KEY],
            "approver": change["actor"],  # the session, as recorded: whom APPROVERS matched
            "reason": reason[:256],
        },
        "",
    )


def words_of(grant: dict[str, str]) -> str:
    return (
        f"kept until {grant['expires']}, granted by {grant['approver']}, "
        f"because {grant['reason']!r}"
    )


def claims_exception(change: dict[str, Any]) -> bool:
    """Does the change ask for an exception that could keep its rules? (The buffered path
    decides those alone, never in a batch's dry run.)"""
    return bool(SETTINGS.APPROVERS) and EXPIRES_KEY in (change.get("ruleTags") or {})


def rule_tags_at_stake(change: dict[str, Any]) -> bool:
    """A CreateTags/DeleteTags naming an exception's key on rules (sgr-…)."""
    tagging = change.get("tagging") or {}
    keys = tagging.get("tags", {})
    return (
        bool(SETTINGS.APPROVERS)
        and bool(tagging.get("ruleIds"))
        and (tagging.get("allTags") or any(key in keys for key in EXCEPTION_KEYS))
    )


def set_by(record: Any, rule_id: str, key: str) -> tuple[bool, str | None]:
    """(touched, value) of a rule's tag `key` in one record: an Authorize* that created the
    rule with it, a CreateTags that set it (value) or a DeleteTags that removed it (None)."""
    try:
        change = read_change(record)
    except BadEvent:
        return False, None
    if change["eventName"].startswith("Authorize"):
        ids = {rule.get("securityGroupRuleId") for rule in change["rules"]}
        tags = change.get("ruleTags") or {}
        return (rule_id in ids and key in tags), tags.get(key)
    tagging = change.get("tagging")
    if not tagging or rule_id not in tagging["ruleIds"]:
        return False, None
    if change["eventName"] == "DeleteTags":
        return tagging["allTags"] or key in tagging["tags"], None
    if key not in tagging["tags"]:
        return False, None
    return True, tagging["tags"][key] or ""


def last_approved(
    records: list[Any], rule_id: str, key: str
) -> tuple[dict[str, Any] | None, str | None]:
    """(record, value) of the newest change of the tag by an approver, as event history
    records it (newest first); (None, None) when no approver ever set it there: the value
    the tag should have, whatever anyone else did since."""
    for record in records:
        touched, value = set_by(record, rule_id, key)
        if touched and speaks_for_the_guard(record, value):
            return record, value
    return None, None


def speaks_for_the_guard(record: dict[str, Any], value: str | None) -> bool:
    """An approver's call; or an exempt principal's that took the tag off (whose changes
    stay as they are: an exception it ended stays ended, and nobody's tag afterwards
    brings it back). A value an exempt principal set is no grant: an exemption leaves its
    changes alone, it does not make the guardrail revoke whatever rule it tags."""
    actor = read_actor(record.get("userIdentity"))
    if approver_of(actor):
        return True
    where = {**actor, "account": record.get("recipientAccountId")}
    exempt = not actor["byAwsService"] and principal_exemption(where) is not None
    return exempt and value is None


def added_by(record: dict[str, Any], rule_id: str) -> bool:
    """Did this record's call add the rule (an Authorize whose response names its ID)?"""
    if not str(record.get("eventName", "")).startswith("Authorize"):
        return False
    try:
        change = read_change(record)
    except BadEvent:
        return False
    return any(rule.get("securityGroupRuleId") == rule_id for rule in change["rules"])


def newest_setter(
    records: list[Any], rule_id: str, key: str, value: str | None
) -> dict[str, Any] | None:
    """The newest record that set the rule's tag to exactly `value`, whoever made it."""
    return next((r for r in records if set_by(r, rule_id, key) == (True, value)), None)


def time_of_record(record: dict[str, Any]) -> datetime.datetime | None:
    return time_of({"eventTime": record.get("eventTime")})


# ---------------------------------------------------------------------------------------------
# Exceptions: acting (the live path)
# ---------------------------------------------------------------------------------------------


def rule_tags_now(ec2: Any, rule_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each rule's tags and group as AWS holds them now, by rule ID; absent ones are gone."""
    if not rule_ids:
        return {}
    found = {}
    for chunk in filter_chunks(rule_ids):
        # IAM: ec2:DescribeSecurityGroupRules
        pages = ec2.get_paginator("describe_security_group_rules").paginate(
            Filters=[{"Name": "security-group-rule-id", "Values": chunk}]
        )
        for page in pages:
            for rule in page["SecurityGroupRules"]:
                found[rule["SecurityGroupRuleId"]] = {
                    "groupId": rule.get("GroupId"),
                    "isEgress": rule.get("IsEgress"),
                    "tags": {t["Key"]: t["Value"] for t in rule.get("Tags", [])},
                }
    return found


def keep_under_exception(
    ec2: Any, change: dict, rules: list[dict], done: dict, dry_run: bool
) -> list[dict]:
    """Move the rules an approver's confirmed exception keeps into done["kept"]; returns
    the others, to be revoked. No exception asked for (APPROVERS empty, no tag): no call."""
    if not claims_exception(change) or not rules:
        return rules
    grant, why = grant_of(change, datetime.datetime.now(datetime.UTC))
    if grant is None:
        done["exception"] = why
        return rules
    held = rule_tags_now(
        ec2, [r["securityGroupRuleId"] for r in rules if "securityGroupRuleId" in r]
    )
    claimed = {k: v for k, v in change["ruleTags"].items() if k in EXCEPTION_KEYS}
    carrying = [
        rule
        for rule in rules
        if all(
            held.get(rule.get("securityGroupRuleId"), {}).get("tags", {}).get(k) == v
            for k, v in claimed.items()
        )
    ]
    if not carrying:
        done["exception"] = (
            "no exception: the rules do not carry the tags the record names, as AWS "
            "holds them now"
        )
        return rules
    if "confirmedBy" not in change:
        if dry_run:  # a dry run confirms nothing, so it keeps nothing
            done["exception"] = f"would be {words_of(grant)}, once event history confirms it"
            return rules
        raise ConfirmFirst  # keeping adds access: only on AWS's own record of the call
    done["kept"] += carrying
    done["exception"] = words_of(grant)
    return [rule for rule in rules if rule not in carrying]


def retag_rules(change: dict, done: dict, dry_run: bool, account: str | None) -> dict:
    """A tag change of an exception's keys on rules. By an approver: a grant or an end,
    told (the sweep acts on it only as event history records it). By anyone else: undone,
    once event history confirms the call; each key goes back to the value an approver last
    gave it there (or away, if none did)."""
    if change["tagging"]["groupIds"]:
        done = retag(change, done, dry_run, account)
    done.setdefault("retagged", [])
    tagging = change["tagging"]
    keys = (
        list(EXCEPTION_KEYS)
        if tagging["allTags"]
        else [k for k in EXCEPTION_KEYS if k in tagging["tags"]]
    )
    rules = ", ".join(tagging["ruleIds"])
    if approver_of(change):
        done["exception"] = f"{rules}: {approvers_tagging(change)}"
        done["kept"] += tags_changed(change)
        done["reason"] = done["exception"]
        return done
    if dry_run:
        done["retagged"] = [f"tags {', '.join(keys)} of {rules} put back"]
        return {**done, "reason": dry_run_reason()}
    # A tag written or taken off decides what the sweep revokes: on AWS's record only.
    confirm_first(change, dry_run)
    ec2 = client("ec2", change["region"], account)
    held = rule_tags_now(ec2, tagging["ruleIds"])
    done["gone"] += [
        f"tags of {r} (the rule is gone)" for r in tagging["ruleIds"] if r not in held
    ]
    for rule_id, now in held.items():
        if time.monotonic() + SWEEP_RESERVE_S > _retry_until:
            # Two lookups a rule, and a call may name 1000: raised to be told (and, live,
            # retried), never cut off by Lambda's timeout without a word.
            raise DeadlineNear()
        records = rule_history(change, rule_id, now["groupId"], account)
        put_back, take_off = {}, []
        for key in keys:
            _, value = last_approved(records, rule_id, key)
            current = now["tags"].get(key)
            left_by_the_change = (
                current is None
                if change["eventName"] == "DeleteTags"
                else current == (tagging["tags"].get(key) or "")
            )
            if not left_by_the_change:
                continue  # changed again since: that change is an event of its own
            if value is None and current is not None:
                # No approver's value for it in what event history returns (it may
                # have been pushed out of reach): taking it off could end a real grant.
                take_off.append(key)
            elif value is not None and current != value:
                put_back[key] = value
        if put_back:
            # IAM: ec2:CreateTags
            ec2.create_tags(
                Resources=[rule_id],
                Tags=[{"Key": k, "Value": v} for k, v in put_back.items()],
            )
        done["retagged"] += [f"tag {k}={v} put back on {rule_id}" for k, v in put_back.items()]
        done["unreadable"] += [
            f"tag {k} of {rule_id} left: no approver's value for it in event history; "
            "the sweep revokes nothing on it, check it by hand"
            for k in take_off
        ]
    done["exception"] = (
        f"{', '.join(keys)} on {rules} changed by {change['actor']}, who is not in "
        "APPROVERS: " + ("undone" if done["retagged"] else "nothing to undo")
    )
    done["reason"] = done["exception"]
    return done


def approvers_tagging(change: dict[str, Any]) -> str:
    """An approver's tag change on rules, in words: a grant (or a new time), or an end."""
    tags = change["tagging"]["tags"]
    if change["eventName"] == "DeleteTags":
        return f"the exception ended by {change['actor']}; the rules stay"
    now = datetime.datetime.now(datetime.UTC)
    expires, why = expiry_of(tags.get(EXPIRES_KEY), time_of(change), now)
    reason = (tags.get(REASON_KEY) or "").strip()
    if expires and reason:
        grant = {"expires": tags[EXPIRES_KEY], "approver": change["actor"]}
        return words_of({**grant, "reason": reason[:256]})
    why = why or f"no {REASON_KEY} tag"
    return f"no exception ({why}); the sweep will not revoke the rules for it"


def rule_history(
    change: dict[str, Any], rule_id: str, group_id: str | None, account: str | None
) -> list[Any]:
    """The rule's records in event history before the change (newest first), as far back
    as a live exception's grant can be: its tag calls (ResourceName: the rule) and the
    Authorize* that created it (ResourceName: its group, as tag_history reads it)."""
    end = event_time(change) if change.get("eventId") else datetime.datetime.now(datetime.UTC)
    return exception_records(
        change["region"], account, [rule_id, group_id], end, change.get("eventId")
    )


def exception_records(
    region: str,
    account: str | None,
    names: list[str | None],
    end: datetime.datetime,
    skip_event_id: str | None = None,
) -> list[Any]:
    """Records naming any of `names` in the MAX_EXCEPTION_HOURS (and an hour) before `end`,
    newest first: a grant older than that cannot hold a live exception."""
    trail = client("cloudtrail", region, account)
    start = end - datetime.timedelta(hours=SETTINGS.MAX_EXCEPTION_HOURS + 1)
    records: dict[str, Any] = {}
    for name in [n for n in names if n]:
        # IAM: cloudtrail:LookupEvents
        pages = trail.get_paginator("lookup_events").paginate(
            LookupAttributes=[{"AttributeKey": "ResourceName", "AttributeValue": name}],
            StartTime=start,
            EndTime=end,
            PaginationConfig={"MaxItems": HISTORY_PAGES * 50, "PageSize": 50},
        )
        for number, page in enumerate(pages):
            if number:  # LookupEvents takes 2 requests a second
                time.sleep(PAGE_INTERVAL_S)
            for event in page["Events"]:
                try:
                    record = json.loads(event.get("CloudTrailEvent") or "null")
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("eventID") != skip_event_id:
                    records[str(record.get("eventID"))] = record
    return sorted(records.values(), key=lambda r: str(r.get("eventTime")), reverse=True)


# ---------------------------------------------------------------------------------------------
# Exceptions: the sweep revokes what expired, exactly
# ---------------------------------------------------------------------------------------------


def sweep_exceptions(
    since: datetime.timedelta,
    listed: Any,
    regions: list[str],
    counts: dict[str, int],
    context: Any,
    expire: bool,
) -> list[str]:
    """Each account and region, before the history pass. expire=False: the period's tag
    changes on rules, from event history (a tag taken off a granted rule is put back before
    its grant is read). expire=True: one DescribeSecurityGroupRules for the rules that carry
    sg-guardrail:expires; each whose time has come is revoked when event history ties that
    tag to an approver's call (or its call added the rule), and told; a tag no approver's
    record explains is told each sweep. Returns what could not be checked, as blind
    spots."""
    if not SETTINGS.APPROVERS:
        return []
    spots = []
    for account, region, where in sweep_places(listed, regions, context):
        try:
            if expire:
                for result in expire_in(region, account):
                    tally(counts, result["decision"])
                continue
            for record in rule_tag_changes(since, region, account):
                tally(counts, handle_quietly(record, context, from_history=True))
        except RETRY_LATER as error:
            what = "exceptions" if expire else "tag changes on rules"
            spots.append(
                f"the {what} of {where} in {region} could not be checked: "
                f"{error_reason(error)}"
            )
    return spots


def rule_tag_changes(since: datetime.timedelta, region: str, account: str | None) -> list[Any]:
    """The sweep window's CreateTags and DeleteTags of an exception's keys on rules, from
    event history: a removal the live path missed would leave a rule without its time, where
    the expiry pass below cannot see it."""
    records, whole = read_history(since, client("cloudtrail", region, account), TAG_EVENTS)
    if not whole:  # told as a blind spot, like the history pass's own
        raise DeadlineNear()
    found = []
    for record in records:
        try:
            change = read_change(record)
        except BadEvent:
            continue
        if rule_tags_at_stake(change):
            found.append(record)
    return found


def expire_in(region: str, account: str | None) -> Iterator[dict[str, Any]]:
    """The results of one region's expired exceptions, each logged and told."""
    ec2 = client("ec2", region, account)
    now = datetime.datetime.now(datetime.UTC)
    # DescribeSecurityGroupRules documents the filters group-id, security-group-rule-id
    # and tag:<key> (not tag-key); "*" is EC2's wildcard for any value (unverified on AWS).
    # IAM: ec2:DescribeSecurityGroupRules
    pages = ec2.get_paginator("describe_security_group_rules").paginate(
        Filters=[{"Name": f"tag:{EXPIRES_KEY}", "Values": ["*"]}]
    )
    tagged = [rule for page in pages for rule in page["SecurityGroupRules"]]
    # Times first, the oldest first, then values that are no time: a pile of junk values
    # (which are told, and never taken off) does not keep a real expiry from its turn.
    tagged.sort(key=expiry_order)
    for found in tagged:
        tags = {t["Key"]: t["Value"] for t in found.get("Tags", [])}
        expires = parsed_expiry(tags.get(EXPIRES_KEY))
        if expires is not None and expires > now:
            continue  # not yet; a value that is no time is looked at now
        if time.monotonic() + SWEEP_RESERVE_S > _retry_until:
            raise DeadlineNear()  # told as a blind spot; the next sweep sees the rest
        try:
            result = expire_one(ec2, found, tags, region, account, now)
        except Exception as error:  # noqa: BLE001 -- one rule never stops the others
            result = {
                "eventName": "ExceptionExpired",
                "region": region,
                "groupId": found.get("GroupId"),
                "decision": "error",
                "reason": (
                    f"the expired exception of {found.get('SecurityGroupRuleId')} could "
                    f"not be handled ({error_reason(error)}); the next sweep tries again"
                ),
                "rules": [],
            }
        notify(result, {"groupId": found.get("GroupId")})
        yield log(result)


def locked_now(ec2: Any, group_id: str | None) -> bool:
    """Is the group locked (LOCKED_GROUP_IDS, LOCKED_TAGGED, the canary's)? Its tags are
    asked of AWS only when a tag locks groups."""
    change: dict[str, Any] = {"groupId": group_id}
    if SETTINGS.LOCKED_TAGGED and group_id:
        change["tags"] = tags_now(ec2, [group_id]).get(group_id) or {}
    return is_locked(change)


def out_of_scope(ec2: Any, group_id: str | None, is_egress: bool | None) -> str | None:
    """Why the conditions leave the group's rules alone (ONLY/NEVER groups, VPCs, tags,
    REVERT_EGRESS), with the group's facts asked of AWS only when a condition needs them:
    an exception's end revokes nothing the conditions say never to touch."""
    if is_egress and not SETTINGS.REVERT_EGRESS:
        return "egress changes are not reverted (REVERT_EGRESS)"
    why = group_id_exemption(group_id)
    if why or not needs_group_facts({"groupId": group_id}):
        return why
    facts = group_facts(ec2, {"groupId": group_id, "groupName": None})
    return group_exemption(facts) if facts else None


def expire_one(
    ec2: Any,
    found: dict[str, Any],
    tags: dict[str, str],
    region: str,
    account: str | None,
    now: datetime.datetime,
) -> dict[str, Any]:
    """One rule whose sg-guardrail:expires is past (or no time): revoked if the latest
    call of an approver on that tag, as event history records it, set that very value as a
    valid exception; otherwise its tag is undone when someone else's call set the value,
    or it is told as unexplained (no record of it yet: history lags)."""
    rule = rule_from_aws(found)
    rule_id, group_id = rule["securityGroupRuleId"], found.get("GroupId")
    records = exception_records(region, account, [rule_id, group_id], now)
    value = tags.get(EXPIRES_KEY)
    # The approver's latest word on the tag is what counts; what anyone else wrote since
    # (the function's own put-backs too) is no grant, and explains the value only if it
    # wrote exactly that.
    granting, approved = last_approved(records, rule_id, EXPIRES_KEY)
    tied = granting is not None and approved == value
    setter = granting if tied else newest_setter(records, rule_id, EXPIRES_KEY, value)
    result = {
        "eventId": setter.get("eventID") if setter else None,
        "eventName": "ExceptionExpired",
        "eventTime": setter.get("eventTime") if setter else None,
        "actor": read_actor(setter.get("userIdentity"))["actor"] if setter else "unknown",
        "account": account or (setter or {}).get("recipientAccountId"),
        "region": region,
        "groupId": group_id,
        "rules": [],
    }
    if setter is None:
        return {
            **result,
            "decision": "unreadable",
            "reason": (
                f"{rule_id} carries {EXPIRES_KEY}={value!r}, and event history holds no "
                "call that set it: not revoked; check it by hand"
            ),
            "leftOpen": [describe(rule)],
        }
    granted = time_of_record(setter)
    valid, why = expiry_of(value, granted, granted or now)
    left = out_of_scope(ec2, group_id, found.get("IsEgress"))
    if left:  # kept live for the same reason: the conditions do not guard the group
        return {
            **result,
            "decision": "kept",
            "reason": f"{rule_id}'s exception ended, and it stays: {left}",
            "keptRules": [describe(rule)],
        }
    if tied and valid and locked_now(ec2, group_id):
        return {
            **result,
            "decision": "unreadable",
            "reason": (
                f"{rule_id} is in a locked group, where exceptions never apply: its "
                "expired exception is not revoked; check it by hand"
            ),
            "leftOpen": [describe(rule)],
        }
    if tied and valid:
        reason = (tags.get(REASON_KEY) or "").strip()
        gone = revoke(ec2, {"groupId": group_id}, [rule])
        told = "was already gone" if gone else "revoked"
        return {
            **result,
            "decision": "already-gone" if gone else "reverted",
            "reason": (
                f"the exception of {rule_id} expired at {value} (granted by "
                f"{result['actor']} at {setter.get('eventTime')}, because {reason!r}): "
                f"{told}"
            ),
            "rules": [] if gone else [describe(rule)],
        }
    if tied or approver_of(read_actor(setter.get("userIdentity"))):
        return {  # an approver's own value, but no exception: the tag is left, told
            **result,
            "decision": "unreadable",
            "reason": (
                f"{rule_id}'s {EXPIRES_KEY} was set by {result['actor']}, but it is no "
                f"exception ({why or 'a newer grant or end followed'}): not revoked; "
                "check it by hand"
            ),
            "leftOpen": [describe(rule)],
        }
    if valid and added_by(setter, rule_id) and not locked_now(ec2, group_id):
        # The call that set the time is the one that added the rule (its approver since
        # taken out of APPROVERS, say): revoking it undoes exactly what that call added.
        gone = revoke(ec2, {"groupId": group_id}, [rule])
        return {
            **result,
            "decision": "already-gone" if gone else "reverted",
            "reason": (
                f"the exception of {rule_id} expired at {value}; the call that added the "
                f"rule with it ({result['actor']}, not in APPROVERS now) is undone"
            ),
            "rules": [] if gone else [describe(rule)],
        }
    _, approved = last_approved(records, rule_id, EXPIRES_KEY)
    if approved is None:
        # No approver's value in what event history returns: the tag is left, never
        # taken off (a grant pushed out of reach would end for good), and told each sweep.
        return {
            **result,
            "decision": "unreadable",
            "reason": (
                f"{EXPIRES_KEY}={value!r} on {rule_id} was set by {result['actor']}, who "
                "is not in APPROVERS, and event history shows no approver's value: not "
                "revoked, the tag left; check it by hand"
            ),
            "leftOpen": [describe(rule)],
        }
    else:
        # IAM: ec2:CreateTags
        ec2.create_tags(Resources=[rule_id], Tags=[{"Key": EXPIRES_KEY, "Value": approved}])
        undone = f"tag {EXPIRES_KEY}={approved} put back on {rule_id}"
    return {
        **result,
        "decision": "reverted",
        "reason": (
            f"{EXPIRES_KEY}={value!r} on {rule_id} was set by {result['actor']}, who is "
            "not in APPROVERS: the tag undone, the rule left as it is"
        ),
        "rules": [undone],
        "keptRules": [describe(rule)],
    }


# =============================================================================================
# Loading the conditions: the deployment's environment adds to them, every setting is
# checked once, when the file loads, and what passes is SETTINGS, the conditions that run
# =============================================================================================


class ConditionsError(ValueError):
    """A setting in the CONDITIONS block that cannot be what its author meant."""


class Settings(NamedTuple):
    """The conditions that run, SETTINGS: the CONDITIONS block plus what the deployment's
    environment adds to it, built once when the file loads (check_conditions, below) and
    logged at each cold start. The code reads only this; the block's names are never
    rebound. The order is the block's."""

    EXEMPT_PRINCIPALS: list[str]
    ONLY_GROUP_IDS: list[str]
    NEVER_GROUP_IDS: list[str]
    ONLY_VPC_IDS: list[str]
    NEVER_VPC_IDS: list[str]
    ONLY_TAGGED: dict[str, str | None]
    NEVER_TAGGED: dict[str, str | None]
    LOCKED_GROUP_IDS: list[str]
    LOCKED_TAGGED: dict[str, str | None]
    ALLOWED_RULES: list[dict[str, Any]]
    REVERT_EGRESS: bool
    REVERT_MODIFIED_RULES: bool
    GUARD_AWS_SERVICES: bool
    RESTORE_FROM_CONFIG: bool
    RESTORE_FROM_CLOUDTRAIL: bool
    MEMBER_ROLE_NAME: str
    APPROVERS: list[str]
    MAX_EXCEPTION_HOURS: int
    LATE_AFTER_SECONDS: int


def effective_settings(block: dict[str, Any], environ: Any) -> dict[str, Any]:
    """The block (the module's names) with what a deployment gives in the environment
    (template.yaml's parameters) added: EXEMPT_PRINCIPALS and LOCKED_GROUP_IDS
    (comma-separated), LOCKED_TAG_KEY (a tag key, any value), REVERT_EGRESS=false,
    RESTORE_FROM_CONFIG=true, RESTORE_FROM_CLOUDTRAIL=true, MEMBER_ROLE_NAME (in place of
    the block's), APPROVERS, MAX_EXCEPTION_HOURS (the shorter of it and the block's). A
    block's value of the wrong kind is left for the check to name.
    DRY_RUN, NOTIFY_TOPIC_ARN and LOG_RAW_EVENT are read at each event."""
    found = dict(block)
    for name in ("EXEMPT_PRINCIPALS", "LOCKED_GROUP_IDS", "APPROVERS"):
        if isinstance(found.get(name), list):
            found[name] = found[name] + listed_in(environ, name)
    tag_key = environ.get("LOCKED_TAG_KEY", "").strip()
    if tag_key and isinstance(found.get("LOCKED_TAGGED"), dict):
        found["LOCKED_TAGGED"] = {**found["LOCKED_TAGGED"], tag_key: None}
    switched = {  # each switch can only be turned one way
        "REVERT_EGRESS": "false",
        "RESTORE_FROM_CONFIG": "true",
        "RESTORE_FROM_CLOUDTRAIL": "true",
    }
    for name, word in switched.items():
        if environ.get(name, "").strip().lower() == word:
            found[name] = word == "true"
    if "MEMBER_ROLE_NAME" in found:  # misspelled in the block: the check says so
        found["MEMBER_ROLE_NAME"] = (
            environ.get("MEMBER_ROLE_NAME", "").strip() or found["MEMBER_ROLE_NAME"]
        )
    hours = environ.get("MAX_EXCEPTION_HOURS", "").strip()
    if hours:  # a value that is no whole number is kept as text, for the check to refuse
        given = int(hours) if hours.isdigit() else hours
        block_hours = found.get("MAX_EXCEPTION_HOURS")
        if type(given) is int and type(block_hours) is int:
            # Both are limits, and the template always sets one (24 by default): the
            # shorter holds, so the block's tighter limit is never lengthened unseen.
            given = min(given, block_hours)
        found["MAX_EXCEPTION_HOURS"] = given
    return found


def listed_in(environ: Any, name: str) -> list[str]:
    """A comma-separated environment variable, as a list (empty entries dropped)."""
    return [item.strip() for item in environ.get(name, "").split(",") if item.strip()]


PRINCIPAL_PATTERN = re.compile(
    r"arn:aws[a-z-]*:(iam|sts)::([0-9*?]{1,12}|\{account\}):(?P<name>.+)"
    r"|[a-z0-9.-]+\.amazonaws\.com"
)

ROLE_NAME = re.compile(r"[\w+=,.@-]{1,64}")

EXAMPLES = {
    "EXEMPT_PRINCIPALS": '["arn:aws:iam::111122223333:role/NetworkAdmin"]',
    "ONLY_GROUP_IDS": '["sg-0123456789abcdef0"]',
    "NEVER_GROUP_IDS": '["sg-0123456789abcdef0"]',
    "ONLY_VPC_IDS": '["vpc-0123456789abcdef0"]',
    "NEVER_VPC_IDS": '["vpc-0123456789abcdef0"]',
    "ONLY_TAGGED": '{"guardrail": "on"}',
    "NEVER_TAGGED": '{"team": None}',
    "LOCKED_GROUP_IDS": '["sg-0123456789abcdef0"]',
    "LOCKED_TAGGED": '{"lock": "on"}',
    "ALLOWED_RULES": '[{"ipProtocol": "tcp", "fromPort": 443, "toPort": 443, "cidr": "0.0.0.0/0"}]',
    "REVERT_EGRESS": "False",
    "REVERT_MODIFIED_RULES": "False",
    "GUARD_AWS_SERVICES": "True",
    "RESTORE_FROM_CONFIG": "True",
    "RESTORE_FROM_CLOUDTRAIL": "True",
    "MEMBER_ROLE_NAME": '"sg-guardrail-member"',
    "APPROVERS": '["arn:aws:iam::111122223333:role/SecurityApprover"]',
    "MAX_EXCEPTION_HOURS": "24",
    "LATE_AFTER_SECONDS": "300",
    "should_revert": "def should_revert(change): return True",
}


def effective_conditions() -> dict[str, Any]:
    """The conditions that run: the block as edited plus what the environment added to it,
    logged once at each cold start, so that what an auditor reads in the logs is the whole
    set (the block alone is not, where the template's parameters add to it)."""
    return {**SETTINGS._asdict(), "DRY_RUN": is_dry_run()}  # DRY_RUN: as at the start


def check_conditions() -> Settings:
    """Fail at load, loudly, on anything in the conditions (the block, and what the
    environment adds) that cannot be what was meant: one line per problem, naming the
    setting, the value and an example of a good one. What passes is the Settings that run."""
    settings = effective_settings(globals(), os.environ)
    problems = [
        f"{name} = {str(value)[:80]}: {why}; e.g. {EXAMPLES.get(name.split('[')[0])}"
        for name, value, why in condition_problems(settings)
    ]
    if problems:  # one line each, as the README promises
        raise ConditionsError("\n".join(f"CONDITIONS: {line}" for line in problems))
    found = Settings(**{name: settings[name] for name in Settings._fields})
    warn_about_wildcard_accounts(found)
    return found


def condition_problems(settings: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(setting, value, what is wrong) for every setting that is not right."""
    found = missing_settings(settings)
    if found:  # the checks below read every setting: a missing one stands in by its example
        settings = {**settings, **{name: stand_in(name) for name, _, _ in found}}
    principals = settings["EXEMPT_PRINCIPALS"]
    if not is_list_of(principals, str):
        found.append(("EXEMPT_PRINCIPALS", principals, "must be a list of strings"))
    else:
        for pattern in principals:
            matched = PRINCIPAL_PATTERN.fullmatch(pattern)
            if pattern.count("arn:") > 1:
                why = "holds two ARNs: a comma missing between two strings?"
                found.append(("EXEMPT_PRINCIPALS", pattern, why))
            elif pattern.count(ACCOUNT_TOKEN) != pattern.count(f"::{ACCOUNT_TOKEN}:"):
                why = f"{ACCOUNT_TOKEN} stands only for the account: arn:aws:iam::{ACCOUNT_TOKEN}:role/NAME"
                found.append(("EXEMPT_PRINCIPALS", pattern, why))
            elif not matched:
                found.append(("EXEMPT_PRINCIPALS", pattern, "is not an ARN or service"))
            elif matched["name"] is not None and not matched["name"].strip("*?/"):
                found.append(("EXEMPT_PRINCIPALS", pattern, "would exempt everyone"))
    id_lists = {
        "ONLY_GROUP_IDS": GROUP_ID,
        "NEVER_GROUP_IDS": GROUP_ID,
        "ONLY_VPC_IDS": VPC_ID,
        "NEVER_VPC_IDS": VPC_ID,
        "LOCKED_GROUP_IDS": GROUP_ID,
    }
    for name, pattern in id_lists.items():
        value = settings[name]
        if not is_list_of(value, str):
            found.append((name, value, "must be a list of IDs"))
            continue
        found += [(name, v, "is not such an ID") for v in value if not pattern.fullmatch(v)]
    for name in ("ONLY_TAGGED", "NEVER_TAGGED", "LOCKED_TAGGED"):
        tags = settings[name]
        if not isinstance(tags, dict):
            found.append((name, tags, "must be a dict of tag key to value (or None)"))
            continue
        for key, value in tags.items():
            if not isinstance(key, str) or not 0 < len(key) <= 128:
                found.append((name, key, "is not a tag key"))
            elif value is not None and not (isinstance(value, str) and len(value) <= 256):
                found.append((name, value, f"is not a value for tag {key!r}"))
    rules = settings["ALLOWED_RULES"]
    if not is_list_of(rules, dict):
        found.append(("ALLOWED_RULES", rules, "must be a list of dicts"))
    else:
        for number, entry in enumerate(rules, 1):
            where = f"ALLOWED_RULES[{number - 1}]"
            found += [(where, entry, why) for why in allowed_rule_problems(entry)]
    for name in SWITCHES:
        if type(settings[name]) is not bool:
            found.append((name, repr(settings[name]), "must be True or False"))
    role = settings["MEMBER_ROLE_NAME"]
    if not isinstance(role, str) or role and not ROLE_NAME.fullmatch(role):
        found.append(("MEMBER_ROLE_NAME", role, "is not an IAM role name"))
    late = settings["LATE_AFTER_SECONDS"]
    if type(late) is not int or late < 0:
        found.append(("LATE_AFTER_SECONDS", late, "must be a whole number of seconds"))
    if not callable(settings["should_revert"]):
        found.append(("should_revert", settings["should_revert"], "must be a function"))
    found += exception_setting_problems(settings)  # APPROVERS, MAX_EXCEPTION_HOURS
    return found


SWITCHES = (
    "GUARD_AWS_SERVICES",
    "REVERT_EGRESS",
    "REVERT_MODIFIED_RULES",
    "RESTORE_FROM_CONFIG",
    "RESTORE_FROM_CLOUDTRAIL",
)


def is_list_of(value: Any, kind: type) -> bool:
    return isinstance(value, list) and all(isinstance(item, kind) for item in value)


def allowed_rule_problems(entry: dict[str, Any]) -> list[str]:
    """What is wrong with one ALLOWED_RULES entry; an empty entry would allow every rule."""
    if not entry:
        return ["an empty entry would allow every rule"]
    problems = [f"unknown key {key!r}" for key in entry if key not in ALLOWED_RULE_KEYS]
    problems += [
        f"{key} must be {kind.__name__}"
        for key, kind in ALLOWED_RULE_KEYS.items()
        if key in entry and type(entry[key]) is not kind
    ]
    if problems:
        return problems
    protocol = entry.get("ipProtocol")
    if protocol is not None and allowed_protocol(protocol) is None:
        problems.append(f"ipProtocol {protocol!r} is not tcp, udp, icmp, icmpv6, -1 or 0-255")
    for key in ("fromPort", "toPort"):
        if key in entry and not -1 <= entry[key] <= 65535:
            problems.append(f"{key} {entry[key]} is not a port (-1 to 65535)")
    low, high = entry.get("fromPort", -1), entry.get("toPort", -1)
    icmp = allowed_protocol(protocol) in ICMP if protocol is not None else False
    if not icmp and low != -1 and high != -1 and low > high:
        problems.append(f"fromPort {low} is above toPort {high}")
    for key in ("cidr", "cidrWithin"):
        if key in entry and cidr_version(entry[key]) is None:
            problems.append(f"{key} {entry[key]!r} is not a CIDR like 10.0.0.0/8")
    for key, pattern in (
        ("prefixListId", PREFIX_LIST_ID),
        ("referencedGroupId", GROUP_ID),
    ):
        if key in entry and not pattern.fullmatch(entry[key]):
            problems.append(f"{key} {entry[key]!r} is not such an ID")
    return problems


def allowed_protocol(given: str) -> str | None:
    """An entry's ipProtocol as the rules spell it ("TCP" -> "tcp", "6" -> "tcp")."""
    name = PROTOCOLS.get(given.lower())
    if name is None and PROTOCOL_NUMBER.fullmatch(given) and int(given) <= 255:
        name = str(int(given))
    return name


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


def warn_about_wildcard_accounts(settings: Settings) -> None:
    """With many accounts, an exemption for any account exempts a role *name*: warn."""
    if not settings.MEMBER_ROLE_NAME:
        return
    for pattern in settings.EXEMPT_PRINCIPALS:
        if re.match(r"arn:aws[a-z-]*:(iam|sts)::[^:]*[*?]", pattern):
            warn(
                f"EXEMPT_PRINCIPALS {pattern!r} matches any account: with many "
                "accounts, an admin of any member account can create that role and "
                "be exempt. Name the account ID."
            )


def warn(text: str) -> None:
    """A warning at cold start, as one JSON log line."""
    print(json.dumps({"warning": text, "version": __version__}))


# =============================================================================================
# Conditions, continued: a setting missing from the block, exemptions in the change's own
# account, the role of the actor
# =============================================================================================


def stand_in(name: str) -> Any:
    """A missing setting's example, for the check of the others (it is told apart)."""
    import ast  # only for a broken block

    return (
        (lambda change: True) if name == "should_revert" else ast.literal_eval(EXAMPLES[name])
    )


def missing_settings(settings: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """A setting of the block that is not there (misspelled, or deleted): named, with the
    name that looks like it, instead of a KeyError further on."""
    missing = [name for name in EXAMPLES if name not in settings]
    if not missing:
        return []
    import difflib  # only for a broken block

    found = []
    for name in missing:
        others = [key for key in settings if key not in EXAMPLES]
        close = difflib.get_close_matches(name, others, n=1, cutoff=0.8)
        seen = f" ({close[0]} looks like it: misspelled?)" if close else ""
        found.append((name, "(missing)", f"the block no longer defines it{seen}"))
    return found


# =============================================================================================
# Local use, continued: offline replay, answers that say a call does not exist, credentials
# =============================================================================================

_offline = False  # --offline: no AWS client is ever made


def log_raw_event(summary: dict[str, Any], event: Any) -> None:
    """LOG_RAW_EVENT=true, for debugging only: the event as it came, before its own line."""
    line = {"eventId": summary["eventId"], "rawEvent": event, "version": __version__}
    print(json.dumps(line, default=str))


class Offline(BotoCoreError):
    fmt = (
        "this decision needs AWS ({service}), and an offline replay calls "
        "none; replay with --dry-run and credentials to let it read"
    )


def refuse_offline(model: Any = None, **_: Any) -> None:
    raise Offline(service=getattr(model, "name", "AWS"))


def go_offline() -> None:
    """Decide on the records alone: nothing read, nothing changed. A saved event is judged
    as if it had just happened (the late check reads AWS); a decision that needs AWS (a
    group named only, VPC or tag conditions, an edit, a prefix list) ends in `error`."""
    global _offline, SETTINGS
    _offline = True
    SETTINGS = SETTINGS._replace(LATE_AFTER_SECONDS=10**12)
    os.environ["DRY_RUN"] = "true"


NO_CREDENTIALS = (
    "no AWS credentials: boto3 found none in the environment, ~/.aws or a profile; "
    "give some, or replay with --offline to decide on the records alone"
)


def is_missing_credentials(error: Exception) -> bool:
    from botocore.exceptions import NoCredentialsError

    return isinstance(error, NoCredentialsError)


def tell_no_credentials(error: Exception, said: bool) -> bool:
    """One plain line, once, for a replay without credentials; True once said."""
    if not said and is_missing_credentials(error):
        print(f"error: {NO_CREDENTIALS}", file=sys.stderr)
        return True
    return said


# =============================================================================================
# The smoke test: python lambda_function.py --smoke VPC_ID, with your own credentials,
# against a deployed guardrail (make smoke VPC=vpc-...); only ever from a command line
# =============================================================================================

SMOKE_PERMISSION = {  # the canary's rule: the discard port, from a documentation address
    "IpProtocol": "tcp",
    "FromPort": 9,
    "ToPort": 9,
    "IpRanges": [{"CidrIp": "192.0.2.1/32", "Description": "sg-guardrail smoke test"}],
}
SMOKE_TAG = {"Key": "sg-guardrail", "Value": "smoke test - deleted when it ends"}
SMOKE_POLL_S = 1.0  # how often the group is looked at: the resolution of the figure
SMOKE_LOG_POLL_S = 3.0
SMOKE_LOG_WAIT_S = 60.0  # after the revert, how long its log line may take to arrive


def add_local_options(parser: Any) -> None:
    parser.add_argument(
        "--offline",
        action="store_true",
        help="decide on the records alone: no AWS call, nothing changed",
    )
    parser.add_argument(
        "--smoke",
        metavar="VPC_ID",
        help="smoke-test a deployed guardrail: a throwaway group in this VPC",
    )
    parser.add_argument(
        "--function", default="sg-guardrail", help="--smoke: the function's name"
    )
    parser.add_argument(
        "--stack", help="--smoke: take the function from this stack's FunctionArn"
    )
    parser.add_argument(
        "--home-region",
        help="--smoke: the function's region, of its stack and log (default: --region)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="--smoke: seconds to wait"
    )


def smoke(args: Any, vpc_id: str) -> int:
    """Create a tagged, empty group in the VPC, add tcp 9 from 192.0.2.1/32 as you, wait
    for the guardrail to revert it, read its log line, and delete the group whatever
    happens. 0: reverted (or a dry-run deployment decided to); 1: not; 2: could not run."""
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        print("error: --smoke runs from a command line, never in Lambda", file=sys.stderr)
        return 2
    if not VPC_ID.fullmatch(vpc_id):
        print(
            f"error: --smoke wants a VPC ID like vpc-0123abcd: {vpc_id!r}",
            file=sys.stderr,
        )
        return 2
    deadline = time.monotonic() + max(args.timeout, 1.0)
    group_id, function = None, args.function
    try:
        ec2 = new_client("ec2", args.region)
        region = ec2.meta.region_name
        home = args.home_region or region  # the function's stack and log group
        if args.stack:
            function = function_of_stack(new_client("cloudformation", home), args.stack)
        logs = new_client("logs", home)
        name = f"sg-guardrail-smoke-{datetime.datetime.now(datetime.UTC):%Y%m%dT%H%M%S}"
        # IAM (your own credentials, the smoke test): ec2:CreateSecurityGroup, ec2:CreateTags
        group_id = ec2.create_security_group(
            GroupName=name,
            Description="sg-guardrail smoke test: deleted when the test ends",
            VpcId=vpc_id,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": [SMOKE_TAG]}],
        )["GroupId"]
        print(
            f"smoke test: {group_id} ({name}) in {vpc_id}, {region}; "
            f"function {function} in {home}"
        )
        return smoke_in(ec2, logs, group_id, function, deadline)
    except (ClientError, BotoCoreError, LookupError) as error:
        print(f"error: the smoke test could not run: {one_line(error)}", file=sys.stderr)
        return 2
    finally:
        if group_id:
            delete_smoke_group(ec2, group_id)


def one_line(error: Exception) -> str:
    if is_missing_credentials(error):
        return NO_CREDENTIALS
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def function_of_stack(cloudformation: Any, stack: str) -> str:
    """The function's name, from the stack's FunctionArn output."""
    # IAM (your own credentials, the smoke test): cloudformation:DescribeStacks
    (found,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    for output in found.get("Outputs", []):
        if output.get("OutputKey") == "FunctionArn":
            return output["OutputValue"].rsplit(":", 1)[-1]
    raise LookupError(f"stack {stack} has no FunctionArn output (a member stack?)")


def smoke_in(ec2: Any, logs: Any, group_id: str, function: str, deadline: float) -> int:
    started_ms = int(time.time() * 1000)
    # IAM (your own credentials, the smoke test): ec2:AuthorizeSecurityGroupIngress
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[SMOKE_PERMISSION])
    called = time.monotonic()
    print("  added tcp 9 from 192.0.2.1/32; waiting for the guardrail")
    reverted_after, line, next_read = None, None, 0.0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if reverted_after is None and not smoke_rule_present(ec2, group_id):
            reverted_after = now - called
        if (line is None or line.get("decision") == "error") and now >= next_read:
            line = smoke_log_line(logs, function, group_id, started_ms) or line
            next_read = now + SMOKE_LOG_POLL_S
        settled = line is not None and line.get("decision") != "error"
        if settled and (reverted_after is not None or line["decision"] != "reverted"):
            break
        if reverted_after is not None and now - called - reverted_after > SMOKE_LOG_WAIT_S:
            break  # reverted, and its log line not found: said below
        time.sleep(SMOKE_POLL_S)
    return smoke_report(reverted_after, line, function)


def smoke_rule_present(ec2: Any, group_id: str) -> bool:
    # IAM (your own credentials, the smoke test): ec2:DescribeSecurityGroupRules
    found = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group_id]}]
    )["SecurityGroupRules"]
    return any(
        not rule.get("IsEgress") and rule.get("FromPort") == 9 and rule.get("ToPort") == 9
        for rule in found
    )


def smoke_log_line(
    logs: Any, function: str, group_id: str, started_ms: int
) -> dict[str, Any] | None:
    """The function's last log line about the group (CloudWatch Logs FilterLogEvents)."""
    found = None
    # IAM (your own credentials, the smoke test): logs:FilterLogEvents
    pages = logs.get_paginator("filter_log_events").paginate(
        logGroupName=f"/aws/lambda/{function}",
        startTime=started_ms - 60_000,
        filterPattern=f'"{group_id}"',
    )
    for page in pages:
        for event in page.get("events", []):
            text = event.get("message", "")
            try:
                line = json.loads(text[text.index("{") :])
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("groupId") == group_id:
                found = line
    return found


def smoke_report(reverted_after: float | None, line: dict | None, function: str) -> int:
    decision = (line or {}).get("decision")
    if reverted_after is not None:
        print(
            f"  reverted {reverted_after:.1f} s after the call (looked every {SMOKE_POLL_S:.0f} s)"
        )
    else:
        print("  the rule was still in place when the test ended")
    if line is None:
        print(f"  log line: none found in /aws/lambda/{function}")
    else:
        print(f"  decision: {decision}: {line.get('reason')}")
        print(f"  event {line.get('eventId')}, guardrail version {line.get('version')}")
        said = line.get("notification")
        print(
            "  notification: "
            + ("sent" if said == "sent" else said or "none (no NOTIFY_TOPIC_ARN, or not told)")
        )
    if decision == "dry-run":
        print("OK: the guardrail is in dry run: it decided to revert and changed nothing")
        return 0
    if reverted_after is not None and decision in ("reverted", None):
        print("OK: the guardrail reverted the change" + ("" if line else " (no log line)"))
        return 0
    print("FAILED: the change was not reverted" + (f" ({decision})" if decision else ""))
    return 1


def delete_smoke_group(ec2: Any, group_id: str) -> None:
    for attempt in range(3):
        try:
            # IAM (your own credentials, the smoke test): ec2:DeleteSecurityGroup
            ec2.delete_security_group(GroupId=group_id)
            print(f"  {group_id} deleted")
            return
        except (ClientError, BotoCoreError) as error:
            if attempt == 2:
                print(
                    f"error: {group_id} could not be deleted ({one_line(error)}): "
                    f"aws ec2 delete-security-group --group-id {group_id}",
                    file=sys.stderr,
                )
            else:
                time.sleep(2)


# =============================================================================================
# Local use: replay saved events or a CloudTrail log, or event history's recent past
# =============================================================================================

USAGE = """python lambda_function.py FILE [FILE ...] [--dry-run | --offline]
       python lambda_function.py --since 24h [--region REGION] [--dry-run]
       python lambda_function.py --smoke VPC_ID [--region REGION] [--stack STACK]
       python lambda_function.py --audit | --suggest ... (--audit --help)"""

DESCRIPTION = """Run the guardrail on this machine, as the deployed function would.

FILE: a saved EventBridge event, a bare CloudTrail record, a JSON list of them, or a
CloudTrail log file as CloudTrail writes it to S3 ({"Records": [...]}, gzipped or not);
- reads standard input. --since: the security-group changes in CloudTrail event history
(LookupEvents, 90 days at most; your credentials need cloudtrail:LookupEvents).

Without --dry-run this CHANGES the AWS that boto3 points at: your profile's account and
region, or the endpoint in AWS_ENDPOINT_URL (a moto server, say). It revokes what the
CONDITIONS block says to revoke. --dry-run changes nothing but still reads that AWS (a late
event's rules, a group's VPC and tags, an edit's old value), with your credentials.
--offline decides on the records alone, as if each had just happened: no AWS call at all.

--smoke VPC_ID tests a deployed guardrail with your credentials: a throwaway group tagged
sg-guardrail in that VPC, tcp 9 from 192.0.2.1/32 added to it, the time until it is
reverted, the function's log line, and the group deleted whatever happens."""

EPILOG = """exit status: 0 every event handled (or nothing to handle); 1 some change left open,
unreadable or failed (the other events are still handled); 2 the input could not be read."""

HISTORY_DAYS = 90  # how far back CloudTrail event history goes


def main(argv: list[str], cloudtrail: Any = None) -> int:
    """Run the handler on saved events, CloudTrail logs or recent event history."""
    if {"--audit", "--suggest"} & set(argv):  # what is open already: changes nothing
        return audit_main(argv)
    import argparse  # local use only: kept off the Lambda's cold start

    global _retry_until
    _retry_until = math.inf  # the command line has no Lambda deadline to stop retrying by

    parser = argparse.ArgumentParser(
        prog="python lambda_function.py",
        usage=USAGE,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="events or logs")
    parser.add_argument(
        "--since",
        type=history_window,
        help="handle event history's changes of the last 30m, 24h, 7d (as FILE does)",
    )
    parser.add_argument("--region", help="region of the event history (default: boto3's)")
    parser.add_argument(
        "--dry-run", action="store_true", help="decide and log, change nothing"
    )
    add_local_options(parser)
    args = parser.parse_args(argv)
    if args.smoke is not None:
        return smoke(args, args.smoke)
    if bool(args.files) == (args.since is not None):
        parser.error("give event or log files, or --since")
    if args.offline:
        if args.since is not None:
            parser.error("--offline replays files; --since reads AWS")
        go_offline()
    if args.dry_run:
        os.environ["DRY_RUN"] = "true"
    if args.since is None:
        return replay(event for name in args.files for event in saved_events(name))
    try:
        events = recent_events(args.since, args.region, cloudtrail)
    except (ClientError, BotoCoreError) as error:
        hint = ""
        if is_missing_credentials(error):
            hint = f" ({NO_CREDENTIALS})"
        elif os.environ.get("AWS_ENDPOINT_URL"):
            hint = " (a moto server does not implement it: replay saved events instead)"
        first_line = str(error).strip().splitlines()[0][:300]
        first_line = first_line.split(": <", 1)[0]  # an emulator's HTML page says nothing
        print(
            f"error: cloudtrail:LookupEvents failed{hint}: {first_line}",
            file=sys.stderr,
        )
        return 2
    return replay(events)


def history_window(text: str) -> datetime.timedelta:
    """--since: a number and m, h or d, within what event history keeps."""
    import argparse

    match = re.fullmatch(r"(\d{1,6})([mhd])", text)
    if not match:
        raise argparse.ArgumentTypeError(f"wants a number and m, h or d, like 24h: {text!r}")
    unit = {"m": "minutes", "h": "hours", "d": "days"}[match[2]]
    window = datetime.timedelta(**{unit: int(match[1])})
    if not datetime.timedelta(0) < window <= datetime.timedelta(days=HISTORY_DAYS):
        raise argparse.ArgumentTypeError(
            f"event history keeps {HISTORY_DAYS} days; {text!r} is not within them"
        )
    return window


def saved_events(source: str) -> Iterator[Any]:
    """The events in one file: an event, a list of events, or a CloudTrail log (maybe
    gzipped), whose records are let go one by one once handled."""
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
    del data
    if isinstance(loaded, dict) and isinstance(loaded.get("Records"), list):
        records, loaded = loaded["Records"], []
    else:
        records = loaded if isinstance(loaded, list) else [loaded]
    found = 0
    for index, record in enumerate(records):
        records[index] = None  # handled or skipped: no longer held
        if not isinstance(record, dict) or record_of(record).get("eventName") in (
            HANDLED_EVENTS
        ):
            found += 1
            yield record
    if not found:
        print(f"note: {source} holds no security-group changes", file=sys.stderr)


def recent_events(
    since: datetime.timedelta,
    region: str | None,
    cloudtrail: Any = None,
    names: tuple[str, ...] | None = None,
) -> list[Any]:
    """Security-group changes in CloudTrail event history (LookupEvents), oldest first."""
    if cloudtrail is None:
        cloudtrail = new_client("cloudtrail", region)
    return read_history(since, cloudtrail, names)[0]


def read_history(
    since: datetime.timedelta,
    cloudtrail: Any,
    names: tuple[str, ...] | None = None,
    until: datetime.timedelta | None = None,
) -> tuple[list[Any], bool]:
    """(records oldest first, whether all were read) of event history from `since` ago to
    `until` ago (now if None): at LookupEvents' two requests a second, stopping before the
    Lambda's deadline with time left to handle what was read."""
    now = datetime.datetime.now(datetime.UTC)
    slices = [(now - since, now - (until or datetime.timedelta(0)))]
    if names is None:
        names = CHANGE_EVENTS + (
            REMOVAL_EVENTS if SETTINGS.LOCKED_GROUP_IDS or SETTINGS.LOCKED_TAGGED else ()
        )
    records: dict[str, Any] = {}  # by event ID
    for low, high in slices:
        for name in names:  # LookupEvents filters on one attribute at a time
            # IAM (the sweep's role, or your own credentials): cloudtrail:LookupEvents
            pages = cloudtrail.get_paginator("lookup_events").paginate(
                LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": name}],
                StartTime=low,
                EndTime=high,
            )
            for number, page in enumerate(pages):
                if number:
                    time.sleep(PAGE_INTERVAL_S)
                for found in page["Events"]:
                    try:
                        record = json.loads(found.get("CloudTrailEvent") or "null")
                    except ValueError:  # kept as it is: the handler reports it
                        record = found.get("CloudTrailEvent")
                    key = found.get("EventId") or str(len(records))
                    records[key] = record
                if time.monotonic() + 2 * SWEEP_RESERVE_S > _retry_until:
                    return sorted_by_time(records.values()), False
    return sorted_by_time(records.values()), True


PAGE_INTERVAL_S = 0.5  # LookupEvents answers 2 requests a second per account and region


def sorted_by_time(records: Iterable[Any]) -> list[Any]:
    return sorted(
        records, key=lambda r: str(r.get("eventTime")) if isinstance(r, dict) else ""
    )


def replay(events: Iterable[Any]) -> int:
    """Handle each event in order; a failure on one does not stop the others."""
    counts: dict[str, int] = {}
    problems = []
    said_no_credentials = False
    try:
        for event in events:
            try:
                # The event handler, not lambda_handler: internal callers never go back
                # through the entry point that tells a sweep or a batch by its shape.
                decision = handle_event(event, None)["decision"]
            except RETRY_LATER as error:
                decision = "error"  # the handler has logged it
                said_no_credentials = tell_no_credentials(error, said_no_credentials)
            failed_call = bool(record_of(event).get("errorCode"))
            if decision in LEFT_OPEN or (decision == "ignored" and not failed_call):
                problems.append(first_summary(event)["eventId"] or "(no eventID)")
            counts[decision] = counts.get(decision, 0) + 1
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        if not counts:
            return 2
        problems.append("(input cut short)")
    tally = ", ".join(f"{n} {decision}" for decision, n in sorted(counts.items()))
    total = sum(counts.values())
    print(f"summary: {counted(total, 'event')}: {tally or 'none'}", file=sys.stderr)
    if problems:
        print(f"left open, unreadable or failed: {', '.join(problems)}", file=sys.stderr)
    return 1 if problems else 0


SETTINGS = check_conditions()  # the conditions that run: built once, here
if os.environ.get("AWS_EXECUTION_ENV", "").startswith("AWS_Lambda_"):  # a cold start
    print(json.dumps({"effectiveConditions": effective_conditions()}, default=str))

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
