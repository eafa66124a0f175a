"""Fake credentials, a moto AWS per test, and a VPC with one guarded group."""

from __future__ import annotations

import copy
import json
import os
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

# Before boto3 is imported anywhere: fake credentials, and no way to reach a real endpoint.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
)
for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "DRY_RUN"):
    os.environ.pop(name, None)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import boto3
import botocore.handlers
import botocore.loaders
import botocore.session
from cloudtrail import ACCOUNT, HISTORY, EventHistory, assumed_role, rules_of
from moto import mock_aws
from shipped import SHIPPED_CONDITIONS

import lambda_function

SAMPLES = ROOT.parent / "shared" / "cloudtrail-samples"

# moto gives each test a fresh boto3 session, and each session read the API models from disk
# again (0.3 s a client). One loader for all of them keeps the models read once: the clients
# are the same, only made faster.
SHARED_LOADER = botocore.loaders.create_loader()
botocore.session.create_loader = lambda *_, **__: SHARED_LOADER

# Every AWS action the function's handler calls, across the whole suite; test_policy.py
# checks iam_policy.json against it.
CALLED_BY_THE_FUNCTION: set[str] = set()


def record_the_functions_calls(model, **_):
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is lambda_function.lambda_handler.__code__:
            CALLED_BY_THE_FUNCTION.add(f"{model.service_model.endpoint_prefix}:{model.name}")
            return
        frame = frame.f_back


# A built-in handler reaches every client of every session (moto resets boto3's default one).
botocore.handlers.BUILTIN_HANDLERS.append(
    ("before-parameter-build", record_the_functions_calls)
)


def pytest_collection_modifyitems(items):
    """The IAM check reads what the whole suite recorded, so it runs last."""
    items.sort(key=lambda item: item.name.startswith("test_iam_policy_matches_the_calls"))


CONTEXT = SimpleNamespace(
    invoked_function_arn=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:sg-guardrail",
    get_remaining_time_in_millis=lambda: 30_000,
)


@pytest.fixture(autouse=True)
def fresh_clients():
    """Each test starts cold: no cached clients or member-account credentials."""
    lambda_function._clients.clear()
    lambda_function._credentials.clear()
    lambda_function._own_arn = None
    yield
    lambda_function._clients.clear()
    lambda_function._credentials.clear()
    lambda_function._own_arn = None


@pytest.fixture(autouse=True)
def no_history_yet():
    """Each test's event history starts empty (cloudtrail.HISTORY)."""
    HISTORY.clear()
    yield
    HISTORY.clear()


@pytest.fixture
def history(aws):
    """CloudTrail event history for the function's client in us-east-1: the records of the
    calls the test made through cloudtrail.py's helpers (moto has no LookupEvents)."""
    return EventHistory().serve(lambda_function.client("cloudtrail", "us-east-1"))


@pytest.fixture
def aws():
    with mock_aws():
        yield


@pytest.fixture
def ec2(aws):
    return boto3.client("ec2", region_name="us-east-1")


@pytest.fixture
def vpc_id(ec2):
    return ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]


@pytest.fixture
def group_id(ec2, vpc_id):
    """A group in a non-default VPC with two legitimate rules that must always survive."""
    group = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc_id)
    ec2.authorize_security_group_ingress(
        GroupId=group["GroupId"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 443,
                "ToPort": 443,
                "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "internal HTTPS"}],
            },
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "192.0.2.0/24", "Description": "bastion"}],
            },
        ],
    )
    return group["GroupId"]


@pytest.fixture(autouse=True)
def default_conditions(monkeypatch):
    """The suite never depends on the values a user has put in the conditions block."""
    for name, value in SHIPPED_CONDITIONS.items():
        monkeypatch.setattr(lambda_function, name, copy.deepcopy(value))
    monkeypatch.setattr(lambda_function, "should_revert", lambda change: True)
    monkeypatch.setattr(lambda_function, "SETTINGS", settings_now())


def settings_now() -> lambda_function.Settings:
    """SETTINGS as the file would build it at load from the block's names as a test set
    them (and the environment), unchecked: a test of the check calls check_conditions()."""
    found = lambda_function.effective_settings(vars(lambda_function), os.environ)
    fields = lambda_function.Settings._fields
    return lambda_function.Settings(*(found.get(name) for name in fields))


@pytest.fixture
def conditions(monkeypatch):
    """Set entries of the CONDITIONS block for one test: conditions(ONLY_VPC_IDS=[...])."""

    def set_conditions(**values):
        for name, value in values.items():
            assert hasattr(lambda_function, name), name
            monkeypatch.setattr(lambda_function, name, value)
        monkeypatch.setattr(lambda_function, "SETTINGS", settings_now())

    return set_conditions


@pytest.fixture
def calls():
    """The EC2 operations the handler's client makes, in order."""
    made = []
    client = lambda_function.client("ec2", "us-east-1")
    client.meta.events.register("before-call.ec2", lambda model, **_: made.append(model.name))
    return made


# The bastion rule of the group fixture, and the edit that opens it to the world.
WIDENED = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "0.0.0.0/0"}


