"""What a team meets adopting it (#20): typos in the block, one exemption line for every
account, the actor's role, offline replay, missing credentials, the sweep of an organization."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

import boto3
import pytest
from botocore.stub import Stubber
from cloudtrail import (
    ACCOUNT,
    OPEN,
    SSH,
    EventHistory,
    assumed_role,
    authorize,
    rule_set,
)
from conftest import CONTEXT, ROOT, shipped_source
from test_accounts import assumed, credentials_in

import lambda_function
from lambda_function import ConditionsError, check_conditions, lambda_handler, main

__all__ = ["assumed"]  # a fixture, used by name


def load_edited(tmp_path, old, new, env=None, more=()):
    """Import a copy of lambda_function.py, its block as shipped, with edits; (exit code,
    stderr lines)."""
    source = shipped_source()
    for before, after in [(old, new), *more]:
        assert source.count(before) == 1, before
        source = source.replace(before, after)
    (tmp_path / "lambda_function.py").write_text(source)
    done = subprocess.run(
        [sys.executable, "-c", "import lambda_function"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stderr.strip().splitlines()


# ---- The block: a misspelled name, two ARNs glued, one line each ----------------------------


def test_a_misspelled_setting_is_named_in_one_line_not_a_key_error(tmp_path):
    code, lines = load_edited(
        tmp_path,
        "RESTORE_FROM_CLOUDTRAIL = ",
        "RESTORE_FROM_CLOUDTRIAL = ",
    )
    assert code == 1
    assert "KeyError" not in "\n".join(lines)
    assert lines[-1] == (
        "lambda_function.ConditionsError: CONDITIONS: RESTORE_FROM_CLOUDTRAIL = (missing): "
        "the block no longer defines it (RESTORE_FROM_CLOUDTRIAL looks like it: "
        "misspelled?); e.g. True"
    )


@pytest.mark.parametrize(
    "name",
    ["EXEMPT_PRINCIPALS", "LOCKED_GROUP_IDS", "LOCKED_TAGGED", "MEMBER_ROLE_NAME"],
)
def test_a_misspelled_setting_the_environment_adds_to_is_named_too(tmp_path, name):
    env = {"EXEMPT_PRINCIPALS": "arn:aws:iam::111122223333:role/A"}
    env |= {"LOCKED_GROUP_IDS": "sg-0123456789abcdef0", "LOCKED_TAG_KEY": "lock"}
    code, lines = load_edited(tmp_path, f"\n{name}", f"\n{name}S", env)
    assert code == 1
    assert lines[-1].startswith(f"lambda_function.ConditionsError: CONDITIONS: {name} =")
    assert f"{name}S looks like it" in lines[-1]


def test_two_arns_without_the_comma_between_them_are_refused(conditions):
    glued = "arn:aws:iam::111122223333:role/NetworkAdminarn:aws:iam::111122223333:user/alice"
    conditions(EXEMPT_PRINCIPALS=[glued])
    with pytest.raises(ConditionsError) as raised:
        check_conditions()
    assert str(raised.value) == (
        f"CONDITIONS: EXEMPT_PRINCIPALS = {glued[:80]}: holds two ARNs: a comma missing "
        'between two strings?; e.g. ["arn:aws:iam::111122223333:role/NetworkAdmin"]'
    )


@pytest.mark.parametrize(
    ("old", "new", "first"),
    [
        (
            'ONLY_GROUP_IDS: list[str] = []  # e.g. ["sg-0123456789abcdef0"]',
            'ONLY_GROUP_IDS: list[str] = ["sg-x"]',
            "ONLY_GROUP_IDS",
        ),
        # A new user's finding: a misspelled name hid every other problem of the block.
        (
            "RESTORE_FROM_CLOUDTRAIL = ",
            "RESTORE_FROM_CLOUDTRIAL = ",
            "RESTORE_FROM_CLOUDTRAIL",
        ),
    ],
    ids=["a-bad-value", "a-misspelled-name"],
)
def test_several_problems_come_one_line_each(tmp_path, old, new, first):
    code, lines = load_edited(
        tmp_path, old, new, more=[("REVERT_EGRESS = True  #", 'REVERT_EGRESS = "no"  #')]
    )
    assert code == 1
    assert lines[-2].startswith(f"lambda_function.ConditionsError: CONDITIONS: {first}")
    assert lines[-1].startswith("CONDITIONS: REVERT_EGRESS = 'no': must be True or False")


# ---- {account}: this role, in the account where the change happened ------------------------

IN_ITS_ACCOUNT = "arn:aws:iam::{account}:role/NetworkAdmin"


def test_account_token_exempts_the_role_of_the_changes_own_account(ec2, group_id, conditions):
    conditions(EXEMPT_PRINCIPALS=[IN_ITS_ACCOUNT])
    check_conditions()
    event = authorize(ec2, group_id, [SSH], identity=assumed_role("NetworkAdmin", "carol"))
    assert lambda_handler(event, CONTEXT)["decision"] == "kept"
    assert OPEN in rule_set(ec2, group_id)


def test_account_token_does_not_exempt_that_role_of_another_account(ec2, group_id, conditions):
    conditions(EXEMPT_PRINCIPALS=[IN_ITS_ACCOUNT])
    stranger = assumed_role("NetworkAdmin", "mallory", account="999999999999")
    event = authorize(ec2, group_id, [SSH], identity=stranger)
    assert lambda_handler(event, CONTEXT)["decision"] == "reverted"
    assert OPEN not in rule_set(ec2, group_id)


def test_account_token_matches_nothing_while_the_account_is_unreadable(conditions):
    conditions(EXEMPT_PRINCIPALS=[IN_ITS_ACCOUNT])
    change = {
        "account": None,
        "principals": [f"arn:aws:iam::{ACCOUNT}:role/NetworkAdmin"],
    }
    assert lambda_function.exemption_patterns(change) == []
    change["account"] = "*"
    assert lambda_function.exemption_patterns(change) == []


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("arn:aws:iam::{account}:*", "would exempt everyone"),
        ("arn:aws:iam::111122223333:role/{account}", "stands only for the account"),
        ("arn:aws:iam::{account}x:role/A", "stands only for the account"),
    ],
)
def test_account_token_is_checked_at_load(conditions, pattern, says):
    conditions(EXEMPT_PRINCIPALS=[pattern])
    with pytest.raises(ConditionsError, match=re.escape(says)):
        check_conditions()


def test_account_token_is_not_warned_of_as_any_account(conditions, capsys):
    conditions(EXEMPT_PRINCIPALS=[IN_ITS_ACCOUNT], MEMBER_ROLE_NAME="sg-guardrail-member")
    check_conditions()
    assert capsys.readouterr().out == ""
    conditions(EXEMPT_PRINCIPALS=["arn:aws:iam::*:role/NetworkAdmin"])
    check_conditions()
    assert "matches any account" in capsys.readouterr().out


# ---- should_revert: the README's break-glass example, as written --------------------------


def readme_snippet(start: str) -> str:
    """The README's python block that starts with `start`, as a user would paste it."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    (found,) = [block for block in blocks if block.startswith(start)]
    return found


