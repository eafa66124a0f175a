"""Make real boto3 calls on moto and write the CloudTrail records they would produce.

moto has no CloudTrail, so tests and the demo write the record themselves, in the format that
real records have (see ../shared/cloudtrail-format.md): camelCase request parameters with
{"items": [...]} collections, and the response's securityGroupRuleSet holding the IDs of the
rules the call really created.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import uuid
from typing import Any

from botocore.exceptions import ClientError

ACCOUNT = "123456789012"  # moto's default account
# The change most tests make: SSH opened to the world, and how it shows in rule_set().
SSH = {
    "IpProtocol": "tcp",
    "FromPort": 22,
    "ToPort": 22,
    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
}
OPEN = (False, "tcp", 22, 22, "0.0.0.0/0")
ALICE = {
    "type": "IAMUser",
    "principalId": "AIDAEXAMPLEALICE00001",
    "arn": f"arn:aws:iam::{ACCOUNT}:user/alice",
    "accountId": ACCOUNT,
    "accessKeyId": "AKIAEXAMPLEALICE0001",
    "userName": "alice",
}


def assumed_role(role: str, session: str, account: str = ACCOUNT) -> dict[str, Any]:
    """userIdentity of a role session, as the console, SSO or a pipeline produce it."""
    return {
        "type": "AssumedRole",
        "principalId": f"AROAEXAMPLE{role.upper()[:8]}:{session}",
        "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{session}",
        "accountId": account,
        "accessKeyId": "ASIAEXAMPLE000000001",
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": f"AROAEXAMPLE{role.upper()[:8]}",
                "arn": f"arn:aws:iam::{account}:role/{role}",
                "accountId": account,
                "userName": role,
            },
            "attributes": {
                "creationDate": "2026-11-27T10:00:00Z",
                "mfaAuthenticated": "false",
            },
        },
    }


def camel(value: Any) -> Any:
    """boto3 shapes to CloudTrail's: camelCase keys, lists as {"items": [...]}, [] as {}."""
    if isinstance(value, dict):
        renamed = {"UserIdGroupPairs": "groups"}
        return {
            renamed.get(k, k[:1].lower() + k[1:]): camel(v)
            for k, v in value.items()
            if k != "Tags"
        }
    if isinstance(value, list):
        return {"items": [camel(v) for v in value]} if value else {}
    return value


# Every record of a call the helpers below really made on moto, oldest first: the test's
# CloudTrail event history (served by EventHistory). A record a test builds by hand with
# record() is not in it: that is what a forged message looks like.
HISTORY: list[dict[str, Any]] = []


def made(found: dict[str, Any]) -> dict[str, Any]:
    """A record of a call really made: into event history (a failed call too)."""
    HISTORY.append(found)
    return found


def now() -> str:
    """CloudTrail's time stamp for this second: records made here are fresh, not late."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record(
    event_name: str,
    request: dict[str, Any],
    response: dict[str, Any] | None,
    *,
    region: str = "us-east-1",
    identity: dict[str, Any] | None = None,
    error_code: str | None = None,
) -> dict[str, Any]:
    """One CloudTrail record with every key a real management event carries."""
    request_id = str(uuid.uuid4())
    found: dict[str, Any] = {
        "eventVersion": "1.10",
        "userIdentity": identity or ALICE,
        "eventTime": now(),
        "eventSource": "ec2.amazonaws.com",
        "eventName": event_name,
        "awsRegion": region,
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.17.0 Python/3.12.6 Linux/6.1 exe/x86_64",
        "requestParameters": request,
        "responseElements": response,
        "requestID": request_id,
        "eventID": str(uuid.uuid4()),
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
        "tlsDetails": {
            "tlsVersion": "TLSv1.3",
            "cipherSuite": "TLS_AES_128_GCM_SHA256",
            "clientProvidedHostHeader": f"ec2.{region}.amazonaws.com",
        },
    }
    if error_code:
        found["errorCode"] = f"Client.{error_code}"
        found["errorMessage"] = "The request failed."
        found["responseElements"] = None
    return found


def eventbridge(found: dict[str, Any]) -> dict[str, Any]:
    """The EventBridge envelope around a record, as the rule delivers it to Lambda."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ec2",
        "account": found["recipientAccountId"],
        "time": found["eventTime"],
        "region": found["awsRegion"],
        "resources": [],
        "detail": found,
    }


