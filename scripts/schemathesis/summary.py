"""Summary of the schemathesis runs, and the verdict.

Usage: summary.py OPENAPI_JSON REQUIRED_CHECKS RUN.ndjson...
Prints one line `SCHEMATHESIS cases=N operations=M with_2xx=K failures=F`, then one line per
failure (check, operation, status, curl reproduction against $API), per operation without a 2xx,
and per run error. Exits 1 when there are fewer than MIN_CASES cases, any failure of a required
check, any operation but GET /ws (it answers 101 to a WebSocket upgrade, which these runs cannot
make) without a 2xx over all runs, or any run that did not finish or hit an error.

A 503 is not a failure of not_a_server_error when the operation documents 503 and the answer
carries Retry-After: that is the app's documented overload answer (no pool connection or password
hashing slot in time), not a bug.
"""
import base64
import collections
import json
import os
import re
import shlex
import sys

MIN_CASES = 1000
NO_2XX_EXPECTED = {"GET /ws"}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

openapi_path, required = sys.argv[1], set(sys.argv[2].split(","))
reports = sys.argv[3:]
document = json.load(open(openapi_path))
declared = {}
for path, item in document["paths"].items():
    for method, operation in item.items():
        if method in METHODS:
            declared[f"{method.upper()} {path}"] = set(operation.get("responses", {}))


def body_of(content):
    if not content:
        return None
    if "$base64" in content:
        return base64.b64decode(content["$base64"])
    if "string" in content:
        return content["string"].encode()
    return None


def curl(request):
    parts = ["curl", "-sS", "-i", "-X", request["method"]]
    for name, values in (request.get("headers") or {}).items():
        if name.lower() in ("user-agent", "accept-encoding", "accept", "connection", "content-length",
                            "x-schemathesis-testcaseid"):
            continue
        for value in values:
            if name.lower() == "authorization" and value.startswith("Bearer "):
                parts.append("-H")
                parts.append('"Authorization: Bearer $TOKEN"')
                continue
            parts += ["-H", shlex.quote(f"{name}: {value}")]
    body = body_of(request.get("body"))
    if body is not None:
        try:
            parts += ["--data-binary", shlex.quote(body.decode())]
        except UnicodeDecodeError:
            escaped = "".join("\\x%02x" % b for b in body)
            parts += ["--data-binary", f"$'{escaped}'"]
    url = re.sub(r"^https?://[^/]+", "", request["uri"])
    parts.append(f'"$API"{shlex.quote(url)}')
    return " ".join(parts)


cases = 0
statuses = collections.defaultdict(collections.Counter)
failures = collections.OrderedDict()
tolerated_503 = 0
problems = []
for report in reports:
    run = os.path.basename(report).removesuffix(".ndjson")
    if not os.path.exists(report):
        problems.append(f"ERROR run {run}: no report (schemathesis did not start; see {run}.txt)")
        continue
    finished = False
    for line in open(report):
        event = json.loads(line)
        kind, data = next(iter(event.items()))
        if kind == "EngineFinished":
            finished = True
        elif kind in ("NonFatalError", "FatalError"):
            detail = data.get("info") or data.get("value") or data
            problems.append(f"ERROR run {run}: {kind} {json.dumps(detail)[:300]}")
        elif kind == "ScenarioFinished":
            recorder = data.get("recorder") or {}
            interactions = recorder.get("interactions") or {}
            for case_id, case in (recorder.get("cases") or {}).items():
                interaction = interactions.get(case_id)
                if not interaction or not interaction.get("response"):
                    continue
                value = case["value"]
                operation = f"{value['method']} {value['path']}"
                response, request = interaction["response"], interaction["request"]
                cases += 1
                statuses[operation][response["status_code"]] += 1
                for check in (recorder.get("checks") or {}).get(case_id, []):
                    if check["status"] != "failure":
                        continue
                    failure = check["failure_info"]["failure"]
                    headers = {k.lower() for k in response.get("headers") or {}}
                    if (check["name"] == "not_a_server_error" and response["status_code"] == 503
                            and "retry-after" in headers and "503" in declared.get(operation, ())):
                        tolerated_503 += 1
                        continue
                    key = (check["name"], failure.get("operation") or operation, response["status_code"],
                           failure.get("title", ""))
                    if key in failures:
                        failures[key]["count"] += 1
                        continue
                    text = (body_of(response.get("content")) or b"")[:200].decode(errors="replace")
                    failures[key] = dict(count=1, run=run, curl=curl(request), response=text,
                                         message=(failure.get("message") or "").replace("\n", " | ")[:200])
    if not finished:
        problems.append(f"ERROR run {run}: did not finish (see {run}.txt)")

tested = [op for op in declared if op in statuses]
with_2xx = [op for op in declared if any(200 <= s < 300 for s in statuses.get(op, ()))]
no_2xx = sorted(op for op in declared if op not in with_2xx and op not in NO_2XX_EXPECTED)
required_failures = [k for k in failures if k[0] in required]

print(f"SCHEMATHESIS cases={cases} operations={len(tested)} with_2xx={len(with_2xx)} failures={len(failures)}")
for (check, operation, status, title), f in failures.items():
    print(f"FAILURE {check} {operation} -> {status} ({title}; x{f['count']}, run {f['run']}): {f['message']}"
          f" | response: {f['response']!r} | {f['curl']}")
for operation in no_2xx:
    print(f"NO-2XX {operation}: {dict(sorted(statuses.get(operation, {}).items())) or 'not tested'}")
for problem in problems:
    print(problem)
if tolerated_503:
    print(f"note: {tolerated_503} documented 503 answers with Retry-After (overload) were not counted as failures")

verdict = []
if cases < MIN_CASES:
    verdict.append(f"only {cases} cases (at least {MIN_CASES} wanted)")
if required_failures:
    verdict.append(f"{len(required_failures)} failures of required checks")
if no_2xx:
    verdict.append(f"{len(no_2xx)} operations without a 2xx")
if problems:
    verdict.append(f"{len(problems)} run errors")
if verdict:
    print("schemathesis: FAILED: " + "; ".join(verdict))
    sys.exit(1)
print("schemathesis: passed")
