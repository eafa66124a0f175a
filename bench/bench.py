"""`make bench`: what one event costs, measured against a moto server in another process.

Every call crosses HTTP on a loopback port, as with real AWS (only much nearer). Writes
bench/RESULTS.md and prints it. Measures, side by side:

1. per-event time of the handler versus a bare boto3 revoke of the same rules (ratio of medians);
2. API calls per event, by kind of event;
3. cold start: importing lambda_function versus importing boto3 alone, and the first event;
4. the deployment zip's size, and peak memory of a warm container handling 1,000 events;
5. a peer, Cloud Custodian, on the same events, when bench/requirements-custodian.txt installs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.update(
    AWS_ACCESS_KEY_ID="bench",
    AWS_SECRET_ACCESS_KEY="bench",
    AWS_DEFAULT_REGION="us-east-1",
)
for name in ("AWS_PROFILE", "DRY_RUN", "NOTIFY_TOPIC_ARN"):
    os.environ.pop(name, None)

import boto3
from cloudtrail import (
    ACCOUNT,
    authorize,
    camel,
    eventbridge,
    modify,
    record,
    revoke,
    rules_of,
)

import lambda_function

REGION = "us-east-1"
CONTEXT_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:sg-guardrail"
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "40"))
RESULTS = ROOT / "bench" / "RESULTS.md"


class Context:
    invoked_function_arn = CONTEXT_ARN

    @staticmethod
    def get_remaining_time_in_millis():
        return 30_000


@contextlib.contextmanager
def moto_server():
    """moto_server in its own process on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "moto_server"),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), 0.1),
            ):
                break
            time.sleep(0.05)
        yield endpoint
    finally:
        server.terminate()
        server.wait(10)


def quiet_handler(event):
    with contextlib.redirect_stdout(io.StringIO()):
        return lambda_function.lambda_handler(event, Context)


def permissions(count, base=20000):
    return [
        {
            "IpProtocol": "tcp",
            "FromPort": port,
            "ToPort": port,
            "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
        }
        for port in range(base, base + count)
    ]


def new_group(ec2, vpc, name):
    return ec2.create_security_group(GroupName=name, Description="bench", VpcId=vpc)["GroupId"]


def per_event_time(ec2, vpc):
    """Median handler time against a bare boto3 revoke of the same rules, on the same server."""
    bare = boto3.client("ec2", region_name=REGION)
    rows = []
    for count in (1, 5, 60):
        for modern in (True, False):
            group = new_group(ec2, vpc, f"time-{count}-{modern}")
            ec2.revoke_security_group_egress(
                GroupId=group,
                IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
            )
            ours, theirs = [], []
            for _ in range(SAMPLES):
                event = eventbridge(authorize(ec2, group, permissions(count), modern=modern))
                started = time.perf_counter()
                result = quiet_handler(event)
                ours.append(time.perf_counter() - started)
                assert len(result["rules"]) == count, result
                ec2.authorize_security_group_ingress(
                    GroupId=group, IpPermissions=permissions(count)
                )
                ids = [r["SecurityGroupRuleId"] for r in rules_of(ec2, group)]
                started = time.perf_counter()
                if modern:
                    bare.revoke_security_group_ingress(GroupId=group, SecurityGroupRuleIds=ids)
                else:
                    bare.revoke_security_group_ingress(
                        GroupId=group, IpPermissions=permissions(count)
                    )
                theirs.append(time.perf_counter() - started)
                assert not rules_of(ec2, group)
            ours_ms, theirs_ms = (
                statistics.median(ours) * 1000,
                statistics.median(theirs) * 1000,
            )
            rows.append((count, "rule IDs" if modern else "old (request)", ours_ms, theirs_ms))
    return rows


