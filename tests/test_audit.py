"""The audit (--audit, --suggest): what is open already, judged by the handler's own code."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cloudtrail import ACCOUNT, SSH, authorize, rule_set, rules_of
from conftest import CONTEXT, with_shipped_conditions
from test_accounts import MEMBER, member_ec2, member_group

import lambda_function
from lambda_function import audit, lambda_handler, main

__all__ = ["member_ec2", "member_group"]  # fixtures
UNREACHABLE = "333344445555"


def tcp(port, cidr, high=None):
    ranges = ("Ipv6Ranges", "CidrIpv6") if ":" in cidr else ("IpRanges", "CidrIp")
    return {
        "IpProtocol": "tcp",
        "FromPort": port,
        "ToPort": high or port,
        ranges[0]: [{ranges[1]: cidr}],
    }


ICMP_PING = {
    "IpProtocol": "icmp",
    "FromPort": 8,
    "ToPort": -1,
    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
}


def verdicts_by_rule_id(regions=("us-east-1",), accounts=()):
    found, unreachable = audit(list(regions), list(accounts))
    return {v["securityGroupRuleId"]: v for v in found}, unreachable


def created_ids(record: dict[str, Any]) -> list[str]:
    items = record["responseElements"]["securityGroupRuleSet"]["items"]
    return [item["securityGroupRuleId"] for item in items]


@pytest.fixture
def groups(ec2, vpc_id, group_id):
    """Besides the fixture's web group: a locked db group and a group tagged team=ops."""
    db = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc_id)
    ops = ec2.create_security_group(
        GroupName="ops",
        Description="ops",
        VpcId=vpc_id,
        TagSpecifications=[
            {"ResourceType": "security-group", "Tags": [{"Key": "team", "Value": "x"}]}
        ],
    )
    return {"web": group_id, "db": db["GroupId"], "ops": ops["GroupId"]}


def test_what_the_audit_says_would_be_reverted_is_what_the_handler_reverts(
    ec2, groups, conditions
):
    conditions(
        ALLOWED_RULES=[
            {"ipProtocol": "tcp", "fromPort": 443, "toPort": 443, "cidr": "0.0.0.0/0"},
            {"isEgress": False, "cidrWithin": "10.0.0.0/8"},
        ],
        LOCKED_GROUP_IDS=[groups["db"]],
        NEVER_TAGGED={"team": None},
    )
    records = [
        authorize(ec2, groups["web"], [SSH]),
        authorize(ec2, groups["web"], [tcp(443, "0.0.0.0/0"), tcp(8080, "10.1.0.0/16")]),
        authorize(ec2, groups["web"], [ICMP_PING]),
        authorize(ec2, groups["web"], [tcp(25, "0.0.0.0/0")], egress=True),
        authorize(ec2, groups["db"], [tcp(443, "0.0.0.0/0")]),  # allowed, but locked
        authorize(ec2, groups["ops"], [SSH]),  # never guarded: tagged team
    ]
    verdicts, unreachable = verdicts_by_rule_id()
    assert unreachable == []
    said = {
        rule_id: verdicts[rule_id]["verdict"]
        for found in records
        for rule_id in created_ids(found)
    }
    assert sorted(said.values()).count("would revert") == 4  # a check that can fail
    for found in records:
        lambda_handler(found, CONTEXT)
    left = {r["SecurityGroupRuleId"] for g in groups.values() for r in rules_of(ec2, g)}
    done = {rule_id: "kept" if rule_id in left else "would revert" for rule_id in said}
    assert done == said
    assert verdicts[created_ids(records[1])[0]]["why"] == "allowed by ALLOWED_RULES[0]"
    assert verdicts[created_ids(records[1])[1]]["why"] == "allowed by ALLOWED_RULES[1]"
    assert verdicts[created_ids(records[4])[0]]["locked"] is True
    assert "NEVER_TAGGED" in verdicts[created_ids(records[5])[0]]["why"]