def test_the_readme_break_glass_example_keeps_an_emergency_session(ec2, group_id, conditions):
    scope = {"Any": object}
    exec(readme_snippet("def should_revert("), scope)  # noqa: S102 -- the README's text
    conditions(should_revert=scope["should_revert"])
    check_conditions()
    # The README's account: the function runs there, and so does the change.
    readme_account = "111122223333"
    context = SimpleNamespace(
        invoked_function_arn=f"arn:aws:lambda:us-east-1:{readme_account}:function:g",
        get_remaining_time_in_millis=lambda: 30_000,
    )

    def change_by(identity, permission):
        event = authorize(ec2, group_id, [permission], identity=identity)
        event["recipientAccountId"] = readme_account
        return lambda_handler(event, context)

    emergency = assumed_role("break-glass", "oncall-session", account=readme_account)
    result = change_by(emergency, SSH)
    assert (result["decision"], result["reason"]) == (
        "kept",
        "should_revert returned False",
    )
    assert OPEN in rule_set(ec2, group_id)
    telnet = {**SSH, "FromPort": 23, "ToPort": 23}
    other = change_by(assumed_role("Developer", "x", account=readme_account), telnet)
    assert other["decision"] == "reverted"


def test_the_old_example_never_matched_a_role_session():
    old = "arn:aws:sts::1:assumed-role/break-glass/oncall-session".endswith("/break-glass")
    assert old is False  # why the README's example changed