def api_calls(ec2, vpc):
    """How many AWS calls the handler makes, by kind of event."""
    made = []
    lambda_function._clients.clear()
    client = lambda_function.client("ec2", REGION)
    client.meta.events.register("before-call.ec2", lambda model, **_: made.append(model.name))
    group = new_group(ec2, vpc, "calls")
    ssh = permissions(1)
    ec2.create_security_group(GroupName="calls-default", Description="d")  # default VPC
    bastion = {
        "IpProtocol": "tcp",
        "FromPort": 22,
        "ToPort": 22,
        "IpRanges": [{"CidrIp": "192.0.2.0/24"}],
    }
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[bastion])
    bastion_id = next(r for r in rules_of(ec2, group) if r.get("CidrIpv4") == "192.0.2.0/24")

    def by_name():
        ec2.authorize_security_group_ingress(GroupName="calls-default", IpPermissions=ssh)
        params = {"groupName": "calls-default", "ipPermissions": camel(ssh)}
        return record("AuthorizeSecurityGroupIngress", params, {"_return": True})

    def with_conditions():
        lambda_function.SETTINGS = lambda_function.SETTINGS._replace(
            ONLY_TAGGED={"guardrail": None}
        )
        ec2.create_tags(Resources=[group], Tags=[{"Key": "guardrail", "Value": "on"}])
        return authorize(ec2, group, ssh)

    def late():
        event = authorize(ec2, group, ssh)
        return {**event, "eventTime": "2026-01-01T00:00:00Z"}

    history = []  # LookupEvents is not in moto: the records this benchmark wrote

    def event_history(**_):
        from botocore.awsrequest import AWSResponse

        events = [
            {"EventId": r["eventID"], "CloudTrailEvent": json.dumps(r)}
            for r in reversed(history)
        ]
        return AWSResponse(None, 200, {}, None), {"Events": events}

    trail = lambda_function.client("cloudtrail", REGION)
    trail.meta.events.register("before-call.cloudtrail.LookupEvents", event_history)
    trail.meta.events.register_first(  # counted before the stand-in answers
        "before-call.cloudtrail.LookupEvents",
        lambda model, **_: made.append(model.name),
    )

    def restored_edit():
        lambda_function.SETTINGS = lambda_function.SETTINGS._replace(
            RESTORE_FROM_CLOUDTRAIL=True
        )
        app = {**ssh[0], "FromPort": 5432, "ToPort": 5432}
        app["IpRanges"] = [{"CidrIp": "10.0.0.0/16"}]
        created = authorize(ec2, group, [app])
        history.append(created)
        (rule,) = created["responseElements"]["securityGroupRuleSet"]["items"]
        widened = {**wide, "FromPort": 5432, "ToPort": 5432}
        return modify(ec2, group, {rule["securityGroupRuleId"]: widened})

    def locked_removal():
        kept = {**ssh[0], "FromPort": 6000, "ToPort": 6000}
        kept["IpRanges"] = [{"CidrIp": "10.8.0.0/16", "Description": "db"}]
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[kept])
        lambda_function.SETTINGS = lambda_function.SETTINGS._replace(LOCKED_GROUP_IDS=[group])
        removed = revoke(ec2, group, [kept])
        history.append(removed)  # a put-back waits for AWS's own record (confirmed first)
        return removed

    wide = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "0.0.0.0/0"}
    kinds = [
        ("rule set in the response", lambda: authorize(ec2, group, ssh)),
        (
            "old response (request rebuilt)",
            lambda: authorize(ec2, group, ssh, modern=False),
        ),
        ("group given by name", by_name),
        ("failed call (errorCode)", lambda: authorize(ec2, group, [bastion])),
        (
            "in-place edit (ModifySecurityGroupRules)",
            lambda: modify(ec2, group, {bastion_id["SecurityGroupRuleId"]: wide}),
        ),
        ("with VPC/tag conditions", with_conditions),
        ("late event (a retry, redrive or replay)", late),
        ("in-place edit, old value in event history (restored)", restored_edit),
        ("removal from a locked group (authorized again)", locked_removal),
        ("unrelated event", lambda: record("DescribeInstances", {}, None)),
    ]
    rows = []
    for kind, make in kinds:
        event = make()
        made.clear()
        result = quiet_handler(eventbridge(event))
        rows.append((kind, result["decision"], len(made), ", ".join(made) or "-"))
        lambda_function.SETTINGS = lambda_function.SETTINGS._replace(
            ONLY_TAGGED={}, LOCKED_GROUP_IDS=[], RESTORE_FROM_CLOUDTRAIL=False
        )
    return rows


FIRST_EVENT = """
import contextlib, io, json, sys, time
started = time.perf_counter()
import lambda_function
C = type("C", (), {"invoked_function_arn": sys.argv[2]})
with contextlib.redirect_stdout(io.StringIO()):
    result = lambda_function.lambda_handler(json.load(open(sys.argv[1])), C)
print(result["decision"], "boto3" in sys.modules, time.perf_counter() - started)
"""
FIRST_BARE_REVOKE = """
import sys, time
started = time.perf_counter()
import boto3
ec2 = boto3.client("ec2", region_name="us-east-1")
ec2.revoke_security_group_ingress(GroupId=sys.argv[1], SecurityGroupRuleIds=[sys.argv[2]])
print(time.perf_counter() - started)
"""


