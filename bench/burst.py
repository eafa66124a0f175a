"""`make burst`: the bad day, simulated. A thousand rule changes in minutes, AWS's throttling.

Pieces, all on this machine:
- A moto server behind an EC2 throttle: token buckets per account, region and action category
  with the sizes of AWS's "Request throttling for the Amazon EC2 API" page (EC2 developer
  guide), shared by every caller. Past a bucket, EC2's answer: HTTP 503, RequestLimitExceeded.
  The same front answers CloudTrail LookupEvents from the burst's own records (moto has none),
  at 2 requests a second, in the API reference's shape.
- The changer: threads calling AuthorizeSecurityGroupIngress as fast as the API lets them (a
  script or a Terraform apply by a role nobody exempted), each success written as its
  CloudTrail record and delivered after CloudTrail's delay.
- Lambda's asynchronous invocation: execution environments as processes (each with its own
  module state and warm clients, as in Lambda), a concurrency limit, a function error retried
  twice (1 and 2 minutes later), a maximum event age, the on-failure queue (moto's SQS); then
  the scheduled sweep, every 15 minutes, until nothing is left.
- Time is compressed by one factor (TIME_FACTOR): every rate and every delay, the buckets'
  refill, botocore's backoff, Lambda's retries and timeout, the clock the function reads.
  When nothing is in flight the clock skips ahead to the next thing due. Figures are counts
  and simulated seconds.
"""

from __future__ import annotations

import heapq
import io
import itertools
import json
import multiprocessing
import os
import random
import re
import socket
import sys
import threading
import time
import types
import urllib.parse
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.update(
    AWS_ACCESS_KEY_ID="harness",
    AWS_SECRET_ACCESS_KEY="harness",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
)
for name in ("AWS_PROFILE", "DRY_RUN", "NOTIFY_TOPIC_ARN", "AWS_LAMBDA_FUNCTION_NAME"):
    os.environ.pop(name, None)

FACTOR = float(os.environ.get("TIME_FACTOR", "20"))
SEED = 7
ACCOUNT = "123456789012"
CONCURRENCY = int(os.environ.get("BURST_CONCURRENCY", "10"))  # environments at once
LAMBDA_TIMEOUT = 60  # template.yaml
RETRY_DELAYS = (
    60,
    120,
)  # Lambda's two retries of a function error, "about 1 and 2 minutes"
MAX_EVENT_AGE = 3600  # template.yaml: MaximumEventAgeInSeconds
DELIVERY_DELAY = (3, 30)  # CloudTrail to EventBridge, seconds, uniform (assumed)
SWEEP_EVERY = 15 * 60
CHANGER_THREADS = 4

# AWS's request token buckets, (capacity, refill per second), by action category.
BUCKETS = {
    "resource-intensive": (
        50,
        5,
    ),  # AuthorizeSecurityGroupIngress, RevokeSecurityGroupIngress
    "mutating": (50, 5),
    "non-mutating": (100, 20),
    "unfiltered": (50, 10),  # DescribeSecurityGroups without a filter or paging
    "CreateTags": (100, 10),
    "DeleteTags": (100, 10),
    "LookupEvents": (2, 2),  # CloudTrail: 2 per second per account and region
}
# EC2's answer past a bucket (its query API's error shape, HTTP 503).
THROTTLED = (
    b"<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
    b"<Message>Request limit exceeded.</Message></Error></Errors>"
    b"<RequestID>burst</RequestID></Response>"
)
RESOURCE_INTENSIVE = {"AuthorizeSecurityGroupIngress", "RevokeSecurityGroupIngress"}
UNFILTERED = {"DescribeSecurityGroups"}


def category(action: str, params: dict) -> str:
    if action in RESOURCE_INTENSIVE:
        return "resource-intensive"
    if action in BUCKETS:
        return action
    if action.startswith(("Describe", "Get", "List", "Search")):
        paged = any(k.startswith(("Filter", "MaxResults", "NextToken")) for k in params)
        return "unfiltered" if action in UNFILTERED and not paged else "non-mutating"
    return "mutating"


