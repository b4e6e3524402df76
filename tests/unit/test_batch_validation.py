"""Batch record bodies: all-or-nothing validation naming every bad item, and the 4xx mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.http.batch import (
    MAX_BODY_BYTES,
    MAX_IMPRESSIONS,
    NOT_A_TIME,
    FieldError,
    Rejected,
    ValidImpression,
    check_headers,
    validate,
)

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def item(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "member_id": "m_x1y2z3",
        "creative_id": "dc_abc",
        "ad_unit_id": "au_1",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def body(*items: object, **top: object) -> bytes:
    return msgspec.json.encode({"impressions": list(items), **top})


def rejected(result: list[ValidImpression] | Rejected) -> Rejected:
    assert isinstance(result, Rejected), result
    return result


def paths(result: list[ValidImpression] | Rejected) -> list[str]:
    return [f"{e.path}: {e.message}" for e in rejected(result).errors]


# -- valid bodies ---------------------------------------------------------------------------------


def test_seed_example_is_valid() -> None:
    raw = b"""{"impressions": [
        {"member_id": "m_x1y2z3", "creative_id": "dc_abc", "ad_unit_id": "au_abc123"},
        {"member_id": "m_a4b5c6", "creative_id": "dc_def", "ad_unit_id": "au_abc123",
         "timestamp": "2024-01-15T10:30:00Z",
         "idempotency_key": "019078a1-b4c3-7def-8a12-4b5c6d7e8f90"}]}"""
    assert validate(raw, NOW) == [
        ValidImpression("m_x1y2z3", "dc_abc", "au_abc123", None, None),
        ValidImpression(
            "m_a4b5c6",
            "dc_def",
            "au_abc123",
            datetime(2024, 1, 15, 10, 30, tzinfo=UTC),
            "019078a1-b4c3-7def-8a12-4b5c6d7e8f90",
        ),
    ]


def test_timestamps_with_offsets_become_utc() -> None:
    [valid] = validate(body(item(timestamp="2026-01-15T13:00:00+02:00")), NOW)  # type: ignore[misc]
    assert valid.occurred_at == datetime(2026, 1, 15, 11, 0, tzinfo=UTC)
    assert valid.occurred_at.tzinfo == UTC


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-01-15T13:00:00+02:00",  # RFC 3339: parsed while decoding
        "2026-01-15t11:00:00z",  # RFC 3339 allows lower case
        "2026-01-15T13:00:00+0200",  # other ISO 8601 forms: the second pass
        "20260115T110000Z",
        "2026-01-15 11:00:00.000000+00:00",
    ],
)
def test_rfc_3339_and_other_iso_8601_forms_give_the_same_instant(stamp: str) -> None:
    [valid] = validate(body(item(timestamp=stamp)), NOW)  # type: ignore[misc]
    assert valid.occurred_at == datetime(2026, 1, 15, 11, 0, tzinfo=UTC)
    assert valid.occurred_at.tzinfo is UTC


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-01-14T23:59:60Z",
        "2026-01-15t01:59:60+02:00",
        "2026-01-14 23:59:60Z",
        "2026-01-15T05:29:60+05:30",
    ],
)
def test_a_leap_second_is_the_next_seconds_start(stamp: str) -> None:
    """As in POSIX time; a leap second is 23:59:60 UTC, in whatever offset it is written."""
    [valid] = validate(body(item(timestamp=stamp)), NOW)  # type: ignore[misc]
    assert valid.occurred_at == datetime(2026, 1, 15, 0, 0, tzinfo=UTC)


def test_a_60th_second_at_another_time_is_no_timestamp() -> None:
    assert paths(validate(body(item(timestamp="2026-01-15T10:30:60Z")), NOW)) == [
        "$.impressions[0].timestamp: " + NOT_A_TIME
    ]


def test_a_body_mixing_both_forms_is_valid_as_a_whole() -> None:
    result = validate(
        body(item(timestamp="20260115T110000Z", idempotency_key="k1"), item(idempotency_key="k2")),
        NOW,
    )
    assert isinstance(result, list)
    assert [(v.occurred_at, v.idempotency_key) for v in result] == [
        (datetime(2026, 1, 15, 11, 0, tzinfo=UTC), "k1"),
        (None, "k2"),
    ]


def test_null_timestamp_and_key_mean_omitted() -> None:
    [valid] = validate(body(item(timestamp=None, idempotency_key=None)), NOW)  # type: ignore[misc]
    assert (valid.occurred_at, valid.idempotency_key) == (None, None)


def test_up_to_five_minutes_ahead_is_clock_skew_not_an_error() -> None:
    ahead = (NOW + timedelta(minutes=5)).isoformat()
    assert not isinstance(validate(body(item(timestamp=ahead)), NOW), Rejected)


def test_empty_list_is_valid_and_records_nothing() -> None:
    assert validate(body(), NOW) == []


def test_exactly_the_maximum_is_accepted() -> None:
    result = validate(body(*[item()] * MAX_IMPRESSIONS), NOW)
    assert isinstance(result, list)
    assert len(result) == MAX_IMPRESSIONS


# -- every bad item is named ----------------------------------------------------------------------


def test_every_bad_item_is_reported_with_its_path() -> None:
    result = validate(
        body(
            item(),
            item(member_id=...),
            item(),
            item(creative_id="", ad_unit_id=7),
            item(timestamp="yesterday"),
            "not an object",
        ),
        NOW,
    )
    r = rejected(result)
    assert (r.status, r.code) == (422, "validation_failed")
    assert paths(result) == [
        "$.impressions[1].member_id: required",
        "$.impressions[3].creative_id: must not be empty",
        "$.impressions[3].ad_unit_id: expected a string",
        "$.impressions[4].timestamp: " + NOT_A_TIME,
        "$.impressions[5]: expected an object",
    ]


def test_far_future_naive_and_odd_timestamps_are_errors() -> None:
    future = (NOW + timedelta(minutes=5, seconds=1)).isoformat()
    result = validate(
        body(
            item(timestamp=future.replace("T", "t").replace("+00:00", "z")),
            item(timestamp="2026-01-15T10:00:00"),
            item(timestamp=1705314600),
            item(timestamp="2026-01-15T10:00:00Z" + " " * 60),
        ),
        NOW,
    )
    assert paths(result) == [
        "$.impressions[0].timestamp: more than 5 minutes in the future",
        "$.impressions[1].timestamp: needs a UTC offset, e.g. 2024-01-15T10:30:00Z",
        "$.impressions[2].timestamp: expected a string",
        "$.impressions[3].timestamp: " + NOT_A_TIME,
    ]


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-01-15T10.5Z",  # a fraction of an hour: CPython read it as 10:00:00.5
        "2026-01-15T10,5Z",
        "2026-01-15T10:30.5Z",  # of a minute: read as 10:30:00.5
        "20260115T1030.5Z",
        "2026-01-15T10:30:00Z\u0000garbage",  # CPython stopped reading at the NUL
        "2026-01-15T10:30:00\u0000+05:00",
        "2026-01-15T10:30:00+05.5",  # a fraction of an offset hour: read as +05:00:00.5
        "2026-01-15T10:30:00+05:30.5",
        "2026-01-15T10:30:00-0330.5",
        "2026-01-15T10:30:00+05:30:15",  # an offset with seconds: not ISO 8601
        "2026-01-15T10:30:00 +02:00",
        "2026-01-15T10:30:00.Z",
        "2026-01-15-10:30:00+05.5",  # any separator passed CPython's reader
        "2026-01-15-10.5Z",
        "2026-01-15:10:30:00+05:30:15",
        "2026-01-15+02:00Z",
        "2026-01-15T10:30:00+05:60",  # read as +06:00
        "2026-01-15T10:30:00+05:99",
    ],
)
def test_a_timestamp_python_would_misread_is_an_error(stamp: str) -> None:
    assert paths(validate(body(item(timestamp=stamp)), NOW)) == [
        "$.impressions[0].timestamp: " + NOT_A_TIME
    ]


def test_a_fraction_of_seconds_is_read_in_both_forms() -> None:
    both = body(item(timestamp="2026-01-15T10:30:00,5+02:00"), item(timestamp="20260115T083000.5Z"))
    [a, b] = validate(both, NOW)  # type: ignore[misc]
    assert a.occurred_at == b.occurred_at == datetime(2026, 1, 15, 8, 30, 0, 500_000, tzinfo=UTC)


def test_the_error_list_is_bounded_and_names_each_problem_once() -> None:
    repeats = b'{"impressions": [{"member_id": "a"' + b', "member_id": "a"' * 50_000
    repeats += b', "creative_id": "c", "ad_unit_id": "u"}]}'
    result = rejected(validate(repeats, NOW))
    assert [(e.path, e.message) for e in result.errors] == [
        ("$.impressions[0].member_id", "repeated")
    ]
    unknown = rejected(validate(body(item(**{f"x{i}": 1 for i in range(3_000)})), NOW))
    assert len(unknown.errors) == 1_000
    assert unknown.errors[0] == FieldError("$.impressions[0].x0", "unknown field")
    assert unknown.message.startswith("more than 1000 invalid fields (the first 1000 are listed)")


def test_lengths_are_limited() -> None:
    result = validate(
        body(item(member_id="m" * 129), item(idempotency_key="k" * 257), item(idempotency_key="")),
        NOW,
    )
    assert paths(result) == [
        "$.impressions[0].member_id: at most 128 characters",
        "$.impressions[1].idempotency_key: at most 256 characters",
        "$.impressions[2].idempotency_key: must not be empty",
    ]
    assert not isinstance(validate(body(item(member_id="m" * 128)), NOW), Rejected)


def test_unknown_fields_are_rejected_at_every_level() -> None:
    result = validate(body(item(color="red"), source="x"), NOW)
    assert paths(result) == ["$.source: unknown field", "$.impressions[0].color: unknown field"]


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"[]", "$: expected an object"),
        (b"{}", "$.impressions: required"),
        (b'{"impressions": {}}', "$.impressions: expected an array"),
    ],
)
def test_wrong_shapes(raw: bytes, error: str) -> None:
    assert paths(validate(raw, NOW)) == [error]


def test_one_bad_item_rejects_the_whole_batch() -> None:
    result = validate(body(*[item()] * 100, item(ad_unit_id=...)), NOW)
    assert paths(result) == ["$.impressions[100].ad_unit_id: required"]


def test_a_bad_timestamp_among_valid_items_is_still_reported() -> None:
    result = validate(body(item(), item(timestamp="2099-01-01T00:00:00Z")), NOW)
    assert paths(result) == ["$.impressions[1].timestamp: more than 5 minutes in the future"]


# -- 4xx mapping ----------------------------------------------------------------------------------


def test_too_many_impressions() -> None:
    r = rejected(validate(body(*[item()] * (MAX_IMPRESSIONS + 1)), NOW))
    assert (r.status, r.code) == (422, "too_many_impressions")
    assert "5000" in r.message


@pytest.mark.parametrize(
    "raw", [b"", b"{", b'{"impressions": [}', b"\xef\xbb\xbf{}", b'{"impressions": []} x']
)
def test_invalid_json_is_400(raw: bytes) -> None:
    r = rejected(validate(raw, NOW))
    assert (r.status, r.code) == (400, "invalid_json")


DEEP = b"[" * 5000 + b"]" * 5000  # 10 KB, nested past Python's recursion limit


@pytest.mark.parametrize(
    "raw",
    [
        b'{"impressions": ' + DEEP + b"}",
        b'{"impressions": [{"member_id": "m", "creative_id": "c", "ad_unit_id": "a", "x": '
        + DEEP
        + b"}]}",
        b'{"other": ' + DEEP + b', "impressions": []}',
    ],
)
def test_a_body_nested_too_deeply_is_400_not_500(raw: bytes) -> None:
    r = rejected(validate(raw, NOW))
    assert (r.status, r.code) == (400, "invalid_json")
    assert "too deeply" in r.message


def test_invalid_utf8_is_400_not_500() -> None:
    raw = b'{"impressions": [{"member_id": "\xff", "creative_id": "c", "ad_unit_id": "a"}]}'
    r = rejected(validate(raw, NOW))
    assert (r.status, r.code) == (400, "invalid_json")


def test_body_over_the_limit_is_413() -> None:
    r = rejected(validate(b" " * (MAX_BODY_BYTES + 1), NOW))
    assert (r.status, r.code) == (413, "payload_too_large")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        "application/json; charset=utf8",  # a common label for UTF-8 (WHATWG)
        'application/json; charset="UTF8"',
    ],
)
def test_json_content_types_pass(content_type: str) -> None:
    assert check_headers(content_type, 100) is None
    assert check_headers(content_type, None) is None


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
    ],
)
def test_other_content_types_are_415(content_type: str | None) -> None:
    r = check_headers(content_type, 10)
    assert r is not None
    assert (r.status, r.code) == (415, "unsupported_media_type")


def test_declared_length_over_the_limit_is_413() -> None:
    r = check_headers("application/json", MAX_BODY_BYTES + 1)
    assert r is not None
    assert (r.status, r.code) == (413, "payload_too_large")


def test_errors_serialise_for_the_response_body() -> None:
    r = rejected(validate(body(item(member_id=...)), NOW))
    assert msgspec.json.decode(msgspec.json.encode(r.errors)) == [
        {"path": "$.impressions[0].member_id", "message": "required"}
    ]
    assert r.errors == [FieldError("$.impressions[0].member_id", "required")]


def test_other_timezones_for_now_work() -> None:
    now = NOW.astimezone(timezone(timedelta(hours=-5)))
    assert not isinstance(validate(body(item(timestamp="2026-01-15T12:04:00Z")), now), Rejected)


def test_timestamps_out_of_range_are_errors_not_crashes() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    body = (
        b'{"impressions": [{"member_id": "m", "creative_id": "c", "ad_unit_id": "a",'
        b' "timestamp": "0001-01-01T00:00:00+14:00"}]}'
    )
    result = validate(body, now)
    assert isinstance(result, Rejected)
    assert result.status == 422
    assert [e.path for e in result.errors] == ["$.impressions[0].timestamp"]


def test_a_repeated_member_name_is_an_error_naming_it() -> None:
    """JSON leaves a repeated name's meaning open; keeping the last would drop data unseen."""
    one = b'{"member_id": "m", "creative_id": "c", "ad_unit_id": "a"}'
    twice = b'{"member_id": "", "member_id": "m", "creative_id": "c", "ad_unit_id": "a"}'
    assert paths(validate(b'{"impressions": [%b], "impressions": []}' % one, NOW)) == [
        "$.impressions: repeated"
    ]
    assert paths(validate(b'{"impressions": [%b, %b]}' % (one, twice), NOW)) == [
        "$.impressions[1].member_id: repeated"
    ]
    valid_twice = twice.replace(b'"member_id": ""', b'"member_id": "x"')
    assert paths(validate(b'{"impressions": [%b]}' % valid_twice, NOW)) == [
        "$.impressions[0].member_id: repeated"
    ]


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        # an optional name twice in one item while another item lacks it: the counts even out
        (
            b'{"impressions": [{"member_id": "m", "creative_id": "c", "ad_unit_id": "a",'
            b' "idempotency_key": "k1", "idempotency_key": "k2"},'
            b' {"member_id": "m", "creative_id": "c", "ad_unit_id": "a"}]}',
            "$.impressions[0].idempotency_key",
        ),
        # a name written with an escape is the same name
        (
            b'{"impressions": [{"member_id": "first", "member\\u005fid": "m",'
            b' "creative_id": "c", "ad_unit_id": "a"}]}',
            "$.impressions[0].member_id",
        ),
        (b'{"impressions": [], "impression\\u0073": []}', "$.impressions"),
    ],
)
def test_a_repeat_is_found_however_it_is_written(raw: bytes, path: str) -> None:
    assert paths(validate(raw, NOW)) == [f"{path}: repeated"]


