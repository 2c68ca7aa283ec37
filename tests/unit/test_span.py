# SPDX-License-Identifier: Apache-2.0
"""The Span API: identity, tags of every type, logs, timestamps, finish semantics."""
import enum
import math
import time
from fractions import Fraction

import pytest
from opentracing.ext import tags as ext_tags

import fasttrace


def _counters_total(stats):
    """Sum of every truncation/drop counter (how odd values are accounted for)."""
    total = 0
    for group in ("truncated", "dropped"):
        for value in stats.get(group, {}).values():
            if isinstance(value, int):
                total += value
    return total


class Unprintable:
    def __str__(self):
        raise RuntimeError("no str for you")

    def __repr__(self):
        raise RuntimeError("no repr either")


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __str__(self):
        return f"Point({self.x}, {self.y})"


class Color(enum.IntEnum):
    RED = 3


# -- identity ------------------------------------------------------------------------

def test_span_is_an_opentracing_span_with_ids(tracer):
    span = tracer.start_span("op")
    # (not an opentracing.Span subclass: the compiled Span implements the API itself)
    for method in ("set_tag", "log_kv", "log_event", "log", "set_baggage_item",
                   "get_baggage_item", "set_operation_name", "finish", "__enter__",
                   "__exit__"):
        assert callable(getattr(span, method)), method
    assert span.tracer is tracer
    assert span.operation_name == "op"
    assert isinstance(span.trace_id, int) and 0 < span.trace_id < 2 ** 128
    assert isinstance(span.span_id, int) and 0 < span.span_id < 2 ** 64
    assert span.parent_id is None
    ctx = span.context
    assert isinstance(ctx, fasttrace.SpanContext)
    assert (ctx.trace_id, ctx.span_id, ctx.sampled) == (span.trace_id, span.span_id, True)
    assert ctx.baggage == {}


@pytest.mark.parametrize("attr", ["trace_id", "span_id", "parent_id", "finished"])
def test_identity_is_read_only(tracer, attr):
    span = tracer.start_span("op")
    before = getattr(span, attr)
    with pytest.raises(AttributeError):
        setattr(span, attr, 12345)
    assert getattr(span, attr) == before


def test_operation_name_can_be_assigned_like_mocktracers(tracer, finished):
    span = tracer.start_span("first")
    span.operation_name = "renamed"
    assert span.operation_name == "renamed"
    assert not span.finished
    span.finish()
    assert span.finished
    span.operation_name = "after finish"          # ignored, as set_operation_name is
    assert finished("renamed").operation_name == "renamed"


def test_set_operation_name(tracer, finished):
    span = tracer.start_span("first")
    assert span.set_operation_name("second") is span
    assert span.operation_name == "second"
    span.finish()
    assert finished("second").operation_name == "second"


def test_default_operation_name_is_a_string(tracer, finished):
    tracer.start_span().finish()
    (record,) = finished()
    assert isinstance(record.operation_name, str)


# -- tags ----------------------------------------------------------------------------

def test_set_tag_chains_and_last_write_wins(tracer, finished):
    span = tracer.start_span("op", tags={"a": 1})
    assert span.set_tag("b", "x").set_tag("a", 2) is span
    span.finish()
    assert finished("op").tags == {"a": 2, "b": "x"}


def test_tag_value_types_are_kept(tracer, finished):
    values = {
        "str": "hello",
        "empty": "",
        "unicode": "non-ascii: \u200b \U0001F600",
        "true": True,
        "false": False,
        "zero": 0,
        "one": 1,
        "neg": -42,
        "i64max": 2 ** 63 - 1,
        "i64min": -(2 ** 63),
        "u64": 2 ** 63,
        "big": 2 ** 100 + 7,
        "negbig": -(2 ** 70) - 1,
        "float": 1.5,
        "negzero": -0.0,
        "tiny": 5e-324,
        "inf": math.inf,
        "ninf": -math.inf,
    }
    span = tracer.start_span("types")
    for key, value in values.items():
        span.set_tag(key, value)
    span.finish()
    tags = finished("types").tags
    assert set(tags) == set(values)
    for key, value in values.items():
        assert type(tags[key]) is type(value), (key, tags[key])
        assert tags[key] == value, key
    assert math.copysign(1.0, tags["negzero"]) == -1.0


