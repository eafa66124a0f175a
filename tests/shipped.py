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
