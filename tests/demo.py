"""`make demo`: watch the function undo risky changes on an embedded AWS.

Starts a moto server on a free loopback port, creates a VPC and a group with a few legitimate
rules, then makes risky changes with real boto3 calls against that server, the way a user
would. moto has no CloudTrail, so for each call the demo writes the record CloudTrail would
write (the real format, with the rule IDs the server created) and hands it to the handler as
EventBridge would. Exits 1 if a risky rule survived or the exempt change was removed.
"""

from __future__ import annotations

import contextlib
import io
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
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("DRY_RUN", None)
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import boto3
from cloudtrail import (
    ACCOUNT,
    assumed_role,
    authorize,
    eventbridge,
    modify,
    rule_set,
    rules_of,
)
from moto.server import ThreadedMotoServer

import lambda_function

REGION = "eu-west-1"
CONTEXT = SimpleNamespace(
    invoked_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:sg-guardrail"
)
BOB = assumed_role("Developer", "bob@example.com")
NETWORK_ADMIN = assumed_role("NetworkAdmin", "carol@example.com")
# (isEgress, protocol, from, to, peer): what must be gone after the demo, and what must stay.
RISKY = {
    (False, "tcp", 22, 22, "0.0.0.0/0"),
    (False, "tcp", 3389, 3389, "::/0"),
    (True, "-1", -1, -1, "0.0.0.0/0"),
}
EXEMPT = (False, "tcp", 8443, 8443, "203.0.113.0/24")


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
    return f"  {direction:<4}{protocol:<6}{ports:<7}{peer:<18}{rule.get('Description', '')}"


def show_rules(title, ec2, group_id):
    print(f"\n{title}\n  {'dir':<4}{'proto':<6}{'ports':<7}{'peer':<18}description")
    for rule in sorted(
        rules_of(ec2, group_id), key=lambda r: (r["IsEgress"], r.get("FromPort", -1))
    ):
        print(rule_line(rule))


def setup(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    group = ec2.create_security_group(
        GroupName="web", Description="web tier", VpcId=vpc
    )
    group_id = group["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[
            tcp(443, "0.0.0.0/0", "public HTTPS"),
            tcp(22, "192.0.2.0/24", "bastion"),
            tcp(5432, "10.0.0.0/16", "app servers"),
        ],
    )
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
    """(who, what, expected decision, the CloudTrail record) for each change, made for real."""
    bastion = next(
        r for r in rules_of(ec2, group_id) if r.get("CidrIpv4") == "192.0.2.0/24"
    )
    widened = {
        "IpProtocol": "tcp",
        "FromPort": 22,
        "ToPort": 22,
        "CidrIpv4": "0.0.0.0/0",
    }
    everything = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    yield (
        "alice",
        "opens SSH to 0.0.0.0/0",
        "reverted",
        authorize(ec2, group_id, [tcp(22, "0.0.0.0/0")]),
    )
    yield (
        "bob",
        "opens RDP to ::/0",
        "reverted",
        authorize(ec2, group_id, [tcp(3389, "::/0")], identity=BOB),
    )
    yield (
        "alice",
        "allows all egress",
        "reverted",
        authorize(ec2, group_id, [everything], egress=True),
    )
    yield (
        "bob",
        "widens the bastion rule in place",
        "reverted",
        modify(ec2, group_id, {bastion["SecurityGroupRuleId"]: widened}, identity=BOB),
    )
    yield (
        "carol (NetworkAdmin)",
        "opens 8443 to a partner",
        "kept",
        authorize(
            ec2,
            group_id,
            [tcp(8443, "203.0.113.0/24", "partner")],
            identity=NETWORK_ADMIN,
        ),
    )
    yield (
        "alice",
        "repeats an existing rule",
        "ignored",
        authorize(ec2, group_id, [tcp(443, "0.0.0.0/0")]),
    )


def main() -> int:
    started = time.monotonic()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
        print(
            f"Embedded AWS: moto server on {os.environ['AWS_ENDPOINT_URL']}, region {REGION}"
        )
        lambda_function.EXEMPT_PRINCIPALS = ["arn:aws:iam::*:role/NetworkAdmin"]
        print(f"Conditions: EXEMPT_PRINCIPALS = {lambda_function.EXEMPT_PRINCIPALS}")
        ec2 = boto3.client("ec2", region_name=REGION)
        group_id = setup(ec2)
        show_rules(f"Group {group_id} before", ec2, group_id)

        print(f"\n  {'#':<3}{'who':<22}{'change':<34}{'decision':<10}rules / reason")
        log, failures = io.StringIO(), []
        for n, (who, what, expected, record) in enumerate(changes(ec2, group_id), 1):
            with contextlib.redirect_stdout(log):
                result = lambda_function.lambda_handler(eventbridge(record), CONTEXT)
            detail = (
                ", ".join(result["rules"] or result.get("keptRules", []))
                or result["reason"]
            )
            print(f"  {n:<3}{who:<22}{what:<34}{result['decision']:<10}{detail}")
            if result["decision"] != expected:
                failures.append(
                    f"change {n}: expected {expected}, got {result['decision']}"
                )

        show_rules(f"Group {group_id} after", ec2, group_id)
        after = rule_set(ec2, group_id)
        for risky in RISKY & after:
            failures.append(f"risky rule survived: {risky}")
        if EXEMPT not in after:
            failures.append("the exempt change was removed")

        first = log.getvalue().splitlines()[0]
        print(f"\nThe function logs one JSON line per event; the first:\n  {first}")
    finally:
        server.stop()
    verdict = "; ".join(failures) or "every risky change undone, the exempt one kept"
    print(
        f"\n{'FAILED' if failures else 'OK'}: {verdict} ({time.monotonic() - started:.1f}s)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