def test_nan_tag_is_a_float_nan(tracer, finished):
    tracer.start_span("nan", tags={"v": math.nan}).finish()
    value = finished("nan").tags["v"]
    assert type(value) is float and math.isnan(value)


def test_bool_and_int_stay_distinct(tracer, finished):
    tracer.start_span("bi", tags={"b": True, "i": 1, "b0": False, "i0": 0}).finish()
    tags = finished("bi").tags
    assert tags["b"] is True and tags["b0"] is False
    assert type(tags["i"]) is int and type(tags["i0"]) is int


def test_tags_given_at_start_and_later_agree(tracer, finished):
    values = {"s": "v", "b": True, "i": 3, "f": 2.5, "n": None, "big": 2 ** 80}
    tracer.start_span("at-start", tags=values).finish()
    later = tracer.start_span("later")
    for k, v in values.items():
        later.set_tag(k, v)
    later.finish()
    assert finished("at-start").tags == finished("later").tags


@pytest.mark.parametrize("value, expected", [
    (None, "None"),
    (b"ab\x00c", str(b"ab\x00c")),
    (bytearray(b"xy"), str(bytearray(b"xy"))),
    ([1, "two", 3.0], "[1, 'two', 3.0]"),
    ({"a": 1}, "{'a': 1}"),
    ((1, 2), "(1, 2)"),
    (Point(1, 2), "Point(1, 2)"),
    (1 + 2j, "(1+2j)"),
    (ValueError("boom"), "boom"),
])
def test_other_values_are_stored_as_their_str(tracer, finished, value, expected):
    span = tracer.start_span("odd")
    assert span.set_tag("v", value) is span
    span.finish()
    tags = finished("odd").tags
    assert tags["v"] == expected
    assert type(tags["v"]) is str


def test_int_and_float_subclasses_are_kept_as_numbers(tracer, finished):
    class MyFloat(float):
        pass

    tracer.start_span("sub", tags={"e": Color.RED, "f": MyFloat(0.25)}).finish()
    tags = finished("sub").tags
    assert tags["e"] == 3 and isinstance(tags["e"], int)
    assert tags["f"] == 0.25 and isinstance(tags["f"], float)


def test_str_subclass_value_is_a_str(tracer, finished):
    class Name(str):
        pass

    tracer.start_span("strsub", tags={"n": Name("abc")}).finish()
    value = finished("strsub").tags["n"]
    assert value == "abc" and isinstance(value, str)


def test_unprintable_value_does_not_raise_and_is_counted(tracer, finished):
    before = _counters_total(tracer.stats())
    span = tracer.start_span("bad")
    assert span.set_tag("v", Unprintable()) is span
    span.set_tag("ok", 1)
    span.finish()
    tags = finished("bad").tags
    assert isinstance(tags["v"], str)        # a placeholder
    assert tags["ok"] == 1
    assert _counters_total(tracer.stats()) > before


def test_unprintable_value_in_start_tags_does_not_raise(tracer, finished):
    tracer.start_span("bad-start", tags={"v": Unprintable(), "ok": True}).finish()
    tags = finished("bad-start").tags
    assert tags["ok"] is True
    assert "v" not in tags or isinstance(tags["v"], str)


@pytest.mark.parametrize("key, expected", [
    (1, "1"),
    (2.5, "2.5"),
    (None, "None"),
    ((1, 2), "(1, 2)"),
    (True, "True"),
    (b"k", str(b"k")),
])
def test_non_str_keys_become_str(tracer, finished, key, expected):
    span = tracer.start_span("keys")
    span.set_tag(key, "v")
    span.finish()
    assert finished("keys").tags == {expected: "v"}