# ---- The clock ----------------------------------------------------------------------------
# Simulated seconds since the start: (real seconds) x FACTOR, plus whatever was skipped while
# nothing was in flight. Shared with the environments (forked processes).
SKIPPED = multiprocessing.Value("d", 0.0)
REAL_START = time.monotonic()
SIM_EPOCH = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def now() -> float:
    return (time.monotonic() - REAL_START) * FACTOR + SKIPPED.value


def stamp(seconds: float) -> str:
    return (SIM_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


class SimDateTime(datetime):
    @classmethod
    def now(cls, tz=None):
        moment = SIM_EPOCH + timedelta(seconds=now())
        return moment if tz is None else moment.astimezone(tz)


def compressed_time_module() -> types.SimpleNamespace:
    """The time module as botocore's backoff and the function's pacing see it: sleeps are
    FACTOR times shorter; the monotonic clock stays real (deadlines come from the context)."""
    shim = types.SimpleNamespace(
        **{k: getattr(time, k) for k in dir(time) if not k.startswith("__")}
    )
    shim.sleep = lambda seconds: time.sleep(max(0.0, seconds) / FACTOR)
    return shim


def compress_botocore() -> None:
    """botocore's backoff (standard and adaptive modes) sleeps in the endpoint."""
    import botocore.endpoint

    botocore.endpoint.time = compressed_time_module()


# ---- The throttle in front of moto ----------------------------------------------------------
CREDENTIAL = re.compile(r"Credential=([^/]+)/[^/]+/([^/]+)/([^/]+)/")


class Front:
    """WSGI middleware: buckets, counts, LookupEvents from the burst's records."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.tokens: dict[tuple, float] = {}
        self.filled: dict[tuple, float] = {}
        self.counts: Counter = Counter()
        self.revoked_at: dict[str, float] = {}
        self.history: list[dict] = []
        self.phase = "live"

    def take(self, key: tuple, name: str) -> bool:
        capacity, rate = BUCKETS[name]
        with self.lock:
            moment = now()
            tokens = self.tokens.get(key, capacity)
            tokens = min(capacity, tokens + (moment - self.filled.get(key, moment)) * rate)
            self.filled[key] = moment
            if tokens < 1:
                self.tokens[key] = tokens
                return False
            self.tokens[key] = tokens - 1
            return True

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        found = CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        caller, region, service = found.groups() if found else ("?", "?", "?")
        if service == "cloudtrail":
            return self.lookup_events(environ, body, region, caller, start_response)
        if service != "ec2" or caller == "harness":
            return self.app(environ, start_response)
        params = dict(urllib.parse.parse_qsl(body.decode()))
        action = params.get("Action", "?")
        bucket = category(action, params)
        if not self.take((ACCOUNT, region, bucket), bucket):
            self.counts[caller, action, "throttled"] += 1
            if caller == "function":
                self.counts[self.phase, "throttled"] += 1
            start_response("503 Service Unavailable", [("Content-Type", "text/xml")])
            return [THROTTLED]
        status = []

        def remember(code, headers, *rest):
            status.append(code)
            return start_response(code, headers, *rest)

        answer = list(self.app(environ, remember))
        ok = status and status[0].startswith("200")
        self.counts[caller, action, "ok" if ok else "failed"] += 1
        if caller == "function":
            self.counts[self.phase, "calls"] += 1
        if ok and action.startswith("RevokeSecurityGroup"):
            moment = now()
            for key, value in params.items():
                if key.startswith("SecurityGroupRuleId."):
                    self.revoked_at.setdefault(value, moment)
        return answer

    def lookup_events(self, environ, body, region, caller, start_response):
        """CloudTrail LookupEvents (JSON 1.1): the records of the region, newest first, by
        event name and time, 50 a page (the API reference's shape)."""
        if not self.take((ACCOUNT, region, "LookupEvents"), "LookupEvents"):
            self.counts[caller, "LookupEvents", "throttled"] += 1
            start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.1")])
            return [
                json.dumps(
                    {"__type": "ThrottlingException", "message": "Rate exceeded"}
                ).encode()
            ]
        asked = json.loads(body or b"{}")
        names = [
            a["AttributeValue"]
            for a in asked.get("LookupAttributes", [])
            if a["AttributeKey"] == "EventName"
        ]
        start, end = asked.get("StartTime", 0), asked.get("EndTime", 1e12)
        found = [
            r
            for r in reversed(self.history)
            if r["awsRegion"] == region
            and (not names or r["eventName"] in names)
            and start <= r["_at"] <= end
        ]
        offset = int(asked.get("NextToken") or 0)
        page = found[offset : offset + 50]
        answer = {
            "Events": [
                {
                    "EventId": r["eventID"],
                    "EventName": r["eventName"],
                    "EventTime": r["_at"],
                    "CloudTrailEvent": json.dumps({k: v for k, v in r.items() if k != "_at"}),
                }
                for r in page
            ]
        }
        if offset + 50 < len(found):
            answer["NextToken"] = str(offset + 50)
        self.counts[caller, "LookupEvents", "ok"] += 1
        start_response("200 OK", [("Content-Type", "application/x-amz-json-1.1")])
        return [json.dumps(answer).encode()]


# ---- Lambda's execution environments ------------------------------------------------------


class Context:
    """Lambda's context, in simulated time (the function's clock is simulated too)."""

    invoked_function_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:sg-guardrail"

    def __init__(self):
        self.until = now() + LAMBDA_TIMEOUT

    def get_remaining_time_in_millis(self):
        return max(0, int((self.until - now()) * 1000))


def environment(port: int, mode: str, tasks, results) -> None:
    """One Lambda execution environment: cold once, then warm, one event at a time."""
    os.environ.update(
        AWS_ACCESS_KEY_ID="function",
        AWS_SECRET_ACCESS_KEY="function",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
    )
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- the function's log lines, for good
    import boto3

    boto3.DEFAULT_SESSION = None  # forked from the harness: forget its credentials
    compress_botocore()
    import lambda_function

    lambda_function.datetime = types.SimpleNamespace(
        datetime=SimDateTime,
        UTC=UTC,
        timedelta=timedelta,
        timezone=__import__("datetime").timezone,
    )
    # The function's clock: its deadlines, margins and pacing in simulated seconds.
    lambda_function.time = compressed_time_module()
    lambda_function.time.monotonic = now
    attempts = int(os.environ.get("BURST_MAX_ATTEMPTS", lambda_function.MAX_ATTEMPTS))
    lambda_function.MAX_ATTEMPTS = attempts
    lambda_function.CLIENT_SETTINGS = {
        **lambda_function.CLIENT_SETTINGS,
        "retries": {"mode": mode, "total_max_attempts": attempts},
    }
    while True:
        task = tasks.get()
        if task is None:
            return
        number, event, crash, env = task
        os.environ.update(env)
        try:
            if crash is True:
                raise RuntimeError("injected function error")
            if crash:  # buffered: these messages fail, the batch's others go on
                event = {
                    "Records": [m for m in event["Records"] if m["messageId"] not in crash]
                }
                result = (
                    lambda_function.lambda_handler(event, Context())
                    if event["Records"]
                    else {"batchItemFailures": []}
                )
                result["batchItemFailures"] += [{"itemIdentifier": m} for m in crash]
            else:
                result = lambda_function.lambda_handler(event, Context())
            results.put((number, "ok", result))
        except Exception as error:  # noqa: BLE001 -- any function error: Lambda retries it
            results.put((number, "error", f"{type(error).__name__}: {str(error)[:200]}"))


# ---- One scenario ---------------------------------------------------------------------------


def run(scenario: dict, mode: str, delivery: str = "direct") -> dict:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
    from cloudtrail import camel, eventbridge, record

    SKIPPED.value = 0.0
    global REAL_START
    REAL_START = time.monotonic()
    context = multiprocessing.get_context("fork")
    tasks, results = context.Queue(), context.Queue()
    # Environments start before the server's threads (fork is then safe); they learn the port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workers = [
        context.Process(target=environment, args=(port, mode, tasks, results), daemon=True)
        for _ in range(CONCURRENCY)
    ]
    for worker in workers:
        worker.start()
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class Quiet(MotoRequestHandler):
        def log_request(self, *args, **kwargs):
            pass

    front = Front(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, front, True, request_handler=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto's state lives in this process: each scenario starts from an empty AWS.
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    harness = {
        region: boto3.client("ec2", region_name=region, endpoint_url=endpoint)
        for region in scenario["regions"]
    }
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)
    queue_url = sqs.create_queue(QueueName="sg-guardrail-failures")["QueueUrl"]
    env = {"FAILURE_QUEUE_URL": queue_url}  # handed to the environments with each task

    groups = []
    for region, ec2 in harness.items():
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        for n in range(scenario["groups"] // len(harness)):
            group = ec2.create_security_group(GroupName=f"g{n}", Description="g", VpcId=vpc)[
                "GroupId"
            ]
            groups.append((region, group))
    baseline = rule_count(harness, groups)

    # The changes: distinct rules, spread over the groups, in calls of `per_call` rules.
    rng = random.Random(SEED)
    per_call = scenario["per_call"]
    calls = []
    for n in range(scenario["rules"] // per_call):
        region, group = groups[n % len(groups)]
        ranges = [
            {"CidrIp": f"198.51.{(n * per_call + i) // 250}.{(n * per_call + i) % 250}/32"}
            for i in range(per_call)
        ]
        calls.append(
            (
                region,
                group,
                {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": ranges},
            )
        )
    deliveries: list = []  # heap of (due, seq, event)
    seq = itertools.count()
    created_at: dict[str, float] = {}
    lock = threading.Lock()
    changer_config = Config(retries={"mode": "standard", "total_max_attempts": 10})
    last_change = [0.0]

    def changer(share):
        clients = {
            region: boto3.client(
                "ec2",
                region_name=region,
                endpoint_url=endpoint,
                config=changer_config,
                aws_access_key_id="changer",
                aws_secret_access_key="changer",
            )
            for region in scenario["regions"]
        }
        for region, group, permission in share:
            while True:  # a script that keeps going until its change is in
                try:
                    answer = clients[region].authorize_security_group_ingress(
                        GroupId=group, IpPermissions=[permission]
                    )
                    break
                except (ClientError, BotoCoreError):
                    continue  # throttled past its retries: the script tries again
            moment = now()
            created = answer.get("SecurityGroupRules", [])
            request = {"groupId": group, "ipPermissions": camel([permission])}
            response = {
                "_return": True,
                "securityGroupRuleSet": camel(
                    [{"GroupOwnerId": ACCOUNT, **r} for r in created]
                ),
            }
            found = record("AuthorizeSecurityGroupIngress", request, response, region=region)
            found["eventTime"] = stamp(moment)
            with lock:
                last_change[0] = max(last_change[0], moment)
                for rule in created:
                    created_at[rule["SecurityGroupRuleId"]] = moment
                front.history.append(
                    {
                        **found,
                        "_at": (SIM_EPOCH + timedelta(seconds=moment)).timestamp(),
                    }
                )
                heapq.heappush(
                    deliveries,
                    (
                        moment + rng.uniform(*DELIVERY_DELAY),
                        next(seq),
                        eventbridge(found),
                    ),
                )

    compress_botocore()
    changers = [
        threading.Thread(target=changer, args=(calls[i::CHANGER_THREADS],))
        for i in range(CHANGER_THREADS)
    ]
    for thread in changers:
        thread.start()

    # Lambda's asynchronous queue: (due, seq, invocation); invocations are dicts.
    waiting: list = []
    delivered: list = []  # (when, group) of each event handed to Lambda
    in_flight: dict[int, dict] = {}
    numbers = itertools.count()
    counters = Counter()
    invocations = Counter()
    crash_once = scenario.get("crash_once", 0.0)
    crash_always = scenario.get("crash_always", 0.0)
    sweeps = []
    next_sweep = SWEEP_EVERY

    def dispatch(invocation):
        number = next(numbers)
        in_flight[number] = invocation
        crash = invocation["crash"] == "always" or (
            invocation["crash"] == "once" and invocation["attempt"] == 0
        )
        tasks.put((number, invocation["event"], crash, env))
        invocations["invocations"] += 1

    # Buffered delivery: the SQS queue (visible at, seq, message) and its batches.
    buffer: list = []
    message_ids = itertools.count()

    def dispatch_batch(moment):
        ready = [item for item in buffer if item[0] <= moment]
        if not ready or len(in_flight) >= CONCURRENCY:
            return
        oldest = min(item[0] for item in ready)
        if len(ready) < BATCH_SIZE and moment - oldest < BATCH_WINDOW:
            return
        ready.sort()
        taken = ready[:BATCH_SIZE]
        for item in taken:
            buffer.remove(item)
        messages = [item[2] for item in taken]
        crash = [
            m["id"]
            for m in messages
            if m["crash"] == "always" or (m["crash"] == "once" and m["received"] == 0)
        ]
        records = [
            {
                "messageId": m["id"],
                "body": json.dumps(m["event"]),
                "eventSource": "aws:sqs",
            }
            for m in messages
        ]
        number = next(numbers)
        in_flight[number] = {"batch": messages}
        tasks.put((number, {"Records": records}, crash, env))
        invocations["invocations"] += 1

    def batch_done(invocation, outcome, detail):
        failed = (
            {f["itemIdentifier"] for f in detail.get("batchItemFailures", [])}
            if outcome == "ok"
            else {m["id"] for m in invocation["batch"]}
        )
        for message in invocation["batch"]:
            if message["id"] not in failed:
                invocations["handled"] += 1
                continue
            message["received"] += 1
            if message["received"] >= MAX_RECEIVES:  # the buffer's redrive policy
                sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(message["event"]))
                counters["failed_to_queue"] += 1
            else:
                buffer.append((now() + VISIBILITY_TIMEOUT, next(seq), message))

    while True:
        moment = now()
        with lock:
            while deliveries and deliveries[0][0] <= moment:
                _, _, event = heapq.heappop(deliveries)
                delivered.append((moment, event["detail"]["requestParameters"]["groupId"]))
                roll = rng.random()
                crash = (
                    "always"
                    if roll < crash_always
                    else "once"
                    if roll < crash_always + crash_once
                    else None
                )
                if delivery == "buffered":
                    message = {"id": f"m{next(message_ids)}", "event": event}
                    message.update(received=0, crash=crash)
                    buffer.append((moment, next(seq), message))
                    continue
                heapq.heappush(
                    waiting,
                    (
                        moment,
                        next(seq),
                        {"event": event, "attempt": 0, "first": moment, "crash": crash},
                    ),
                )
        dispatch_batch(moment)
        while waiting and waiting[0][0] <= moment and len(in_flight) < CONCURRENCY:
            _, _, invocation = heapq.heappop(waiting)
            if moment - invocation["first"] > MAX_EVENT_AGE:
                send_to_failure_queue(sqs, queue_url, invocation)
                counters["failed_to_queue"] += 1
                continue
            dispatch(invocation)
        while not results.empty():
            number, outcome, detail = results.get()
            invocation = in_flight.pop(number)
            if invocation.get("sweep"):
                sweeps.append(detail if outcome == "ok" else {"error": detail})
                continue
            if "batch" in invocation:
                batch_done(invocation, outcome, detail)
                continue
            invocations[outcome] += 1
            if outcome == "ok":
                invocations[detail["decision"]] += 1
                continue
            if invocation["attempt"] < len(RETRY_DELAYS):
                delay = RETRY_DELAYS[invocation["attempt"]]
                heapq.heappush(
                    waiting,
                    (
                        now() + delay,
                        next(seq),
                        {**invocation, "attempt": invocation["attempt"] + 1},
                    ),
                )
            else:
                send_to_failure_queue(sqs, queue_url, invocation)
                counters["failed_to_queue"] += 1
        changing = any(thread.is_alive() for thread in changers)
        idle = not (deliveries or waiting or buffer or in_flight)
        if not changing and idle:
            if (
                sweeps
                and open_rules(harness, groups, baseline) == 0
                and queue_depth(sqs, queue_url) == 0
            ):
                break
            if len(sweeps) >= 6:
                break
        sweeping = any(i.get("sweep") for i in in_flight.values())
        if moment >= next_sweep and not sweeping:  # the schedule's invocation
            number = next(numbers)
            in_flight[number] = {"sweep": True}
            front.phase = "sweep"
            sweep = {"sweep": {"minutes": 15, "regions": scenario["regions"]}}
            tasks.put((number, sweep, False, env))
            next_sweep += SWEEP_EVERY
        # Nothing in flight and nothing due soon: skip ahead to the next thing due.
        if not changing and not in_flight:
            due = [next_sweep]
            if deliveries:
                due.append(deliveries[0][0])
            if waiting:
                due.append(waiting[0][0])
            if buffer:
                due.append(min(item[0] for item in buffer) + BATCH_WINDOW)
            ahead = min(due) - now()
            if ahead > 1:
                SKIPPED.value += ahead
        time.sleep(0.002)

    for _ in workers:
        tasks.put(None)
    for worker in workers:
        worker.join(timeout=5)
    left_open = open_rules(harness, groups, baseline)
    server.shutdown()
    revoked = {rule: at for rule, at in front.revoked_at.items() if rule in created_at}
    exposures = [revoked[rule] - created_at[rule] for rule in revoked]
    counts = front.counts
    changer_throttled = sum(
        v for key, v in counts.items() if key[0] == "changer" and key[-1] == "throttled"
    )
    swept = Counter()
    for found in sweeps:
        swept.update(found.get("decisions", {}))
    return {
        "rulesAdded": len(created_at),
        "leftOpen": left_open,
        "failureQueue": counters["failed_to_queue"],
        "sweeps": len(sweeps),
        "swept": dict(swept),
        "sweepErrors": [s["error"] for s in sweeps if "error" in s][:2],
        "blindSpots": [b for s in sweeps for b in s.get("blindSpots", [])][:3],
        "invocations": invocations["invocations"],
        "functionErrors": invocations["error"],
        "liveCallsPerRule": counts["live", "calls"] / max(1, len(created_at)),
        "liveThrottled": counts["live", "throttled"],
        "batchedCallsPerRule": batched_calls(delivered) / max(1, len(created_at)),
        "sweepCalls": counts["sweep", "calls"],
        "sweepThrottled": counts["sweep", "throttled"],
        "changerThrottled": changer_throttled,
        "burstSeconds": last_change[0],
        "tail": max(revoked.values(), default=0) - last_change[0],
        "maxExposure": max(exposures, default=0),
        "medianExposure": sorted(exposures)[len(exposures) // 2] if exposures else 0,
        "realSeconds": time.monotonic() - REAL_START,
        "decisions": {
            k: v for k, v in invocations.items() if k not in ("invocations", "ok", "error")
        },
    }


BATCH_WINDOW = 2  # template.yaml, Delivery=buffered: MaximumBatchingWindowInSeconds
BATCH_SIZE = 100  # BatchSize
VISIBILITY_TIMEOUT = 360  # a failed message is seen again after this
MAX_RECEIVES = 3  # then the buffer's dead-letter queue: the failure queue


def batched_calls(delivered: list) -> int:
    """Revoke calls had the events been buffered and revoked one call per group per batch
    window (an estimate from the delivery times: the buffered mode is not built)."""
    calls, window, groups = 0, None, set()
    for when, group in sorted(delivered):
        if window is None or when >= window + BATCH_WINDOW:
            calls += len(groups)
            window, groups = when, set()
        groups.add(group)
    return calls + len(groups)


def send_to_failure_queue(sqs, url, invocation) -> None:
    """Lambda's on-failure destination record (AWS Lambda developer guide)."""
    body = {
        "version": "1.0",
        "requestContext": {
            "condition": "RetriesExhausted",
            "approximateInvokeCount": invocation["attempt"] + 1,
        },
        "requestPayload": invocation["event"],
        "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
    }
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))


def queue_depth(sqs, url) -> int:
    found = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
        ],
    )
    return sum(int(v) for v in found["Attributes"].values())


