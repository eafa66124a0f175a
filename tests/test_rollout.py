"""The Organization rollout: one parameter file read by make deploy (the central stack) and
make stackset (a service-managed StackSet of member stacks), run here against a stand-in
`aws` command that records what it is asked (no AWS is reached)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from cfnlint.decode.cfn_yaml import load as load_template
from conftest import ROOT

import lambda_function

sys.path.insert(0, str(ROOT / "deploy"))
import parameters

EXAMPLE = ROOT / "deploy" / "parameters.example.json"
TEMPLATE = load_template(str(ROOT / "template.yaml"))

FAKE_AWS = """#!{python}
import json, os, sys
args = sys.argv[1:]
files = {{}}
for arg in args:
    for word in arg.split(" "):
        if word.startswith("file://") and word.endswith(".json"):
            files[word] = json.load(open(word[len("file://"):]))
with open(os.environ["AWS_CALLS"], "a") as log:
    log.write(json.dumps({{"args": args, "files": files}}) + "\\n")
if args[:2] == ["cloudformation", "describe-stack-set"]:
    sys.exit(0 if os.environ.get("STACK_SET_EXISTS") else 254)
"""


@pytest.fixture
def aws_cli(tmp_path):
    """A stand-in `aws` first on PATH; returns a function reading the calls it got."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "aws"
    fake.write_text(FAKE_AWS.format(python=sys.executable))
    fake.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env["AWS_CALLS"] = str(calls)
    env["DIST"] = str(tmp_path / "dist")  # not the clone's dist/

    def run(*target, **more_env):
        done = subprocess.run(
            ["make", "-s", *target],
            cwd=ROOT,
            env={**env, **more_env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        found = [json.loads(line) for line in calls.read_text().splitlines()]
        calls.unlink()
        return found

    return run


def values(parameter_list):
    return {p["ParameterKey"]: p["ParameterValue"] for p in parameter_list}


def test_make_deploy_uploads_the_versioned_zip_and_deploys_with_the_file(aws_cli):
    upload, deploy = aws_cli(
        "deploy", "BUCKET=my-artifacts", f"PARAMETERS={EXAMPLE}", "PARAMS=DryRun=false"
    )
    version = lambda_function.__version__
    assert upload["args"][:2] == ["s3", "cp"]
    assert upload["args"][2].endswith(f"/dist/sg-guardrail-{version}.zip")
    key = upload["args"][3].removeprefix("s3://my-artifacts/")
    assert key.startswith(f"sg-guardrail/{version}-") and key.endswith(".zip")
    assert deploy["args"][:2] == ["cloudformation", "deploy"]
    # template.yaml is over the 51,200 bytes a template body may hold: it goes by S3
    assert deploy["args"][deploy["args"].index("--s3-bucket") + 1] == "my-artifacts"
    (sent,) = deploy["files"].values()
    example = json.loads(EXAMPLE.read_text())
    assert values(sent) == {
        "Mode": "central",
        **example,
        "CodeBucket": "my-artifacts",
        "CodeKey": key,
        "DryRun": "false",  # PARAMS on top of the file, for this stack only
    }


def test_make_deploy_without_a_file_still_works(aws_cli):
    _, deploy = aws_cli("deploy", "BUCKET=b")
    (sent,) = deploy["files"].values()
    assert set(values(sent)) == {"Mode", "CodeBucket", "CodeKey", "CentralRegion"}


@pytest.mark.parametrize(
    ("given", "central"),
    [
        ([], "ap-south-1"),  # the region deployed to
        ([f"PARAMETERS={EXAMPLE}"], "eu-west-1"),  # the file's
        (["PARAMS=CentralRegion=us-east-1"], "us-east-1"),  # a forwarder's stack, said so
    ],
    ids=["none-given", "from-the-file", "from-params"],
)
def test_make_deploy_puts_the_function_in_the_region_it_deploys_to(aws_cli, given, central):
    """The template's CentralRegion defaults to us-east-1, where alone it deploys the
    function: `make deploy BUCKET=...` in ap-south-1 made only a forwarder, to a function
    that did not exist, with nothing to say so (a new user's finding)."""
    _, deploy = aws_cli("deploy", "BUCKET=b", *given, AWS_REGION="ap-south-1")
    (sent,) = deploy["files"].values()
    assert values(sent)["CentralRegion"] == central


def test_make_stackset_creates_a_service_managed_stackset_for_the_ous(aws_cli):
    ous = "ou-ab12-11111111 ou-ab12-22222222"
    found = aws_cli(
        "stackset",
        "BUCKET=my-artifacts",
        f"PARAMETERS={EXAMPLE}",
        f"OUS={ous}",
        "REGIONS=eu-west-1 us-east-1",
    )
    copied, described, created, instances = found
    assert copied["args"][:3] == ["s3", "cp", "template.yaml"]
    key = copied["args"][3].removeprefix("s3://my-artifacts/")
    assert described["args"][:2] == ["cloudformation", "describe-stack-set"]
    args = created["args"]
    assert args[:2] == ["cloudformation", "create-stack-set"]
    assert args[args.index("--permission-model") + 1] == "SERVICE_MANAGED"
    assert args[args.index("--auto-deployment") + 1].startswith("Enabled=true")
    # over the 51,200 bytes of a template body: by S3
    assert args[args.index("--template-url") + 1] == (
        f"https://my-artifacts.s3.amazonaws.com/{key}"
    )
    assert args[args.index("--capabilities") + 1] == "CAPABILITY_NAMED_IAM"
    (member,) = created["files"].values()
    assert values(member)["Mode"] == "member"
    args = instances["args"]
    assert args[:2] == ["cloudformation", "create-stack-instances"]
    targets = args[args.index("--deployment-targets") + 1]
    assert targets == "OrganizationalUnitIds=ou-ab12-11111111,ou-ab12-22222222"
    start = args.index("--regions") + 1
    assert args[start : start + 2] == ["eu-west-1", "us-east-1"]


def test_make_stackset_again_updates_the_stackset(aws_cli):
    found = aws_cli(
        "stackset",
        "BUCKET=my-artifacts",
        f"PARAMETERS={EXAMPLE}",
        "OUS=ou-ab12-11111111",
        "REGIONS=eu-west-1",
        STACK_SET_EXISTS="1",
    )
    assert [call["args"][1] for call in found] == [
        "cp",
        "describe-stack-set",
        "update-stack-set",
    ]


def test_one_file_sets_the_central_and_the_member_stacks_alike(aws_cli):
    """Locks, tags, restores and the sweep: the member role's statements follow the same
    values as the central function's, from the same file."""
    central = values(parameters.parameters("central", str(EXAMPLE), []))
    member = values(parameters.parameters("member", str(EXAMPLE), []))
    assert member.pop("Mode") == "member"
    assert member == {k: central[k] for k in parameters.MEMBER_KEYS if k in central}


def refs(value, found):
    """Every parameter and condition a template value names."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key in ("Condition",) and isinstance(inner, str):
                found.add(("condition", inner))
            elif key == "Fn::If":
                found.add(("condition", inner[0]))
                refs(inner[1:], found)
            elif key == "Fn::Sub":
                text = inner if isinstance(inner, str) else inner[0]
                found.update(
                    name for name in re.findall(r"\$\{([\w:]+)", text) if "::" not in name
                )
                if not isinstance(inner, str):
                    refs(inner[1], found)
            else:
                refs(inner, found)
    elif isinstance(value, list):
        for inner in value:
            refs(inner, found)
    return found


def test_every_parameter_a_member_stack_reads_is_passed_to_it():
    conditions = TEMPLATE["Conditions"]
    member_mode = {"DeployMemberRole", "DeployForwarder", "ForwardsTags"}
    member_mode |= {"MemberGuardsTags"}
    seen = set()
    for resource in TEMPLATE["Resources"].values():
        if resource.get("Condition") in member_mode:
            refs(resource, seen)
            seen.add(("condition", resource["Condition"]))
    pending = [name for kind, name in (s for s in seen if isinstance(s, tuple))]
    done = set()
    while pending:
        name = pending.pop()
        if name in done:
            continue
        done.add(name)
        for inner in refs(conditions[name], set()):
            if isinstance(inner, tuple):
                pending.append(inner[1])
            else:
                seen.add(inner)
    names = {s for s in seen if isinstance(s, str)} & set(TEMPLATE["Parameters"])
    # Conditions that also switch central-only resources name central parameters (the
    # topic, the canary, Delivery): those never change a member stack's resources.
    central_only = {"NotificationTopicArn", "Delivery", "Canary", "CanaryVpcId"}
    central_only |= {"OrganizationId", "CodeBucket", "CodeKey", "SweepAccounts"}
    central_only |= {"SweepRegions", "DryRun", "RevertEgress", "ExemptPrincipals"}
    central_only |= {"LogRetentionDays", "CanaryHours"}
    missing = names - set(parameters.MEMBER_KEYS) - {"Mode"} - central_only
    assert missing == set()
    assert "LockedTagKey" in names and "GuardTags" in names  # the walk reached them


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["central", "Sweepaccounts=organization"], "Sweepaccounts: not a parameter"),
        (["central", "Mode=member"], "Mode is set by the command"),
        (["member"], "CentralAccountId: a member stack needs"),
        (["central", "DryRun"], "wants Key=Value"),
    ],
)
def test_a_wrong_parameter_is_refused_in_one_line(argv, says, capsys):
    assert parameters.main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.splitlines()) == 1


def test_the_example_file_names_only_template_parameters():
    assert set(json.loads(EXAMPLE.read_text())) <= set(TEMPLATE["Parameters"])


def test_the_example_files_exemptions_pin_their_accounts():
    """The file users copy is the safe one: a `*` or `{account}` in an exemption's account
    field exempts whoever may create that role name in a member account (many-accounts.md)."""
    exempt = json.loads(EXAMPLE.read_text())["ExemptPrincipals"].split(",")
    assert exempt and all(re.fullmatch(r"arn:aws:(iam|sts)::\d{12}:.+", p) for p in exempt)


def test_make_deploy_mode_member_deploys_a_member_stack_from_the_same_file(aws_cli):
    _, deploy = aws_cli(
        "deploy", "BUCKET=b", f"PARAMETERS={EXAMPLE}", "MODE=member", "STACK=members"
    )
    args = deploy["args"]
    assert args[args.index("--stack-name") + 1] == "members"
    (sent,) = deploy["files"].values()
    member = values(parameters.parameters("member", str(EXAMPLE), []))
    assert values(sent) == member  # the StackSet's parameters: no code, Mode=member


def test_a_central_region_other_than_the_one_deployed_to_is_said(capsys):
    """A stack holds the function only in CentralRegion: the example file's eu-west-1,
    deployed elsewhere, makes a forwarder alone (a new user's reading)."""
    assert parameters.main(["central", "--region", "us-east-1", "--file", str(EXAMPLE)]) == 0
    err = capsys.readouterr().err
    assert "holds no function, only a forwarder to eu-west-1" in err
    assert parameters.main(["central", "--region", "eu-west-1", "--file", str(EXAMPLE)]) == 0
    assert capsys.readouterr().err == ""