def run_fresh(code, *args):
    """The last line a snippet prints in a new interpreter (so nothing is imported yet)."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1].split()


def cold_start(ec2, vpc):
    """Fresh processes: imports, then a whole first event against a bare first revoke."""
    timer = "import time; t = time.perf_counter(); {}; print(time.perf_counter() - t)"
    runs = max(SAMPLES // 2, 10)
    group = new_group(ec2, vpc, "cold")
    found = {key: [] for key in ("boto3", "ours", "ignored", "reverted", "bare")}
    path = Path(tempfile.mkstemp(suffix=".json")[1])
    failed = eventbridge(
        record("AuthorizeSecurityGroupIngress", {}, None, error_code="Duplicate")
    )
    for _ in range(runs):
        found["boto3"].append(float(run_fresh(timer.format("import boto3"))[0]))
        found["ours"].append(float(run_fresh(timer.format("import lambda_function"))[0]))
        path.write_text(json.dumps(failed))
        decision, loaded, seconds = run_fresh(FIRST_EVENT, str(path), CONTEXT_ARN)
        assert (decision, loaded) == ("ignored", "False")
        found["ignored"].append(float(seconds))
        path.write_text(json.dumps(eventbridge(authorize(ec2, group, permissions(1)))))
        decision, loaded, seconds = run_fresh(FIRST_EVENT, str(path), CONTEXT_ARN)
        assert (decision, loaded) == ("reverted", "True")
        found["reverted"].append(float(seconds))
        event = authorize(ec2, group, permissions(1))
        rule_id = event["responseElements"]["securityGroupRuleSet"]["items"][0][
            "securityGroupRuleId"
        ]
        found["bare"].append(float(run_fresh(FIRST_BARE_REVOKE, group, rule_id)[0]))
    path.unlink()
    return {key: statistics.median(values) * 1000 for key, values in found.items()}


MEMORY = """
import contextlib, json, os, sys
def high_water_mb():  # peak RSS since exec; ru_maxrss would include the forking parent's
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
import lambda_function
after_import = high_water_mb()
with open(sys.argv[1]) as source:
    events = json.load(source)
with_events = high_water_mb()
C = type("C", (), {"invoked_function_arn": sys.argv[2]})
with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
    decisions = [lambda_function.lambda_handler(event, C)["decision"] for event in events]
print(json.dumps({"n": len(decisions), "kinds": sorted(set(decisions)),
    "import_mb": after_import, "events_mb": with_events - after_import, "peak_mb": high_water_mb()}))