def rule_count(harness, groups) -> int:
    return sum(len(rules(harness[region], group)) for region, group in groups)


def rules(ec2, group) -> list:
    found = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group]}]
    )
    return found["SecurityGroupRules"]


def open_rules(harness, groups, baseline) -> int:
    return rule_count(harness, groups) - baseline


SCENARIOS = [
    {
        "name": "1,000 single-rule changes, 50 groups",
        "rules": 1000,
        "per_call": 1,
        "groups": 50,
        "regions": ["us-east-1"],
    },
    {
        "name": "1,000 rules in 60-rule calls",
        "rules": 1020,
        "per_call": 60,
        "groups": 50,
        "regions": ["us-east-1"],
    },
    {
        "name": "1,000 single-rule changes to one group",
        "rules": 1000,
        "per_call": 1,
        "groups": 1,
        "regions": ["us-east-1"],
    },
    {
        "name": "1,000 single-rule changes in two regions",
        "rules": 1000,
        "per_call": 1,
        "groups": 50,
        "regions": ["us-east-1", "eu-west-1"],
    },
    {
        "name": "1,000 single-rule changes, 5% of events fail once, 1% always",
        "rules": 1000,
        "per_call": 1,
        "groups": 50,
        "regions": ["us-east-1"],
        "crash_once": 0.05,
        "crash_always": 0.01,
    },
]


