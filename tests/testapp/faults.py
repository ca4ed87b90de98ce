"""Test-only faults for ``tests/test_faults.py`` and ``tests/live/test_faults.py``.

Off unless a setting turns them on: ``SYNCAPP_TEST_KILL_ON_TITLE`` is set only by
``tests/live_settings.py``, from the ``SYNCAPP_LIVE_KILL_TITLE`` environment variable
that the fault tests give their own daphne processes.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save


def kill_after_commit(sender: Any, instance: Any, using: str, **kwargs: Any) -> None:
    """A card saved with the magic title SIGKILLs this process right after its
    transaction commits: after the change, its op and the mutation's stored result are
    durable, before the client is answered."""
    title = getattr(settings, "SYNCAPP_TEST_KILL_ON_TITLE", "")
    if title and getattr(instance, "title", None) == title:
        transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL), using=using)


post_save.connect(
    kill_after_commit, sender="testapp.Card", dispatch_uid="testapp-kill-after-commit"
)