def rules_of(ec2: Any, group_id: str) -> list[dict[str, Any]]:
    found = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group_id]}]
    )
    return found["SecurityGroupRules"]


def authorize(
    ec2: Any,
    group_id: str,
    permissions: list[dict[str, Any]],
    *,
    egress: bool = False,
    modern: bool = True,
    identity: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Call Authorize* on moto and return its record; modern=False drops the rule set
    (records before July 2021). A refused call returns a failed record. tags: the new
    rules' TagSpecifications (resource type security-group-rule), recorded as
    tagSpecificationSet in the item layout create_group uses (unverified by a real record)."""
    name = "AuthorizeSecurityGroupEgress" if egress else "AuthorizeSecurityGroupIngress"
    before = {r["SecurityGroupRuleId"] for r in rules_of(ec2, group_id)}
    call = (
        ec2.authorize_security_group_egress if egress else ec2.authorize_security_group_ingress
    )
    request = {"groupId": group_id, "ipPermissions": camel(permissions)}
    specs = {}
    if tags:
        listed = [{"Key": k, "Value": v} for k, v in tags.items()]
        specs = {
            "TagSpecifications": [{"ResourceType": "security-group-rule", "Tags": listed}]
        }
        request["tagSpecificationSet"] = {
            "items": [
                {
                    "resourceType": "security-group-rule",
                    "tags": [{"key": k, "value": v} for k, v in tags.items()],
                }
            ]
        }
    region = ec2.meta.region_name
    try:
        call(GroupId=group_id, IpPermissions=permissions, **specs)
    except ClientError as error:
        code = error.response["Error"]["Code"]
        return made(
            record(name, request, None, region=region, identity=identity, error_code=code)
        )
    response: dict[str, Any] = {"requestId": str(uuid.uuid4()), "_return": True}
    if modern:
        # moto's own answer lists only the last permission's rules; the rules that are new
        # in the group are the ones the call really created.
        created = [
            r for r in rules_of(ec2, group_id) if r["SecurityGroupRuleId"] not in before
        ]
        response["securityGroupRuleSet"] = camel(
            [{"GroupOwnerId": ACCOUNT, **rule} for rule in created]
        )
    return made(record(name, request, response, region=region, identity=identity))


def modify(
    ec2: Any,
    group_id: str,
    changes: dict[str, dict[str, Any]],
    *,
    identity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Call ModifySecurityGroupRules on moto ({rule ID: new value}) and return its record."""
    entries = [
        {"SecurityGroupRuleId": rule_id, "SecurityGroupRule": value}
        for rule_id, value in changes.items()
    ]
    ec2.modify_security_group_rules(GroupId=group_id, SecurityGroupRules=entries)
    logged = [{**entry, "tag": n} for n, entry in enumerate(entries, 1)]
    request = {
        "ModifySecurityGroupRulesRequest": {
            "GroupId": group_id,
            "SecurityGroupRule": logged[0] if len(logged) == 1 else logged,
        }
    }
    response = {
        "ModifySecurityGroupRulesResponse": {
            "requestId": str(uuid.uuid4()),
            "return": True,
        }
    }
    return made(
        record(
            "ModifySecurityGroupRules",
            request,
            response,
            region=ec2.meta.region_name,
            identity=identity,
        )
    )


def rule_set(ec2: Any, group_id: str) -> set[tuple]:
    """The group's rules as comparable tuples: (isEgress, protocol, from, to, source)."""
    return {
        (
            r["IsEgress"],
            r["IpProtocol"],
            r.get("FromPort"),
            r.get("ToPort"),
            r.get("CidrIpv4")
            or r.get("CidrIpv6")
            or r.get("PrefixListId")
            or r.get("ReferencedGroupInfo", {}).get("GroupId"),
        )
        for r in rules_of(ec2, group_id)
    }


def boto(value: Any) -> Any:
    """CloudTrail's shapes back to boto3's (the inverse of camel)."""
    if isinstance(value, dict):
        if set(value) == {"items"}:
            return [boto(v) for v in value["items"]]
        renamed = {"groups": "UserIdGroupPairs"}
        return {
            renamed.get(k, k[:1].upper() + k[1:]): boto(v) for k, v in value.items() if v != {}
        }
    if isinstance(value, str) and value.isdigit() and len(value) <= 5:
        return int(value)  # some pipelines write ports as strings
    return value


def reenact(ec2: Any, vpc_id: str, event: dict[str, Any]) -> tuple[dict, str, dict]:
    """Make the call a saved event records, on moto, in a group of its own; return the event
    pointed at that group (and at the rule IDs moto created), the group's ID, and its rules
    just before the call, by rule ID. A failed call (errorCode) is not made again.

    Groups the event references are created too. An edit first gets a rule to edit, from the
    documentation range 192.0.2.0/24, and then the event's new value.
    """
    event = copy.deepcopy(event)
    found = event.get("detail", event)
    params = found["requestParameters"]
    request = params.get("ModifySecurityGroupRulesRequest")
    named = request["GroupId"] if request else params.get("groupId")
    group = new_group(ec2, vpc_id)
    text = json.dumps(params).replace(named, group) if named else json.dumps(params)
    for other in set(re.findall(r"sg-[0-9a-f]{8,17}", text)) - {group}:
        text = text.replace(other, new_group(ec2, vpc_id))
    params = found["requestParameters"] = json.loads(text)
    found["awsRegion"], found["recipientAccountId"] = ec2.meta.region_name, ACCOUNT
    if "detail" in event:
        event.update(region=ec2.meta.region_name, account=ACCOUNT)
    if found.get("errorCode"):
        return event, group, by_id(ec2, group)
    if request:
        before = edit_again(ec2, group, params["ModifySecurityGroupRulesRequest"])
        return event, group, before
    egress = found["eventName"].endswith("Egress")
    if egress:  # the call may add the default allow-all egress rule, which moto made
        everything = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        ec2.revoke_security_group_egress(GroupId=group, IpPermissions=[everything])
    before = by_id(ec2, group)
    call = (
        ec2.authorize_security_group_egress if egress else ec2.authorize_security_group_ingress
    )
    call(**boto({k: v for k, v in params.items() if k != "ipPermissions" or v}))
    created = [r for r in rules_of(ec2, group) if r["SecurityGroupRuleId"] not in before]
    rule_set_items = (found.get("responseElements") or {}).get("securityGroupRuleSet")
    if rule_set_items:
        for item, real in zip(rule_set_items["items"], created, strict=True):
            item.update(groupId=group, securityGroupRuleId=real["SecurityGroupRuleId"])
    return event, group, before


def by_id(ec2: Any, group: str) -> dict[str, dict[str, Any]]:
    return {r["SecurityGroupRuleId"]: r for r in rules_of(ec2, group)}


def new_group(ec2: Any, vpc_id: str) -> str:
    name = f"replayed-{uuid.uuid4().hex[:8]}"
    found = ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc_id)
    return found["GroupId"]


