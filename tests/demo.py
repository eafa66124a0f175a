"""`make demo`: watch the function, with your CONDITIONS block, undo changes on an embedded AWS.

Starts a moto server on a free loopback port, creates a VPC and a group with a few legitimate
rules, then makes changes with real boto3 calls against that server, the way a person would.
moto has no CloudTrail, so for each call the demo writes the record CloudTrail would write
(the real format, with the rule IDs the server created) and hands it to the handler as
EventBridge would.

The function runs with the CONDITIONS block of lambda_function.py as you left it, plus one
exemption of the demo's own: its NetworkAdmin role in the demo account. Each change shows
what the function decided and why, beside what the shipped (empty) conditions would decide.
The demo fails (exit 1) only when the function is broken: it raises, removes a rule the change
did not add, or leaves open a rule it did not say it kept.

`make try EVENT=file.json` (python tests/demo.py --try FILE...) replays saved events instead:
each in a group made to match it on the embedded AWS, so you watch it really revert.
`make audit` (python tests/demo.py --audit [--suggest] [--format json|csv]) makes the demo's
groups and runs the function's audit of them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.update(
    AWS_ACCESS_KEY_ID="demo",  # never real credentials: the only AWS here is the moto server
    AWS_SECRET_ACCESS_KEY="demo",
    AWS_DEFAULT_REGION="eu-west-1",
)
for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "DRY_RUN", "NOTIFY_TOPIC_ARN"):
    os.environ.pop(name, None)
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import boto3
from cloudtrail import (
    ACCOUNT,
    EventHistory,
    add_entries,
    assumed_role,
    authorize,
    eventbridge,
    modify,
    reenact,
    revoke,
    rules_of,
    serve_associations,
    tag,
)
from moto.server import ThreadedMotoServer
from shipped import SHIPPED_CONDITIONS

try:
    import lambda_function
except ValueError as error:  # ConditionsError: the block's one line per problem, no trace
    sys.exit(str(error))

REGION = "eu-west-1"
CONTEXT = SimpleNamespace(
    invoked_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:sg-guardrail"
)
BOB = assumed_role("Developer", "bob@example.com")
NETWORK_ADMIN = assumed_role("NetworkAdmin", "carol@example.com")
DEMO_EXEMPTION = f"arn:aws:iam::{ACCOUNT}:role/NetworkAdmin"


def tcp(port, cidr, description=None):
    key, ranges = ("CidrIpv6", "Ipv6Ranges") if ":" in cidr else ("CidrIp", "IpRanges")
    source = {key: cidr, **({"Description": description} if description else {})}
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, ranges: [source]}


def rule_line(rule):
    protocol = {"-1": "all"}.get(rule["IpProtocol"], rule["IpProtocol"])
    low, high = rule.get("FromPort", -1), rule.get("ToPort", -1)
    ports = "all" if low == -1 else str(low) if low == high else f"{low}-{high}"
    peer = rule.get("CidrIpv4") or rule.get("CidrIpv6") or rule.get("PrefixListId")
    peer = peer or rule.get("ReferencedGroupInfo", {}).get("GroupId")
    direction = "out" if rule["IsEgress"] else "in"
    description = rule.get("Description", "")
    return f"  {direction:<4}{protocol:<6}{ports:<7}{peer:<22}{description:<15}{rule['SecurityGroupRuleId']}"


def show_rules(title, ec2, group_id):
    print(
        f"\n{title}\n  {'dir':<4}{'proto':<6}{'ports':<7}{'peer':<22}{'description':<15}rule ID"
    )
    for rule in sorted(
        rules_of(ec2, group_id), key=lambda r: (r["IsEgress"], r.get("FromPort", -1))
    ):
        print(rule_line(rule))


def show_conditions(scripted: bool) -> None:
    """The conditions the function runs with: the user's block, marked where it differs
    from the shipped one, and what the demo adds (the scripted rows' own, only for them)."""
    print("Conditions: your CONDITIONS block, as lambda_function.py has it now")
    for name, shipped in SHIPPED_CONDITIONS.items():
        value = getattr(lambda_function, name)
        mark = "" if value == shipped else "   <- yours"
        print(f"  {name} = {value!r}{mark}")
    try:
        edited = lambda_function.should_revert({"rules": []}) is not True
    except Exception:  # noqa: BLE001 -- user code that wants a fuller change: edited
        edited = True
    print(f"  should_revert: {'yours' if edited else 'returns True (shipped)'}")
    print(f"  and the demo's own exemption of its NetworkAdmin role: {DEMO_EXEMPTION}")
    if not scripted:  # make try, make audit: the rows below are make demo's
        return
    print(
        "  and, for the scripted changes, RESTORE_FROM_CLOUDTRAIL on, answered by the "
        "demo's own event history (moto has no LookupEvents), and its db group locked"
    )
    print(
        "  and, for rows 9 to 11 only, its own approver: the role SecurityApprover in "
        "APPROVERS (the shipped block has none, so those rows have no 'shipped' column)"
    )


# The records of every call the demo makes, newest last: its CloudTrail event history.
HISTORY: list[dict] = []


def serve_event_history(**_):
    """LookupEvents for the function's CloudTrail client (moto does not emulate it): the
    demo's own records, newest first, in the shape the API reference documents."""
    from botocore.awsrequest import AWSResponse

    events = [
        {
            "EventId": found["eventID"],
            "EventName": found["eventName"],
            "CloudTrailEvent": json.dumps(found),
        }
        for found in reversed(HISTORY)
    ]
    return AWSResponse(None, 200, {}, None), {"Events": events}


def setup(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    group = ec2.create_security_group(GroupName="web", Description="web tier", VpcId=vpc)
    group_id = group["GroupId"]
    legitimate = [
        tcp(443, "0.0.0.0/0", "public HTTPS"),
        tcp(22, "192.0.2.0/24", "bastion"),
        tcp(5432, "10.0.0.0/16", "app servers"),
    ]
    HISTORY.append(authorize(ec2, group_id, legitimate, identity=NETWORK_ADMIN))
    office = ec2.create_managed_prefix_list(
        PrefixListName="office",
        AddressFamily="IPv4",
        MaxEntries=10,
        Entries=[{"Cidr": "198.51.100.0/24", "Description": "office"}],
    )["PrefixList"]["PrefixListId"]
    from_office = {
        "IpProtocol": "tcp",
        "FromPort": 8080,
        "ToPort": 8080,
        "PrefixListIds": [{"PrefixListId": office, "Description": "office"}],
    }
    HISTORY.append(authorize(ec2, group_id, [from_office], identity=NETWORK_ADMIN))
    # Replace the default allow-all egress with a narrow legitimate one.
    ec2.revoke_security_group_egress(
        GroupId=group_id,
        IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    ec2.authorize_security_group_egress(
        GroupId=group_id, IpPermissions=[tcp(443, "0.0.0.0/0", "updates")]
    )
    return group_id


def changes(ec2, group_id):
    """(who, what, decision with the shipped conditions, make the change) for each change."""
    bastion = next(r for r in rules_of(ec2, group_id) if r.get("CidrIpv4") == "192.0.2.0/24")
    widened = {
        "IpProtocol": "tcp",
        "FromPort": 22,
        "ToPort": 22,
        "CidrIpv4": "0.0.0.0/0",
    }
    everything = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    return [
        (
            "alice",
            "opens SSH to 0.0.0.0/0",
            "reverted",
            lambda: authorize(ec2, group_id, [tcp(22, "0.0.0.0/0")]),
        ),
        (
            "bob",
            "opens RDP to ::/0",
            "reverted",
            lambda: authorize(ec2, group_id, [tcp(3389, "::/0")], identity=BOB),
        ),
        (
            "alice",
            "allows all egress",
            "reverted",
            lambda: authorize(ec2, group_id, [everything], egress=True),
        ),
        (
            "bob",
            "widens the bastion rule in place",
            "reverted",
            lambda: modify(
                ec2, group_id, {bastion["SecurityGroupRuleId"]: widened}, identity=BOB
            ),
        ),
        (
            "carol (NetworkAdmin)",
            "opens 8443 to a partner",
            "kept",
            lambda: authorize(
                ec2,
                group_id,
                [tcp(8443, "203.0.113.0/24", "partner")],
                identity=NETWORK_ADMIN,
            ),
        ),
        (
            "alice",
            "repeats an existing rule",
            "ignored",
            lambda: authorize(ec2, group_id, [tcp(443, "0.0.0.0/0")]),
        ),
    ]


def handle(ec2, group_id, before, record, log):
    """Hand a change's record to the function; (its result, what is wrong if anything).
    `before` holds the group's rules before the change, by rule ID."""
    changed = {r["SecurityGroupRuleId"]: r for r in rules_of(ec2, group_id)}
    touched = {i for i, r in changed.items() if before.get(i) != r}
    touched |= set(before) - set(changed)  # removed by the change
    try:
        with contextlib.redirect_stdout(log):
            result = lambda_function.lambda_handler(eventbridge(record), CONTEXT)
    except Exception as error:  # noqa: BLE001 -- the demo reports it as a failure
        failed = {"decision": "raised", "reason": repr(error), "rules": []}
        return failed, [f"the function raised {error!r}"]
    return result, broken(result, before, changed, touched, rules_of(ec2, group_id))


def broken(result, before, changed, touched, after):
    """Did the function remove what the change did not touch, or leave open what it did
    not say it kept?"""
    now = {r["SecurityGroupRuleId"] for r in after}
    problems = [
        f"removed {i}, which the change did not touch" for i in set(before) - touched - now
    ]
    still_open = (touched & now) - set(before)  # added by the change, still there
    edited_open = {i for i in touched & set(before) & set(changed) if changed[i] in after}
    said_kept = len(result.get("keptRules", [])) + len(result.get("unreadable", []))
    if len(still_open | edited_open) > said_kept:
        problems.append(
            f"{result['decision']}, yet {len(still_open | edited_open)} rule(s) the "
            "change added or edited are still open and not said to be kept"
        )
    return problems


def locked_group(ec2):
    """A second group, db, which the demo locks: it must not change at all."""
    vpc = ec2.describe_vpcs()["Vpcs"][-1]["VpcId"]
    db = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)
    HISTORY.append(
        authorize(
            ec2,
            db["GroupId"],
            [tcp(5432, "10.0.0.0/16", "app servers")],
            identity=NETWORK_ADMIN,
        )
    )
    locked = [*lambda_function.SETTINGS.LOCKED_GROUP_IDS, db["GroupId"]]
    lambda_function.SETTINGS = lambda_function.SETTINGS._replace(LOCKED_GROUP_IDS=locked)
    return db["GroupId"]


def scripted() -> list[str]:
    lambda_function.SETTINGS = lambda_function.SETTINGS._replace(RESTORE_FROM_CLOUDTRAIL=True)
    history = lambda_function.client("cloudtrail", REGION)
    history.meta.events.register("before-call.cloudtrail.LookupEvents", serve_event_history)
    ec2 = boto3.client("ec2", region_name=REGION)
    group_id = setup(ec2)
    db = locked_group(ec2)
    show_rules(f"Group {group_id} before", ec2, group_id)
    show_rules(f"Group {db} (db, locked by the demo) before", ec2, db)
    print("\n  decision: with your conditions; shipped: with the shipped (empty) block")
    print(f"  {'#':<3}{'who':<22}{'change':<34}{'decision':<15}{'shipped':<10}why")
    log, failures = io.StringIO(), []
    app = [tcp(5432, "10.0.0.0/16")]
    removal = (
        "bob",
        "removes a rule from locked db",
        "kept",
        lambda: revoke(ec2, db, app, identity=BOB),
    )
    for n, (who, what, shipped, make) in enumerate([*changes(ec2, group_id), removal], 1):
        group = db if what.endswith("locked db") else group_id
        before = {r["SecurityGroupRuleId"]: r for r in rules_of(ec2, group)}
        record = make()
        HISTORY.append(record)
        result, problems = handle(ec2, group, before, record, log)
        why = ", ".join(result["rules"] or result.get("keptRules", []))
        why = why if result["decision"] in ("reverted", "kept") else result["reason"]
        if result["decision"] == "kept" and shipped != "kept":
            why = result["reason"]
        print(f"  {n:<3}{who:<22}{what:<34}{result['decision']:<15}{shipped:<10}{why}")
        failures += [f"change {n}: {problem}" for problem in problems]
    failures += widened_prefix_list(ec2, log, n + 1)
    failures += exception_that_expires(ec2, group_id, log, n + 2)
    show_rules(f"Group {group_id} after", ec2, group_id)
    show_rules(f"Group {db} (db, locked) after: the rule is back, with a new ID", ec2, db)
    first = log.getvalue().splitlines()[0]
    print(f"\nThe function logs one JSON line per event; the first:\n  {first}")
    return failures


def widened_prefix_list(ec2, log, number: int) -> list[str]:
    """The hole no security-group event shows: alice adds 0.0.0.0/0 to the office prefix
    list that the web group's 8080 rule uses. One more row of the table; a failure only when
    the function raises, or says it took the entry out and did not."""
    serve_associations(ec2)
    (office,) = ec2.describe_managed_prefix_lists(
        Filters=[{"Name": "prefix-list-name", "Values": ["office"]}]
    )["PrefixLists"]
    record = add_entries(ec2, office["PrefixListId"], ["0.0.0.0/0"])
    HISTORY.append(record)
    try:
        with contextlib.redirect_stdout(log):
            result = lambda_function.lambda_handler(eventbridge(record), CONTEXT)
    except Exception as error:  # noqa: BLE001 -- the demo reports it as a failure
        print(f"  {number:<3}{'alice':<22}{'adds 0.0.0.0/0 to pl office':<34}raised")
        return [f"prefix list: the function raised {error!r}"]
    entries = ec2.get_managed_prefix_list_entries(PrefixListId=office["PrefixListId"])
    still = any(e["Cidr"] == "0.0.0.0/0" for e in entries["Entries"])
    why = ", ".join(result["rules"] or result.get("keptRules", []))
    why = why if result["decision"] == "reverted" else result["reason"]
    print(
        f"  {number:<3}{'alice':<22}{'adds 0.0.0.0/0 to pl office':<34}"
        f"{result['decision']:<15}{'reverted':<10}{why}"
    )
    if result["decision"] == "reverted" and still:
        return ["prefix list: reverted, yet 0.0.0.0/0 is still in the list"]
    if result["decision"] not in ("reverted", "kept"):
        return [f"prefix list: {result['decision']}: {result['reason']}"]
    return []


APPROVER = assumed_role("SecurityApprover", "dana@example.com")
EXPIRES, REASON = lambda_function.EXPIRES_KEY, lambda_function.REASON_KEY


def exception_that_expires(ec2, group_id, log, number: int) -> list[str]:
    """Exceptions that expire, with the demo's own approver (its SecurityApprover role):
    dana opens 22 to the vendor with sg-guardrail:expires a few seconds ahead (hours, in
    life); alice moves that time into the past; the sweep then revokes the rule, and only
    it. Event history answers by event ID here (cloudtrail.EventHistory), as the function
    confirms a grant before it keeps anything. A failure when any step goes otherwise."""
    yours = lambda_function.SETTINGS.APPROVERS
    lambda_function.SETTINGS = lambda_function.SETTINGS._replace(
        APPROVERS=[f"arn:aws:iam::{ACCOUNT}:role/SecurityApprover"]
    )
    events = lambda_function.client("cloudtrail", REGION).meta.events
    name = "before-call.cloudtrail.LookupEvents"
    events.register_first(name, EventHistory().answer, unique_id="exceptions")
    failures, vendor = [], tcp(22, "203.0.113.7/32", "vendor")
    moment = time.time() + 4
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
    tags = {EXPIRES: expires, REASON: "vendor patch window, ticket 4711"}
    before = {r["SecurityGroupRuleId"] for r in rules_of(ec2, group_id)}

    def row(n, who, what, result, ok, problem):
        why = result.get("exception") or result["reason"]
        print(f"  {n:<3}{who:<22}{what:<34}{result['decision']:<15}{'':<10}{why}")
        failures.extend([] if ok else [f"exception, {what}: {problem}"])

    try:
        with contextlib.redirect_stdout(log):
            granted = authorize(ec2, group_id, [vendor], identity=APPROVER, tags=tags)
            result = lambda_function.lambda_handler(eventbridge(granted), CONTEXT)
        (rule,) = [
            r for r in rules_of(ec2, group_id) if r["SecurityGroupRuleId"] not in before
        ]
        rule_id = rule["SecurityGroupRuleId"]
        row(
            number,
            "dana (approver)",
            "opens 22 to a vendor, expiring",
            result,
            result["decision"] == "kept",
            "not kept",
        )
        with contextlib.redirect_stdout(log):
            moved = tag(ec2, "CreateTags", rule_id, {EXPIRES: "2026-01-01T00:00:00Z"})
            result = lambda_function.lambda_handler(eventbridge(moved), CONTEXT)
        held = ec2.describe_security_group_rules(SecurityGroupRuleIds=[rule_id])
        now_tags = {t["Key"]: t["Value"] for t in held["SecurityGroupRules"][0]["Tags"]}
        # Your block may exempt alice: then her change stands, as the row says.
        exempt = lambda_function.principal_exemption(lambda_function.read_change(moved))
        row(
            number + 1,
            "alice",
            "moves its time into the past",
            result,
            result["decision"] == "kept" if exempt else now_tags.get(EXPIRES) == expires,
            "not kept" if exempt else "the approver's time is not back",
        )
        time.sleep(max(0.0, moment - time.time() + 1))
        swept = io.StringIO()
        with contextlib.redirect_stdout(swept):
            lambda_function.lambda_handler({"sweep": {"minutes": 15}}, CONTEXT)
        log.write(swept.getvalue())
        lines = [json.loads(line) for line in swept.getvalue().splitlines()]
        expired = [line for line in lines if line.get("eventName") == "ExceptionExpired"]
        after = {r["SecurityGroupRuleId"] for r in rules_of(ec2, group_id)}
        revoked = [  # the line that revoked the vendor's rule, whichever it is
            line
            for line in lines
            if any(
                text.startswith("tcp 22 from 203.0.113.7/32") for text in line.get("rules", [])
            )
        ]
        result = (revoked or expired or [{"decision": "none", "reason": "not seen"}])[0]
        # Your block may leave the group alone (ONLY_/NEVER_ groups, VPCs, tags): then the
        # exception's end keeps the rule, as the row says.
        ec2_of_function = lambda_function.client("ec2", REGION)
        guarded = lambda_function.out_of_scope(ec2_of_function, group_id, False) is None
        row(
            number + 2,
            "(the sweep, later)",
            "the exception expires",
            result,
            after == (before if guarded else before | {rule_id}) and len(expired) == 1,
            "did not revoke exactly that rule" if guarded else "did not keep it",
        )
    except Exception as error:  # noqa: BLE001 -- the demo reports it as a failure
        failures.append(f"exception: the function raised {error!r}")
    finally:
        events.unregister(name, unique_id="exceptions")
        lambda_function.SETTINGS = lambda_function.SETTINGS._replace(APPROVERS=yours)
    return failures


def replayed(paths: list[str]) -> list[str]:
    """Each saved event, made again on the embedded AWS in a group of its own, then handled."""
    failures, log = [], io.StringIO()
    for path in paths:
        try:
            loaded = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            failures.append(f"{path}: cannot read it: {error}")
            continue
        if isinstance(loaded, dict) and isinstance(loaded.get("Records"), list):
            loaded = loaded["Records"]  # a CloudTrail log file
        for event in loaded if isinstance(loaded, list) else [loaded]:
            failures += [f"{path}: {problem}" for problem in replay_one(path, event, log)]
    return failures


# The calls reenact() can make again on moto.
REENACTED = (
    "AuthorizeSecurityGroupIngress",
    "AuthorizeSecurityGroupEgress",
    "RevokeSecurityGroupIngress",
    "RevokeSecurityGroupEgress",
    "ModifySecurityGroupRules",
)


def replay_one(path, event, log):
    found = event.get("detail", event) if isinstance(event, dict) else {}
    if found.get("eventName") not in lambda_function.HANDLED_EVENTS:
        print(f"\n{path}: {found.get('eventName')}: not a security-group change, skipped")
        return []
    if found.get("eventName") not in REENACTED:  # a new user's finding: a raw error here
        print(
            f"\n{path}: {found.get('eventName')}: make try makes rule calls again (Authorize, "
            "Revoke, ModifySecurityGroupRules), not this one, skipped; decide it on the "
            f"record alone: python lambda_function.py --offline {path}"
        )
        return []
    ec2 = boto3.client("ec2", region_name=found.get("awsRegion") or REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    try:
        record, group_id, before = reenact(ec2, vpc, found)
    except Exception as error:  # noqa: BLE001 -- not every record can be made again
        return [f"cannot make this call again here: {error!r}"]
    show_rules(f"{path}: group {group_id} after the call", ec2, group_id)
    result, problems = handle(ec2, group_id, before, record, log)
    print(f"  decision: {result['decision']}: {result['reason']}")
    for key in ("rules", "keptRules", "alreadyGone", "unreadable"):
        if result.get(key):
            print(f"  {key}: {', '.join(map(str, result[key]))}")
    show_rules(f"{path}: group {group_id} after the function", ec2, group_id)
    return problems


def audited(options: list[str]) -> int:
    """`make audit`: the demo's groups made on the embedded AWS (web, and db locked), then
    the function's own audit of them: what it would revert had each rule just been added."""
    ec2 = boto3.client("ec2", region_name=REGION)
    setup(ec2)
    locked_group(ec2)
    print()
    return lambda_function.main([*options, "--region", REGION])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--try", dest="events", nargs="+", metavar="EVENT.json")
    parser.add_argument(
        "--audit",
        nargs=argparse.REMAINDER,
        metavar="OPTION",
        help="audit the demo's groups (--audit [--suggest] [--format json])",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
        print(f"Embedded AWS: moto server on {os.environ['AWS_ENDPOINT_URL']}")
        show_conditions(scripted=args.audit is None and not args.events)
        exempt = [*lambda_function.SETTINGS.EXEMPT_PRINCIPALS, DEMO_EXEMPTION]
        lambda_function.SETTINGS = lambda_function.SETTINGS._replace(EXEMPT_PRINCIPALS=exempt)
        if args.audit is not None:
            return audited(["--audit", *args.audit])
        failures = replayed(args.events) if args.events else scripted()
    finally:
        server.stop()
    verdict = "; ".join(failures) or "the function did what its conditions say"
    elapsed = time.monotonic() - started
    print(f"\n{'FAILED' if failures else 'OK'}: {verdict} ({elapsed:.1f}s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
