"""syncapp.conf: the SYNCAPP dict, read lazily, with defaults and validated values."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test.utils import override_settings

from syncapp.conf import conf, unknown_keys
from syncapp.permissions import AllowAny, IsAuthenticated


@override_settings(SYNCAPP={})
def test_defaults_when_syncapp_is_empty():
    assert conf.PERMISSION_CLASS == "syncapp.permissions.IsAuthenticated"
    assert conf.MAX_BODY_BYTES == 1024 * 1024
    assert conf.MAX_BATCH == 100
    assert conf.IDEMPOTENCY_TTL == timedelta(hours=24)
    assert conf.IDEMPOTENCY_LEASE == timedelta(seconds=30)
    assert conf.MAX_CLOCK_SKEW == timedelta(minutes=1)
    assert conf.SERVER_NODE_ID == "~server"
    assert conf.RETENTION_MAX_AGE == timedelta(days=30)
    assert conf.RETENTION_MAX_OPS is None
    assert conf.OPS_PAGE_SIZE == 100
    assert conf.OPS_PAGE_MAX == 1000
    assert conf.CHANNEL_LAYER == "default"
    assert conf.MODEL_VIEWSETS is True


def test_defaults_when_syncapp_is_missing(settings):
    del settings.SYNCAPP
    assert conf.MAX_BATCH == 100
    assert unknown_keys() == []


def test_setting_from_project_settings():
    # tests/settings.py sets it
    assert conf.PERMISSION_CLASS == "tests.testapp.permissions.TestPermission"


def test_override_settings_is_seen_without_reimporting():
    assert conf.MAX_BATCH == 100
    with override_settings(SYNCAPP={"MAX_BATCH": 7}):
        assert conf.MAX_BATCH == 7
    assert conf.MAX_BATCH == 100


@override_settings(SYNCAPP={"MAX_BATCH": 7})
def test_override_keeps_defaults_for_other_keys():
    assert conf.OPS_PAGE_SIZE == 100


@override_settings(SYNCAPP={"RETENTION_MAX_OPS": 500, "RETENTION_MAX_AGE": None})
def test_retention_limits_can_be_set_and_switched_off():
    assert conf.RETENTION_MAX_OPS == 500
    assert conf.RETENTION_MAX_AGE is None


@override_settings(SYNCAPP={"CHANNEL_LAYER": None})
def test_channel_layer_can_be_switched_off():
    assert conf.CHANNEL_LAYER is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (90, timedelta(seconds=90)),
        (1.5, timedelta(seconds=1.5)),
        (0, timedelta(0)),
        (timedelta(hours=2), timedelta(hours=2)),
    ],
)
def test_duration_given_as_seconds_or_timedelta(value, expected):
    with override_settings(SYNCAPP={"IDEMPOTENCY_TTL": value}):
        assert conf.IDEMPOTENCY_TTL == expected


@pytest.mark.parametrize(
    "key", ["IDEMPOTENCY_TTL", "IDEMPOTENCY_LEASE", "MAX_CLOCK_SKEW", "RETENTION_MAX_AGE"]
)
def test_duration_negative_is_rejected_naming_the_key(key):
    with (
        override_settings(SYNCAPP={key: -1}),
        pytest.raises(ImproperlyConfigured, match=f"SYNCAPP\\['{key}'\\]"),
    ):
        getattr(conf, key)


@pytest.mark.parametrize("value", ["60", True, None, [60]])
def test_duration_of_wrong_type_is_rejected_naming_the_key(value):
    with (
        override_settings(SYNCAPP={"IDEMPOTENCY_TTL": value}),
        pytest.raises(ImproperlyConfigured, match=r"SYNCAPP\['IDEMPOTENCY_TTL'\]"),
    ):
        conf.IDEMPOTENCY_TTL  # noqa: B018


@pytest.mark.parametrize("key", ["MAX_BODY_BYTES", "MAX_BATCH", "OPS_PAGE_SIZE", "OPS_PAGE_MAX"])
@pytest.mark.parametrize("value", [0, -5, "100", 2.5, True, None])
def test_positive_int_rejects_other_values_naming_the_key(key, value):
    with (
        override_settings(SYNCAPP={key: value}),
        pytest.raises(ImproperlyConfigured, match=f"SYNCAPP\\['{key}'\\] must be a positive int"),
    ):
        getattr(conf, key)


@pytest.mark.parametrize("value", [0, -1, "10", True])
def test_retention_max_ops_rejects_non_positive_ints(value):
    with (
        override_settings(SYNCAPP={"RETENTION_MAX_OPS": value}),
        pytest.raises(ImproperlyConfigured, match=r"SYNCAPP\['RETENTION_MAX_OPS'\]"),
    ):
        conf.RETENTION_MAX_OPS  # noqa: B018


def test_invalid_value_error_shows_the_value():
    with (
        override_settings(SYNCAPP={"MAX_BATCH": "lots"}),
        pytest.raises(ImproperlyConfigured, match="'lots'"),
    ):
        conf.MAX_BATCH  # noqa: B018


@override_settings(SYNCAPP=[("MAX_BATCH", 5)])
def test_syncapp_that_is_not_a_dict_is_rejected():
    with pytest.raises(ImproperlyConfigured, match=r"settings\.SYNCAPP must be a dict"):
        conf.MAX_BATCH  # noqa: B018


def test_unknown_attribute_raises_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="'MAX_BATCHES'"):
        conf.MAX_BATCHES  # noqa: B018


def test_unknown_attribute_is_not_read_from_user_settings():
    with override_settings(SYNCAPP={"MAX_BATCHES": 5}), pytest.raises(AttributeError):
        conf.MAX_BATCHES  # noqa: B018


@override_settings(SYNCAPP={"MAX_BATCHES": 5, "OPS_PAGE_SIZE": 10, "channel_layer": None})
def test_unknown_keys_lists_typos_sorted():
    assert unknown_keys() == ["MAX_BATCHES", "channel_layer"]


def test_unknown_keys_empty_for_known_keys():
    assert unknown_keys() == []


@override_settings(SYNCAPP={"PERMISSION_CLASS": "syncapp.permissions.AllowAny"})
def test_import_setting_returns_the_object():
    assert conf.import_setting("PERMISSION_CLASS") is AllowAny


@override_settings(SYNCAPP={})
def test_import_setting_uses_the_default_path():
    assert conf.import_setting("PERMISSION_CLASS") is IsAuthenticated


@pytest.mark.parametrize(
    "path", ["syncapp.permissions.Nope", "no_such_module.Permission", "nodots"]
)
def test_import_setting_error_names_the_setting_and_path(path):
    with (
        override_settings(SYNCAPP={"PERMISSION_CLASS": path}),
        pytest.raises(ImproperlyConfigured) as excinfo,
    ):
        conf.import_setting("PERMISSION_CLASS")
    assert "SYNCAPP['PERMISSION_CLASS']" in str(excinfo.value)
    assert repr(path) in str(excinfo.value)


def test_import_setting_error_chains_the_import_error():
    with (
        override_settings(SYNCAPP={"PERMISSION_CLASS": "no_such_module.Permission"}),
        pytest.raises(ImproperlyConfigured) as excinfo,
    ):
        conf.import_setting("PERMISSION_CLASS")
    assert isinstance(excinfo.value.__cause__, ImportError)


@pytest.mark.parametrize("value", [None, 42])
def test_import_setting_that_is_not_a_dotted_path_names_the_setting(value):
    with (
        override_settings(SYNCAPP={"PERMISSION_CLASS": value}),
        pytest.raises(ImproperlyConfigured, match=r"SYNCAPP\['PERMISSION_CLASS'\]"),
    ):
        conf.import_setting("PERMISSION_CLASS")


def test_import_setting_of_unknown_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="'PERMISSION_KLASS'"):
        conf.import_setting("PERMISSION_KLASS")
