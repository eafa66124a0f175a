"""The CONDITIONS block as shipped: what every test starts from, and what the demo marks a
user's edits against. Written out here, never read from lambda_function.py, which a user edits."""

from __future__ import annotations

SHIPPED_CONDITIONS = {
    "EXEMPT_PRINCIPALS": [],
    "ONLY_GROUP_IDS": [],
    "NEVER_GROUP_IDS": [],
    "ONLY_VPC_IDS": [],
    "NEVER_VPC_IDS": [],
    "ONLY_TAGGED": {},
    "NEVER_TAGGED": {},
    "ALLOWED_RULES": [],
    "LOCKED_GROUP_IDS": [],
    "LOCKED_TAGGED": {},
    "REVERT_EGRESS": True,
    "REVERT_MODIFIED_RULES": True,
    "GUARD_AWS_SERVICES": False,
    "RESTORE_FROM_CONFIG": False,
    "RESTORE_FROM_CLOUDTRAIL": False,
    "MEMBER_ROLE_NAME": "",
    "LATE_AFTER_SECONDS": 300,
    "APPROVERS": [],
    "MAX_EXCEPTION_HOURS": 24,
}

# The block's text as shipped, from its header to the line before the default path: tests
# that edit the file's text start from it, never from the user's block (test_conditions.py
# checks that it holds SHIPPED_CONDITIONS).
SHIPPED_BLOCK = '''# =============================================================================================
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
LATE_AFTER_SECONDS = 300


'''