def test_a_repeat_is_named_with_every_other_problem() -> None:
    raw = (
        b'{"impressions": [{"member_id": "m", "creative_id": "c", "ad_unit_id": "a",'
        b' "idempotency_key": "k1", "idempotency_key": "k2"},'
        b' {"member_id": "m", "creative_id": "c", "ad_unit_id": "a", "timestamp": "yesterday"}]}'
    )
    assert paths(validate(raw, NOW)) == [
        "$.impressions[1].timestamp: " + NOT_A_TIME,
        "$.impressions[0].idempotency_key: repeated",
    ]


def test_optional_names_sent_as_null_are_no_repeat() -> None:
    """Many serializers write unset fields as null: those bodies are valid, and a real repeat
    among them is still found."""
    nulls = b'"timestamp": null, "idempotency_key":null'
    one = b'{"member_id": "m", "creative_id": "c", "ad_unit_id": "a", %b}' % nulls
    assert len(validate(b'{"impressions": [%b, %b]}' % (one, one), NOW)) == 2  # type: ignore[arg-type]
    twice = one.replace(
        b'"idempotency_key":null', b'"idempotency_key": "k", "idempotency_key": null'
    )
    assert paths(validate(b'{"impressions": [%b, %b]}' % (one, twice), NOW)) == [
        "$.impressions[1].idempotency_key: repeated"
    ]


