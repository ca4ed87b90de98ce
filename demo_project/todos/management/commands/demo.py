"""``manage.py demo``: the demo users and two sample lists, then print how to log in."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from demo_project.todos.models import Todo, TodoList
from syncapp import context

USERS = [("demo", True), ("alice", False), ("bob", False)]
PASSWORD = "demo"
# The sample lists, created in this order when there are none (``created_at`` orders them).
LISTS = [("Groceries", ["Milk", "Bread", "Coffee"]), ("Weekend", ["Call grandma", "Fix the bike"])]
# Fractional-indexing keys, as the browser makes them (generateKeyBetween).
ORDERS = ["a0", "a1", "a2"]


class Command(BaseCommand):
    help = "Create the demo users and two sample todo lists (idempotent), and print the logins."

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        with transaction.atomic():
            for username, staff in USERS:
                user, created = user_model.objects.get_or_create(
                    username=username, defaults={"is_staff": staff, "is_superuser": staff}
                )
                if created:
                    user.set_password(PASSWORD)
                    user.save()
            if not TodoList.objects.exists():
                with context.attribute(source="command"):
                    for name, titles in LISTS:
                        todo_list = TodoList.objects.create(name=name)
                        for order, title in zip(ORDERS, titles, strict=False):
                            Todo.objects.create(list=todo_list, title=title, order=order)
        self.stdout.write("Demo users (password for all: demo):")
        for username, staff in USERS:
            self.stdout.write(f"  {username}{'  (admin)' if staff else ''}")
        self.stdout.write("Open http://127.0.0.1:8000/ and log in.")
