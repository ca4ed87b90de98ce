from syncapp.conflicts import Apply, FieldContext, Keep, Outcome


def longer_wins(ctx: FieldContext) -> Outcome:
    if len(ctx.client_value) >= len(ctx.server_value or ""):
        return Apply(ctx.client_value)
    return Keep("The server's text is longer.")
