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
