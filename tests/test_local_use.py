"""Local use: the demo, replaying saved events and CloudTrail logs, auditing recent history."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import ANY, Stubber
from cloudtrail import OPEN, SSH, authorize, eventbridge, record, rule_set
from conftest import ROOT, with_shipped_conditions

from lambda_function import CHANGE_EVENTS, describe, main, read_change

WEB = {**SSH, "FromPort": 80, "ToPort": 80}
OPEN_WEB = (False, "tcp", 80, 80, "0.0.0.0/0")


def test_the_demo_undoes_every_risky_change_and_keeps_the_exempt_one():
    done = subprocess.run(
        with_shipped_conditions("import demo; sys.exit(demo.main([]))"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: the function did what its conditions say" in done.stdout
    assert "widens the bastion rule in place  reverted       reverted" in done.stdout
    assert "opens 8443 to a partner           kept           kept" in done.stdout
    assert "restored to tcp 22 from 192.0.2.0/24" in done.stdout
    bastion = [line for line in done.stdout.splitlines() if " bastion  " in line]
    assert len(bastion) == 2  # before and after: the same rule, by the same ID
    assert bastion[0].split()[-1] == bastion[1].split()[-1]


def test_make_try_replays_saved_events_on_groups_made_to_match():
    events = sorted(str(p) for p in (ROOT / "events").glob("*.json"))
    code = f"import demo; sys.exit(demo.main(['--try', *{events!r}]))"
    done = subprocess.run(
        with_shipped_conditions(code),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    decisions = [
        line.split(":")[1].strip()
        for line in done.stdout.splitlines()
        if line.startswith("  decision:")
    ]
    assert decisions.count("reverted") == 7
    assert decisions.count("ignored") == 2  # the failed calls


def test_make_try_skips_a_call_it_cannot_make_again_and_names_the_offline_command(tmp_path):
    """A new user's finding: a saved DeleteTags ended in a raw ParamValidationError."""
    params = {
        "resourcesSet": {"items": [{"resourceId": "sg-0123456789abcdef0"}]},
        "tagSet": {"items": [{"key": "guardrail"}]},
    }
    saved = tmp_path / "tags.json"
    saved.write_text(json.dumps(record("DeleteTags", params, {"_return": True})))
    code = f"import demo; sys.exit(demo.main(['--try', {str(saved)!r}]))"
    done = subprocess.run(
        with_shipped_conditions(code), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        f"skipped; decide it on the record alone: python lambda_function.py --offline {saved}"
        in (done.stdout)
    )


def write(path, content):
    path.write_text(json.dumps(content))
    return str(path)


def test_a_saved_event_is_replayed(ec2, group_id, tmp_path, capsys):
    event = write(tmp_path / "event.json", eventbridge(authorize(ec2, group_id, [SSH])))
    assert main([event]) == 0
    assert OPEN not in rule_set(ec2, group_id)
    out, err = capsys.readouterr()
    assert json.loads(out)["decision"] == "reverted"
    assert "summary: 1 event: 1 reverted" in err


def test_replay_in_dry_run_changes_nothing(ec2, group_id, tmp_path, monkeypatch):
    monkeypatch.setenv("DRY_RUN", "false")  # undone after the test, whatever main sets
    event = write(tmp_path / "event.json", authorize(ec2, group_id, [SSH]))
    assert main([event, "--dry-run"]) == 0
    assert OPEN in rule_set(ec2, group_id)


