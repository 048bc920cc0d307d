"""schemathesis against the OpenAPI schema, through the WSGI app: no 5xx, and every response
(errors included) matches the schema's status codes, content types and bodies."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from rest_framework.throttling import SimpleRateThrottle
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog")]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api_schema(monkeypatch, settings):
    # Generated Basic credentials are checked with the password hasher, 0.4 s each by default.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Fuzzing sends far more requests than the anonymous rate allows.
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": None, "user": None})
    # The real WSGI handler closes the connection after each request, which would end the
    # test's transaction; Django's own test client disconnects these receivers the same way.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", get_wsgi_application())
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    # schemathesis 4's lazy loader still reads `_nodeid`, which pytest 9 no longer sets.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


# The endpoints of this API (uploads and tokens are fuzzed by their own tests).
schema = schemathesis.pytest.from_fixture("api_schema").include(
    path_regex=r"^/api/v1/(adapters|facets|tasks|subtasks|architectures|models|sync)/"
)


@schema.parametrize()
@hypothesis_settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case):
    # The WSGI transport asks for gzip as requests does, but hands the checks the raw bytes
    # (an HTTP client would decode them: tests/api/test_behaviour.py covers the gzip bodies).
    case.call_and_validate(checks=CHECKS, headers={"Accept-Encoding": "identity"})