def test_unprintable_key_does_not_raise(tracer, finished):
    span = tracer.start_span("badkey")
    span.set_tag(Unprintable(), "v")
    span.set_tag("ok", 1)
    span.finish()
    tags = finished("badkey").tags
    assert tags["ok"] == 1
    assert all(isinstance(k, str) for k in tags)


def test_huge_string_is_truncated_and_counted(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter)
    before = tracer.stats()["truncated"]["values"]
    huge = "x" * (10 * 1024 * 1024)
    span = tracer.start_span("huge")
    span.set_tag("big", huge)
    span.set_tag("ok", "y" * 4096)
    span.finish()
    (record,) = reporter.spans
    assert record.tags["big"] == "x" * 4096          # default max_value_length
    assert record.tags["ok"] == "y" * 4096           # at the limit: kept whole
    assert tracer.stats()["truncated"]["values"] == before + 1


def test_max_value_length_applies_to_str_of_objects(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, max_value_length=10)
    span = tracer.start_span("obj")
    span.set_tag("s", "abcdefghijKLMN")
    span.set_tag("o", Point(123456789, 987654321))
    span.set_tag("short", "abc")
    span.finish()
    tags = reporter.spans[0].tags
    assert tags["s"] == "abcdefghij"
    assert tags["o"] == "Point(1234"
    assert tags["short"] == "abc"
    assert tracer.stats()["truncated"]["values"] == 2


def test_max_tags_ignores_extra_tags_and_counts_them(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, max_tags=3)
    span = tracer.start_span("limited")
    for i in range(5):
        assert span.set_tag(f"k{i}", i) is span
    span.set_tag("k0", "replaced")      # replacing a kept key is not an extra tag
    span.finish()
    tags = reporter.spans[0].tags
    assert tags == {"k0": "replaced", "k1": 1, "k2": 2}
    assert tracer.stats()["truncated"]["tags"] == 2


def test_max_tags_applies_to_start_tags(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, max_tags=2)
    tracer.start_span("limited", tags={f"k{i}": i for i in range(4)}).finish()
    assert len(reporter.spans[0].tags) == 2
    assert tracer.stats()["truncated"]["tags"] == 2


def test_max_logs_counts_extra_logs(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, max_logs=2)
    span = tracer.start_span("logs")
    for i in range(5):
        assert span.log_kv({"i": i}) is span
    span.finish()
    logs = reporter.spans[0].logs
    assert len(logs) == 2
    kept = [fields["i"] for _, fields in logs]
    assert kept == sorted(kept) and set(kept) <= set(range(5))
    assert tracer.stats()["truncated"]["logs"] == 3


# -- logs ----------------------------------------------------------------------------

def test_log_kv_explicit_timestamp(tracer, finished):
    span = tracer.start_span("logs", start_time=1_700_000_000.0)
    span.log_kv({"event": "a", "n": 1}, timestamp=1_700_000_000.5)
    span.log_kv({"event": "b"}, 1_700_000_001.25)
    span.finish(finish_time=1_700_000_002.0)
    record = finished("logs")
    assert record.logs == [(1_700_000_000_500_000_000, {"event": "a", "n": 1}),
                           (1_700_000_001_250_000_000, {"event": "b"})]


def test_log_kv_default_timestamp_is_now(tracer, finished):
    span = tracer.start_span("now")
    before = time.time_ns()
    span.log_kv({"x": 1})
    after = time.time_ns()
    span.finish()
    ((ts, fields),) = finished("now").logs
    assert fields == {"x": 1}
    slack = 50_000_000      # the span clock may be rebased against the system clock
    assert before - slack <= ts <= after + slack