def test_an_event_on_stdin_is_replayed(ec2, group_id, monkeypatch):
    data = json.dumps(authorize(ec2, group_id, [SSH])).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["-"]) == 0
    assert OPEN not in rule_set(ec2, group_id)


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_a_cloudtrail_log_file_is_handled_in_order(
    ec2, group_id, tmp_path, capsys, compressed
):
    unrelated = record("DescribeInstances", {"instancesSet": {}}, None)
    records = [
        authorize(ec2, group_id, [SSH]),
        unrelated,
        authorize(ec2, group_id, [WEB]),
    ]
    data = json.dumps({"Records": records}).encode()
    path = tmp_path / ("log.json.gz" if compressed else "log.json")
    path.write_bytes(gzip.compress(data) if compressed else data)
    assert main([str(path)]) == 0
    assert not {OPEN, OPEN_WEB} & rule_set(ec2, group_id)
    out, err = capsys.readouterr()
    assert [json.loads(line)["rules"] for line in out.splitlines()] == [
        ["tcp 22 from 0.0.0.0/0"],
        ["tcp 80 from 0.0.0.0/0"],
    ]
    assert "summary: 2 events: 2 reverted" in err


def test_a_half_bad_log_handles_the_good_records_and_reports_the_bad(
    ec2, group_id, tmp_path, capsys
):
    bad = authorize(ec2, group_id, [WEB], modern=False)
    bad["requestParameters"]["groupId"] = "sg-not-an-id"
    failed = record(
        "AuthorizeSecurityGroupIngress", {}, None, error_code="UnauthorizedOperation"
    )
    log = write(
        tmp_path / "log.json",
        {"Records": [bad, authorize(ec2, group_id, [SSH]), failed]},
    )
    assert main([log]) == 1
    assert OPEN not in rule_set(ec2, group_id)
    err = capsys.readouterr().err
    assert "summary: 3 events: 1 ignored, 1 reverted, 1 unreadable" in err
    assert f"left open, unreadable or failed: {bad['eventID']}" in err
    assert failed["eventID"] not in err  # a failed call is a normal record, not a bad one


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file"),
        (b"{not json", "is not JSON"),
        (b"", "is not JSON"),
        (gzip.compress(b"\x00\x01", mtime=0), "is not JSON"),
    ],
)
def test_unreadable_input_gives_one_error_line_and_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "input.json"
    if content is not None:
        path.write_bytes(content)
    assert main([str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("error: ")
    assert message in err


def test_the_command_line_reaches_a_moto_server_through_aws_endpoint_url(tmp_path):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        group = ec2.create_security_group(GroupName="g", Description="g", VpcId=vpc)["GroupId"]
        event = write(tmp_path / "event.json", authorize(ec2, group, [SSH]))
        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint}
        done = subprocess.run(
            with_shipped_conditions(f"sys.exit(lambda_function.main([{event!r}]))"),
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        assert OPEN not in rule_set(ec2, group)
    finally:
        server.stop()


def lookup_page(records, token=None):
    page = {
        "Events": [
            {
                "EventId": r["eventID"],
                "EventName": r["eventName"],
                "EventTime": datetime(2026, 11, 27, tzinfo=UTC),
                "CloudTrailEvent": json.dumps(r),
            }
            for r in records
        ]
    }
    return {**page, "NextToken": token} if token else page


def expect_lookup(stub, name, page, token=None):
    params = {
        "LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": name}],
        "StartTime": ANY,
        "EndTime": ANY,
    }
    stub.add_response(
        "lookup_events", page, {**params, **({"NextToken": token} if token else {})}
    )


def test_audit_handles_every_change_in_recent_history(ec2, group_id, capsys):
    first, second = authorize(ec2, group_id, [SSH]), authorize(ec2, group_id, [WEB])
    first["eventTime"], second["eventTime"] = (
        "2026-11-27T09:00:00Z",
        "2026-11-27T08:00:00Z",
    )
    cloudtrail = boto3.client("cloudtrail", region_name="us-east-1")
    with Stubber(cloudtrail) as stub:
        expect_lookup(stub, "AuthorizeSecurityGroupIngress", lookup_page([first], "page-2"))
        expect_lookup(stub, "AuthorizeSecurityGroupIngress", lookup_page([second]), "page-2")
        expect_lookup(stub, "AuthorizeSecurityGroupEgress", lookup_page([]))
        expect_lookup(stub, "ModifySecurityGroupRules", lookup_page([]))
        for name in CHANGE_EVENTS[3:]:
            expect_lookup(stub, name, lookup_page([]))
        assert main(["--since", "24h"], cloudtrail=cloudtrail) == 0
        stub.assert_no_pending_responses()
    assert not {OPEN, OPEN_WEB} & rule_set(ec2, group_id)
    out = capsys.readouterr().out
    # oldest first, whatever order the history returned them in
    assert [json.loads(line)["eventId"] for line in out.splitlines()] == [
        second["eventID"],
        first["eventID"],
    ]


