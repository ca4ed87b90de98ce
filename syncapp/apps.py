from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_delete, pre_delete


class SyncAppConfig(AppConfig):
    name = "syncapp"
    verbose_name = "Sync"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from syncapp import checks, deletes, registry  # noqa: F401  (checks registers itself)
        from syncapp.api import schema  # noqa: F401  (registers the OpenAPI extension)

        # Per sender, proxies included (Django sends their deletes with the proxy class),
        # so models that are not synced keep Django's fast deletes.
        for model in registry.synced_senders():
            uid = f"syncapp:{model._meta.label}"
            pre_delete.connect(deletes.refresh_before_delete, sender=model, dispatch_uid=uid)
            post_delete.connect(deletes.record_delete, sender=model, dispatch_uid=uid)
