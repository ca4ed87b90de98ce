"""The demo project: its settings pass the checks, `manage.py demo` sets it up."""

from __future__ import annotations

import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from demo_project.todos.models import Todo, TodoList
from syncapp import oplog

ROOT = Path(__file__).resolve().parent.parent


def test_demo_settings_pass_the_system_checks():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--fail-level", "WARNING"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.django_db
def test_demo_command_creates_users_and_a_list_and_prints_logins():
    out = StringIO()
    call_command("demo", stdout=out)
    assert "demo  (admin)" in out.getvalue()
    assert set(get_user_model().objects.values_list("username", flat=True)) >= {
        "demo",
        "alice",
        "bob",
    }
    assert get_user_model().objects.get(username="demo").check_password("demo")
    assert list(TodoList.objects.values_list("name", flat=True)) == ["Groceries", "Weekend"]
    todo_list = TodoList.objects.get(name="Groceries")
    assert list(todo_list.todos.values_list("title", flat=True)) == ["Milk", "Bread", "Coffee"]
    snap = oplog.snapshot(f"todos.list:{todo_list.pk}")
    assert len(snap.objects) == 3
    weekend = TodoList.objects.get(name="Weekend")
    assert weekend.todos.count() == 2
    assert len(oplog.snapshot("todos.lists").objects) == 2


@pytest.mark.django_db
def test_demo_command_is_idempotent():
    call_command("demo", stdout=StringIO())
    call_command("demo", stdout=StringIO())
    assert TodoList.objects.count() == 2
    assert Todo.objects.count() == 5


@pytest.mark.django_db
def test_demo_todo_title_is_manual_and_the_rest_lww():
    from syncapp import registry

    spec = registry.spec_for(Todo)
    assert spec.fields == ("list", "title", "completed", "order")
    assert [spec.policy_for(f) for f in spec.fields] == ["lww", "manual", "lww", "lww"]