RESULTS = ROOT / "bench" / "BURST.md"
# (label, botocore retry mode, delivery)
MODES = [
    ("direct, standard retries", "standard", "direct"),
    ("direct, adaptive retries", "adaptive", "direct"),
    ("buffered, standard retries", "standard", "buffered"),
]


def table(rows: list) -> str:
    header = (
        "| Scenario | Mode | Rules added | Left open | Failure queue (closed by sweep) "
        "| Calls per rule (buffered, est.) | Throttled: function / changer | Burst "
        "| Exposure median / max | Tail |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {name} | {mode} | {r['rulesAdded']:,} | **{r['leftOpen']}** "
        f"| {r['failureQueue']} ({r['swept'].get('reverted', 0)}) "
        f"| {r['liveCallsPerRule']:.2f} ({r['batchedCallsPerRule']:.2f}) "
        f"| {r['liveThrottled']} / {r['changerThrottled']} "
        f"| {r['burstSeconds']:.0f} s | {r['medianExposure']:.0f} s / {r['maxExposure']:.0f} s "
        f"| {r['tail']:.0f} s |"
        for name, mode, r in rows
    ]
    return header + "\n".join(lines) + "\n"


def main() -> int:
    only = os.environ.get("BURST_ONLY")
    wanted = os.environ.get("BURST_MODES", "standard,adaptive,buffered").split(",")
    modes = [
        (label, retry, delivery)
        for label, retry, delivery in MODES
        if label.split(",")[0] in wanted or retry in wanted and delivery == "direct"
    ]
    rows = []
    started = time.monotonic()
    for scenario in SCENARIOS:
        if only and only not in scenario["name"]:
            continue
        for label, retry, delivery in modes:
            result = run(scenario, retry, delivery)
            rows.append((scenario["name"], label, result))
            print(
                json.dumps({"scenario": scenario["name"], "mode": label, **result}),
                flush=True,
            )
    text = (
        f"# make burst ({datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores, "
        f"{time.monotonic() - started:.0f} s)\n\n"
        f"Time compressed {FACTOR:g}x: every rate and delay; figures in simulated seconds. "
        f"EC2 buckets per account, region and category (AuthorizeSecurityGroupIngress and "
        f"RevokeSecurityGroupIngress share one: 50, refilled 5 a second); {CONCURRENCY} "
        f"Lambda environments; CloudTrail delay {DELIVERY_DELAY[0]}-{DELIVERY_DELAY[1]} s; "
        f"Lambda retries after {RETRY_DELAYS[0]} and {RETRY_DELAYS[1]} s; sweep every "
        f"{SWEEP_EVERY // 60} min. Calls per rule: the function's EC2 calls on the live path "
        "(throttled answers apart) per rule added. Exposure: from a rule's creation to its "
        "revoke. Tail: from the last change to the last revoke.\n\n"
        "Stable from run to run and machine to machine: rules added, left open, the failure "
        "queue and what the sweep closed, calls per rule (counts and ratios). The throttled "
        "counts and every time (burst, exposure, tail) depend on how fast this machine runs "
        "moto under the compression: they move by up to hundreds of simulated seconds "
        "between machines, so read them as orders of magnitude, never as a figure to "
        "compare with another machine's.\n\n" + table(rows)
    )
    if not only:
        RESULTS.write_text(text)
    print("\n" + text)
    return 1 if any(result["leftOpen"] for _, _, result in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