def test_a_value_that_spells_a_member_name_is_no_repeat() -> None:
    raw = b'{"impressions": [{"member_id": "member_id", "creative_id": "c", "ad_unit_id": "a"}]}'
    [valid] = validate(raw, NOW)  # type: ignore[misc]
    assert valid.member_id == "member_id"


# -- properties over generated timestamps (hypothesis) --------------------------------------------

_OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


def _iso(at: datetime, basic: bool, blank: bool, digits: int) -> str:
    """``at`` in one ISO 8601 form: extended or basic, T or a blank, 0-6 fraction digits,
    Z for UTC or the offset (with or without its colon)."""
    date = at.strftime("%Y%m%d" if basic else "%Y-%m-%d")
    time = at.strftime("%H%M%S" if basic else "%H:%M:%S")
    if digits:
        time += "." + f"{at.microsecond:06d}"[:digits]
    offset = at.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    if minutes == 0:
        zone = "Z"
    else:
        sign, minutes = ("+" if minutes > 0 else "-"), abs(minutes)
        zone = f"{sign}{minutes // 60:02d}{'' if basic else ':'}{minutes % 60:02d}"
    return f"{date}{' ' if blank else 'T'}{time}{zone}"


@given(
    at=st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1), timezones=_OFFSETS
    ),
    basic=st.booleans(),
    blank=st.booleans(),
    digits=st.integers(0, 6),
)
def test_any_iso_form_is_the_instant_it_names(
    at: datetime, basic: bool, blank: bool, digits: int
) -> None:
    stamp = _iso(at, basic, blank, digits)
    kept = at.microsecond - at.microsecond % 10 ** (6 - digits)  # the digits written
    expected = at.replace(microsecond=kept).astimezone(UTC)
    result = validate(body(item(timestamp=stamp)), datetime(2200, 1, 1, tzinfo=UTC))
    assert isinstance(result, list), stamp
    assert result[0].occurred_at == expected, stamp


