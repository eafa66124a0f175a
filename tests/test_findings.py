"""Findings and chat: Security Hub findings (moto implements BatchImportFindings and
GetFindings) and the chat rendering of the SNS message, both off by default."""

from __future__ import annotations

import json
import subprocess
import sys

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from cloudtrail import (
    ACCOUNT,
    HISTORY,
    OPEN,
    SSH,
    authorize,
    eventbridge,
    rule_set,
    tag,
)
from conftest import CONTEXT, ROOT, bastion_of
from test_accounts import credentials_in

import lambda_function
from lambda_function import EXPIRES_KEY, lambda_handler

# Security Hub User Guide, "Required top-level ASFF attributes".
REQUIRED = {
    "SchemaVersion",
    "Id",
    "ProductArn",
    "GeneratorId",
    "AwsAccountId",
    "Types",
    "CreatedAt",
    "UpdatedAt",
    "Severity",
    "Title",
    "Description",
    "Resources",
}
PRODUCT = f"arn:aws:securityhub:us-east-1:{ACCOUNT}:product/{ACCOUNT}/default"


@pytest.fixture
def hub(aws, monkeypatch):
    """Findings switched on; the findings moto's Security Hub holds, in the own account."""
    monkeypatch.setenv("SECURITY_HUB_FINDINGS", "true")
    securityhub = boto3.client("securityhub", region_name="us-east-1")
    return lambda: securityhub.get_findings()["Findings"]


def described(port, cidr, text):
    return {
        "IpProtocol": "tcp",
        "FromPort": port,
        "ToPort": port,
        "IpRanges": [{"CidrIp": cidr, "Description": text}],
    }


def test_a_reverted_change_is_one_resolved_finding_and_still_one_sns_message(
    ec2, group_id, hub, inbox
):
    event = authorize(ec2, group_id, [SSH])
    result = lambda_handler(event, CONTEXT)
    assert result["decision"] == "reverted"
    assert OPEN not in rule_set(ec2, group_id)
    (finding,) = hub()
    assert set(finding) >= REQUIRED
    assert finding["SchemaVersion"] == "2018-10-08"
    assert finding["Id"] == f"sg-guardrail/us-east-1/{ACCOUNT}/{event['eventID']}"
    assert finding["ProductArn"] == PRODUCT
    assert finding["AwsAccountId"] == ACCOUNT
    assert finding["Workflow"] == {"Status": "RESOLVED"}
    assert finding["RecordState"] == "ARCHIVED"
    assert finding["Severity"] == {"Label": "INFORMATIONAL"}
    assert finding["ProductFields"]["sg-guardrail/exposure"] == "CRITICAL"
    assert finding["Title"].startswith("Reverted: tcp 22 from 0.0.0.0/0 on sg-")
    assert finding["Resources"] == [
        {
            "Type": "AwsEc2SecurityGroup",
            "Id": f"arn:aws:ec2:us-east-1:{ACCOUNT}:security-group/{group_id}",
            "Partition": "aws",
            "Region": "us-east-1",
        }
    ]
    assert finding["CreatedAt"].startswith(event["eventTime"][:-1])
    assert result["finding"] == f"imported {finding['Id']} (resolved)"
    assert len(inbox()) == 1  # the finding is never the only trace


