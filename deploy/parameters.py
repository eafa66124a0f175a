"""One parameter file for the central stack and the member StackSet (standard library only).

    python deploy/parameters.py central [--region R] [--file F] [Key=Value ...]
    python deploy/parameters.py member --file F [Key=Value ...]

Each prints the template's parameters in CloudFormation's JSON form ([{"ParameterKey": ...,
"ParameterValue": ...}]), which `aws cloudformation deploy --parameter-overrides file://...`
(AWS CLI v2) and `aws cloudformation create-stack-set --parameters file://...` both read.
The file is a JSON object of template parameters (deploy/parameters.example.json); a list
value is joined with commas. `central` is Mode=central with every parameter; `member` is
Mode=member with the parameters a member stack reads (its role's statements follow the same
locks, tags, restores and sweep as the central stack: set once, here), and needs
CentralAccountId. A name the template does not have is refused, in one line. --region
(make deploy's: the region the stack goes to) is the central stack's CentralRegion where
neither the file nor Key=Value names one: the template's default (us-east-1) deploys no
function in any other region, only a forwarder to it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"
# What a member stack (Mode=member) reads: its role's conditions, its forwarding rules and
# the central function it trusts and sends to. Everything else is the central stack's.
MEMBER_KEYS = (
    "FunctionName",
    "MemberRoleName",
    "CentralRegion",
    "CentralAccountId",
    "LockedGroupIds",
    "LockedTagKey",
    "GuardTags",
    "RestoreFromConfig",
    "RestoreFromCloudTrail",
    "SweepMinutes",
    "SecurityHubFindings",
    "Approvers",
)
SET_BY_MODE = ("Mode",)


class ParameterError(ValueError):
    pass


def template_parameters(template: Path = TEMPLATE) -> list[str]:
    """The names under Parameters: in template.yaml (two-space indent, as it is written)."""
    text = template.read_text()
    block = text.split("\nParameters:\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"(?m)^  (\w+):$", block)


def read_file(path: str | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        loaded = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ParameterError(f"{path}: {error}") from None
    if isinstance(loaded, list):  # CloudFormation's own form is read too
        loaded = {p.get("ParameterKey"): p.get("ParameterValue") for p in loaded}
    if not isinstance(loaded, dict):
        raise ParameterError(f"{path}: wants a JSON object of parameter names to values")
    return {key: text_of(key, value) for key, value in loaded.items()}


def text_of(key: str, value: object) -> str:
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int)):
        return str(value)
    raise ParameterError(f"{key}: a string, number, true/false or list, not {value!r}")


def parameters(
    mode: str, path: str | None, extra: list[str], region: str = ""
) -> list[dict[str, str]]:
    values = read_file(path)
    for item in extra:
        key, equals, value = item.partition("=")
        if not equals:
            raise ParameterError(f"{item!r}: wants Key=Value")
        values[key] = value
    known = template_parameters()
    unknown = [key for key in values if key not in known or key in SET_BY_MODE]
    if unknown:
        raise ParameterError(
            f"{', '.join(unknown)}: not a parameter to set here (template.yaml has "
            f"{', '.join(k for k in known if k not in SET_BY_MODE)}; Mode is set by the command)"
        )
    if mode == "member":
        if not re.fullmatch(r"\d{12}", values.get("CentralAccountId", "")):
            raise ParameterError(
                "CentralAccountId: a member stack needs the central account's ID "
                "(in the file, or CENTRAL_ACCOUNT=111122223333)"
            )
        values = {key: values[key] for key in MEMBER_KEYS if key in values}
    if mode == "central" and region and "CentralRegion" not in values:
        values["CentralRegion"] = region
    chosen = {"Mode": mode, **values}
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in chosen.items()]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("central", "member"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    mode, rest = argv[0], argv[1:]
    path, region = None, ""
    if rest[:1] == ["--region"]:
        if len(rest) < 2:
            print("error: --region wants a region (it may be empty)", file=sys.stderr)
            return 2
        region, rest = rest[1], rest[2:]
    if rest[:1] == ["--file"]:
        if len(rest) < 2:
            print("error: --file wants a file", file=sys.stderr)
            return 2
        path, rest = rest[1], rest[2:]
    try:
        found = parameters(mode, path, rest, region)
    except ParameterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    central = {p["ParameterKey"]: p["ParameterValue"] for p in found}.get("CentralRegion")
    if mode == "central" and region and central not in (None, region):
        print(
            f"note: CentralRegion is {central}, not {region}, the region deployed to: this "
            f"stack holds no function, only a forwarder to {central}",
            file=sys.stderr,
        )
    print(json.dumps(found, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
