"""Deployment: the zip, template.yaml against iam_policy.json, and the rule pattern on moto."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import subprocess
import zipfile

import boto3
import pytest
from cfnlint.decode.cfn_yaml import load as load_template
from cloudtrail import SSH, authorize, eventbridge, modify, record, rules_of
from conftest import ROOT, SAMPLES

import lambda_function

TEMPLATE = load_template(str(ROOT / "template.yaml"))
RESOURCES = TEMPLATE["Resources"]
POLICY = json.loads((ROOT / "iam_policy.json").read_text())
PATTERN = json.loads((ROOT / "event_pattern.json").read_text())


def test_package_is_the_one_file_and_reproducible(tmp_path):
    built = tmp_path / f"sg-guardrail-{lambda_function.__version__}.zip"
    digests = []
    for _ in range(2):
        built.unlink(missing_ok=True)
        subprocess.run(
            ["make", "-s", "package", f"DIST={tmp_path}"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        digests.append(hashlib.sha256(built.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    with zipfile.ZipFile(built) as archive:
        assert archive.namelist() == ["lambda_function.py"]
        assert archive.read("lambda_function.py") == (ROOT / "lambda_function.py").read_bytes()


def placeholders(value):
    """A template value with its intrinsic functions turned into wildcards, for fnmatch."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
        text = text.replace("${AWS::Partition}", "aws").replace(
            "${MemberRoleName}", "sg-guardrail-member"
        )
        return re.sub(r"\$\{[^}]+\}", "*", text)
    if isinstance(value, dict):
        return "*"  # !Ref, !GetAtt: a resource of this stack
    return value


def statements(policy_document):
    found = {}
    for statement in policy_document["Statement"]:
        if isinstance(statement, dict) and "Fn::If" in statement:
            statement = statement["Fn::If"][1]
        resources = statement["Resource"]
        resources = resources if isinstance(resources, list) else [resources]
        found[statement["Sid"]] = (
            set(statement["Action"]),
            [placeholders(r) for r in resources],
        )
    return found


def function_policy():
    (policy,) = RESOURCES["FunctionRole"]["Properties"]["Policies"]
    return statements(policy["PolicyDocument"])


def test_the_function_role_grants_exactly_the_actions_of_iam_policy_json():
    ours = statements(POLICY)
    template = function_policy()
    assert {sid: actions for sid, (actions, _) in template.items()} == {
        sid: actions for sid, (actions, _) in ours.items()
    }


@pytest.mark.parametrize("sid", sorted(statements(POLICY)))
def test_the_function_role_is_scoped_no_wider_than_iam_policy_json(sid):
    _, policy_resources = statements(POLICY)[sid]
    _, template_resources = function_policy()[sid]
    for resource in template_resources:
        narrowed = resource.replace("*", "x") if resource != "*" else "*"
        if resource in ("*",) and policy_resources != ["*"]:
            continue  # a !Ref or !GetAtt to this stack's own topic, log group or queue
        assert any(fnmatch.fnmatchcase(narrowed, allowed) for allowed in policy_resources), (
            resource
        )


def test_no_other_function_may_act_with_the_functions_role():
    """Whoever may pass the role to a function of their own would otherwise act as the
    guardrail: its changes kept as the guardrail's own, the member role assumed in every
    account (an attacker's review). The Deny binds only calls that carry a function's ARN
    (Lambda's permissions-source-function-arn page: its code's calls, and its log writes),
    so Lambda's own calls for it (the on-failure send, the buffer's reads) go on."""
    (policy,) = RESOURCES["FunctionRole"]["Properties"]["Policies"]
    arn = "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${FunctionName}"
    zip_arn = "arn:aws:lambda:*:*:function:sg-guardrail"  # the name the README gives it
    for found, own in (
        (policy["PolicyDocument"]["Statement"], [{"Fn::Sub": arn}, {"Fn::Sub": arn + ":*"}]),
        (POLICY["Statement"], [zip_arn, zip_arn + ":*"]),
    ):
        (deny,) = [s for s in found if s.get("Effect") == "Deny"]
        assert (deny["Action"], deny["Resource"]) == ("*", "*")
        assert deny["Condition"] == {
            "Null": {"lambda:SourceFunctionArn": "false"},
            "ArnNotLike": {"lambda:SourceFunctionArn": own},
        }


