"""Errors over HTTP: every kind ends as problem+json with a code, never a bare 500."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions as drf

from syncapp.api.problems import PROBLEM, exception_handler
from syncapp.exceptions import NotAuthenticated


class View:
    """The part of a DRF view the handler asks: the challenge its authenticator offers."""

    def __init__(self, challenge: str | None) -> None:
        self.challenge = challenge

    def get_authenticate_header(self, request):
        return self.challenge


def handle(exc, challenge=None):
    return exception_handler(exc, {"view": View(challenge), "request": object()})


def test_throttled_gets_429_with_retry_after():
    response = handle(drf.Throttled(wait=12.5))
    assert (response.status_code, response.data["code"]) == (429, "throttled")
    assert response["Retry-After"] == "13"  # DRF rounds the wait up
    assert response.content_type == PROBLEM


def test_failed_authentication_with_a_challenge_gets_401():
    response = handle(drf.AuthenticationFailed(), challenge='Basic realm="api"')
    assert (response.status_code, response.data["code"]) == (401, "authentication_failed")
    assert response["WWW-Authenticate"] == 'Basic realm="api"'


@pytest.mark.parametrize(("challenge", "status"), [('Basic realm="api"', 401), (None, 403)])
def test_not_authenticated_is_401_only_with_a_challenge(challenge, status):
    response = handle(NotAuthenticated(), challenge=challenge)
    assert (response.status_code, response.data["code"]) == (status, "not_authenticated")
    assert response.get("WWW-Authenticate") == challenge


def test_django_errors_become_problems():
    assert handle(Http404("x")).data["code"] == "not_found"
    assert handle(PermissionDenied("x")).data["code"] == "permission_denied"


def test_unexpected_exceptions_are_left_to_django():
    assert handle(RuntimeError("bug")) is None  # a real bug stays a logged 500


@pytest.mark.django_db
def test_method_not_allowed_is_a_problem(api):
    response = api.delete("/sync/api/mutations/")
    assert (response.status_code, response["Content-Type"]) == (405, PROBLEM)
    assert response.json()["code"] == "method_not_allowed"