def edit_again(ec2: Any, group: str, request: dict[str, Any]) -> dict[str, dict]:
    """Create a rule for each edited one, then edit it to the event's new value; returns the
    group's rules before the edits."""
    entries, before = request["SecurityGroupRule"], {}
    for entry in entries if isinstance(entries, list) else [entries]:
        new = {k: boto(v) for k, v in entry["SecurityGroupRule"].items()}
        old = {k: new[k] for k in ("IpProtocol", "FromPort", "ToPort") if k in new}
        ec2.authorize_security_group_ingress(
            GroupId=group,
            IpPermissions=[{**old, "IpRanges": [{"CidrIp": "192.0.2.0/24"}]}],
        )
        (rule,) = [r for r in rules_of(ec2, group) if r.get("CidrIpv4") == "192.0.2.0/24"]
        before = by_id(ec2, group)
        ec2.modify_security_group_rules(
            GroupId=group,
            SecurityGroupRules=[
                {
                    "SecurityGroupRuleId": rule["SecurityGroupRuleId"],
                    "SecurityGroupRule": new,
                }
            ],
        )
        entry["SecurityGroupRuleId"] = rule["SecurityGroupRuleId"]
    return before


def revoke(
    ec2: Any,
    group_id: str,
    permissions: list[dict[str, Any]],
    *,
    egress: bool = False,
    modern: bool = True,
    identity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Call Revoke* on moto and return its record. modern=True adds the response's
    revokedSecurityGroupRuleSet: the layout the API documents (RevokedSecurityGroupRules)
    in CloudTrail's casing, unverified by a real record (../shared/cloudtrail-format.md)."""
    name = "RevokeSecurityGroupEgress" if egress else "RevokeSecurityGroupIngress"
    before = {r["SecurityGroupRuleId"]: r for r in rules_of(ec2, group_id)}
    call = ec2.revoke_security_group_egress if egress else ec2.revoke_security_group_ingress
    call(GroupId=group_id, IpPermissions=permissions)
    after = {r["SecurityGroupRuleId"] for r in rules_of(ec2, group_id)}
    request = {"groupId": group_id, "ipPermissions": camel(permissions)}
    response: dict[str, Any] = {"requestId": str(uuid.uuid4()), "_return": True}
    if modern:
        removed = [rule for rule_id, rule in before.items() if rule_id not in after]
        response["revokedSecurityGroupRuleSet"] = camel(
            [
                {
                    **{k: v for k, v in rule.items() if k != "ReferencedGroupInfo"},
                    **(
                        {"ReferencedGroupId": rule["ReferencedGroupInfo"]["GroupId"]}
                        if "ReferencedGroupInfo" in rule
                        else {}
                    ),
                }
                for rule in removed
            ]
        )
    return made(
        record(name, request, response, region=ec2.meta.region_name, identity=identity)
    )


def add_entries(
    ec2: Any,
    prefix_list_id: str,
    cidrs: list[str],
    *,
    identity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Call ModifyManagedPrefixList on moto to add entries, and return its record. Request
    layout from a real record (KodeKloud's CloudTrail notes, 2024: {"ModifyManagedPrefixList
    Request": {"AddEntry": {"Description", "cidr", "tag": "1"}, "PrefixListId"}}); several
    entries as a list is inferred from ModifySecurityGroupRules; the response is unverified."""
    (found,) = ec2.describe_managed_prefix_lists(PrefixListIds=[prefix_list_id])["PrefixLists"]
    entries = [{"Cidr": cidr, "Description": "added"} for cidr in cidrs]
    ec2.modify_managed_prefix_list(
        PrefixListId=prefix_list_id, CurrentVersion=found["Version"], AddEntries=entries
    )
    logged = [
        {"Description": e["Description"], "cidr": e["Cidr"], "tag": str(n)}
        for n, e in enumerate(entries, 1)
    ]
    request = {
        "ModifyManagedPrefixListRequest": {
            "AddEntry": logged[0] if len(logged) == 1 else logged,
            "CurrentVersion": str(found["Version"]),
            "PrefixListId": prefix_list_id,
        }
    }
    response = {
        "ModifyManagedPrefixListResponse": {"prefixList": {"prefixListId": prefix_list_id}}
    }
    return made(
        record(
            "ModifyManagedPrefixList",
            request,
            response,
            region=ec2.meta.region_name,
            identity=identity,
        )
    )


def restore_version(ec2: Any, prefix_list_id: str, previous: int) -> dict[str, Any]:
    """RestoreManagedPrefixListVersion, which moto lacks, done on moto by its effect (a new
    version holding the entries of `previous`), and its record. The request layout is assumed
    like ModifyManagedPrefixList's (unverified)."""
    (found,) = ec2.describe_managed_prefix_lists(PrefixListIds=[prefix_list_id])["PrefixLists"]

    def entries(version):
        answer = ec2.get_managed_prefix_list_entries(
            PrefixListId=prefix_list_id, TargetVersion=version
        )
        return {entry["Cidr"] for entry in answer["Entries"]}

    current = found["Version"]
    back, now_ = entries(previous), entries(current)
    ec2.modify_managed_prefix_list(
        PrefixListId=prefix_list_id,
        CurrentVersion=current,
        AddEntries=[{"Cidr": cidr} for cidr in sorted(back - now_)],
        RemoveEntries=[{"Cidr": cidr} for cidr in sorted(now_ - back)],
    )
    request = {
        "RestoreManagedPrefixListVersionRequest": {
            "PrefixListId": prefix_list_id,
            "PreviousVersion": str(previous),
            "CurrentVersion": str(current),
        }
    }
    return made(record("RestoreManagedPrefixListVersion", request, None))


def serve_associations(ec2: Any, foreign: Any = ()) -> None:
    """GetManagedPrefixListAssociations, which moto lacks, for the function's EC2 client: the
    groups moto holds whose rules use the list, plus the `foreign` items for groups of other
    accounts, in the EC2 API reference's shape ({"PrefixListAssociations": [{"ResourceId",
    "ResourceOwner"}]})."""
    from botocore.awsrequest import AWSResponse

    import lambda_function

    def answer(params, **_):
        listed = params["body"]["PrefixListId"]
        found = [
            {"ResourceId": group["GroupId"], "ResourceOwner": group["OwnerId"]}
            for group in ec2.describe_security_groups()["SecurityGroups"]
            for permission in group["IpPermissions"] + group["IpPermissionsEgress"]
            if any(p["PrefixListId"] == listed for p in permission["PrefixListIds"])
        ]
        return AWSResponse(None, 200, {}, None), {
            "PrefixListAssociations": found + list(foreign)
        }

    events = lambda_function.client("ec2", ec2.meta.region_name).meta.events
    name = "before-call.ec2.GetManagedPrefixListAssociations"
    events.unregister(name, unique_id="associations")
    events.register(name, answer, unique_id="associations")


def tag(
    ec2: Any,
    name: str,
    group_id: str,
    tags: dict[str, str | None] | None,
    *,
    identity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """CreateTags or DeleteTags on moto, and its record (../shared/cloudtrail-format.md:
    resourcesSet and tagSet item lists; a DeleteTags key without a value deletes any value).
    tags=None: DeleteTags without a tag list, which deletes every user tag."""
    if name == "CreateTags":
        ec2.create_tags(
            Resources=[group_id],
            Tags=[{"Key": k, "Value": v or ""} for k, v in (tags or {}).items()],
        )
    elif tags is None:  # moto deletes nothing without a list, where EC2 deletes them all
        held = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [group_id]}])
        ec2.delete_tags(Resources=[group_id], Tags=[{"Key": t["Key"]} for t in held["Tags"]])
    else:
        ec2.delete_tags(
            Resources=[group_id],
            Tags=[
                {"Key": k, **({"Value": v} if v is not None else {})} for k, v in tags.items()
            ],
        )
    params: dict[str, Any] = {"resourcesSet": {"items": [{"resourceId": group_id}]}}
    if tags is not None:
        params["tagSet"] = {
            "items": [
                {"key": k, **({"value": v} if v is not None else {})} for k, v in tags.items()
            ]
        }
    return made(
        record(
            name,
            params,
            {"_return": True},
            region=ec2.meta.region_name,
            identity=identity,
        )
    )


def resource_names(found: dict[str, Any]) -> set[str]:
    """The IDs a record names, as event history's ResourceName lookup is assumed to index
    them (the group of a rule call, each resource tagged, the group created)."""
    params = found.get("requestParameters") or {}
    names = {
        params.get("groupId"),
        (found.get("responseElements") or {}).get("groupId"),
    }
    names.add((params.get("ModifySecurityGroupRulesRequest") or {}).get("GroupId"))
    names |= {
        item.get("resourceId") for item in (params.get("resourcesSet") or {}).get("items", [])
    }
    return {name for name in names if isinstance(name, str)}


class EventHistory:
    """CloudTrail LookupEvents, which moto lacks, for the function's CloudTrail client: the
    records in HISTORY (and any added), in the shape the CloudTrail API reference documents:
    Events[] of {EventId, EventName, EventTime, CloudTrailEvent (the record as a JSON string)},
    newest first, one lookup attribute (EventId, EventName or ResourceName), StartTime and
    EndTime inclusive, MaxResults (50 at most) and NextToken."""

    def __init__(self, records: list[dict[str, Any]] | None = None, on_call=None):
        self.records = HISTORY if records is None else records
        self.lookups: list[dict[str, Any]] = []
        self.on_call = on_call  # e.g. a fake clock that each request moves on

    def serve(self, client: Any) -> EventHistory:
        name = "before-call.cloudtrail.LookupEvents"
        client.meta.events.unregister(name, unique_id="event-history")
        client.meta.events.register(name, self.answer, unique_id="event-history")
        return self

    def answer(self, params: dict[str, Any], **_: Any) -> tuple:
        from botocore.awsrequest import AWSResponse

        body = params["body"]
        asked = json.loads(body) if isinstance(body, (bytes, str)) else body
        self.lookups.append(asked)
        if self.on_call:
            self.on_call()
        attribute = (asked.get("LookupAttributes") or [{}])[0]
        key, value = attribute.get("AttributeKey"), attribute.get("AttributeValue")

        def wanted(found: dict[str, Any]) -> bool:
            when = datetime.datetime.fromisoformat(found["eventTime"]).timestamp()
            if "StartTime" in asked and when < float(asked["StartTime"]):
                return False
            if "EndTime" in asked and when > float(asked["EndTime"]):
                return False
            return {
                None: True,
                "EventId": found.get("eventID") == value,
                "EventName": found.get("eventName") == value,
                "ResourceName": value in resource_names(found),
            }[key]

        matching = [found for found in reversed(self.records) if wanted(found)]
        start = int(asked.get("NextToken") or 0)
        size = min(int(asked.get("MaxResults") or 50), 50)
        page = matching[start : start + size]
        answer: dict[str, Any] = {
            "Events": [
                {
                    "EventId": found["eventID"],
                    "EventName": found["eventName"],
                    "EventTime": datetime.datetime.fromisoformat(found["eventTime"]),
                    "CloudTrailEvent": json.dumps(found),
                }
                for found in page
            ]
        }
        if start + size < len(matching):
            answer["NextToken"] = str(start + size)
        return AWSResponse(None, 200, {}, None), answer


def create_group(
    ec2: Any, vpc_id: str, name: str, tags: dict[str, str] | None = None
) -> tuple[str, dict[str, Any]]:
    """CreateSecurityGroup on moto, and its record (request and response as the real record
    in ../shared/cloudtrail-samples/09 has them; tagSpecificationSet in CloudTrail's item
    layout, from the API's TagSpecifications, unverified by a real record)."""
    specs = [
        {
            "ResourceType": "security-group",
            "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()],
        }
    ]
    group_id = ec2.create_security_group(
        GroupName=name,
        Description=name,
        VpcId=vpc_id,
        **({"TagSpecifications": specs} if tags else {}),
    )["GroupId"]
    request: dict[str, Any] = {
        "groupName": name,
        "groupDescription": name,
        "vpcId": vpc_id,
    }
    if tags:
        request["tagSpecificationSet"] = {
            "items": [
                {
                    "resourceType": "security-group",
                    "tags": [{"key": k, "value": v} for k, v in tags.items()],
                }
            ]
        }
    response = {"requestId": str(uuid.uuid4()), "_return": True, "groupId": group_id}
    return group_id, made(
        record("CreateSecurityGroup", request, response, region=ec2.meta.region_name)
    )