"""


def package_and_memory(ec2, vpc):
    subprocess.run(["make", "-s", "package"], cwd=ROOT, check=True)
    built = ROOT / "dist" / f"sg-guardrail-{lambda_function.__version__}.zip"
    with zipfile.ZipFile(built) as archive:
        assert archive.namelist() == ["lambda_function.py"]
    # 1,000 real changes: 20 groups of 50 rules (moto allows 60 rules a group).
    events = []
    for n in range(20):
        group = new_group(ec2, vpc, f"memory-{n}")
        events += [eventbridge(authorize(ec2, group, [rule])) for rule in permissions(50)]
    path = Path(tempfile.mkstemp(suffix=".json")[1])
    path.write_text(json.dumps(events))
    del events
    done = subprocess.run(
        [sys.executable, "-c", MEMORY, str(path), CONTEXT_ARN],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    path.unlink()
    return built.stat().st_size, json.loads(done.stdout.strip().splitlines()[-1])


PEER_PYTHON = ROOT / "bench" / ".venv-custodian" / "bin" / "python"
HTTPS = {
    "IpProtocol": "tcp",
    "FromPort": 443,
    "ToPort": 443,
    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
}
SSH = {
    "IpProtocol": "tcp",
    "FromPort": 22,
    "ToPort": 22,
    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
}


def peer(ec2, vpc):
    """Cloud Custodian and ours on the same kind of event: SSH opened to the world on a group
    that already serves HTTPS to the world. Returns None when Custodian is not installed."""
    usable = (
        PEER_PYTHON.exists()
        and subprocess.run([PEER_PYTHON, "-c", "import c7n"], check=False).returncode == 0
    )
    if not usable:
        return None

    def changes(prefix):
        groups, events = [], []
        for n in range(SAMPLES):
            group = new_group(ec2, vpc, f"{prefix}-{n}")
            ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[HTTPS])
            groups.append(group)
            events.append(eventbridge(authorize(ec2, group, [SSH])))
        return groups, events

    def https_kept(groups):
        return sum(
            any(r.get("FromPort") == 443 and not r["IsEgress"] for r in rules_of(ec2, g))
            for g in groups
        )

    groups, events = changes("peer")
    path = Path(tempfile.mkstemp(suffix=".json")[1])
    path.write_text(json.dumps(events))
    done = subprocess.run(
        [PEER_PYTHON, str(ROOT / "bench" / "custodian_peer.py"), str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    path.unlink()
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    theirs["https_kept"] = https_kept(groups)
    theirs["ssh_left"] = sum(
        any(r.get("FromPort") == 22 for r in rules_of(ec2, g)) for g in groups
    )

    groups, events = changes("ours")
    made, times = [], []
    lambda_function._clients.clear()
    client = lambda_function.client("ec2", REGION)
    client.meta.events.register("before-call.ec2", lambda model, **_: made.append(model.name))
    counts = []
    for event in events:
        made.clear()
        started = time.perf_counter()
        quiet_handler(event)
        times.append((time.perf_counter() - started) * 1000)
        counts.append(len(made))
    ours = {
        "median_ms": statistics.median(times),
        "calls": statistics.median(counts),
        "https_kept": https_kept(groups),
        "ssh_left": sum(
            any(r.get("FromPort") == 22 for r in rules_of(ec2, g)) for g in groups
        ),
    }
    return ours, theirs


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    with moto_server() as endpoint:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        ec2 = boto3.client("ec2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        quiet_handler(eventbridge(authorize(ec2, new_group(ec2, vpc, "warm"), permissions(1))))
        timing = per_event_time(ec2, vpc)
        calls = api_calls(ec2, vpc)
        cold = cold_start(ec2, vpc)
        size, memory = package_and_memory(ec2, vpc)
        peers = peer(ec2, vpc)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    report = [
        f"# Benchmark, {datetime.now(UTC):%Y-%m-%d}, {machine}, moto server on loopback",
        "",
        f"Per-event time, median of {SAMPLES} (handler: read, decide, revoke, log; bare: the revoke call alone):",
        "",
        table(
            ["rules", "event format", "handler ms", "bare boto3 ms", "ratio"],
            [
                (n, kind, f"{ours:.2f}", f"{bare:.2f}", f"{ours / bare:.2f}x")
                for n, kind, ours, bare in timing
            ],
        ),
        "",
        "API calls per event:",
        "",
        table(["event", "decision", "calls", "which"], calls),
        "",
        "Cold start, medians over fresh processes (lambda_function.py compiled from source each",
        "time, as in Lambda's read-only task folder; boto3 loads at the first AWS call):",
        "",
        table(
            ["what", "ms", "ratio"],
            [
                ("import boto3", f"{cold['boto3']:.1f}", ""),
                (
                    "import lambda_function",
                    f"{cold['ours']:.1f}",
                    f"{cold['ours'] / cold['boto3']:.2f}x boto3",
                ),
                (
                    "first event, needing no call (a failed call)",
                    f"{cold['ignored']:.1f}",
                    "",
                ),
                (
                    "first event, reverted (import, client, revoke)",
                    f"{cold['reverted']:.1f}",
                    f"{cold['reverted'] / cold['bare']:.2f}x bare",
                ),
                (
                    "bare: import boto3, client, the same revoke",
                    f"{cold['bare']:.1f}",
                    "",
                ),
            ],
        ),
        "",
        "Package and memory:",
        "",
        table(
            ["what", "value"],
            [
                (
                    f"dist/sg-guardrail-{lambda_function.__version__}.zip",
                    f"{size / 1024:.1f} KB",
                ),
                (
                    "peak resident after import (boto3 not yet loaded)",
                    f"{memory['import_mb']:.1f} MB",
                ),
                (
                    f"peak after {memory['n']} events ({', '.join(memory['kinds'])})",
                    f"{memory['peak_mb']:.1f} MB",
                ),
                (
                    "of which the 1,000 events held in memory",
                    f"{memory['events_mb']:.1f} MB",
                ),
            ],
        ),
        "",
    ]
    if peers is None:
        report += [
            "Cloud Custodian: not installed here (bench/requirements-custodian.txt).",
            "",
        ]
    else:
        ours, theirs = peers
        report += [
            f"A peer on the same events ({SAMPLES} groups that serve HTTPS to 0.0.0.0/0, each then",
            "opened to SSH from 0.0.0.0/0): Cloud Custodian's security-group policy in cloudtrail",
            "mode (filter ingress Cidr 0.0.0.0/0, action remove-permissions matched), driven through",
            "its Lambda entry point, against sg-guardrail with default conditions:",
            "",
            table(
                ["", "sg-guardrail", "Cloud Custodian"],
                [
                    (
                        "API calls per event",
                        f"{ours['calls']:g}",
                        f"{theirs['calls']:g} ({', '.join(theirs['which'])})",
                    ),
                    (
                        "per-event time, warm, median",
                        f"{ours['median_ms']:.1f} ms",
                        f"{theirs['median_ms']:.1f} ms",
                    ),
                    (
                        "cold import",
                        f"{cold['ours']:.0f} ms (lambda_function)",
                        f"{theirs['import_ms']:.0f} ms (c7n.handler)",
                    ),
                    (
                        "SSH rules left open",
                        f"{ours['ssh_left']} of {SAMPLES}",
                        f"{theirs['ssh_left']} of {SAMPLES}",
                    ),
                    (
                        "older HTTPS rules kept (the change never added them)",
                        f"{ours['https_kept']} of {SAMPLES}",
                        f"{theirs['https_kept']} of {SAMPLES}",
                    ),
                ],
            ),
            "",
        ]
    RESULTS.write_text("\n".join(report))
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