@pytest.mark.parametrize(
    ("permission", "label"),
    [
        (SSH, "CRITICAL"),
        ({**SSH, "FromPort": 3380, "ToPort": 3390}, "CRITICAL"),  # RDP inside
        ({**SSH, "FromPort": 443, "ToPort": 443}, "HIGH"),
        (described(22, "10.0.0.0/8", "inside"), "MEDIUM"),
        ({"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}, "CRITICAL"),
    ],
    ids=["ssh-world", "rdp-in-range", "https-world", "ssh-inside", "all-from-ipv6"],
)
def test_a_change_left_open_is_an_active_finding_its_severity_from_exposure(
    ec2, group_id, hub, monkeypatch, permission, label
):
    monkeypatch.setenv("DRY_RUN", "true")  # left open: the dry run changes nothing
    assert lambda_handler(authorize(ec2, group_id, [permission]), CONTEXT)["decision"] == (
        "dry-run"
    )
    (finding,) = hub()
    assert finding["Severity"] == {"Label": label}
    assert finding["Workflow"] == {"Status": "NEW"}
    assert finding["RecordState"] == "ACTIVE"
    assert "Remediation" in finding


def test_an_unreadable_change_is_active_and_high(ec2, group_id, hub):
    event = authorize(ec2, group_id, [SSH], modern=False)
    event["requestParameters"]["ipPermissions"]["items"][0]["ipProtocol"] = "tcp?"
    assert lambda_handler(event, CONTEXT)["decision"] == "unreadable"
    (finding,) = hub()
    assert (finding["Severity"], finding["RecordState"]) == (
        {"Label": "HIGH"},
        "ACTIVE",
    )


def test_a_retry_updates_the_finding_instead_of_adding_one(ec2, group_id, hub):
    event = authorize(ec2, group_id, [SSH])
    with Stubber(lambda_function.client("ec2", "us-east-1")) as stub:
        stub.add_client_error(
            "revoke_security_group_ingress", service_error_code="RequestLimitExceeded"
        )
        with pytest.raises(ClientError):
            lambda_handler(event, CONTEXT)
    (first,) = hub()
    assert (first["RecordState"], first["Severity"]["Label"]) == ("ACTIVE", "CRITICAL")
    assert lambda_handler(event, CONTEXT)["decision"] == "reverted"  # Lambda's retry
    (again,) = hub()
    assert again["Id"] == first["Id"]
    assert again["RecordState"] == "ARCHIVED"
    assert again["UpdatedAt"] >= first["UpdatedAt"]


def test_the_finding_comes_after_the_undo_and_after_the_sns_message(ec2, group_id, hub, inbox):
    made = []
    for service in ("ec2", "sns", "securityhub"):
        lambda_function.client(service, "us-east-1").meta.events.register(
            f"before-call.{service}", lambda model, **_: made.append(model.name)
        )
    lambda_handler(authorize(ec2, group_id, [SSH]), CONTEXT)
    assert made == ["RevokeSecurityGroupIngress", "Publish", "BatchImportFindings"]


def test_a_refused_finding_never_blocks_the_undo_and_is_logged_and_counted(
    ec2, group_id, hub, inbox, capsys
):
    event = authorize(ec2, group_id, [SSH])
    capsys.readouterr()
    with Stubber(lambda_function.client("securityhub", "us-east-1")) as stub:
        stub.add_client_error(
            "batch_import_findings", service_error_code="AccessDeniedException"
        )
        result = lambda_handler(event, CONTEXT)
    assert result["decision"] == "reverted"
    assert OPEN not in rule_set(ec2, group_id)
    assert len(inbox()) == 1
    assert result["finding"].startswith(
        "failed: AccessDeniedException: An error occurred (AccessDeniedException)"
    )
    metric, line = (json.loads(found) for found in capsys.readouterr().out.splitlines())
    assert metric["FindingsFailed"] == 1
    assert metric["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "FindingsFailed", "Unit": "Count"}
    ]
    assert line["finding"] == result["finding"]


def test_a_finding_security_hub_answers_as_failed_is_counted_as_failed(ec2, group_id, hub):
    event = authorize(ec2, group_id, [SSH])
    # BatchImportFindings' answer as the Security Hub API reference documents it:
    # FailedCount, SuccessCount, FailedFindings [{Id, ErrorCode, ErrorMessage}].
    answer = {
        "FailedCount": 1,
        "SuccessCount": 0,
        "FailedFindings": [
            {"Id": "x", "ErrorCode": "InvalidInput", "ErrorMessage": "bad finding"}
        ],
    }
    with Stubber(lambda_function.client("securityhub", "us-east-1")) as stub:
        stub.add_response("batch_import_findings", answer)
        result = lambda_handler(event, CONTEXT)
    assert result["decision"] == "reverted"
    assert result["finding"] == "failed: ValueError: InvalidInput: bad finding"


def test_off_by_default_the_common_path_stays_one_call(ec2, group_id, calls, inbox):
    result = lambda_handler(authorize(ec2, group_id, [SSH]), CONTEXT)
    assert calls == ["RevokeSecurityGroupIngress"]
    assert "finding" not in result
    assert not any(key[0] == "securityhub" for key in lambda_function._clients)
    (message,) = inbox()
    assert message["Message"].startswith("Reverted: ")  # the text, not JSON


def test_kept_changes_file_no_finding(ec2, group_id, hub, conditions):
    conditions(ALLOWED_RULES=[{"cidr": "0.0.0.0/0"}])
    assert lambda_handler(authorize(ec2, group_id, [SSH]), CONTEXT)["decision"] == "kept"
    assert hub() == []


def test_a_member_accounts_finding_is_filed_in_that_account(ec2, hub, conditions):
    member = "210987654321"
    conditions(MEMBER_ROLE_NAME="sg-guardrail-member")
    keys = credentials_in(member)
    member_ec2 = boto3.client("ec2", region_name="us-east-1", **keys)
    vpc = member_ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    group = member_ec2.create_security_group(GroupName="m", Description="m", VpcId=vpc)
    event = authorize(member_ec2, group["GroupId"], [SSH])
    event["recipientAccountId"] = member
    assert lambda_handler(event, CONTEXT)["decision"] == "reverted"
    assert hub() == []  # not in the central account's Security Hub
    member_hub = boto3.client("securityhub", region_name="us-east-1", **keys)
    (finding,) = member_hub.get_findings()["Findings"]
    assert finding["AwsAccountId"] == member
    assert finding["ProductArn"] == (
        f"arn:aws:securityhub:us-east-1:{member}:product/{member}/default"
    )


def test_nothing_new_is_loaded_with_the_file():
    code = (
        "import sys; import lambda_function; "
        "print([m for m in ('boto3', 'argparse', 'csv', 'hashlib') if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"


# ---- The notification: the rule's description, and the rendering for chat -----------------


def test_the_notification_names_the_rules_description_and_the_console_link(
    ec2, group_id, inbox
):
    lambda_handler(
        authorize(ec2, group_id, [described(22, "0.0.0.0/0", "debug, remove")]), CONTEXT
    )
    (message,) = inbox()
    assert "Descriptions, as the change recorded them:" in message["Message"]
    assert '  - tcp 22 from 0.0.0.0/0: "debug, remove"' in message["Message"]
    assert f"#SecurityGroup:groupId={group_id}" in message["Message"]


@pytest.fixture
def published(aws):
    """The parameters of each Publish the function makes."""
    found = []
    lambda_function.client("sns", "us-east-1").meta.events.register(
        "provide-client-params.sns.Publish", lambda params, **_: found.append(params)
    )
    return found


def test_with_chat_on_one_publish_carries_the_chat_rendering_and_the_same_text(
    ec2, group_id, inbox, published, monkeypatch
):
    event = authorize(
        ec2, group_id, [described(22, "0.0.0.0/0", "see [docs](https://x.example)")]
    )
    lambda_handler(json.loads(json.dumps(event)), CONTEXT)
    (plain,) = inbox()
    monkeypatch.setenv("CHAT_NOTIFICATIONS", "true")
    lambda_handler(
        authorize(
            ec2, group_id, [described(22, "0.0.0.0/0", "see [docs](https://x.example)")]
        ),
        CONTEXT,
    )
    (queued,) = inbox()  # an SQS subscriber gets "default": the text as before
    assert len(published) == 2
    assert "MessageStructure" not in published[0]
    sent = published[1]
    assert sent["MessageStructure"] == "json"
    structured = json.loads(sent["Message"])
    assert structured["default"] == structured["email"] == queued["Message"]
    assert queued["Message"].splitlines()[0] == plain["Message"].splitlines()[0]
    assert sent["Subject"] == queued["Subject"]
    # Amazon Q Developer in chat applications, "Custom notifications" (event schema):
    # https://docs.aws.amazon.com/chatbot/latest/adminguide/custom-notifs.html
    chat = json.loads(structured["https"])
    assert (chat["version"], chat["source"]) == ("1.0", "custom")
    content = chat["content"]
    assert set(content) == {"textType", "title", "description", "nextSteps", "keywords"}
    assert content["textType"] == "client-markdown"
    assert content["title"] == sent["Subject"]
    assert "`tcp 22 from 0.0.0.0/0`" in content["description"]
    # The description is the changer's text: inside a code span, never a live link.
    assert (
        '• `tcp 22 from 0.0.0.0/0: "see [docs](https://x.example)"`' in content["description"]
    )
    assert any(f"#SecurityGroup:groupId={group_id}" in step for step in content["nextSteps"])
    assert chat["metadata"]["eventType"] == "reverted"


def test_a_backtick_in_a_description_cannot_close_the_code_span(
    ec2, group_id, published, monkeypatch, inbox
):
    monkeypatch.setenv("CHAT_NOTIFICATIONS", "true")
    lambda_handler(
        authorize(ec2, group_id, [described(22, "0.0.0.0/0", "x` @here [a](https://b)")]),
        CONTEXT,
    )
    chat = json.loads(json.loads(published[0]["Message"])["https"])
    description = chat["content"]["description"].splitlines()
    line = next(found for found in description if "@here" in found)
    assert line.count("`") == 2 and line.startswith("• `") and line.endswith("`")


def test_a_forged_actor_cannot_put_a_link_in_the_chat_title(
    ec2, group_id, published, monkeypatch, inbox
):
    monkeypatch.setenv("CHAT_NOTIFICATIONS", "true")
    identity = {"type": "IAMUser", "arn": "arn:aws:iam::1:user/[x](https://b) <@U1>"}
    lambda_handler(authorize(ec2, group_id, [SSH], identity=identity), CONTEXT)
    chat = json.loads(json.loads(published[0]["Message"])["https"])
    assert not set("[]<>@") & set(chat["content"]["title"])
    assert (
        "Who: `arn:aws:iam::1:user/[x](https://b) <@U1>`\n" in chat["content"]["description"]
    )


@pytest.mark.parametrize(
    ("region", "partition"),
    [("us-east-1", "aws"), ("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")],
)
def test_a_findings_arns_are_in_its_regions_partition(region, partition):
    result = {
        "decision": "reverted",
        "reason": "not approved by the conditions",
        "rules": ["tcp 22 from 0.0.0.0/0"],
        "account": ACCOUNT,
        "region": region,
        "groupId": "sg-0123456789abcdef0",
        "eventId": "e1",
    }
    finding = lambda_function.asff_finding(result, {"rules": []}, "RESOLVED")
    assert finding["ProductArn"] == (
        f"arn:{partition}:securityhub:{region}:{ACCOUNT}:product/{ACCOUNT}/default"
    )
    assert finding["Resources"][0]["Id"].startswith(f"arn:{partition}:ec2:{region}:")
    assert finding["Resources"][0]["Partition"] == partition


# Attack 3: anyone allowed ec2:CreateTags on a rule writes a link and a mention into the
# team's chat. The sweep's reason quotes the sg-guardrail:expires value (repr, not a code
# span), and chat_message puts result["reason"] on the description's first line as markdown.

CHAT_PAYLOAD = "[Approve the exception](https://evil.example/sso) <!channel>"


def test_a_tag_value_reaches_the_chat_only_in_a_code_span(
    ec2, group_id, conditions, history, inbox, published, monkeypatch
):
    conditions(APPROVERS=["arn:aws:iam::123456789012:role/SecurityApprover"])
    monkeypatch.setenv("CHAT_NOTIFICATIONS", "true")
    bastion = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    # by alice, no approver, minutes before a sweep: event history does not hold it yet
    # (it lags the call by minutes; the live path's confirm-first waits for it too)
    HISTORY.remove(tag(ec2, "CreateTags", bastion, {EXPIRES_KEY: CHAT_PAYLOAD}))
    lambda_handler({"sweep": {"minutes": 15}}, CONTEXT)
    chats = [
        json.loads(json.loads(p["Message"])["https"])
        for p in published
        if p.get("MessageStructure") == "json"
    ]
    assert chats
    first_lines = [c["content"]["description"].splitlines()[0] for c in chats]
    # Before: "*NOT reverted (unreadable)*: sgr-... carries sg-guardrail:expires='[Approve
    # the exception](https://evil.example/sso) <!channel>', and event history holds no ..."
    assert all(is_one_code_span(line.split(": ", 1)[1]) for line in first_lines)


def test_an_iam_paths_link_reaches_the_chat_only_in_a_code_span(
    ec2, group_id, conditions, history, inbox, published, monkeypatch
):
    """IAM paths may hold any ASCII from ! to ~ (IAM API reference, CreateUser Path), so
    an admin of any member account can create user /[Approve](https://evil.example/)/bob.
    The actor is code-spanned on the Who line, but retag_rules puts it in the reason."""
    conditions(APPROVERS=["arn:aws:iam::123456789012:role/SecurityApprover"])
    monkeypatch.setenv("CHAT_NOTIFICATIONS", "true")
    path = "/[Approve the exception](https://evil.example/sso)/"
    bob = {
        "type": "IAMUser",
        "principalId": "AIDAEXAMPLEBOB000001",
        "arn": f"arn:aws:iam::123456789012:user{path}bob",
        "accountId": "123456789012",
        "userName": "bob",
    }
    bastion = bastion_of(ec2, group_id)["SecurityGroupRuleId"]
    found = tag(ec2, "CreateTags", bastion, {EXPIRES_KEY: "2030-01-01T00:00Z"}, identity=bob)
    lambda_handler(eventbridge(found), CONTEXT)
    (sent,) = [p for p in published if p.get("MessageStructure") == "json"]
    chat = json.loads(json.loads(sent["Message"])["https"])
    first = chat["content"]["description"].splitlines()[0]
    # Before: "*Reverted*: sg-guardrail:expires on sgr-… changed by
    # arn:aws:iam::123456789012:user/[Approve the exception](https://evil.example/sso)/bob, …"
    assert is_one_code_span(first.split(": ", 1)[1]), first


def is_one_code_span(text: str) -> bool:
    """Inline code from end to end: a chat renders no link or mention inside it."""
    return len(text) > 2 and text[0] == text[-1] == "`" and "`" not in text[1:-1]
