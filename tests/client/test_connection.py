"""URLs, tokens and the Origin header of a connection."""

from __future__ import annotations

import pytest

from syncapp.client.connection import derive_origin, validate_url, with_token


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("ws://127.0.0.1:8000/sync/ws/", "http://127.0.0.1:8000"),
        ("wss://example.com/sync/ws/?x=1", "https://example.com"),
        ("WSS://Example.com:8443/ws/", "https://Example.com:8443"),
        ("wss://user:pw@example.com/ws/", "https://example.com"),
    ],
)
def test_derive_origin_maps_scheme_and_keeps_host(url, origin):
    assert derive_origin(url) == origin


def test_with_token_appends_the_query_parameter():
    assert with_token("ws://h/sync/ws/", "a b&c") == "ws://h/sync/ws/?token=a+b%26c"


def test_with_token_keeps_other_parameters_and_replaces_an_old_token():
    url = with_token("ws://h/ws/?x=1&token=old", "new")
    assert url == "ws://h/ws/?x=1&token=new"


def test_with_token_none_leaves_the_url_alone():
    assert with_token("ws://h/ws/?token=t", None) == "ws://h/ws/?token=t"


def test_validate_url_refuses_http():
    with pytest.raises(ValueError, match="isn't a valid URI"):
        validate_url("http://example.com/ws/")