@given(
    ahead=st.timedeltas(
        min_value=timedelta(minutes=5, microseconds=1), max_value=timedelta(days=9)
    ),
    zone=_OFFSETS,
)
def test_any_time_over_5_minutes_ahead_is_refused(ahead: timedelta, zone: timezone) -> None:
    stamp = (NOW + ahead).astimezone(zone).isoformat()
    assert paths(validate(body(item(timestamp=stamp)), NOW)) == [
        "$.impressions[0].timestamp: more than 5 minutes in the future"
    ]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
_FIELDS = st.sampled_from(
    ["member_id", "creative_id", "ad_unit_id", "timestamp", "idempotency_key"]
)
_ITEMS = st.dictionaries(_FIELDS | st.text(max_size=12), _JSON | st.text(max_size=40), max_size=7)


@given(
    st.lists(_ITEMS | _JSON, max_size=5), st.dictionaries(st.text(max_size=12), _JSON, max_size=2)
)
def test_any_json_body_is_validated_or_refused_never_an_error(
    items: list[object], top: dict[str, object]
) -> None:
    """Whatever JSON a client sends, the answer is the recorded items or a 4xx with a reason
    (the handler turns an exception into a 500)."""
    result = validate(msgspec.json.encode({**top, "impressions": items}), NOW)
    if isinstance(result, Rejected):
        assert 400 <= result.status < 500
        assert result.code
    else:
        assert len(result) == len(items)


@given(st.binary(max_size=300))
def test_any_bytes_are_validated_or_refused_never_an_error(raw: bytes) -> None:
    result = validate(raw, NOW)
    assert isinstance(result, list) or 400 <= result.status < 500
