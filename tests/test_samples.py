"""Real CloudTrail records from public sources (../shared/cloudtrail-samples, when present).

Each is read as it is; the readable ones are also re-enacted on moto: the sample's own request
is made against a moto group, the sample is pointed at that group (and at the rule IDs moto
created), and the handler must leave the group as it was before the call.
"""

from __future__ import annotations

import json

import pytest
from cloudtrail import by_id, reenact
from conftest import CONTEXT, SAMPLES

from lambda_function import BadEvent, describe, lambda_handler, read_change

pytestmark = pytest.mark.skipif(
    not SAMPLES.is_dir(), reason="../shared/cloudtrail-samples absent"
)


def sample(prefix):
    (path,) = SAMPLES.glob(f"{prefix}_*.json")
    return json.loads(path.read_text())


EXPECTED = {
    "08": ["tcp 443 from 0.0.0.0/16"],
    "10": ["all traffic to 0.0.0.0/0"],
    "11": ["tcp 22 from 0.0.0.0/0"],
    "13": ["tcp 0-65535 from sg-4e386e22"],
}
IGNORED = {
    "04": "not an EC2 event",  # redacted envelope
    "05": "not an EC2 event",
    "12": "the call failed",
}
# Successful changes whose records their sources anonymized past undoing: reported, not ignored.
UNREADABLE = {
    "01": "awsRegion is missing or malformed: 'us-northeast-1r'",
    "16": "securityGroupRuleId is missing or malformed: 'sgr-0c609eafsa2af10ea'",
}


@pytest.mark.parametrize("prefix", sorted(EXPECTED))
def test_real_records_read_as_the_rules_they_added(prefix):
    assert [describe(r) for r in read_change(sample(prefix))["rules"]] == EXPECTED[prefix]


@pytest.mark.parametrize("prefix", sorted(IGNORED))
def test_real_records_that_must_be_ignored_are(prefix, aws):
    with pytest.raises(BadEvent, match=IGNORED[prefix]):
        read_change(sample(prefix))
    assert lambda_handler(sample(prefix), CONTEXT)["decision"] == "ignored"


@pytest.mark.parametrize("prefix", sorted(UNREADABLE))
def test_real_records_too_anonymized_to_undo_are_reported_unreadable(prefix, aws):
    result = lambda_handler(sample(prefix), CONTEXT)
    assert result["decision"] == "unreadable"
    assert any(UNREADABLE[prefix] in problem for problem in result["unreadable"])


def test_a_real_creation_without_tags_is_read_as_giving_none(aws):
    """09, CreateSecurityGroup without TagSpecifications: read as a tag call that gave the
    new group no tag (Guard tags), and kept."""
    change = read_change(sample("09"))
    assert change["tagging"] == {
        "groupIds": ["sg-04d018d184a18f647"],
        "ruleIds": [],
        "tags": {},
        "allTags": False,
    }
    assert lambda_handler(sample("09"), CONTEXT)["decision"] == "kept"


def test_every_sample_is_covered():
    prefixes = {path.name[:2] for path in SAMPLES.glob("*.json")}
    assert prefixes == set(EXPECTED) | set(IGNORED) | set(UNREADABLE) | {"09"}


def test_lower_cased_identity_of_a_real_record_is_read():
    principals = read_change(sample("08"))["principals"]
    assert principals[1] == "arn:aws:iam::112233445566:role/TestAdmin"


@pytest.mark.parametrize("prefix", ["01", "08", "10", "11", "13", "16"])
def test_real_records_reenacted_on_moto_are_undone(prefix, ec2, vpc_id):
    event, group, before = reenact(ec2, vpc_id, sample(prefix))
    result = lambda_handler(event, CONTEXT)
    assert result["decision"] == "reverted", result
    assert by_id(ec2, group) == before