def test_the_member_role_may_only_undo_changes_and_read_what_that_needs():
    (policy,) = RESOURCES["MemberRole"]["Properties"]["Policies"]
    found = statements(policy["PolicyDocument"])
    assert {sid: actions for sid, (actions, _) in found.items()} == {
        sid: actions
        for sid, (actions, _) in statements(POLICY).items()
        if sid
        not in {"ActInMemberAccounts", "NotifyOwnTopic", "WriteOwnLogs"}
        | {"HandFailedEventsToTheQueue", "KnowItsOwnSessionSoAsNeverToReactToIt"}
        | {"SweepTheFailureQueue", "TakeBatchesFromTheBufferIfBuffered"}
        | {"ListTheOrganizationsAccountsIfSweptSo", "NoOtherFunctionActsWithThisRole"}
    }
    (trust,) = RESOURCES["MemberRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"]["AWS"] == {
        "Fn::Sub": "arn:${AWS::Partition}:iam::${CentralAccountId}:role/${FunctionName}-function"
    }
    assert RESOURCES["FunctionRole"]["Properties"]["RoleName"] == {
        "Fn::Sub": "${FunctionName}-function"
    }


def pattern_of(rule, locked):
    """A rule's pattern with its HasLock condition decided."""
    pattern = json.loads(json.dumps(RESOURCES[rule]["Properties"]["EventPattern"]))
    _, with_lock, without = pattern["detail"]["eventName"]["Fn::If"]
    pattern["detail"]["eventName"] = with_lock if locked else without
    return pattern


@pytest.mark.parametrize("rule", ["Rule", "ForwardRule", "ForwardedRule"])
def test_every_rule_uses_event_pattern_json_and_the_revokes_only_with_a_lock(rule):
    assert pattern_of(rule, locked=False) == PATTERN
    locked = pattern_of(rule, locked=True)
    assert locked["detail"]["eventName"] == list(
        lambda_function.CHANGE_EVENTS + lambda_function.REMOVAL_EVENTS
    )
    assert {**locked, "detail": {**locked["detail"], "eventName": None}} == {
        **PATTERN,
        "detail": {**PATTERN["detail"], "eventName": None},
    }


def test_the_function_is_small_current_and_only_the_rule_may_invoke_it():
    function = RESOURCES["Function"]["Properties"]
    assert re.fullmatch(r"python3\.1[2-9]", function["Runtime"])
    assert (function["Architectures"], function["MemorySize"]) == (["arm64"], 128)
    assert function["Timeout"] <= 60
    assert function["Handler"] == "lambda_function.lambda_handler"
    permission = RESOURCES["Permission"]["Properties"]
    assert permission["SourceArn"] == {"Fn::GetAtt": ["Rule", "Arn"]}
    assert permission["Principal"] == "events.amazonaws.com"
    invoke = RESOURCES["InvokeConfig"]["Properties"]
    assert invoke["MaximumRetryAttempts"] <= 2
    assert invoke["MaximumEventAgeInSeconds"] <= 6 * 3600
    assert invoke["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["FailureQueue", "Arn"]
    }
    assert "RetentionInDays" in RESOURCES["LogGroup"]["Properties"]


def test_the_settings_reach_the_environment_variables_the_code_reads():
    variables = RESOURCES["Function"]["Properties"]["Environment"]["Variables"]
    source = (ROOT / "lambda_function.py").read_text()
    for name in variables:
        assert f'"{name}"' in source, name
    assert variables["DRY_RUN"] == {"Ref": "DryRun"}
    assert TEMPLATE["Parameters"]["DryRun"]["Default"] == "true"  # roll out in dry run


def test_forwarded_events_reach_a_bus_of_their_own_that_admits_only_ec2_from_the_org():
    policy = RESOURCES["OrganizationBusPolicy"]["Properties"]
    assert policy["EventBusName"] == {"Ref": "ForwardedBus"}
    assert policy["Statement"]["Resource"] == {"Fn::GetAtt": ["ForwardedBus", "Arn"]}
    assert policy["Statement"]["Condition"] == {
        "StringEquals": {
            "aws:PrincipalOrgID": {"Ref": "OrganizationId"},
            "events:source": "aws.ec2",
            "events:detail-type": "AWS API Call via CloudTrail",
        }
    }
    assert "event-bus/default" not in json.dumps(TEMPLATE)
    forwarded = RESOURCES["ForwardedRule"]["Properties"]
    assert forwarded["EventBusName"] == {"Ref": "ForwardedBus"}
    assert RESOURCES["ForwardedPermission"]["Properties"]["SourceArn"] == {
        "Fn::GetAtt": ["ForwardedRule", "Arn"]
    }
    (target,) = RESOURCES["ForwardRule"]["Properties"]["Targets"]
    assert target["Arn"]["Fn::Sub"][0].endswith(":event-bus/${FunctionName}")