def test_should_revert_is_given_the_actors_role(ec2, group_id, conditions):
    seen = []
    conditions(should_revert=lambda change: seen.append(change) or True)
    lambda_handler(authorize(ec2, group_id, [SSH]), CONTEXT)  # alice, an IAM user
    deployer = assumed_role("Deployer", "ci-42")
    wider = {**SSH, "FromPort": 2222, "ToPort": 2222}
    lambda_handler(authorize(ec2, group_id, [wider], identity=deployer), CONTEXT)
    assert [change["actorRole"] for change in seen] == [None, "Deployer"]
    assert seen[1]["actor"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/Deployer/ci-42"


@pytest.mark.parametrize(
    ("arn", "role"),
    [
        (
            "arn:aws:sts::111122223333:assumed-role/break-glass/oncall-session",
            "break-glass",
        ),
        ("arn:aws-us-gov:sts::111122223333:assumed-role/A/b/c", "A"),
        ("arn:aws:iam::111122223333:user/alice", None),
        ("arn:aws:iam::111122223333:role/NetworkAdmin", None),
        ("arn:aws:sts::111122223333:assumed-role/no-session", None),
        (None, None),
        (5, None),
    ],
)
def test_the_role_name_is_read_only_from_a_role_sessions_arn(arn, role):
    assert lambda_function.role_name_of(arn) == role


# ---- Replay without credentials, and offline --------------------------------------------


def no_credentials_env(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") or k == "AWS_DEFAULT_REGION"
    }
    return env | {
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def replay_readme_command(tmp_path, *flags):
    """The README's replay command, run as written, with no AWS credentials at all."""
    events = sorted(str(p) for p in (ROOT / "events").glob("*.json"))
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(ROOT / "lambda_function.py", folder)
    shutil.copy(ROOT / "tests" / "shipped.py", folder)
    code = (
        "import sys, lambda_function, shipped; "
        "[setattr(lambda_function, k, v) for k, v in shipped.SHIPPED_CONDITIONS.items()]; "
        "lambda_function.should_revert = lambda change: True; "
        "lambda_function.SETTINGS = lambda_function.check_conditions(); "
        "sys.exit(lambda_function.main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *events, *flags],
        cwd=folder,
        env=no_credentials_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_offline_replay_of_the_example_events_needs_no_credentials(tmp_path):
    done = replay_readme_command(tmp_path, "--offline")
    assert "Traceback" not in done.stderr and "NoCredentials" not in done.stdout
    summary = [line for line in done.stderr.splitlines() if line.startswith("summary")]
    assert summary == ["summary: 9 events: 6 dry-run, 1 error, 2 ignored"]
    # the one error is the in-place edit: its old value and direction live in AWS
    assert "needs AWS (DescribeSecurityGroupRules)" in done.stdout
    assert done.returncode == 1


def test_a_dry_run_without_credentials_says_so_in_one_plain_line(tmp_path):
    done = replay_readme_command(tmp_path, "--dry-run")
    told = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert told == [f"error: {lambda_function.NO_CREDENTIALS}"]
    assert "Traceback" not in done.stderr


def test_offline_calls_no_aws_and_changes_nothing(ec2, group_id, tmp_path, monkeypatch):

    monkeypatch.setattr(lambda_function, "_offline", False)
    monkeypatch.setattr(
        lambda_function, "SETTINGS", lambda_function.SETTINGS
    )  # offline rebinds it
    monkeypatch.setenv("DRY_RUN", "")  # main() sets it: put back after the test
    event = authorize(ec2, group_id, [SSH])
    event["eventTime"] = "2026-01-01T00:00:00Z"  # late: would read AWS
    saved = tmp_path / "event.json"
    saved.write_text(json.dumps(event))
    assert main([str(saved), "--offline"]) == 0
    assert OPEN in rule_set(ec2, group_id)


def test_offline_is_for_files_only(capsys):
    with pytest.raises(SystemExit):
        main(["--since", "1h", "--offline"])
    assert "--offline replays files" in capsys.readouterr().err


# ---- SweepAccounts=organization ------------------------------------------------------------


@pytest.fixture
def organization(aws):
    """An organization (moto implements Organizations): the central account manages it,
    and one member account, with a group, whose change the live path missed."""
    orgs = boto3.client("organizations", region_name="us-east-1")
    orgs.create_organization(FeatureSet="ALL")
    member = orgs.create_account(AccountName="member", Email="m@example.com")[
        "CreateAccountStatus"
    ]["AccountId"]
    ec2 = boto3.client("ec2", region_name="us-east-1", **credentials_in(member))
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    group = ec2.create_security_group(GroupName="m", Description="m", VpcId=vpc)
    return member, ec2, group["GroupId"]


def test_the_sweep_takes_every_account_of_the_organization(organization, assumed):
    member, member_ec2, group = organization
    missed = authorize(member_ec2, group, [SSH])
    missed["recipientAccountId"] = member
    EventHistory([]).serve(lambda_function.client("cloudtrail", "us-east-1"))
    EventHistory([missed]).serve(lambda_function.client("cloudtrail", "us-east-1", member))
    result = lambda_handler({"sweep": {"accounts": ["organization"]}}, CONTEXT)
    assert result["decisions"] == {"reverted": 1}
    assert OPEN not in rule_set(member_ec2, group)
    # the management account is the function's own (swept as itself); the member through
    # its role, and no other
    assert set(assumed) == {f"arn:aws:iam::{member}:role/sg-guardrail-member"}


def test_an_organization_that_cannot_be_listed_is_told_and_the_own_account_swept(aws, inbox):
    EventHistory([]).serve(lambda_function.client("cloudtrail", "us-east-1"))
    orgs = lambda_function.client("organizations", "us-east-1")
    with Stubber(orgs) as stub:
        # Organizations' answer to ListAccounts outside the management account and a
        # delegated administrator (API reference: AccessDeniedException)
        stub.add_client_error(
            "list_accounts",
            "AccessDeniedException",
            "You don't have permissions to access this resource.",
        )
        result = lambda_handler({"sweep": {"accounts": ["organization"]}}, CONTEXT)
    (spot,) = result["blindSpots"]
    assert spot.startswith("the organization's accounts could not be listed")
    (told,) = inbox()
    assert told["Subject"].startswith("Guardrail blind spot: the organization")


def test_an_organization_that_lists_no_accounts_is_told(aws):
    EventHistory([]).serve(lambda_function.client("cloudtrail", "us-east-1"))
    result = lambda_handler({"sweep": {"accounts": ["organization"]}}, CONTEXT)
    (spot,) = result["blindSpots"]
    assert spot.startswith("the organization lists no accounts")


def test_a_list_of_accounts_is_taken_as_it_is(aws):
    spots = []
    assert lambda_function.listed_accounts(["111122223333"], spots) == ["111122223333"]
    assert lambda_function.listed_accounts("organization", spots) == "organization"
    assert spots == []


# ---- The README and docs/ (#18) ---------------------------------------------------------


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a page's headings."""
    found = set()
    for heading in re.findall(r"(?m)^#+ (.+)$", markdown):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize(
    "page", ["README.md", *sorted(p.name for p in (ROOT / "docs").glob("*.md"))]
)
def test_every_link_between_the_readme_and_docs_resolves(page):
    path = ROOT / page if page == "README.md" else ROOT / "docs" / page
    text = path.read_text()
    for target in re.findall(r"\]\(([^)#\s]*)(#[^)\s]*)?\)", text):
        file, anchor = target
        if file.startswith("http"):
            continue
        resolved = (path.parent / file).resolve() if file else path
        assert resolved.exists(), f"{page}: {file}"
        if anchor:
            assert anchor[1:] in anchors(resolved.read_text()), f"{page}: {file}{anchor}"


def test_the_readme_keeps_the_sections_issue_18_names_and_the_first_deploy_comes_earlier():
    text = (ROOT / "README.md").read_text()
    headings = re.findall(r"(?m)^## (.+)$", text)
    for wanted in (
        "Quick start",
        "What it decides",
        "Deploy",
        "What it says",
        "Limits",
    ):
        assert any(h.startswith(wanted) for h in headings), wanted
    auditing = text[text.index("## Auditing this file") :]
    assert "`# The default path`" in auditing
    assert "`# The rest is optional`" in auditing
    first_deploy = text.index("make deploy BUCKET=")
    assert text[:first_deploy].count("\n") < 400  # it was at line 450


def test_the_zip_size_the_docs_quote_is_the_zips_within_a_tenth(tmp_path):
    """The size quoted went stale once (37.4 KB for a 49 KB zip): now a test notices."""
    quoted = re.search(r"grown to ([\d.]+) KB", (ROOT / "docs" / "benchmark.md").read_text())
    subprocess.run(
        ["make", "-s", "package", f"DIST={tmp_path}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    built = tmp_path / f"sg-guardrail-{lambda_function.__version__}.zip"
    size_kb = built.stat().st_size / 1024
    assert abs(size_kb - float(quoted[1])) <= size_kb / 10, (size_kb, quoted[1])
