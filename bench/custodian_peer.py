"""The peer: Cloud Custodian's security-group policy in cloudtrail mode, through its Lambda
entry point (c7n.handler.dispatch_event), on the same moto server and events as ours.

Runs in its own virtualenv (bench/requirements-custodian.txt) and prints one JSON line:
calls per event, median per-event time, and the cold import of c7n.handler.

usage: python bench/custodian_peer.py EVENTS.json (AWS_ENDPOINT_URL set to the moto server)
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

# The usual way to write this guardrail with Custodian: on each AuthorizeSecurityGroupIngress,
# remove the group's ingress rules open to the world.
POLICY = {
    "execution-options": {"account_id": "123456789012", "metrics_enabled": False},
    "policies": [
        {
            "name": "sg-revert-open-ingress",
            "resource": "security-group",
            "mode": {
                "type": "cloudtrail",
                "role": "arn:aws:iam::123456789012:role/custodian",
                "events": [
                    {
                        "source": "ec2.amazonaws.com",
                        "event": "AuthorizeSecurityGroupIngress",
                        "ids": "requestParameters.groupId",
                    }
                ],
            },
            "filters": [{"type": "ingress", "Cidr": {"value": "0.0.0.0/0"}}],
            "actions": [{"type": "remove-permissions", "ingress": "matched"}],
        }
    ],
}


class Context:
    function_name = "custodian-sg-revert-open-ingress"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:custodian"
    aws_request_id = "bench"

    @staticmethod
    def get_remaining_time_in_millis():
        return 30_000


def main() -> int:
    with open(sys.argv[1]) as source:
        events = json.load(source)
    os.chdir(tempfile.mkdtemp())  # dispatch_event reads config.json from the working folder
    with open("config.json", "w") as config:
        json.dump(POLICY, config)
    started = time.perf_counter()
    import botocore.handlers
    import c7n.handler

    import_ms = (time.perf_counter() - started) * 1000
    calls: list[str] = []
    botocore.handlers.BUILTIN_HANDLERS.append(
        ("before-call", lambda model, **_: calls.append(model.name))
    )
    import logging

    logging.disable(logging.CRITICAL)  # its debug logging would dominate the timing
    per_event, counts = [], []
    for event in events:
        calls.clear()
        started = time.perf_counter()
        c7n.handler.dispatch_event(event, Context)
        per_event.append((time.perf_counter() - started) * 1000)
        counts.append(len(calls))
    warm = per_event[1:] or per_event
    print(
        json.dumps(
            {
                "import_ms": import_ms,
                "first_event_ms": per_event[0],
                "median_ms": statistics.median(warm),
                "calls": statistics.median(counts[1:] or counts),
                "which": sorted(set(calls)),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
