"""A URL query read once for both HTTP front ends: each parameter's value, and the first name
given twice. A query that gives a parameter twice is refused by both (which value is meant
would depend on the reader, as with a repeated JSON key on the stream)."""

from __future__ import annotations

from urllib.parse import parse_qsl


def query_values(query: str) -> tuple[dict[str, str], str | None]:
    """Each query parameter's value (blank ones kept), and the first name the query gives
    more than once (None when it gives none twice; the values are then of no use). A query
    with no escapes (`%`, `+`), as a 5G core sends, is split as it stands: what parse_qsl
    gives, at a third of its cost. Linear in the query's length, however many names."""
    if "%" in query or "+" in query:
        pairs = parse_qsl(query, keep_blank_values=True)
    else:
        pairs = [(name, value) for name, _, value in
                 (field.partition("=") for field in query.split("&") if field)]
    values = dict(pairs)
    if len(values) == len(pairs):
        return values, None
    seen: set[str] = set()
    for name, _ in pairs:  # fewer values than pairs: a name repeats, and this stops at it
        if name in seen:
            break
        seen.add(name)
    return values, name