def test_a_group_the_conditions_do_not_guard_is_kept_and_egress_may_be_left_alone(
    ec2, group_id, conditions
):
    egress = authorize(ec2, group_id, [tcp(25, "0.0.0.0/0")], egress=True)
    conditions(REVERT_EGRESS=False, NEVER_GROUP_IDS=[])
    verdicts, _ = verdicts_by_rule_id()
    (rule_id,) = created_ids(egress)
    assert verdicts[rule_id]["verdict"] == "kept"
    assert "REVERT_EGRESS" in verdicts[rule_id]["why"]
    conditions(NEVER_GROUP_IDS=[group_id], REVERT_EGRESS=True)
    verdicts, _ = verdicts_by_rule_id()
    assert {v["verdict"] for v in verdicts.values() if v["groupId"] == group_id} == {"kept"}


def test_should_revert_is_asked_as_the_handler_asks_it(ec2, group_id, monkeypatch):
    opened = authorize(ec2, group_id, [SSH])
    asked = []

    def keep_ssh(change):
        asked.append(change)
        return change["rules"][0].get("fromPort") != 22

    monkeypatch.setattr(lambda_function, "should_revert", keep_ssh)
    verdicts, _ = verdicts_by_rule_id()
    (rule_id,) = created_ids(opened)
    assert verdicts[rule_id]["verdict"] == "kept"
    assert verdicts[rule_id]["why"] == "should_revert returned False"
    assert asked and all(change["actor"] == "unknown" for change in asked)
    assert lambda_handler(opened, CONTEXT)["decision"] == "kept"


def test_the_audit_changes_nothing_and_makes_one_rules_walk_per_region(ec2, group_id, capsys):
    authorize(ec2, group_id, [SSH])
    before = rule_set(ec2, group_id)
    made = []
    lambda_function.client("ec2", "us-east-1").meta.events.register(
        "before-call.ec2", lambda model, **_: made.append(model.name)
    )
    assert main(["--audit"]) == 1  # something would be reverted
    assert rule_set(ec2, group_id) == before
    assert made == ["DescribeSecurityGroupRules"]  # no condition needs the groups