def bastion_of(ec2, group_id):
    (rule,) = [r for r in rules_of(ec2, group_id) if r.get("CidrIpv4") == "192.0.2.0/24"]
    return rule


@pytest.fixture
def as_the_function(aws, monkeypatch):
    """The function runs as Lambda runs it: a session of its role named like the function.
    Returns the userIdentity its own calls carry in their records."""
    found = boto3.client("sts", region_name="us-east-1").assume_role(
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/sg-guardrail-function",
        RoleSessionName="sg-guardrail",
    )["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", found["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", found["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", found["SessionToken"])
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "sg-guardrail")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it keeps credentials it read
    return assumed_role("sg-guardrail-function", "sg-guardrail")


def shipped_source() -> str:
    """lambda_function.py as it is, with its CONDITIONS block as shipped: for the tests
    that edit the file's text, so that the user's edits to the block stay out of them."""
    from shipped import SHIPPED_BLOCK

    source = (ROOT / "lambda_function.py").read_text()
    rule = "# " + "=" * 93
    start = source.index(rule + "\n# CONDITIONS:")
    end = source.index(rule + "\n# The default path")
    return source[:start] + SHIPPED_BLOCK + source[end:]


def with_shipped_conditions(code: str) -> list[str]:
    """A command that runs `code` in a new Python with the CONDITIONS block as shipped, for
    tests of the demo and the command line: the user's block stays out of the suite."""
    prelude = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/tests']; "
        "import lambda_function, shipped; "
        "[setattr(lambda_function, k, v) for k, v in shipped.SHIPPED_CONDITIONS.items()]; "
        "lambda_function.should_revert = lambda change: True; "
        "lambda_function.SETTINGS = lambda_function.check_conditions(); "
        "sys.argv = sys.argv[1:]; "
    )
    return [sys.executable, "-c", prelude + code, str(ROOT)]


@pytest.fixture
def inbox(aws, monkeypatch):
    """A topic the function publishes to, and a queue subscribed to it."""
    sns = boto3.client("sns", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    topic = sns.create_topic(Name="sg-guardrail-alerts")["TopicArn"]
    queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn["Attributes"]["QueueArn"])
    monkeypatch.setenv("NOTIFY_TOPIC_ARN", topic)

    def received():
        found = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in found.get("Messages", [])]

    return received


# make test runs the suite on two pytest-xdist workers, and each sees only its own tests' calls
# and fuzz examples: each hands them to the controller, which checks the calls against
# iam_policy.json once all are done (test_policy.policy_mismatch) and fails the run if they
# differ, or if a worker ended without handing them over. A plain `pytest tests` runs that
# check as a test instead.
FROM_WORKERS: dict = {"called": set(), "modules": set(), "fuzz": Counter()}
WORKERS: list[str] = []  # those that handed their share over
MISMATCH: list[str] = []
RAN_IN_THIS_WORKER: set[str] = set()  # the modules of the tests that ran here


def pytest_runtest_logreport(report):
    if report.when == "call":
        RAN_IN_THIS_WORKER.add(Path(report.nodeid.split("::")[0]).stem)


def pytest_sessionfinish(session):
    output = getattr(session.config, "workeroutput", None)
    if output is not None:  # an xdist worker
        fuzz = sys.modules.get("test_fuzz")
        output["called"] = sorted(CALLED_BY_THE_FUNCTION)
        output["modules"] = sorted(RAN_IN_THIS_WORKER)
        output["fuzz"] = dict(fuzz.OUTCOMES) if fuzz is not None else {}
    elif WORKERS or MISMATCH:  # the controller, after its workers are down
        from test_policy import policy_mismatch

        MISMATCH.extend(policy_mismatch(FROM_WORKERS["called"], FROM_WORKERS["modules"]))
        if MISMATCH:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    output = getattr(node, "workeroutput", None) or {}
    if error or "called" not in output:
        MISMATCH.append(f"a worker ended without handing over the calls it saw ({error})")
        return
    WORKERS.append(node.gateway.id)
    for key, gathered in FROM_WORKERS.items():
        gathered.update(output.get(key, ()))


def pytest_terminal_summary(terminalreporter):
    """What the fuzz examples did (test_fuzz.OUTCOMES), after the run's last line of dots
    rather than among them; under xdist, the IAM check across workers."""
    fuzz = sys.modules.get("test_fuzz")
    outcomes = FROM_WORKERS["fuzz"] or (fuzz.OUTCOMES if fuzz is not None else {})
    if outcomes:
        terminalreporter.write_line(f"fuzz outcomes: {dict(sorted(outcomes.items()))}")
    if WORKERS or MISMATCH:
        from test_policy import WHOLE_SUITE

        called = len(FROM_WORKERS["called"])
        agreed = (
            f"iam_policy.json grants the {called} actions {len(WORKERS)} workers saw called"
        )
        if WHOLE_SUITE <= FROM_WORKERS["modules"]:
            agreed += ", and nothing else"
        for line in MISMATCH or [agreed]:
            terminalreporter.write_line(("FAILED: " if MISMATCH else "") + line)