def test_with_an_organization_only_its_accounts_roles_are_assumed():
    (statement,) = [
        s
        for s in RESOURCES["FunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"][
            "Statement"
        ]
        if isinstance(s, dict) and s.get("Sid") == "ActInMemberAccounts"
    ]
    assert statement["Condition"] == {
        "Fn::If": [
            "HasOrganization",
            {"StringEquals": {"aws:ResourceOrgID": {"Ref": "OrganizationId"}}},
            {"Ref": "AWS::NoValue"},
        ]
    }


def test_alarms_watch_errors_the_failure_queue_and_changes_left_open():
    errors = RESOURCES["ErrorsAlarm"]["Properties"]
    assert (errors["Namespace"], errors["MetricName"]) == ("AWS/Lambda", "Errors")
    queue = RESOURCES["FailureQueueAlarm"]["Properties"]
    assert queue["MetricName"] == "ApproximateNumberOfMessagesVisible"
    left_open = RESOURCES["LeftOpenAlarm"]["Properties"]["Metrics"]
    watched = {
        m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]
        for m in left_open
        if "MetricStat" in m
    }
    assert watched == {*lambda_function.LEFT_OPEN, lambda_function.BLIND_SPOT}
    (total,) = [m for m in left_open if "Expression" in m]
    assert all(f"FILL({m['Id']}, 0)" in total["Expression"] for m in left_open[1:])
    for m in left_open:
        if "MetricStat" in m:
            metric = m["MetricStat"]["Metric"]
            assert metric["Namespace"] == lambda_function.METRICS_NAMESPACE
            assert metric["MetricName"] == "Events"
    for name in ("ErrorsAlarm", "FailureQueueAlarm", "LeftOpenAlarm"):
        assert RESOURCES[name]["Properties"]["AlarmActions"] == {
            "Fn::If": [
                "HasTopic",
                [{"Ref": "NotificationTopicArn"}],
                {"Ref": "AWS::NoValue"},
            ]
        }


def test_every_scanner_finding_the_template_accepts_is_explained_there():
    skipped = [
        (name, skip)
        for name, resource in RESOURCES.items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skipped, "make scan found nothing to accept?"
    for name, skip in skipped:
        assert re.fullmatch(r"CKV_AWS_\d+", skip["id"]), name
        assert len(skip["comment"]) > 60, (name, skip["id"])


# ---- The rule pattern, proven on moto's EventBridge -----------------------------------------


@pytest.fixture
def delivered(aws):
    """put(event) sends an event to a bus whose rule has event_pattern.json; returns arrivals."""
    events = boto3.client("events", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue = sqs.create_queue(QueueName="arrivals")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
    events.put_rule(Name="sg-guardrail", EventPattern=json.dumps(PATTERN))
    events.put_targets(Rule="sg-guardrail", Targets=[{"Id": "q", "Arn": arn["QueueArn"]}])

    def put(event):
        entry = {
            "Source": str(event.get("source")),
            "DetailType": str(event.get("detail-type")),
            "Detail": json.dumps(event["detail"]),
        }
        assert events.put_events(Entries=[entry])["FailedEntryCount"] == 0
        found = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        for message in found:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        return len(found)

    return put


def test_successful_changes_arrive(delivered, ec2, group_id):
    bastion = next(r for r in rules_of(ec2, group_id) if r.get("CidrIpv4") == "192.0.2.0/24")
    wide = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "0.0.0.0/0"}
    for found in (
        authorize(ec2, group_id, [SSH]),
        authorize(ec2, group_id, [{**SSH, "FromPort": 25, "ToPort": 25}], egress=True),
        modify(ec2, group_id, {bastion["SecurityGroupRuleId"]: wide}),
    ):
        assert delivered(eventbridge(found)) == 1, found["eventName"]


def test_failed_calls_reads_and_other_sources_do_not(delivered, ec2, group_id):
    failed = authorize(ec2, group_id, [{**SSH, "IpRanges": [{"CidrIp": "192.0.2.0/24"}]}])
    assert failed["errorCode"]
    read = record("DescribeSecurityGroups", {"securityGroupIdSet": {}}, None)
    create = record("CreateSecurityGroup", {"groupName": "x", "groupDescription": "x"}, None)
    other_source = {**eventbridge(authorize(ec2, group_id, [SSH])), "source": "aws.s3"}
    other_type = {
        **eventbridge(authorize(ec2, group_id, [SSH])),
        "detail-type": "Custom",
    }
    for event in (
        eventbridge(failed),
        eventbridge(read),
        eventbridge(create),
        other_source,
        other_type,
    ):
        assert delivered(event) == 0, event["detail"]["eventName"]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "events").glob("*.json")))
