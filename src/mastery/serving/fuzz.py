"""Fuzz a live API from its own OpenAPI schema with schemathesis (4.x), with a bounded number of cases.

For every operation, schemathesis generates ``max_examples`` requests that fit the schema (positive)
and ``max_examples`` that break it (negative); each is sent over HTTP and its response checked:
no 5xx (``not_a_server_error``), a documented status code, a body that matches the documented
schema and content type. Generation is derandomised (a fixed seed): the number of cases per operation
repeats; a few negative cases (e.g. which invalid bytes make up a body) can differ between processes.
Checks: :data:`CHECKS`.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# not_a_server_error is the point; the others hold the API to its documentation: positive (valid) cases
# answered 2xx, negative (invalid) ones 4xx, and every status, content type and body as documented.
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
          "positive_data_acceptance", "negative_data_rejection")


@dataclass
class OperationResult:
    operation: str
    mode: str
    cases: int = 0
    statuses: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)  # check name -> count
    examples: list[str] = field(default_factory=list)  # a few failing requests, as curl commands

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)


@dataclass
class FuzzResult:
    operations: list[OperationResult]

    @property
    def cases(self) -> int:
        return sum(o.cases for o in self.operations)

    @property
    def server_errors(self) -> int:
        return sum(o.server_errors for o in self.operations)

    def statuses(self, mode: str | None = None) -> Counter:
        total: Counter = Counter()
        for o in self.operations:
            if mode is None or o.mode == mode:
                total.update(o.statuses)
        return total

    def failures(self) -> Counter:
        total: Counter = Counter()
        for o in self.operations:
            total.update(o.failures)
        return total


def fuzz_api(base_url: str, max_examples: int = 25, seed: int = 0, timeout: float = 10.0,
             schema_path: str = "/openapi.json", headers: dict[str, str] | None = None) -> FuzzResult:
    """Load ``base_url + schema_path`` and fuzz every operation it documents (see the module docstring).

    ``headers`` go with every case and win over generated ones: e.g. the API key (``Authorization``), so the
    cases test the inputs behind authentication rather than 401s."""
    import hypothesis
    import requests
    import schemathesis
    import schemathesis.checks

    checks = [getattr(schemathesis.checks, name) for name in CHECKS]
    session = requests.Session()
    session.trust_env = False  # never route 127.0.0.1 through a proxy from the environment
    schema = schemathesis.openapi.from_url(base_url + schema_path, timeout=timeout)
    results = []
    try:
        for item in schema.get_all_operations():
            operation = item.ok()
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
                result = OperationResult(operation=operation.label, mode=str(mode.value))
                # GET /health has no input: one case is all there is to send, negative mode has nothing to break.
                if not operation.body and not operation.query and mode is schemathesis.GenerationMode.NEGATIVE:
                    continue
                _fuzz_operation(operation, mode, result, base_url, session, checks, max_examples, seed, timeout,
                                hypothesis, headers)
                log.info("fuzzed %s (%s): %d cases, statuses %s", result.operation, result.mode, result.cases,
                         dict(result.statuses))
                results.append(result)
    finally:
        session.close()
    return FuzzResult(results)


def _fuzz_operation(operation: Any, mode: Any, result: OperationResult, base_url: str, session: Any,
                    checks: list[Any], max_examples: int, seed: int, timeout: float, hypothesis: Any,
                    headers: dict[str, str] | None = None) -> None:
    from hypothesis import HealthCheck

    strategy = operation.as_strategy(generation_mode=mode)

    @hypothesis.seed(seed)
    @hypothesis.settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                         phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                         suppress_health_check=list(HealthCheck), print_blob=False)
    @hypothesis.given(case=strategy)
    def send(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=timeout)
        result.cases += 1
        result.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=checks)
        except (Exception, BaseExceptionGroup) as exc:  # a FailureGroup (a BaseExceptionGroup) or one failure
            names = {type(f).__name__ for f in getattr(exc, "exceptions", [exc])}
            for name in names:
                result.failures[name] += 1
            if len(result.examples) < 3:
                result.examples.append(f"{response.status_code} {', '.join(sorted(names))}: "
                                       f"{case.as_curl_command()[:300]}")
        # Never raise: Hypothesis would shrink the failure and stop; we want the counts of every case.

    send()