def test_logs_keep_order_and_values_of_any_type(tracer, finished):
    marker = Point(1, 2)
    payload = {"nested": [1, 2, {"deep": True}]}
    span = tracer.start_span("logs")
    span.log_kv({"obj": marker, "payload": payload, "n": 1, "f": 0.5, "none": None})
    span.log_kv({"second": True})
    span.log_kv({1: "int key"})
    span.finish()
    logs = finished("logs").logs
    assert [fields for _, fields in logs][1:] == [{"second": True}, {"1": "int key"}]
    first = logs[0][1]
    assert first["obj"] is marker or first["obj"] == str(marker)
    assert first["payload"] == payload or first["payload"] == str(payload)
    assert first["n"] == 1 and first["f"] == 0.5
    assert [ts for ts, _ in logs] == sorted(ts for ts, _ in logs)


def test_log_kv_odd_inputs_never_raise(tracer, finished):
    span = tracer.start_span("odd-logs")
    span.log_kv({})
    span.log_kv({"bad": Unprintable()})
    span.log_kv({Unprintable(): 1})
    span.log_kv({"huge": "z" * 1_000_000})
    span.finish()
    record = finished("odd-logs")
    huge = [f["huge"] for _, f in record.logs if "huge" in f]
    assert huge and len(huge[0]) <= 4096


# -- log fields: a dict that needs no cleaning is recorded as a copy of it; the rest
# field by field.  Either way the log is what the dict held when log_kv was called.

def _only_log(finished, name):
    ((_, fields),) = finished(name).logs
    return fields


def test_log_kv_records_a_snapshot_of_the_callers_dict(tracer, finished):
    span = tracer.start_span("snapshot")
    plain = {"event": "x", "value": 1}
    long_value = {"event": "y", "text": "z" * 5000}       # cleaned field by field
    span.log_kv(plain)
    span.log_kv(long_value)
    for d in (plain, long_value):
        d["event"] = "changed"
        d["added"] = 2
        d.pop("value", None)
    span.finish()
    (_, first), (_, second) = finished("snapshot").logs
    assert first == {"event": "x", "value": 1} and first is not plain
    assert second == {"event": "y", "text": "z" * 4096} and second is not long_value


def test_log_kv_empty_dict_is_an_empty_log(tracer, finished):
    empty = {}
    span = tracer.start_span("empty")
    span.log_kv(empty)
    empty["late"] = 1
    span.finish()
    assert _only_log(finished, "empty") == {}


def test_log_kv_value_types_are_kept(tracer, finished):
    span = tracer.start_span("types")
    span.log_kv({"t": True, "f": False, "one": 1, "zero": 0, "big": 2 ** 70, "half": 0.5,
                 "nan": math.nan, "inf": math.inf, "-inf": -math.inf, "none": None,
                 "bytes": b"ab"})
    span.finish()
    fields = _only_log(finished, "types")
    assert [type(fields[k]) for k in ("t", "f", "one", "zero", "big")] == \
        [bool, bool, int, int, int]
    assert (fields["t"], fields["f"], fields["one"], fields["zero"]) == (True, False, 1, 0)
    assert fields["big"] == 2 ** 70 and fields["half"] == 0.5
    assert math.isnan(fields["nan"])
    assert (fields["inf"], fields["-inf"]) == (math.inf, -math.inf)
    assert fields["none"] is None and fields["bytes"] == b"ab"
    assert list(fields) == ["t", "f", "one", "zero", "big", "half", "nan", "inf", "-inf",
                            "none", "bytes"]


def test_log_kv_truncates_exact_str_values_at_the_limit_and_counts(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, max_value_length=8)
    span = tracer.start_span("limit")
    span.log_kv({"a": "12345678", "b": "short"})        # at the limit: kept whole
    span.log_kv({"a": "123456789", "b": "short", "c": 3})
    span.log_kv({"x": "y" * 100, "z": "w" * 9})
    span.finish()
    logs = [fields for _, fields in reporter.spans[0].logs]
    assert logs == [{"a": "12345678", "b": "short"},
                    {"a": "12345678", "b": "short", "c": 3},
                    {"x": "y" * 8, "z": "w" * 8}]
    assert tracer.stats()["truncated"]["values"] == 3


class _Text(str):
    pass


