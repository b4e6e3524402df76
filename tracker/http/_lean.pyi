from types import NotImplementedType
from typing import Any

def configure_head(
    specials: dict[str, int],
    joiners: dict[str, str],
    paths: frozenset[str],
    methods: frozenset[str],
    versions: frozenset[str],
    head_type: type[Any],
    token_chars: str,
    max_headers: int,
    max_line: int,
    codes: tuple[int, int, int, int, int, int],
    /,
) -> None: ...
def parse_head(raw: bytes, /) -> Any: ...
def split_query(
    raw: str, known: frozenset[str], limits: dict[str, int], default_limit: int, /
) -> tuple[dict[str, str], list[tuple[str, Any]]] | NotImplementedType: ...
def render(
    status_line: str,
    headers: list[tuple[str, str]],
    server_line: str,
    date: str,
    connection: str,
    body: bytes,
    head_only: bool,
    /,
) -> bytes | NotImplementedType: ...