def test_audit_looks_back_as_far_as_asked():
    cloudtrail = boto3.client("cloudtrail", region_name="us-east-1")
    seen = []
    cloudtrail.meta.events.register(
        "provide-client-params.cloudtrail.LookupEvents",
        lambda params, **_: seen.append(params),
    )
    with Stubber(cloudtrail) as stub:
        for _ in CHANGE_EVENTS:
            stub.add_response("lookup_events", {"Events": []})
        assert main(["--since", "90m"], cloudtrail=cloudtrail) == 0
    window = seen[0]["EndTime"] - seen[0]["StartTime"]
    assert window == timedelta(minutes=90)


@pytest.mark.parametrize("since", ["24", "1w", "h24", "1.5h", "", "0h", "91d", "9999999d"])
def test_audit_answers_a_window_it_cannot_read_with_the_usage_line(since, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--since", since])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python lambda_function.py")
    assert "error: argument --since:" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "content",
    [[], {"Records": []}, {"Records": [{"eventName": "DescribeInstances"}]}],
    ids=["empty-list", "empty-log", "log-without-changes"],
)
def test_nothing_to_handle_is_answered_the_same_way_whatever_its_shape(
    tmp_path, capsys, content
):
    path = write(tmp_path / "input.json", content)
    assert main([path]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"note: {path} holds no security-group changes\nsummary: 0 events: none\n")


def test_several_files_are_replayed_in_order(ec2, group_id, tmp_path, capsys):
    first = write(tmp_path / "a.json", authorize(ec2, group_id, [SSH]))
    second = write(tmp_path / "b.json", [eventbridge(authorize(ec2, group_id, [WEB]))])
    assert main([first, second]) == 0
    assert not {OPEN, OPEN_WEB} & rule_set(ec2, group_id)
    assert "summary: 2 events: 2 reverted" in capsys.readouterr().err


def test_help_says_it_changes_the_aws_boto3_points_at_and_how_it_exits(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for fact in (
        "CHANGES the AWS that boto3 points at",
        "AWS_ENDPOINT_URL",
        "--dry-run",
    ):
        assert fact in out
    assert "exit status: 0" in out and "1 some change" in out and "2 the input" in out


def test_an_endpoint_without_lookup_events_gets_a_clear_message(monkeypatch, capsys):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    sleeps = []  # botocore's backoff between its 10 attempts, taken without waiting
    monkeypatch.setattr("botocore.endpoint.time.sleep", sleeps.append)
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        assert main(["--since", "1h", "--region", "us-east-1"]) == 2
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert err.startswith("error: cloudtrail:LookupEvents failed (a moto server")
    assert len(err.splitlines()) == 1
    assert sleeps == []  # said at once: a call the endpoint lacks is not retried


EXAMPLES = {
    "ssh-from-anywhere.json": ["tcp 22 from 0.0.0.0/0"],
    "rdp-from-ipv6-anywhere-old-response.json": ["tcp 3389 from ::/0"],
    "egress-to-anywhere.json": ["all traffic to 0.0.0.0/0"],
    "rule-widened-in-place.json": ["tcp 5432 from/to 0.0.0.0/0"],
    "legacy-flat-form.json": ["tcp 8080 from 0.0.0.0/0"],
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_events_read_as_documented(name):
    event = json.loads((ROOT / "events" / name).read_text())
    assert [describe(r) for r in read_change(event)["rules"]] == EXAMPLES[name]


def test_every_example_event_is_covered():
    names = {p.name for p in (ROOT / "events").glob("*.json")}
    assert names == set(EXAMPLES) | {"failed-call.json", "cloudtrail-log.json"}
