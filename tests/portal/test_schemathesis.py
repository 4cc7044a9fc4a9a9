"""Property-based API tests: schemathesis against the app's own OpenAPI (``/api/openapi.json``).

Every operation is called in-process (schemathesis' ASGI transport) with generated parameters and
bodies, signed in as a dealer admin, an insurer underwriter and a driver of the known world. Two
checks: no 5xx (``not_a_server_error``) and every response matches the schema documented for its
status (``response_schema_conformance``, problem+json errors included). Operations of the caller's
own audience get more examples, and path ids are drawn half the time from the world's real ids so
that the 200 paths are exercised, not just 404s.

Deterministic (``derandomize``, no example database) and bounded (about a minute): DELETE
operations and erasure are left out, they would destroy the module's world the others read.
Failures are collected per operation (hypothesis shrinks each) and reported together, with the
falsifying input; those in ``KNOWN_BUGS`` (reported, not yet fixed) make the test xfail instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import response_schema_conformance

from portal_api.app import create_app

from .conftest import portal_settings
from .world import PASSWORD, World

# who signs in: (label, e-mail of the world's user, path prefixes of that audience's own operations)
CALLERS = {
    "dealer_admin": (lambda w: w.user("dealer_a", "admin"), ("/v1/dealer/", "/v1/org/", "/v1/feed", "/v1/whoami")),
    "insurer_underwriter": (lambda w: w.user("insurer_a", "underwriter"), ("/v1/insurer/", "/v1/feed",
                                                                           "/v1/whoami")),
    "driver": (lambda w: w.driver("carol"), ("/v1/me/", "/v1/organisations")),
}
OWN_EXAMPLES, OTHER_EXAMPLES = 40, 3
SKIPPED = {("POST", "/v1/me/erasure")}  # and every DELETE
# Failures this test found and reported, outside the portal's read paths: while listed, they make
# the test an expected failure (xfail) rather than a red one; any other failure fails it.
KNOWN_BUGS: dict[tuple[str, str], str] = {}  # none open: NUL in text fields was one (now a 422 everywhere)


@pytest.fixture(scope="module")
def api(world: World) -> Iterator[tuple[Any, dict[str, str]]]:
    """The schema loaded from the running app, and a bearer token per caller."""
    app = create_app(portal_settings(world.dsn))
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    tokens = {}
    with asgi.get_client(app) as client:
        for name, (email, _) in CALLERS.items():
            r = client.post("/v1/auth/token", data={"username": email(world), "password": PASSWORD})
            assert r.status_code == 200, r.text
            tokens[name] = r.json()["access_token"]
    try:
        yield schema, tokens
    finally:
        with contextlib.suppress(Exception):  # close the app's pool before the database is dropped
            asgi.shutdown_lifespans()


def _known_ids(world: World) -> dict[str, list[int]]:
    return {"vehicle_id": sorted(world.vehicle_ids.values()), "trip_id": sorted(t for ts in world.trip_ids.values()
                                                                                 for t in ts),
            "consent_id": sorted(world.consent_ids.values())}


def _with_known_ids(strategy: Any, known: dict[str, list[int]], names: list[str]) -> Any:
    """Half the cases keep their generated path ids, half take ids that exist in the world."""
    if not names:
        return strategy

    def apply(args: tuple[Any, dict[str, int]]) -> Any:
        case, ids = args
        case.path_parameters = {**(case.path_parameters or {}), **ids}
        return case

    picks = st.fixed_dictionaries({n: st.sampled_from(known[n]) for n in names})
    return st.one_of(strategy, st.tuples(strategy, picks).map(apply))


@pytest.mark.parametrize("caller", list(CALLERS))
def test_api_conforms_to_its_schema(api: tuple[Any, dict[str, str]], world: World, caller: str) -> None:
    schema, tokens = api
    headers = {"Authorization": f"Bearer {tokens[caller]}"}
    own = CALLERS[caller][1]
    known = _known_ids(world)
    failures: list[tuple[str, str, str]] = []
    statuses: dict[int, int] = {}
    ran = 0
    for result in schema.get_all_operations():
        op = result.ok()
        if op.method.upper() == "DELETE" or (op.method.upper(), op.path) in SKIPPED:
            continue
        n = OWN_EXAMPLES if op.path.startswith(own) else OTHER_EXAMPLES
        path_ids = [p.name for p in op.path_parameters if p.name in known]

        @settings(max_examples=n, derandomize=True, database=None, deadline=None, print_blob=False,
                  phases=[Phase.explicit, Phase.generate, Phase.shrink],
                  suppress_health_check=list(HealthCheck))
        @given(case=_with_known_ids(op.as_strategy(), known, path_ids))
        def check(case: Any) -> None:
            response = case.call_and_validate(headers=headers,
                                              checks=[not_a_server_error, response_schema_conformance])
            statuses[response.status_code // 100] = statuses.get(response.status_code // 100, 0) + 1

        try:
            check()
        except Exception as exc:  # one report per operation, shrunk by hypothesis
            notes = "\n".join(getattr(exc, "__notes__", []))  # the falsifying example
            failures.append((op.method.upper(), op.path, f"{op.method.upper()} {op.path} as {caller}: "
                                                         f"{type(exc).__name__}: {exc}\n{notes}"))
        ran += 1
    assert ran > 20, "the schema lost its operations"
    assert statuses.get(2, 0) >= 30, f"too few successful calls to mean anything: {statuses}"  # signed in, data found
    unexpected = [text for method, path, text in failures if (method, path) not in KNOWN_BUGS]
    assert not unexpected, f"{len(unexpected)} operation(s) failed:\n\n" + "\n\n".join(unexpected)
    known = sorted({(method, path) for method, path, _ in failures})
    if known:
        pytest.xfail("known bugs: " + "; ".join(f"{m} {p}: {KNOWN_BUGS[(m, p)]}" for m, p in known))