class _Number(int):
    pass


def test_log_kv_str_and_int_subclass_values_are_kept_as_they_are(make_tracer, reporter):
    # (only exact strs are truncated: a subclass value is the caller's object, as the
    # exporters render it)
    tracer = make_tracer(reporter=reporter, max_value_length=4)
    text, number = _Text("abcdefgh"), _Number(7)
    span = tracer.start_span("subclasses")
    span.log_kv({"text": text, "number": number})
    span.finish()
    ((_, fields),) = reporter.spans[0].logs
    assert fields["text"] is text and fields["number"] is number
    assert tracer.stats()["truncated"]["values"] == 0


def test_log_kv_keys_that_are_not_exact_strs_become_text(tracer, finished):
    span = tracer.start_span("keys")
    span.log_kv({_Text("sub"): 1, 2: "two", "plain": 3, None: 4})
    # two keys with the same text: the later field wins, in the earlier one's place
    span.log_kv({1: "int", "1": "str", "end": 0})
    span.log_kv({Unprintable(): "v", "k": 1})
    span.finish()
    logs = [fields for _, fields in finished("keys").logs]
    assert logs[0] == {"sub": 1, "2": "two", "plain": 3, "None": 4}
    assert all(type(k) is str for fields in logs for k in fields)
    assert logs[1] == {"1": "str", "end": 0} and list(logs[1]) == ["1", "end"]
    assert logs[2]["k"] == 1 and len(logs[2]) == 2


def test_log_kv_many_fields_and_a_dict_with_deleted_entries(tracer, finished):
    many = {f"k{i}": i for i in range(1000)}
    sparse = {f"k{i}": i for i in range(100)}
    for i in range(90):
        del sparse[f"k{i}"]
    span = tracer.start_span("sizes")
    span.log_kv(many)
    span.log_kv(sparse)
    span.finish()
    (_, first), (_, second) = finished("sizes").logs
    assert first == many and list(first) == list(many)
    assert second == {f"k{i}": i for i in range(90, 100)}


def test_log_kv_a_dict_whose_copy_runs_a_raising_eq_is_read_field_by_field(tracer, finished):
    # A dict with deleted entries is copied by inserting each key, which compares keys
    # of equal hash: when a key's __eq__ raises, the fields are read one by one.
    class Key:
        hostile = False

        def __init__(self, name):
            self.name = name

        def __hash__(self):
            return 1

        def __eq__(self, other):
            if Key.hostile:
                raise RuntimeError("no comparing")
            return self is other

        def __str__(self):
            return self.name

    d = {f"filler{i}": i for i in range(20)}
    d[Key("a")] = 1
    d[Key("b")] = 2
    for i in range(20):
        del d[f"filler{i}"]
    Key.hostile = True
    span = tracer.start_span("hostile-eq")
    try:
        assert span.log_kv(d) is span
    finally:
        Key.hostile = False
    span.finish()
    assert _only_log(finished, "hostile-eq") == {"a": 1, "b": 2}


def test_log_kv_a_traceback_value_becomes_text(tracer, finished):
    try:
        raise ValueError("boom")
    except ValueError as e:
        tb = e.__traceback__
    span = tracer.start_span("tb")
    span.log_kv({"event": "trace", "where": tb, "n": 1})
    span.finish()
    fields = _only_log(finished, "tb")
    assert fields["event"] == "trace" and fields["n"] == 1
    assert isinstance(fields["where"], str) and "raise ValueError" in fields["where"]


