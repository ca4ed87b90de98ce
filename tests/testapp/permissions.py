from syncapp.permissions import BasePermission


class TestPermission(BasePermission):
    """Anyone may use "public:" streams; "secret" streams are for staff; "readonly" users
    may read but not write."""

    def can_read(self, user, stream):
        if stream.startswith("public:"):
            return True
        if user is None or not user.is_authenticated:
            return False
        return not stream.startswith("secret") or user.is_staff

    def can_write(self, user, stream, instance, mutation):
        if stream.startswith("public:"):
            return True
        return user is not None and user.is_authenticated and user.username != "readonly"


FAULTY = "faulty"


class FaultyPermission(TestPermission):
    """TestPermission with a bug: reading raises for users whose last name is "faulty",
    as a project's own permission hook might (``tests/test_faults.py``)."""

    def can_read(self, user, stream):
        if getattr(user, "last_name", "") == FAULTY:
            raise RuntimeError("a bug in the permission hook")
        return super().can_read(user, stream)