def test_our_example_events_arrive_exactly_when_they_should(delivered, name):
    loaded = json.loads((ROOT / "events" / name).read_text())
    found = loaded.get("Records", [loaded])
    for event in found:
        event = event if "detail" in event else eventbridge(event)
        wanted = event["detail"]["eventName"] in lambda_function.CHANGE_EVENTS and not event[
            "detail"
        ].get("errorCode")
        assert delivered(event) == int(wanted), (name, event["detail"]["eventName"])


SAMPLE_ARRIVES = {
    "01": 1,
    "04": 0,
    "05": 0,
    "08": 1,
    "09": 0,
    "10": 1,
    "11": 1,
    "12": 0,
    "13": 1,
    "16": 1,
}


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/cloudtrail-samples absent")
@pytest.mark.parametrize("prefix", sorted(SAMPLE_ARRIVES))
def test_the_real_samples_arrive_exactly_when_they_should(delivered, prefix):
    (path,) = SAMPLES.glob(f"{prefix}_*.json")
    event = json.loads(path.read_text())
    event = event if "detail" in event else eventbridge(event)
    # 04 and 05 come with a redacted envelope ("source": "..."): they must not arrive.
    assert delivered(event) == SAMPLE_ARRIVES[prefix]


def test_the_sweep_runs_on_a_schedule_with_the_input_the_handler_reads():
    schedule = RESOURCES["SweepSchedule"]
    assert schedule["Condition"] == "Sweeps"
    properties = schedule["Properties"]
    assert properties["ScheduleExpression"] == {"Fn::Sub": "rate(${SweepMinutes} minutes)"}
    (target,) = properties["Targets"]
    template, variables = target["Input"]["Fn::Sub"]
    # The accounts as the !If gives them: '"a", "b"' with SweepAccounts, '' without.
    _, joined_accounts, nothing = variables["Accounts"]["Fn::If"]
    _, (quote, inner, _) = joined_accounts["Fn::Join"]
    separator, _ = inner["Fn::Join"]
    for accounts in (["210987654321", "310987654321"], []):
        joined = quote + separator.join(accounts) + quote if accounts else nothing
        filled = (
            template.replace("${SweepMinutes}", "15")
            .replace("${Regions}", "eu-west-1")
            .replace("${Accounts}", joined)
        )
        assert json.loads(filled) == {
            "sweep": {
                "minutes": 15,
                "regions": ["eu-west-1"],
                "accounts": accounts,
            }
        }
    assert RESOURCES["SweepPermission"]["Properties"]["SourceArn"] == {
        "Fn::GetAtt": ["SweepSchedule", "Arn"]
    }
    variables = RESOURCES["Function"]["Properties"]["Environment"]["Variables"]
    assert variables["FAILURE_QUEUE_URL"] == {"Ref": "FailureQueue"}