def test_log_kv_dict_changed_by_collections_during_logging(make_tracer, reporter):
    # A garbage collection may run whenever the log's copy is allocated; its callbacks
    # (and finalizers) may change the caller's dict.  Whatever they do, every recorded
    # log is one the dict held, cleaned: exact str keys, values within the limit.
    import gc
    tracer = make_tracer(reporter=reporter, max_value_length=16)
    d = {"event": "x", "value": 1}
    turn = [0]

    def meddle(phase, info):
        turn[0] += 1
        if turn[0] % 3 == 0:
            d[turn[0]] = "v" * 100
        elif turn[0] % 3 == 1:
            d.clear()
            d["event"] = "x"
        else:
            d["long"] = "w" * 100

    span = tracer.start_span("meddled")
    threshold = gc.get_threshold()
    gc.callbacks.append(meddle)
    gc.set_threshold(1)
    try:
        for _ in range(100):
            span.log_kv(d)
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(meddle)
    span.finish()
    logs = reporter.spans[0].logs
    assert len(logs) == 100
    for _, fields in logs:
        assert all(type(k) is str for k in fields)
        assert all(len(v) <= 16 for v in fields.values() if isinstance(v, str))
        assert fields.get("event", "x") == "x"


def test_log_event_and_log_legacy_forms(tracer, finished):
    span = tracer.start_span("legacy", start_time=100.0)
    assert span.log_event("frozen") is span
    span.log_event("frozen", {"year": 1999})
    span.log_event("grandfather", 1947)
    assert span.log(event="thawed") is span
    span.log(payload={"year": 2999})
    span.log(timestamp=150.0, event="e", payload={"p": 1})
    span.log(timestamp=151.5)
    span.finish(finish_time=200.0)
    logs = finished("legacy").logs
    fields = [f for _, f in logs]
    assert fields == [
        {"event": "frozen"},
        {"event": "frozen", "payload": {"year": 1999}},
        {"event": "grandfather", "payload": 1947},
        {"event": "thawed"},
        {"payload": {"year": 2999}},
        {"event": "e", "payload": {"p": 1}},
        {},
    ]
    assert logs[5][0] == 150_000_000_000
    assert logs[6][0] == 151_500_000_000


# -- timestamps ----------------------------------------------------------------------

def test_explicit_start_and_finish_time(tracer, finished):
    span = tracer.start_span("timed", start_time=1.5)
    span.finish(finish_time=2.000000250)
    record = finished("timed")
    assert record.start_ns == 1_500_000_000
    assert record.end_ns == 2_000_000_250
    assert record.duration_ns == 500_000_250


@pytest.mark.parametrize("start", [1_700_000_000.123456, 1_732_320_000.987654321])
def test_explicit_epoch_times_keep_float_precision(tracer, reporter, start):
    # a float near 1.7e9 s resolves ~240 ns; the stored ns is the nearest ns to the
    # exact instant the float denotes (not seconds * 1e9 in floating point, which is
    # off by up to 128 ns more, and not truncated)
    end = start + 0.000_123
    span = tracer.start_span("epoch", start_time=start)
    span.finish(finish_time=end)
    (record,) = reporter.spans
    exact_start = Fraction(start) * 10 ** 9
    exact_end = Fraction(end) * 10 ** 9
    assert abs(record.start_ns - exact_start) <= Fraction(1, 2)
    assert abs(record.end_ns - exact_end) <= Fraction(1, 2)


def test_sub_microsecond_times_round_to_nearest_ns(tracer, finished):
    span = tracer.start_span("ns", start_time=1.000000001)
    span.finish(finish_time=1.000000999)
    record = finished("ns")
    assert record.start_ns == 1_000_000_001
    assert record.end_ns == 1_000_000_999


def test_implicit_times_are_wall_clock(tracer, finished):
    before = time.time_ns()
    span = tracer.start_span("wall")
    time.sleep(0.002)
    span.finish()
    after = time.time_ns()
    record = finished("wall")
    slack = 50_000_000
    assert before - slack <= record.start_ns <= record.end_ns <= after + slack
    assert record.duration_ns >= 1_000_000


def test_explicit_start_implicit_finish(tracer, finished):
    start = time.time() - 10
    span = tracer.start_span("past", start_time=start)
    span.finish()
    record = finished("past")
    assert 9.5e9 <= record.duration_ns <= 60e9


# -- finish ----------------------------------------------------------------------------