def test_the_formats_table_json_and_csv(ec2, group_id, capsys, conditions):
    conditions(ONLY_VPC_IDS=[])  # the fixture's VPC and the default one
    opened = authorize(ec2, group_id, [SSH])
    (rule_id,) = created_ids(opened)
    main(["--audit", "--format", "csv"])
    out, err = capsys.readouterr()
    rows = {row["securityGroupRuleId"]: row for row in csv.DictReader(io.StringIO(out))}
    assert rows[rule_id]["rule"] == "tcp 22 from 0.0.0.0/0"
    assert rows[rule_id]["verdict"] == "would revert"
    assert rows[rule_id]["account"] == ACCOUNT
    assert "summary: " in err
    main(["--audit", "--format", "json"])
    found = json.loads(capsys.readouterr().out)
    (ours,) = [r for r in found["rules"] if r["securityGroupRuleId"] == rule_id]
    assert ours["why"] == "not approved by the conditions"
    main(["--audit"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["account", "region", "groupId"]
    assert any(rule_id in line and "would revert" in line for line in table)
    assert table[-1] == "locked groups: none"


def test_no_region_anywhere_is_said_in_words(monkeypatch, capsys):
    """boto3 finds no region (no --region, no AWS_REGION, no profile's): the command line
    says what to give, not "not a region: ['']"."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    with pytest.raises(SystemExit) as stopped:
        main(["--audit"])
    assert stopped.value.code == 2
    assert "no region: give --region R" in capsys.readouterr().err


def test_an_estate_whose_every_rule_is_allowed_audits_clean(ec2, group_id, conditions):
    conditions(ALLOWED_RULES=[{"cidrWithin": "0.0.0.0/0"}])
    assert main(["--audit"]) == 0


# ---- --suggest: entries for a person to review and paste --------------------------------------


@pytest.fixture
def estate(ec2, vpc_id, group_id):
    """Rules of many shapes in two groups, some the same in both."""
    other = ec2.create_security_group(GroupName="app", Description="a", VpcId=vpc_id)
    other_id = other["GroupId"]
    office = ec2.create_managed_prefix_list(
        PrefixListName="office", AddressFamily="IPv4", MaxEntries=5
    )["PrefixList"]["PrefixListId"]
    for group in (group_id, other_id):
        ec2.authorize_security_group_ingress(
            GroupId=group, IpPermissions=[SSH, tcp(80, "0.0.0.0/0")]
        )
    ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[
            tcp(81, "0.0.0.0/0"),  # touches 80: joined
            tcp(8000, "0.0.0.0/0", 8080),
            tcp(443, "::/0"),
            ICMP_PING,
            {
                "IpProtocol": "udp",
                "FromPort": 53,
                "ToPort": 53,
                "IpRanges": [{"CidrIp": "10.0.0.0/8"}],
            },
            {
                "IpProtocol": "50",  # ESP: no ports (moto wants -1)
                "FromPort": -1,
                "ToPort": -1,
                "IpRanges": [{"CidrIp": "192.0.2.0/24"}],
            },
            {
                "IpProtocol": "tcp",
                "FromPort": 5432,
                "ToPort": 5432,
                "UserIdGroupPairs": [{"GroupId": other_id}],
            },
            {
                "IpProtocol": "tcp",
                "FromPort": 9000,
                "ToPort": 9000,
                "PrefixListIds": [{"PrefixListId": office}],
            },
        ],
    )
    return group_id, other_id


def suggested(capsys) -> tuple[str, list[dict[str, Any]]]:
    """The --suggest text, and the ALLOWED_RULES it sets when pasted into the file."""
    main(["--suggest"])
    text = capsys.readouterr().out
    pasted: dict[str, Any] = {"Any": Any}
    exec(text, pasted)  # noqa: S102 -- the text is ours, printed for a person to paste
    return text, pasted["ALLOWED_RULES"]


def test_suggested_entries_pass_the_load_check_and_keep_exactly_todays_rules(
    ec2, estate, capsys, conditions
):
    _, other_id = estate
    text, entries = suggested(capsys)
    assert "ALLOWED_RULES: list[dict[str, Any]] = [" in text
    conditions(ALLOWED_RULES=entries)
    lambda_function.check_conditions()  # the file's own load check: raises on a problem
    verdicts, _ = verdicts_by_rule_id()
    assert {v["verdict"] for v in verdicts.values()} == {"kept"}
    # Grouped: SSH is one entry for both groups; tcp 80 and 81 one entry, 80-81.
    ssh = [e for e in entries if e.get("fromPort") == 22 and e.get("cidr") == "0.0.0.0/0"]
    assert len(ssh) == 1
    assert {
        "isEgress": False,
        "ipProtocol": "tcp",
        "fromPort": 80,
        "toPort": 81,
        "cidr": "0.0.0.0/0",
    } in entries
    assert len(entries) == len({json.dumps(e, sort_keys=True) for e in entries})
    # Exactly: the same rules are kept when added again; a port or a source more is not.
    again = [tcp(22, "0.0.0.0/0"), tcp(80, "0.0.0.0/0", 81)]
    ec2.revoke_security_group_ingress(
        GroupId=other_id, IpPermissions=[SSH, tcp(80, "0.0.0.0/0")]
    )
    kept = lambda_handler(authorize(ec2, other_id, again), CONTEXT)
    assert kept["decision"] == "kept"
    for wider in (
        tcp(82, "0.0.0.0/0"),
        tcp(22, "0.0.0.0/0", 23),
        tcp(8000, "0.0.0.0/0", 8081),
        tcp(22, "::/0"),
    ):
        result = lambda_handler(authorize(ec2, other_id, [wider]), CONTEXT)
        assert result["decision"] == "reverted", wider


def test_suggest_keeps_the_entries_already_there_and_names_what_no_entry_can_keep(
    ec2, group_id, capsys, conditions
):
    allowed = {
        "ipProtocol": "tcp",
        "fromPort": 443,
        "toPort": 443,
        "cidr": "10.0.0.0/8",
    }
    conditions(ALLOWED_RULES=[allowed], LOCKED_GROUP_IDS=[group_id])
    text, entries = suggested(capsys)
    assert entries[0] == allowed
    assert (
        f"# Not kept by any entry: {group_id} tcp 22 from 192.0.2.0/24: the group is locked"
        in text
    )


# ---- Many accounts ---------------------------------------------------------------------------


def test_member_accounts_are_read_through_their_role_and_an_unreachable_one_is_named(
    ec2, group_id, member_ec2, member_group, conditions, capsys
):
    conditions(MEMBER_ROLE_NAME="sg-guardrail-member")
    member_ec2.authorize_security_group_ingress(GroupId=member_group, IpPermissions=[SSH])

    def refuse(params, **_):
        if UNREACHABLE in params["RoleArn"]:
            raise ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "not authorized"}},
                "AssumeRole",
            )

    lambda_function.client("sts", "us-east-1").meta.events.register(
        "provide-client-params.sts.AssumeRole", refuse
    )
    status = main(["--audit", "--format", "json", "--accounts", f"{MEMBER},{UNREACHABLE}"])
    out, err = capsys.readouterr()
    rules = json.loads(out)["rules"]
    assert {r["account"] for r in rules} == {ACCOUNT, MEMBER}
    (member_ssh,) = [
        r for r in rules if r["groupId"] == member_group and "tcp 22" in r["rule"]
    ]
    assert member_ssh["verdict"] == "would revert"
    assert f"unreachable: {UNREACHABLE}/us-east-1: AccessDenied" in err
    assert "the role needs sts:AssumeRole" in err
    assert status == 1


def test_make_audit_audits_the_demos_groups_on_the_embedded_aws():
    done = subprocess.run(
        with_shipped_conditions(
            "import demo; sys.exit(demo.main(['--audit', '--format', 'json']))"
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr  # the shipped block allows nothing
    found = json.loads(done.stdout[done.stdout.index("\n{") :])
    rules = {r["rule"]: r for r in found["rules"]}
    assert rules["tcp 443 from 0.0.0.0/0"]["description"] == "public HTTPS"
    assert rules["tcp 443 from 0.0.0.0/0"]["verdict"] == "would revert"
    assert len(found["lockedGroups"]) == 1  # the demo's db group
    assert "summary: 9 rules in 4 groups: 9 would be reverted" in done.stderr


def test_a_region_that_cannot_be_read_is_named_and_the_others_are_read(ec2, group_id, capsys):
    def refuse(**_):
        raise ClientError(
            {"Error": {"Code": "UnauthorizedOperation", "Message": "no"}},
            "DescribeSecurityGroupRules",
        )

    lambda_function.client("ec2", "eu-west-3").meta.events.register_first(
        "before-call.ec2.DescribeSecurityGroupRules", refuse
    )
    status = main(
        ["--audit", "--format", "csv", "--region", "us-east-1", "--region", "eu-west-3"]
    )
    out, err = capsys.readouterr()
    assert {row["region"] for row in csv.DictReader(io.StringIO(out))} == {"us-east-1"}
    assert (
        "unreachable: own account/eu-west-3: UnauthorizedOperation: the role needs "
        "ec2:DescribeSecurityGroupRules"
    ) in err
    assert status == 1


# ---- On a schedule: one summary on the topic ---------------------------------------------


def test_the_scheduled_audit_tells_one_summary_on_the_topic_not_one_per_rule(
    ec2, group_id, inbox, capsys
):
    authorize(ec2, group_id, [SSH, tcp(3389, "0.0.0.0/0")])
    before = rule_set(ec2, group_id)
    result = lambda_handler({"audit": {"regions": ["us-east-1"]}}, CONTEXT)
    assert rule_set(ec2, group_id) == before  # it changes nothing
    (message,) = inbox()
    assert result["notification"] == "sent"
    # 2 added, 2 of the fixture's group, the allow-all egress of its group and of the two
    # default groups (the VPC's and the default VPC's)
    assert result["wouldRevert"] == result["rules"] == 7
    assert message["Subject"] == "Audit: 7 of 7 rules would be reverted"
    assert message["MessageAttributes"]["decision"]["Value"] == "audit"
    assert (
        f"{ACCOUNT} us-east-1 {group_id} tcp 22 from 192.0.2.0/24 (bastion): not "
        in (message["Message"])
    )
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["wouldRevert"] == 7


def test_the_scheduled_audit_names_what_it_could_not_read_and_cuts_the_list_short(
    ec2, group_id, inbox, conditions, monkeypatch
):
    monkeypatch.setattr(lambda_function, "AUDIT_LISTED", 2)
    lambda_handler({"audit": {"regions": ["us-east-1"], "accounts": [MEMBER, "no"]}}, CONTEXT)
    (message,) = inbox()
    assert message["Subject"].endswith(", 1 unreachable")
    assert "member accounts: no MEMBER_ROLE_NAME to reach them" in message["Message"]
    assert "(+3 more: python lambda_function.py --audit)" in message["Message"]  # 5 - 2