@pytest.mark.parametrize(
    "rule, condition",
    [
        ("TagRule", "GuardsTags"),
        ("ForwardedTagRule", "GuardsTags"),
        ("ForwardTagRule", "ForwardsTags"),
    ],
)
def test_tag_changes_reach_the_function_only_for_security_groups_and_only_when_asked(
    rule, condition
):
    """From the function's own region, and forwarded from other regions and accounts."""
    from moto.events.models import EventPattern

    rule = RESOURCES[rule]
    assert rule["Condition"] == condition
    pattern = rule["Properties"]["EventPattern"]
    tag_calls, creations = pattern["detail"]["$or"]
    assert tag_calls["eventName"] == list(lambda_function.TAG_EVENTS)
    assert tag_calls["requestParameters"] == {
        "resourcesSet": {"items": {"resourceId": [{"prefix": "sg-"}]}}
    }
    assert creations["eventName"] == list(lambda_function.CREATION_EVENTS)
    assert pattern["detail"]["errorCode"] == [{"exists": False}]
    assert creations["requestParameters"] == {
        "tagSpecificationSet": {"items": {"resourceType": ["security-group"]}}
    }
    # moto's matcher does not descend into arrays of objects (the items above: EventBridge
    # matches a pattern against each element of an array, its user guide says), so it
    # proves the $or and the errorCode with the eventName alone.
    shallow = json.loads(json.dumps(pattern))
    for branch in shallow["detail"]["$or"]:
        del branch["requestParameters"]
    matcher = EventPattern.load(json.dumps(shallow))
    for name in ("CreateTags", "DeleteTags", "CreateSecurityGroup"):
        assert matcher.matches_event(call("ec2.amazonaws.com", name, {}))
        assert not matcher.matches_event(call("ec2.amazonaws.com", name, {}, error="Denied"))
    assert not matcher.matches_event(call("ec2.amazonaws.com", "DeleteSecurityGroup", {}))
    for permission, source in [
        ("TagPermission", "TagRule"),
        ("ForwardedTagPermission", "ForwardedTagRule"),
    ]:
        assert RESOURCES[permission]["Properties"]["SourceArn"] == {
            "Fn::GetAtt": [source, "Arn"]
        }