def test_double_finish_is_ignored(tracer, reporter):
    span = tracer.start_span("twice", start_time=10.0)
    span.finish(finish_time=11.0)
    span.finish(finish_time=12.0)
    span.finish()
    assert len(reporter.spans) == 1
    span.finish(finish_time=13.0)           # even after it was drained
    spans = reporter.spans
    assert len(spans) == 1
    assert spans[0].end_ns == 11_000_000_000
    assert tracer.stats()["finished"] == 1


def test_writes_after_finish_are_ignored(tracer, reporter):
    span = tracer.start_span("done", tags={"before": 1})
    span.log_kv({"before": True})
    span.finish()
    assert span.set_tag("after", 2) is span
    assert span.log_kv({"after": True}) is span
    assert span.log_event("after") is span
    assert span.log(event="after") is span
    assert span.set_operation_name("renamed") is span
    (record,) = reporter.spans
    assert record.operation_name == "done"
    assert record.tags == {"before": 1}
    assert [f for _, f in record.logs] == [{"before": True}]
    # and after the drain, still nothing
    span.set_tag("after2", 3)
    span.log_kv({"after2": True})
    assert len(reporter.spans) == 1
    assert reporter.spans[0].tags == {"before": 1}


def test_context_survives_finish(tracer):
    span = tracer.start_span("done")
    span.set_baggage_item("k", "v")
    ctx_before = span.context
    span.finish()
    ctx = span.context
    assert (ctx.trace_id, ctx.span_id) == (ctx_before.trace_id, ctx_before.span_id)
    assert ctx.baggage == {"k": "v"}
    child = tracer.start_span("late-child", child_of=span)
    assert child.parent_id == span.span_id and child.trace_id == span.trace_id
    assert child.get_baggage_item("k") == "v"


# -- context manager ---------------------------------------------------------------------

def test_span_context_manager_finishes(tracer, reporter):
    with tracer.start_span("cm") as span:
        assert isinstance(span, fasttrace.Span)
        assert reporter.spans == []
    (record,) = reporter.spans
    assert record.operation_name == "cm"
    assert ext_tags.ERROR not in record.tags
    assert record.logs == []


def test_span_context_manager_logs_errors(tracer, reporter):
    with pytest.raises(ValueError) as info:
        with tracer.start_span("cm-error"):
            raise ValueError("bad thing")
    (record,) = reporter.spans
    assert record.tags[ext_tags.ERROR] is True
    assert len(record.logs) == 1
    fields = record.logs[0][1]
    assert fields["event"] == "error"
    assert fields["message"] == "bad thing"
    assert fields["error.object"] is info.value
    assert fields["error.kind"] == "ValueError"
    assert fields["stack"].startswith("Traceback (most recent call last):")
    assert "test_span_context_manager_logs_errors" in fields["stack"]


def test_context_manager_with_unprintable_exception(tracer, reporter):
    class Weird(Exception):
        def __str__(self):
            raise RuntimeError("cannot print")

    with pytest.raises(Weird):
        with tracer.start_span("weird"):
            raise Weird()
    (record,) = reporter.spans
    assert record.tags[ext_tags.ERROR] is True
    assert isinstance(record.logs[0][1]["message"], str)


# -- baggage on the span -----------------------------------------------------------------

def test_baggage_items(tracer):
    span = tracer.start_span("bag")
    assert span.get_baggage_item("missing") is None
    assert span.set_baggage_item("user", "alice") is span
    span.set_baggage_item("n", "1")
    assert span.get_baggage_item("user") == "alice"
    assert span.context.baggage == {"user": "alice", "n": "1"}
    span.set_baggage_item("user", "bob")
    assert span.context.baggage == {"user": "bob", "n": "1"}


def test_baggage_does_not_change_old_context(tracer):
    span = tracer.start_span("bag")
    span.set_baggage_item("a", "1")
    old = span.context
    span.set_baggage_item("b", "2")
    assert old.baggage == {"a": "1"}
    assert span.context.baggage == {"a": "1", "b": "2"}
