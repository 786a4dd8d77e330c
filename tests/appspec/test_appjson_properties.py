"""Property tests: any JSON value, any bytes, and manifests shaped like real
ones either map to a spec or give clean errors; nothing else is raised."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.appspec.compose import compose

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**12), max_value=10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = [
    "path", "timeout", "attempts", "wait", "initialDelay", "type", "content", "command",
    "schedule", "concurrency_policy", "quantity", "size", "dokku", "predeploy", "postdeploy",
    "value", "generator", "required", "plan",
]  # fmt: skip
VALUES = st.sampled_from(
    [
        "/up",
        "up",
        "startup",
        "liveness",
        "*/5 * * * *",
        "@daily",
        "forbid",
        "replace",
        "web",
        "heroku-postgresql",
        "secret",
        0,
        1,
        -1,
        2.5,
        True,
        None,
        [],
        {},
    ]
)
# Objects whose keys are app.json's own, so generated manifests reach deep.
shaped = st.recursive(
    VALUES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from([*FIELDS, "web", "worker"]), inner, max_size=4)
    ),
    max_leaves=25,
)
entries = st.dictionaries(st.sampled_from(FIELDS), VALUES | scalars, max_size=5)
per_process = st.dictionaries(
    st.sampled_from(["web", "worker", "no such"]), st.lists(entries, max_size=3), max_size=2
)
manifests = st.fixed_dictionaries(
    {},
    optional={
        "healthchecks": per_process,
        "cron": st.lists(entries, max_size=3),
        "formation": st.dictionaries(st.sampled_from(["web", "worker"]), entries, max_size=2),
        "scripts": shaped,
        "env": st.dictionaries(st.sampled_from(["A", "b-c"]), shaped, max_size=2),
        "addons": shaped,
        "x": shaped,
    },
)


def check(text: str | bytes) -> None:
    composed = compose(procfile="web: gunicorn app:app\n", app_json=text)
    if composed.spec is None or composed.diag.errors:
        assert composed.diag.errors, "a refused manifest says why"
        assert all(p.file == "app.json" for p in composed.diag.errors)
    else:
        assert composed.spec.sources == ["Procfile", "app.json"]
        for hc in composed.spec.healthchecks.values():
            assert hc.path.startswith("/") and hc.attempts >= 1 and hc.timeout > 0


@FAST
@given(json_values)
def test_any_json_value(value: Any) -> None:
    check(json.dumps(value))


@FAST
@given(manifests)
def test_manifest_shaped_values(value: dict[str, Any]) -> None:
    check(json.dumps(value))


@FAST
@given(st.binary(max_size=200))
def test_any_bytes(data: bytes) -> None:
    check(data)