def test_buffered_delivery_sends_every_rule_to_the_queue_and_batches_reach_the_function():
    """Delivery=buffered: the rules' targets become the buffer; only this stack's rules may
    send to it; Lambda reads it in batches and is told which messages failed."""
    rules = ["Rule", "ForwardedRule", "TagRule", "ForwardedTagRule"]
    rules += ["RuleTagRule", "ForwardedRuleTagRule"]  # Approvers set
    for name in rules:
        (target,) = RESOURCES[name]["Properties"]["Targets"]
        assert target["Arn"] == {
            "Fn::If": [
                "Buffers",
                {"Fn::GetAtt": ["BufferQueue", "Arn"]},
                {"Fn::GetAtt": ["Function", "Arn"]},
            ]
        }
    for name in ("BufferQueue", "BufferQueuePolicy", "BufferMapping"):
        assert RESOURCES[name]["Condition"] == "Buffers"
    # and EventBridge may invoke the function itself only when it does
    for name in ("Permission", "ForwardedPermission"):
        assert RESOURCES[name]["Condition"] == "InvokesDirectly"
    for name in ("TagPermission", "ForwardedTagPermission"):
        assert RESOURCES[name]["Condition"] == "TagsInvokeDirectly"
    for name in ("RuleTagPermission", "ForwardedRuleTagPermission"):
        assert RESOURCES[name]["Condition"] == "ExceptionsInvokeDirectly"
    mapping = RESOURCES["BufferMapping"]["Properties"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["MaximumBatchingWindowInSeconds"] <= 5
    statement, *denials = RESOURCES["BufferQueuePolicy"]["Properties"]["PolicyDocument"][
        "Statement"
    ]
    assert {denial["Effect"] for denial in denials} == {"Deny"}
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    # the very rules, by ARN: a name prefix would admit a rule anyone may create
    sources = statement["Condition"]["ArnEquals"]["aws:SourceArn"]
    named = [found["Fn::If"][1] if "Fn::If" in found else found for found in sources]
    assert named == [{"Fn::GetAtt": [rule, "Arn"]} for rule in rules]
    queue = RESOURCES["BufferQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["FailureQueue", "Arn"]
    }


def resolved(value, parameters):
    """A template value with Ref and Fn::Sub of parameters resolved (what the rule holds)."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return parameters[value["Ref"]]
    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        return re.sub(r"\$\{(\w+)\}", lambda m: parameters[m[1]], value["Fn::Sub"])
    if isinstance(value, dict):
        return {k: resolved(v, parameters) for k, v in value.items()}
    if isinstance(value, list):
        return [resolved(v, parameters) for v in value]
    return value


def call(source, name, params, error=None):
    """A CloudTrail record of a management call, as EventBridge delivers it."""
    found = {
        "eventSource": source,
        "eventName": name,
        "requestParameters": params,
        "userIdentity": {"arn": "arn:aws:iam::123456789012:user/mallory"},
        **({"errorCode": error} if error else {}),
    }
    return {
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws." + source.split(".")[0],
        "detail": found,
    }


QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/sg-guardrail"
TOPIC = "arn:aws:sns:us-east-1:123456789012:sg-guardrail-alerts"
FUNCTION_ROLE = "arn:aws:iam::123456789012:role/sg-guardrail-function"
# Request parameters as CloudTrail writes them for each service (their API references'
# request members, camelCase; Lambda's event names carry the API version).
TAMPERING = [
    ("events.amazonaws.com", "DisableRule", {"name": "sg-guardrail"}),
    ("events.amazonaws.com", "DeleteRule", {"name": "sg-guardrail-forwarded"}),
    (
        "events.amazonaws.com",
        "RemoveTargets",
        {"rule": "sg-guardrail", "ids": ["function"]},
    ),
    (
        "events.amazonaws.com",
        "PutTargets",
        {"rule": "sg-guardrail-tags", "targets": []},
    ),
    ("events.amazonaws.com", "PutRule", {"name": "sg-guardrail", "eventPattern": "{}"}),
    (
        "lambda.amazonaws.com",
        "UpdateFunctionCode20150331v2",
        {"functionName": "sg-guardrail"},
    ),
    (
        "lambda.amazonaws.com",
        "UpdateFunctionConfiguration20150331v2",
        {"functionName": "arn:aws:lambda:us-east-1:123456789012:function:sg-guardrail"},
    ),
    (
        "lambda.amazonaws.com",
        "PutFunctionConcurrency20171031",
        {"functionName": "sg-guardrail"},
    ),
    (
        "lambda.amazonaws.com",
        "AddPermission20150331v2",
        {"functionName": "sg-guardrail"},
    ),
    (
        "lambda.amazonaws.com",
        "DeleteFunction20150331",
        {"functionName": "sg-guardrail"},
    ),
    (
        "lambda.amazonaws.com",
        "PutFunctionEventInvokeConfig",
        {"functionName": "sg-guardrail"},
    ),
    ("sqs.amazonaws.com", "SetQueueAttributes", {"queueUrl": QUEUE + "-failures"}),
    ("sqs.amazonaws.com", "PurgeQueue", {"queueUrl": QUEUE + "-buffer"}),
    ("iam.amazonaws.com", "PutRolePolicy", {"roleName": "sg-guardrail-function"}),
    ("iam.amazonaws.com", "AttachRolePolicy", {"roleName": "sg-guardrail-member"}),
    (
        "iam.amazonaws.com",
        "UpdateAssumeRolePolicy",
        {"roleName": "sg-guardrail-function"},
    ),
    ("cloudtrail.amazonaws.com", "StopLogging", {"name": "main"}),
    ("cloudtrail.amazonaws.com", "DeleteTrail", {"name": "main"}),
    # Another function given the guardrail's role, and what makes it never silent (an
    # attacker's review found these untold).
    (
        "lambda.amazonaws.com",
        "CreateFunction20150331",
        {"functionName": "helper", "role": FUNCTION_ROLE},
    ),
    (
        "lambda.amazonaws.com",
        "UpdateFunctionConfiguration20150331v2",
        {"functionName": "helper", "role": FUNCTION_ROLE},
    ),
    (
        "monitoring.amazonaws.com",
        "DisableAlarmActions",
        {"alarmNames": ["sg-guardrail-left-open"]},
    ),
    ("monitoring.amazonaws.com", "DeleteAlarms", {"alarmNames": ["sg-guardrail-errors"]}),
    ("monitoring.amazonaws.com", "PutMetricAlarm", {"alarmName": "sg-guardrail-errors"}),
    ("logs.amazonaws.com", "DeleteLogGroup", {"logGroupName": "/aws/lambda/sg-guardrail"}),
    ("sns.amazonaws.com", "Unsubscribe", {"subscriptionArn": TOPIC + ":0b6f4d2e"}),
    ("sns.amazonaws.com", "SetSubscriptionAttributes", {"subscriptionArn": TOPIC + ":0b6f"}),
    (
        "sns.amazonaws.com",
        "SetTopicAttributes",
        {"topicArn": TOPIC, "attributeName": "Policy"},
    ),
    # A data protection policy whose Deny blocks every publish (a third review)
    ("sns.amazonaws.com", "PutDataProtectionPolicy", {"resourceArn": TOPIC}),
]
NOT_TAMPERING = [
    (
        "lambda.amazonaws.com",
        "UpdateFunctionCode20150331v2",
        {"functionName": "billing"},
    ),
    ("events.amazonaws.com", "DisableRule", {"name": "nightly-report"}),
    (
        "sqs.amazonaws.com",
        "PurgeQueue",
        {"queueUrl": QUEUE.replace("sg-guardrail", "orders")},
    ),
    ("iam.amazonaws.com", "PutRolePolicy", {"roleName": "app"}),
    (  # the stack creating the guardrail's own function
        "lambda.amazonaws.com",
        "CreateFunction20150331",
        {"functionName": "sg-guardrail", "role": FUNCTION_ROLE},
    ),
    (
        "lambda.amazonaws.com",
        "CreateFunction20150331",
        {"functionName": "helper", "role": FUNCTION_ROLE.replace("sg-guardrail", "app")},
    ),
    ("monitoring.amazonaws.com", "DeleteAlarms", {"alarmNames": ["billing-high"]}),
    ("logs.amazonaws.com", "DeleteLogGroup", {"logGroupName": "/aws/lambda/billing"}),
    ("sns.amazonaws.com", "Unsubscribe", {"subscriptionArn": TOPIC + "-other:0b6f4d2e"}),
]


def tamper_pattern():
    from moto.events.models import EventPattern

    rule = RESOURCES["TamperRule"]["Properties"]
    parameters = {
        "FunctionName": "sg-guardrail",
        "MemberRoleName": "sg-guardrail-member",
        "NotificationTopicArn": TOPIC,
    }
    assert rule["Targets"] == [{"Id": "topic", "Arn": {"Ref": "NotificationTopicArn"}}]
    return EventPattern.load(json.dumps(resolved(rule["EventPattern"], parameters)))


@pytest.mark.parametrize(("source", "name", "params"), TAMPERING)
def test_the_tamper_rule_tells_every_change_to_the_guardrails_own_resources(
    source, name, params
):
    pattern = tamper_pattern()  # moto's EventBridge pattern matcher ($or, prefix, wildcard)
    assert pattern.matches_event(call(source, name, params))
    assert not pattern.matches_event(call(source, name, params, error="AccessDenied"))


@pytest.mark.parametrize(("source", "name", "params"), NOT_TAMPERING)
def test_the_tamper_rule_is_quiet_about_other_resources(source, name, params):
    assert not tamper_pattern().matches_event(call(source, name, params))


def test_no_one_but_this_stacks_senders_may_put_a_message_where_the_function_reads():
    """Inside one account an identity policy alone grants sqs:SendMessage: only an explicit
    Deny keeps someone from handing the function a made-up event."""
    buffer = RESOURCES["BufferQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    failures = RESOURCES["FailureQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    (deny_buffer,) = [s for s in buffer if s["Sid"] == "NoOtherSender"]
    assert (deny_buffer["Effect"], deny_buffer["Principal"]) == ("Deny", "*")
    allowed = next(s for s in buffer if s["Sid"] == "OnlyThisStacksRules")
    assert (
        deny_buffer["Condition"]["ArnNotEquals"]["aws:SourceArn"]
        == allowed["Condition"]["ArnEquals"]["aws:SourceArn"]
    )
    for statements_ in (buffer, failures):
        readers = [s for s in statements_ if s["Sid"] == "NoReaderButTheFunctionsRole"]
        assert readers and readers[0]["Effect"] == "Deny"
    (deny_failures,) = [s for s in failures if s["Sid"] == "NoSenderButTheFunctionsRole"]
    assert deny_failures["Condition"] == {
        "ArnNotEquals": {"aws:PrincipalArn": {"Fn::GetAtt": ["FunctionRole", "Arn"]}}
    }


def test_the_audit_runs_on_its_schedule_with_the_input_the_handler_reads():
    rule = RESOURCES["AuditRule"]
    assert rule["Condition"] == "Audits"
    assert {"Condition": "HasTopic"} in TEMPLATE["Conditions"]["Audits"]["Fn::And"]
    assert rule["Properties"]["ScheduleExpression"] == {"Ref": "AuditSchedule"}
    assert TEMPLATE["Parameters"]["AuditSchedule"]["Default"] == ""  # off
    (target,) = rule["Properties"]["Targets"]
    template, _ = target["Input"]["Fn::Sub"]
    filled = template.replace("${Regions}", "eu-west-1").replace("${Accounts}", "")
    assert json.loads(filled) == {"audit": {"regions": ["eu-west-1"], "accounts": []}}
    assert RESOURCES["AuditPermission"]["Properties"]["SourceArn"] == {
        "Fn::GetAtt": ["AuditRule", "Arn"]
    }


@pytest.mark.parametrize("role", ["FunctionRole", "MemberRole"])
def test_security_hub_is_granted_only_when_switched_on_and_only_its_own_product(role):
    (policy,) = RESOURCES[role]["Properties"]["Policies"]
    (switched,) = [
        s["Fn::If"]
        for s in policy["PolicyDocument"]["Statement"]
        if "Fn::If" in s and s["Fn::If"][1]["Sid"].startswith("ReportFindings")
    ]
    condition, statement, otherwise = switched
    assert condition == "ReportsFindings" and otherwise == {"Ref": "AWS::NoValue"}
    assert statement["Action"] == ["securityhub:BatchImportFindings"]
    assert statement["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:securityhub:*:${AWS::AccountId}:product/"
        "${AWS::AccountId}/default"
    }
    assert TEMPLATE["Parameters"]["SecurityHubFindings"]["Default"] == "false"
    assert TEMPLATE["Parameters"]["ChatNotifications"]["Default"] == "false"
    variables = RESOURCES["Function"]["Properties"]["Environment"]["Variables"]
    assert variables["SECURITY_HUB_FINDINGS"] == {"Ref": "SecurityHubFindings"}
    assert variables["CHAT_NOTIFICATIONS"] == {"Ref": "ChatNotifications"}
    assert variables["GUARD_TAGS"] == {"Ref": "GuardTags"}  # the sweep's tag pass


@pytest.mark.parametrize(
    ("rule", "condition"),
    [
        ("RuleTagRule", "GrantsExceptions"),
        ("ForwardedRuleTagRule", "GrantsExceptions"),
        ("ForwardRuleTagRule", "ForwardsExceptions"),
    ],
)
def test_tag_changes_on_rules_reach_the_function_only_when_approvers_are_set(rule, condition):
    """Exceptions that expire: CreateTags/DeleteTags on sgr-… rules, from every region and
    account, and only with Approvers; the function's rights on rule tags likewise."""
    rule = RESOURCES[rule]
    assert rule["Condition"] == condition
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["detail"]["eventName"] == list(lambda_function.TAG_EVENTS)
    assert pattern["detail"]["requestParameters"] == {
        "resourcesSet": {"items": {"resourceId": [{"prefix": "sgr-"}]}}
    }
    assert pattern["detail"]["errorCode"] == [{"exists": False}]
    conditions = TEMPLATE["Conditions"]
    assert conditions["HasApprovers"] == {
        "Fn::Not": [{"Fn::Equals": [{"Fn::Join": [",", {"Ref": "Approvers"}]}, ""]}]
    }
    assert {"Condition": "HasApprovers"} in conditions["UsesEventHistory"]["Fn::Or"]
    for role, switch in (
        ("FunctionRole", "GrantsExceptions"),
        ("MemberRole", "MemberGrantsExceptions"),
    ):
        (policy,) = RESOURCES[role]["Properties"]["Policies"]
        (found,) = [
            s["Fn::If"]
            for s in policy["PolicyDocument"]["Statement"]
            if "Fn::If" in s
            and s["Fn::If"][1]["Sid"] == "PutBackTagsOnRulesChangedByOthersThanApproversIfSet"
        ]
        assert found[0] == switch
        assert found[1]["Condition"] == {
            "ForAllValues:StringEquals": {
                "aws:TagKeys": [lambda_function.EXPIRES_KEY, lambda_function.REASON_KEY]
            }
        }
    variables = RESOURCES["Function"]["Properties"]["Environment"]["Variables"]
    assert variables["MAX_EXCEPTION_HOURS"] == {"Ref": "MaxExceptionHours"}
    # the sweep is what ends exceptions: no approvers without it
    (needs,) = TEMPLATE["Rules"]["ExceptionsNeedTheSweep"]["Assertions"]
    assert needs["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "SweepMinutes"}, "0"]}]}
    hours = TEMPLATE["Parameters"]["MaxExceptionHours"]
    assert (hours["MinValue"], hours["MaxValue"]) == (
        1,
        lambda_function.MOST_EXCEPTION_HOURS,
    )
