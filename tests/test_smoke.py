"""The smoke test (python lambda_function.py --smoke VPC_ID, make smoke) on moto.

moto runs no Lambda and no EventBridge: a thread plays the deployed guardrail. It watches
for the smoke test's group, writes the CloudTrail record of the rule added there as
tests/cloudtrail.py does (the response's securityGroupRuleSet with the rule moto created),
hands it to the real handler as EventBridge would, and writes the handler's log line to
moto's CloudWatch Logs, in the function's log group, as Lambda would."""

from __future__ import annotations

import contextlib
import io
import threading
import time

import boto3
import pytest
from botocore.stub import Stubber
from cloudtrail import ACCOUNT, camel, eventbridge, record, rules_of
from conftest import CONTEXT

import lambda_function
from lambda_function import main

LOG_GROUP = "/aws/lambda/sg-guardrail"


class Guardrail(threading.Thread):
    """The deployed function, played here: delivery `delay` seconds after the call."""

    def __init__(self, delay: float = 0.5, home: str = "us-east-1"):
        super().__init__(daemon=True)
        self.delay, self.stop, self.handled = delay, threading.Event(), []
        self.ec2 = boto3.client("ec2", region_name="us-east-1")
        self.logs = boto3.client("logs", region_name=home)  # the function's region
        self.logs.create_log_group(logGroupName=LOG_GROUP)
        self.logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName="play")

    def run(self):
        while not self.stop.wait(0.2):
            for group in self.smoke_groups():
                for rule in rules_of(self.ec2, group):
                    if rule["IsEgress"] or rule["SecurityGroupRuleId"] in self.handled:
                        continue
                    self.handled.append(rule["SecurityGroupRuleId"])
                    time.sleep(self.delay)
                    self.deliver(group, rule)

    def smoke_groups(self):
        found = self.ec2.describe_security_groups(
            Filters=[{"Name": "tag-key", "Values": ["sg-guardrail"]}]
        )["SecurityGroups"]
        return [g["GroupId"] for g in found]

    def deliver(self, group, rule):
        permission = {
            "IpProtocol": rule["IpProtocol"],
            "FromPort": rule["FromPort"],
            "ToPort": rule["ToPort"],
            "IpRanges": [{"CidrIp": rule["CidrIpv4"], "Description": rule["Description"]}],
        }
        response = {
            "_return": True,
            "securityGroupRuleSet": camel([{"GroupOwnerId": ACCOUNT, **rule}]),
        }
        found = record(
            "AuthorizeSecurityGroupIngress",
            {"groupId": group, "ipPermissions": camel([permission])},
            response,
        )
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            try:
                lambda_function.lambda_handler(eventbridge(found), CONTEXT)
            except lambda_function.RETRY_LATER:
                pass  # logged; Lambda would retry
        lines = [line for line in printed.getvalue().splitlines() if line]
        self.logs.put_log_events(
            logGroupName=LOG_GROUP,
            logStreamName="play",
            logEvents=[
                {"timestamp": int(time.time() * 1000), "message": line + "\n"}
                for line in lines
            ],
        )


@pytest.fixture(autouse=True)
def brisk(monkeypatch):
    """Looks at the group and the log more often than against AWS: the suite stays short."""
    monkeypatch.setattr(lambda_function, "SMOKE_POLL_S", 0.2)
    monkeypatch.setattr(lambda_function, "SMOKE_LOG_POLL_S", 0.5)


@pytest.fixture
def guardrail(aws):
    played = Guardrail()
    played.start()
    yield played
    played.stop.set()
    played.join(5)


def smoke_groups_left(ec2):
    return ec2.describe_security_groups(
        Filters=[{"Name": "tag-key", "Values": ["sg-guardrail"]}]
    )["SecurityGroups"]


def test_the_smoke_test_times_the_revert_and_reads_the_log_line(
    ec2, vpc_id, guardrail, capsys
):
    assert main(["--smoke", vpc_id, "--region", "us-east-1", "--timeout", "30"]) == 0
    out = capsys.readouterr().out
    assert "  reverted " in out and " s after the call" in out
    assert "decision: reverted: not approved by the conditions" in out
    assert f"guardrail version {lambda_function.__version__}" in out
    assert "notification: none (no NOTIFY_TOPIC_ARN, or not told)" in out
    assert out.rstrip().endswith("deleted")
    assert "OK: the guardrail reverted the change" in out
    assert len(guardrail.handled) == 1
    assert smoke_groups_left(ec2) == []


def test_the_smoke_test_says_the_notification_went_out(ec2, vpc_id, guardrail, inbox, capsys):
    assert main(["--smoke", vpc_id, "--region", "us-east-1", "--timeout", "30"]) == 0
    assert "notification: sent" in capsys.readouterr().out
    (told,) = inbox()
    assert told["Subject"].startswith("Reverted: tcp 9 from 192.0.2.1/32 on sg-")


