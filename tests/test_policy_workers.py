"""make test's IAM check across its two workers (conftest.pytest_sessionfinish): it fails the
run on a call iam_policy.json does not grant, and when a worker ends without handing over the
calls it saw (an attacker's review found that a worker lost after its last test passed the
check silently). Each runs test_policy.py and one more test in a pytest of its own."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

UNGRANTED = '''
"""The handler makes a call iam_policy.json does not grant (ec2:DescribeVpcs)."""
import boto3
from moto import mock_aws
from types import SimpleNamespace

import lambda_function


def test_the_handler_calls_something_not_granted(monkeypatch):
    def sneaky(event, context, from_history=False):
        boto3.client("ec2", region_name="us-east-1").describe_vpcs()
        return {"decision": "ignored"}

    monkeypatch.setattr(lambda_function, "handle_event", sneaky)
    with mock_aws():
        lambda_function.lambda_handler({"x": 1}, SimpleNamespace())
'''

# The worker that saw the call dies after its last test and before it hands its output to
# the controller (an OOM kill, a crash in an extension at exit): simulated with os._exit.
DIES = """
import os
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):
        from conftest import CALLED_BY_THE_FUNCTION
        if "ec2:DescribeVpcs" in CALLED_BY_THE_FUNCTION:
            os._exit(1)
"""


def run_two_workers(tmp_path, *plugins):
    (tmp_path / "test_zz_ungranted.py").write_text(UNGRANTED)
    (tmp_path / "die_after_last_test.py").write_text(DIES)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2"]
    command += ["--dist", "loadfile", *plugins, f"--rootdir={ROOT}"]
    command += [str(ROOT / "tests" / "test_policy.py"), str(tmp_path / "test_zz_ungranted.py")]
    return subprocess.run(
        command, check=False, cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_the_check_fails_when_a_worker_saw_an_ungranted_call(tmp_path):
    done = run_two_workers(tmp_path)
    assert done.returncode == 1, done.stdout[-2000:]
    assert "called, not granted: ['ec2:DescribeVpcs']" in done.stdout


def test_a_worker_lost_after_its_last_test_does_not_pass_the_check_silently(tmp_path):
    done = run_two_workers(tmp_path, "-p", "die_after_last_test")
    assert done.returncode != 0, done.stdout[-2000:]  # it was 0: "grants the 0 actions"
    assert "a worker ended without handing over the calls it saw" in done.stdout
