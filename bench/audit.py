"""The audit's cost on a larger estate: 200 groups of ten rules (nine adjacent ports and the
default egress), one region, moto in process. Prints the rules judged, the seconds taken and
the EC2 calls made, with no condition reading groups and with a tag condition; then how many
entries --suggest makes of them. python bench/audit.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.update(
    AWS_ACCESS_KEY_ID="bench",
    AWS_SECRET_ACCESS_KEY="bench",
    AWS_DEFAULT_REGION="eu-west-1",
)
for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(name, None)
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import boto3
from moto import mock_aws
from shipped import SHIPPED_CONDITIONS

import lambda_function

GROUPS, PORTS = 200, range(8000, 8009)


def main() -> None:
    for name, value in SHIPPED_CONDITIONS.items():  # the shipped block, not the user's
        setattr(lambda_function, name, value)
    lambda_function.should_revert = lambda change: True
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="eu-west-1")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        for number in range(GROUPS):
            group = ec2.create_security_group(
                GroupName=f"g{number}", Description="bench", VpcId=vpc
            )["GroupId"]
            source = [{"CidrIp": f"10.{number}.0.0/16"}]
            ec2.authorize_security_group_ingress(
                GroupId=group,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": p,
                        "ToPort": p,
                        "IpRanges": source,
                    }
                    for p in PORTS
                ],
            )
        calls: list[str] = []
        lambda_function.client("ec2", "eu-west-1").meta.events.register(
            "before-call.ec2", lambda model, **_: calls.append(model.name)
        )
        for title, tags in (
            ("no group condition", {}),
            ("NEVER_TAGGED set", {"x": None}),
        ):
            lambda_function.SETTINGS = lambda_function.SETTINGS._replace(NEVER_TAGGED=tags)
            calls.clear()
            started = time.perf_counter()
            verdicts, _ = lambda_function.audit(["eu-west-1"], [])
            elapsed = time.perf_counter() - started
            print(
                f"{title}: {len(verdicts)} rules judged in {elapsed:.2f} s; EC2 calls: "
                f"{', '.join(calls)}"
            )
        started = time.perf_counter()
        entries, _ = lambda_function.suggested_entries(verdicts)
        elapsed = time.perf_counter() - started
        print(f"--suggest: {len(entries)} entries in {elapsed:.3f} s")


if __name__ == "__main__":
    main()