def test_a_dry_run_deployment_is_reported_as_such_not_as_a_failure(
    ec2, vpc_id, guardrail, monkeypatch, capsys
):
    monkeypatch.setenv("DRY_RUN", "true")  # the played function's, as DryRun=true sets it
    assert main(["--smoke", vpc_id, "--region", "us-east-1", "--timeout", "30"]) == 0
    out = capsys.readouterr().out
    assert "the rule was still in place" in out
    assert "decision: dry-run" in out
    assert "OK: the guardrail is in dry run" in out
    assert smoke_groups_left(ec2) == []  # the rule stayed; its group is gone all the same


def test_no_guardrail_fails_by_the_deadline_and_still_deletes_the_group(
    ec2, vpc_id, aws, capsys
):
    boto3.client("logs", region_name="us-east-1").create_log_group(logGroupName=LOG_GROUP)
    started = time.monotonic()
    assert main(["--smoke", vpc_id, "--region", "us-east-1", "--timeout", "3"]) == 1
    assert time.monotonic() - started < 10
    out = capsys.readouterr().out
    assert "the rule was still in place when the test ended" in out
    assert "log line: none found in /aws/lambda/sg-guardrail" in out
    assert "FAILED: the change was not reverted" in out
    assert smoke_groups_left(ec2) == []


def test_an_error_midway_still_deletes_the_group(ec2, vpc_id, aws, capsys):
    # no log group: FilterLogEvents answers ResourceNotFoundException
    assert main(["--smoke", vpc_id, "--region", "us-east-1", "--timeout", "5"]) == 2
    captured = capsys.readouterr()
    assert "error: the smoke test could not run" in captured.err
    assert "deleted" in captured.out
    assert smoke_groups_left(ec2) == []


def test_the_function_is_found_from_its_stack():
    # moto's CloudFormation needs packages the suite does not install: DescribeStacks is
    # answered in its documented shape (Stacks[].Outputs[].OutputKey / OutputValue).
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    arn = "arn:aws:lambda:eu-west-1:111122223333:function:guard-x"
    stack = {
        "StackName": "guard",
        "CreationTime": "2026-12-01T00:00:00Z",
        "StackStatus": "CREATE_COMPLETE",
        "Outputs": [
            {"OutputKey": "FailureQueueUrl", "OutputValue": "https://sqs..."},
            {"OutputKey": "FunctionArn", "OutputValue": arn},
        ],
    }
    with Stubber(cloudformation) as stub:
        stub.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": "guard"})
        assert lambda_function.function_of_stack(cloudformation, "guard") == "guard-x"
        member = {
            **stack,
            "Outputs": [{"OutputKey": "MemberRoleArn", "OutputValue": "x"}],
        }
        stub.add_response("describe_stacks", {"Stacks": [member]}, {"StackName": "guard"})
        with pytest.raises(LookupError, match="no FunctionArn output"):
            lambda_function.function_of_stack(cloudformation, "guard")


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (
            ["--smoke", "vpc-0123abcd"],
            {"AWS_LAMBDA_FUNCTION_NAME": "x"},
            "never in Lambda",
        ),
        (["--smoke", "sg-0123abcd"], {}, "wants a VPC ID"),
    ],
)
def test_the_smoke_test_refuses_to_run_in_lambda_or_without_a_vpc(
    aws, monkeypatch, capsys, argv, env, says
):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 2
    assert says in capsys.readouterr().err


def test_the_handler_never_reaches_the_smoke_test(aws):
    # The smoke test is only main()'s: no event shape routes to it.
    for event in ({"smoke": "vpc-0123abcd"}, {"argv": ["--smoke", "vpc-0123abcd"]}):
        assert lambda_function.lambda_handler(event, CONTEXT)["decision"] == "ignored"


def test_make_smoke_runs_the_smoke_option_with_the_names_given():
    import subprocess

    from conftest import ROOT

    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-n",
            "smoke",
            "VPC=vpc-0123abcd",
            "REGION=eu-west-1",
            "STACK=guard",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    command = " ".join(done.stdout.replace("\\\n", " ").split())
    assert "/python lambda_function.py --smoke vpc-0123abcd --region eu-west-1" in command
    assert command.endswith("--stack guard")
    default = subprocess.run(
        ["make", "--no-print-directory", "-n", "smoke", "VPC=vpc-0123abcd"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--stack" not in default.stdout and "--region" not in default.stdout


def test_a_group_in_another_region_is_timed_and_the_log_read_in_the_functions(
    ec2, vpc_id, aws, capsys
):
    played = Guardrail(home="eu-west-1")  # one function, home eu-west-1, guards us-east-1
    played.start()
    try:
        argv = [
            "--smoke",
            vpc_id,
            "--region",
            "us-east-1",
            "--home-region",
            "eu-west-1",
        ]
        assert main([*argv, "--timeout", "30"]) == 0
    finally:
        played.stop.set()
        played.join(5)
    out = capsys.readouterr().out
    assert "function sg-guardrail in eu-west-1" in out
    assert "decision: reverted" in out
