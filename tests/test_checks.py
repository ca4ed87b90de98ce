"""syncapp.checks: every check id, triggered and not triggered.

Offending models are built in isolated app registries and checked by passing that
registry's app configs, as Django's own check tests do.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core import checks as django_checks
from django.db import models
from django.test.utils import isolate_apps, modify_settings, override_settings
from rest_framework import serializers

from syncapp import checks, registry
from syncapp.mixins import SyncManager, SyncModel, SyncQuerySet
from tests.testapp.models import Board, Card

REDIS_LAYER = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:6379/0", "socket_timeout": 10}]},
    }
}
IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
SQLITE = "django.db.backends.sqlite3"


@pytest.fixture(autouse=True)
def _fresh_specs() -> Iterator[None]:
    registry.clear()
    yield
    registry.clear()


def setting_ids(**overrides) -> list[str]:
    with override_settings(**overrides):
        return [message.id for message in checks.check_settings()]


def model_messages(isolated) -> list[django_checks.CheckMessage]:
    return checks.check_models(app_configs=list(isolated.get_app_configs()))


def model_ids(isolated) -> list[str]:
    return [message.id for message in model_messages(isolated)]


class Router:
    """Sends every model named "Elsewhere" (and Board, when asked) to another database."""

    routed = {"Elsewhere"}

    def db_for_write(self, model, **hints):
        return "other" if model.__name__ in self.routed else None

    db_for_read = db_for_write


class BoardRouter(Router):
    routed = {"Board"}


class SameDatabaseRouter:
    def db_for_write(self, model, **hints):
        return "default"

    db_for_read = db_for_write


class TitleSerializer(serializers.Serializer):
    title = serializers.CharField()


# -- check_settings -------------------------------------------------------------------


@override_settings(CHANNEL_LAYERS=REDIS_LAYER)
def test_check_settings_clean_for_the_test_settings():
    assert checks.check_settings() == []


@modify_settings(INSTALLED_APPS={"remove": ["django.contrib.auth"]})
def test_e001_missing_auth():
    messages = [m for m in checks.check_settings() if m.id == "syncapp.E001"]
    assert [m.msg for m in messages] == ["syncapp needs django.contrib.auth in INSTALLED_APPS."]
    assert messages[0].level == django_checks.ERROR


@modify_settings(INSTALLED_APPS={"remove": ["django.contrib.contenttypes"]})
def test_e001_missing_contenttypes():
    messages = [m for m in checks.check_settings() if m.id == "syncapp.E001"]
    assert [m.msg for m in messages] == [
        "syncapp needs django.contrib.contenttypes in INSTALLED_APPS."
    ]


def test_e001_not_raised_with_both_apps():
    assert "syncapp.E001" not in setting_ids()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MAX_BATCH", 0),
        ("MAX_BODY_BYTES", "1MB"),
        ("OPS_PAGE_SIZE", -1),
        ("RETENTION_MAX_OPS", 0),
        ("IDEMPOTENCY_TTL", -60),
        ("MAX_CLOCK_SKEW", "1 minute"),
    ],
)
def test_e007_bad_value_names_the_key(key, value):
    with override_settings(SYNCAPP={key: value}):
        messages = [m for m in checks.check_settings() if m.id == "syncapp.E007"]
    assert len(messages) == 1
    assert f"SYNCAPP[{key!r}]" in messages[0].msg
    assert messages[0].level == django_checks.ERROR


def test_e007_unimportable_permission_class():
    with override_settings(SYNCAPP={"PERMISSION_CLASS": "tests.testapp.permissions.Nope"}):
        messages = [m for m in checks.check_settings() if m.id == "syncapp.E007"]
    assert len(messages) == 1
    assert "SYNCAPP['PERMISSION_CLASS']" in messages[0].msg
    assert "tests.testapp.permissions.Nope" in messages[0].msg


def test_e007_permission_class_that_is_not_a_path():
    assert "syncapp.E007" in setting_ids(SYNCAPP={"PERMISSION_CLASS": 42})


def test_e007_syncapp_that_is_not_a_dict():
    assert "syncapp.E007" in setting_ids(SYNCAPP=["MAX_BATCH", 5])


def test_e007_not_raised_for_valid_values():
    ids = setting_ids(
        SYNCAPP={
            "PERMISSION_CLASS": "syncapp.permissions.AllowAny",
            "MAX_BATCH": 5,
            "IDEMPOTENCY_TTL": 3600,
            "RETENTION_MAX_AGE": None,
            "RETENTION_MAX_OPS": 1000,
        }
    )
    assert "syncapp.E007" not in ids


def test_w001_unknown_key():
    with override_settings(SYNCAPP={"MAX_BATCHES": 5}):
        messages = [m for m in checks.check_settings() if m.id == "syncapp.W001"]
    assert [m.msg for m in messages] == ["SYNCAPP has an unknown key 'MAX_BATCHES'."]
    assert "MAX_BATCH" in messages[0].hint
    assert messages[0].level == django_checks.WARNING


def test_w001_one_warning_per_unknown_key():
    ids = setting_ids(SYNCAPP={"MAX_BATCHES": 5, "TTL": 1})
    assert ids.count("syncapp.W001") == 2


def test_w001_not_raised_for_known_keys():
    assert "syncapp.W001" not in setting_ids(SYNCAPP={"MAX_BATCH": 5})


def test_w002_in_memory_layer_without_debug():
    assert "syncapp.W002" in setting_ids(CHANNEL_LAYERS=IN_MEMORY, DEBUG=False)


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_w002_not_raised_with_debug():
    ids = setting_ids(CHANNEL_LAYERS=IN_MEMORY, DEBUG=True, DATABASES=SQLITE_DB)
    assert "syncapp.W002" not in ids


def test_w002_not_raised_for_redis_layer():
    assert "syncapp.W002" not in setting_ids(CHANNEL_LAYERS=REDIS_LAYER, DEBUG=False)


def redis_hosts(*hosts: object) -> dict[str, dict[str, object]]:
    return {"default": {**REDIS_LAYER["default"], "CONFIG": {"hosts": list(hosts)}}}


@pytest.mark.parametrize(
    "layers",
    [
        {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer"}},
        redis_hosts("redis://127.0.0.1:6379/0"),
        redis_hosts(("127.0.0.1", 6379)),
        redis_hosts({"address": "redis://127.0.0.1:6379/0"}),
        redis_hosts({"address": "redis://127.0.0.1:6379/0", "socket_timeout": 5}),
        redis_hosts({"address": "redis://a/0", "socket_timeout": 10}, "redis://b/0"),
    ],
    ids=["no hosts", "url", "tuple", "dict", "5 s", "one of two"],
)
def test_w008_redis_layer_that_times_out_with_its_blocking_receive(layers):
    assert "syncapp.W008" in setting_ids(CHANNEL_LAYERS=layers, DEBUG=False)


@pytest.mark.parametrize("timeout", [10, 5.5, None])
def test_w008_not_raised_with_a_longer_read_timeout(timeout):
    layers = redis_hosts({"address": "redis://127.0.0.1:6379/0", "socket_timeout": timeout})
    assert "syncapp.W008" not in setting_ids(CHANNEL_LAYERS=layers, DEBUG=False)


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        ("redis://127.0.0.1:6379/0?socket_timeout=10", False),
        ({"address": "redis://127.0.0.1:6379/0?socket_timeout=10"}, False),
        ("redis://127.0.0.1:6379/0?socket_timeout=3", True),
        ("redis://127.0.0.1:6379/0?socket_timeout=soon", True),
    ],
)
def test_w008_reads_the_timeout_from_the_url(host, warned):
    layers = redis_hosts(host)
    assert ("syncapp.W008" in setting_ids(CHANNEL_LAYERS=layers, DEBUG=False)) is warned


def test_w008_not_raised_for_the_pubsub_layer():
    layers = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer"}}
    assert "syncapp.W008" not in setting_ids(CHANNEL_LAYERS=layers, DEBUG=False)


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_w003_sqlite_without_immediate_transactions():
    databases = {"default": {"ENGINE": SQLITE, "NAME": "db.sqlite3"}}
    with override_settings(DATABASES=databases):
        messages = [m for m in checks.check_settings() if m.id == "syncapp.W003"]
    assert len(messages) == 1
    assert "'default'" in messages[0].msg
    assert "IMMEDIATE" in messages[0].hint


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_w003_sqlite_with_deferred_transactions():
    databases = {
        "default": {"ENGINE": SQLITE, "NAME": "a", "OPTIONS": {"transaction_mode": "DEFERRED"}}
    }
    assert "syncapp.W003" in setting_ids(DATABASES=databases)


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_w003_not_raised_for_immediate_sqlite():
    databases = {
        "default": {"ENGINE": SQLITE, "NAME": "a", "OPTIONS": {"transaction_mode": "IMMEDIATE"}}
    }
    assert "syncapp.W003" not in setting_ids(DATABASES=databases)


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_w003_not_raised_for_postgresql():
    databases = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}}
    assert "syncapp.W003" not in setting_ids(DATABASES=databases)


def test_w004_any_host_without_debug():
    assert "syncapp.W004" in setting_ids(ALLOWED_HOSTS=["*"], DEBUG=False)


def test_w004_not_raised_with_debug():
    assert "syncapp.W004" not in setting_ids(ALLOWED_HOSTS=["*"], DEBUG=True)


def test_w004_not_raised_for_listed_hosts():
    assert "syncapp.W004" not in setting_ids(ALLOWED_HOSTS=["example.com"], DEBUG=False)


def test_w005_no_channel_layers():
    assert "syncapp.W005" in setting_ids(CHANNEL_LAYERS={})


def test_w005_channel_layers_setting_missing(settings):
    del settings.CHANNEL_LAYERS
    assert "syncapp.W005" in [m.id for m in checks.check_settings()]


def test_w005_configured_alias_missing():
    with override_settings(CHANNEL_LAYERS=REDIS_LAYER, SYNCAPP={"CHANNEL_LAYER": "live"}):
        messages = [m for m in checks.check_settings() if m.id == "syncapp.W005"]
    assert len(messages) == 1
    assert "'live'" in messages[0].msg


def test_w005_not_raised_when_broadcasting_is_off():
    assert "syncapp.W005" not in setting_ids(CHANNEL_LAYERS={}, SYNCAPP={"CHANNEL_LAYER": None})


def test_w005_not_raised_with_the_layer():
    assert "syncapp.W005" not in setting_ids(CHANNEL_LAYERS=REDIS_LAYER)


def test_w006_use_tz_false():
    assert "syncapp.W006" in setting_ids(USE_TZ=False)


def test_w006_not_raised_with_use_tz():
    assert "syncapp.W006" not in setting_ids(USE_TZ=True)


# -- check_models ---------------------------------------------------------------------


def test_check_models_clean_for_the_test_app():
    assert checks.check_models() == []


def test_check_models_clean_for_a_valid_isolated_model():
    with isolate_apps("tests.testapp") as isolated:

        class Valid(SyncModel):
            name = models.CharField(max_length=10)
            likes = models.IntegerField(default=0)

            class Meta:
                app_label = "testapp"

            class Sync:
                conflict_fields = {"name": "manual", "likes": "counter"}

            def get_sync_stream(self):
                return "valid"

        assert model_ids(isolated) == []


def test_e002_model_without_get_sync_stream():
    with isolate_apps("tests.testapp") as isolated:

        class Streamless(SyncModel):
            name = models.CharField(max_length=10)

            class Meta:
                app_label = "testapp"

        messages = model_messages(isolated)
    assert [m.id for m in messages] == ["syncapp.E002"]
    assert messages[0].obj is Streamless
    assert "get_sync_stream" in messages[0].hint


def test_e002_not_raised_when_get_sync_stream_is_implemented():
    with isolate_apps("tests.testapp") as isolated:

        class Streamed(SyncModel):
            name = models.CharField(max_length=10)

            class Meta:
                app_label = "testapp"

            def get_sync_stream(self):
                return "streamed"

        assert "syncapp.E002" not in model_ids(isolated)


def test_e003_unknown_field():
    with isolate_apps("tests.testapp") as isolated:

        class UnknownField(SyncModel):
            name = models.CharField(max_length=10)

            class Meta:
                app_label = "testapp"

            class Sync:
                fields = ["name", "colour"]

            def get_sync_stream(self):
                return "s"

        messages = model_messages(isolated)
    assert [m.id for m in messages] == ["syncapp.E003"]
    assert "'colour'" in messages[0].msg
    assert messages[0].obj is UnknownField


def test_e003_internal_field_named():
    with isolate_apps("tests.testapp") as isolated:

        class Internal(SyncModel):
            name = models.CharField(max_length=10)

            class Meta:
                app_label = "testapp"

            class Sync:
                fields = ["name", "sync_version"]

            def get_sync_stream(self):
                return "s"

        assert model_ids(isolated) == ["syncapp.E003"]


def test_e003_unknown_model_policy():
    with isolate_apps("tests.testapp") as isolated:

        class BadPolicy(SyncModel):
            name = models.CharField(max_length=10)

            class Meta:
                app_label = "testapp"

            class Sync:
                conflict = "newest"

            def get_sync_stream(self):
                return "s"

        messages = model_messages(isolated)
    assert [m.id for m in messages] == ["syncapp.E003"]
    assert "'newest'" in messages[0].msg


def test_e003_unknown_field_policy():
    with isolate_apps("tests.testapp") as isolated:

        class BadFieldPolicy(SyncModel):
            name = models.CharField(max_length=10)

            class Meta:
                app_label = "testapp"

            class Sync:
                conflict_fields = {"name": "first_wins"}

            def get_sync_stream(self):
                return "s"

        assert model_ids(isolated) == ["syncapp.E003"]


def test_e003_unimportable_resolver():
    with isolate_apps("tests.testapp") as isolated:

        class BadResolver(SyncModel):
            name = models.CharField(max_length=10)

            class Meta:
                app_label = "testapp"

            class Sync:
                conflict_fields = {"name": "tests.testapp.resolvers.nope"}

            def get_sync_stream(self):
                return "s"

        messages = model_messages(isolated)
    assert [m.id for m in messages] == ["syncapp.E003"]
    assert "tests.testapp.resolvers.nope" in messages[0].msg


def test_e003_counter_on_non_integer_field():
    with isolate_apps("tests.testapp") as isolated:

        class TextCounter(SyncModel):
            name = models.CharField(max_length=10)

            class Meta:
                app_label = "testapp"

            class Sync:
                conflict_fields = {"name": "counter"}

            def get_sync_stream(self):
                return "s"

        messages = model_messages(isolated)
    assert [m.id for m in messages] == ["syncapp.E003"]
    assert "counter" in messages[0].msg


def test_e003_conflict_fields_names_unsynced_field():
    with isolate_apps("tests.testapp") as isolated:

        class Unsynced(SyncModel):
            name = models.CharField(max_length=10)
            secret = models.CharField(max_length=10)

            class Meta:
                app_label = "testapp"

            class Sync:
                exclude = ["secret"]
                conflict_fields = {"secret": "manual"}

            def get_sync_stream(self):
                return "s"

        assert model_ids(isolated) == ["syncapp.E003"]


def test_e003_serializer_that_is_not_a_serializer():
    with isolate_apps("tests.testapp") as isolated:

        class NotSerializer(SyncModel):
            title = models.CharField(max_length=10)

            class Meta:
                app_label = "testapp"

            class Sync:
                serializer = dict

            def get_sync_stream(self):
                return "s"

        messages = model_messages(isolated)
    assert [m.id for m in messages] == ["syncapp.E003"]
    assert "serializer" in messages[0].msg


def test_e003_serializer_missing_synced_fields():
    with isolate_apps("tests.testapp") as isolated:

        class MissingFields(SyncModel):
            title = models.CharField(max_length=10)
            body = models.TextField()

            class Meta:
                app_label = "testapp"

            class Sync:
                serializer = TitleSerializer

            def get_sync_stream(self):
                return "s"

        messages = model_messages(isolated)
    assert [m.id for m in messages] == ["syncapp.E003"]
    assert "body" in messages[0].msg


def test_e003_unimportable_serializer_path():
    with isolate_apps("tests.testapp") as isolated:

        class BadSerializerPath(SyncModel):
            title = models.CharField(max_length=10)

            class Meta:
                app_label = "testapp"

            class Sync:
                serializer = "tests.testapp.serializers.Nope"

            def get_sync_stream(self):
                return "s"

        messages = model_messages(isolated)
    assert [m.id for m in messages] == ["syncapp.E003"]
    assert "tests.testapp.serializers.Nope" in messages[0].msg


def test_e003_not_raised_for_a_matching_serializer():
    with isolate_apps("tests.testapp") as isolated:

        class WithSerializer(SyncModel):
            title = models.CharField(max_length=10)

            class Meta:
                app_label = "testapp"

            class Sync:
                serializer = TitleSerializer
                conflict = "version"

            def get_sync_stream(self):
                return "s"

        assert "syncapp.E003" not in model_ids(isolated)


def test_e004_plain_default_manager():
    with isolate_apps("tests.testapp") as isolated:

        class PlainManager(SyncModel):
            name = models.CharField(max_length=10)
            objects = models.Manager()  # type: ignore[assignment]

            class Meta:
                app_label = "testapp"

            def get_sync_stream(self):
                return "s"

        messages = model_messages(isolated)
    assert [m.id for m in messages] == ["syncapp.E004"]
    assert "default manager" in messages[0].msg


def test_e004_custom_queryset_not_a_sync_queryset():
    class MyQuerySet(models.QuerySet):
        def named(self):
            return self.exclude(name="")

    with isolate_apps("tests.testapp") as isolated:

        class CustomManager(SyncModel):
            name = models.CharField(max_length=10)
            objects = MyQuerySet.as_manager()  # type: ignore[assignment]

            class Meta:
                app_label = "testapp"

            def get_sync_stream(self):
                return "s"

        assert model_ids(isolated) == ["syncapp.E004"]


def test_e004_plain_base_manager():
    with isolate_apps("tests.testapp") as isolated:

        class PlainBase(SyncModel):
            name = models.CharField(max_length=10)
            objects = SyncManager()
            plain = models.Manager()

            class Meta:
                app_label = "testapp"
                base_manager_name = "plain"

            def get_sync_stream(self):
                return "s"

        messages = model_messages(isolated)
    assert [m.id for m in messages] == ["syncapp.E004"]
    assert "base manager" in messages[0].msg


def test_e004_not_raised_for_sync_manager_subclasses():
    class Named(SyncQuerySet):
        def named(self):
            return self.exclude(name="")

    class MyManager(SyncManager):
        pass

    with isolate_apps("tests.testapp") as isolated:

        class GoodManagers(SyncModel):
            name = models.CharField(max_length=10)
            objects = MyManager()
            named = models.Manager.from_queryset(Named)()

            class Meta:
                app_label = "testapp"

            def get_sync_stream(self):
                return "s"

        assert model_ids(isolated) == []


def test_e005_set_default():
    with isolate_apps("tests.testapp") as isolated:

        class Owner(models.Model):
            class Meta:
                app_label = "testapp"

        class SetDefault(SyncModel):
            owner = models.ForeignKey(Owner, null=True, default=None, on_delete=models.SET_DEFAULT)

            class Meta:
                app_label = "testapp"

            def get_sync_stream(self):
                return "s"

        messages = model_messages(isolated)
    assert [m.id for m in messages] == ["syncapp.E005"]
    assert "SET_DEFAULT" in messages[0].msg
    assert messages[0].obj is SetDefault._meta.get_field("owner")


def test_e005_set_callable():
    with isolate_apps("tests.testapp") as isolated:

        class Owner(models.Model):
            class Meta:
                app_label = "testapp"

        class SetValue(SyncModel):
            owner = models.ForeignKey(Owner, null=True, on_delete=models.SET(lambda: None))

            class Meta:
                app_label = "testapp"

            def get_sync_stream(self):
                return "s"

        messages = model_messages(isolated)
    assert [m.id for m in messages] == ["syncapp.E005"]
    assert "SET(<callable>)" in messages[0].msg


@pytest.mark.parametrize(
    "on_delete",
    [models.CASCADE, models.SET_NULL, models.SET(None), models.PROTECT, models.RESTRICT],
)
def test_e005_not_raised_for_recordable_on_delete(on_delete):
    with isolate_apps("tests.testapp") as isolated:

        class Owner(models.Model):
            class Meta:
                app_label = "testapp"

        class Owned(SyncModel):
            owner = models.ForeignKey(Owner, null=True, on_delete=on_delete)

            class Meta:
                app_label = "testapp"

            def get_sync_stream(self):
                return "s"

        assert model_ids(isolated) == []


@override_settings(DATABASE_ROUTERS=[f"{__name__}.Router"])
def test_e006_synced_model_routed_elsewhere():
    with isolate_apps("tests.testapp") as isolated:

        class Elsewhere(SyncModel):
            name = models.CharField(max_length=10)

            class Meta:
                app_label = "testapp"

            def get_sync_stream(self):
                return "s"

        messages = model_messages(isolated)
    assert [m.id for m in messages] == ["syncapp.E006"]
    assert messages[0].obj is Elsewhere


@override_settings(DATABASE_ROUTERS=[f"{__name__}.BoardRouter"])
def test_e006_installed_model_routed_elsewhere():
    messages = checks.check_models()
    assert [(m.id, m.obj) for m in messages] == [("syncapp.E006", Board)]


@override_settings(DATABASE_ROUTERS=[f"{__name__}.SameDatabaseRouter"])
def test_e006_not_raised_when_routed_with_the_op_log():
    assert checks.check_models() == []


def test_check_models_only_checks_the_given_apps():
    from django.apps import apps

    with override_settings(DATABASE_ROUTERS=[f"{__name__}.BoardRouter"]):
        messages = checks.check_models(app_configs=[apps.get_app_config("syncapp")])
    assert messages == []


def test_check_models_are_registered_with_django():
    with override_settings(DATABASE_ROUTERS=[f"{__name__}.BoardRouter"]):
        messages = django_checks.run_checks(tags=[django_checks.Tags.models])
    assert ("syncapp.E006", Board) in [(m.id, m.obj) for m in messages]
    assert ("syncapp.E006", Card) not in [(m.id, m.obj) for m in messages]


POSTGRES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}}
SQLITE_DB = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
        "OPTIONS": {"transaction_mode": "IMMEDIATE"},
    }
}


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_w002_in_memory_layer_with_a_database_server():
    ids = setting_ids(CHANNEL_LAYERS=IN_MEMORY, DEBUG=True, DATABASES=POSTGRES)
    assert "syncapp.W002" in ids


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_w002_in_memory_layer_with_a_shared_cache():
    caches = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache"}}
    ids = setting_ids(CHANNEL_LAYERS=IN_MEMORY, DEBUG=True, DATABASES=SQLITE_DB, CACHES=caches)
    assert "syncapp.W002" in ids


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_w002_not_raised_for_one_debug_process_on_sqlite():
    ids = setting_ids(CHANNEL_LAYERS=IN_MEMORY, DEBUG=True, DATABASES=SQLITE_DB)
    assert "syncapp.W002" not in ids


@pytest.mark.parametrize("name", ["EVENTSTREAM_STORAGE_CLASS", "EVENTSTREAM_CHANNELMANAGER_CLASS"])
def test_e008_eventstream_not_pointed_at_syncapp(name):
    assert "syncapp.E008" in setting_ids(**{name: "django_eventstream.storage.DjangoModelStorage"})


def test_e008_eventstream_setting_missing(settings):
    del settings.EVENTSTREAM_STORAGE_CLASS
    assert "syncapp.E008" in setting_ids()


def test_e008_not_raised_when_configured():
    assert "syncapp.E008" not in setting_ids()


def test_w007_cross_origin_sse_without_last_event_id():
    ids = setting_ids(EVENTSTREAM_ALLOW_ORIGINS=["https://app.example"])
    assert "syncapp.W007" in ids
    allowed = setting_ids(
        EVENTSTREAM_ALLOW_ORIGINS=["https://app.example"], EVENTSTREAM_ALLOW_HEADERS="Last-Event-ID"
    )
    assert "syncapp.W007" not in allowed


def test_w007_cors_headers_without_last_event_id(monkeypatch):
    from django.apps import apps

    real = apps.is_installed
    monkeypatch.setattr(apps, "is_installed", lambda name: name == "corsheaders" or real(name))
    assert "syncapp.W007" in setting_ids(CORS_ALLOW_HEADERS=["content-type"])
    assert "syncapp.W007" not in setting_ids(CORS_ALLOW_HEADERS=["last-event-id"])
