# SPDX-License-Identifier: Apache-2.0
"""The one parser of propagator names, as the Tracer, OTEL_PROPAGATORS and
make_propagation use it."""
import logging

import pytest

from fasttrace import Tracer
from fasttrace.config import _propagators
from fasttrace.propagation import KNOWN_PROPAGATORS, make_propagation, parse_propagator_names


class _Env:
    def __init__(self, raw):
        self.raw = raw

    def str(self, name, default=None):
        assert name == "OTEL_PROPAGATORS"
        return self.raw if self.raw is not None else default


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_normalises_splits_and_dedupes():
    assert parse_propagator_names(" B3multi, jaeger,,b3 ,JAEGER") == ("b3multi", "jaeger", "b3")
    assert parse_propagator_names(["tracecontext", "none", "Baggage"]) == ("tracecontext", "baggage")
    assert parse_propagator_names("b3,none,jaeger", none_clears=True) == ()
    assert parse_propagator_names([]) == ()


def test_unknown_names_raise_without_a_callback():
    with pytest.raises(ValueError, match=r"unknown propagator 'XRay'; known: tracecontext"):
        parse_propagator_names(["b3", "XRay"])
    with pytest.raises(TypeError, match="propagator names are str, not int"):
        parse_propagator_names(["b3", 1])


def test_unknown_names_go_to_the_callback_and_are_skipped():
    seen = []
    got = parse_propagator_names(["XRay", 7, "b3", "xray"], lambda name, key: seen.append((name, key)))
    assert got == ("b3",)
    assert seen == [("XRay", "xray"), (7, None), ("xray", "xray")]


def test_tracer_warns_with_the_name_as_given(caplog):
    with caplog.at_level(logging.WARNING, logger="fasttrace"):
        tracer = Tracer("svc", propagators=["B3", " XRay ", 5, "b3"])
    try:
        assert tracer._propagator_names == ("b3",)
        known = ", ".join(KNOWN_PROPAGATORS)
        assert _warnings(caplog) == [
            f"fasttrace: unknown propagator ' XRay ' ignored (known: {known})",
            f"fasttrace: unknown propagator 5 ignored (known: {known})"]
    finally:
        tracer.close()


def test_otel_propagators_warns_with_the_normalised_name(caplog):
    with caplog.at_level(logging.WARNING, logger="fasttrace"):
        assert _propagators(_Env("b3, XRay ,b3multi")) == ("b3", "b3multi")
        assert _propagators(_Env("b3,NONE,jaeger")) == ()
        assert _propagators(_Env(None)) == ("tracecontext", "baggage")
    assert _warnings(caplog) == [
        "fasttrace: OTEL_PROPAGATORS: skipping unknown propagator 'xray' "
        f"(known: {', '.join(KNOWN_PROPAGATORS)})"]


def test_make_propagation_builds_the_parsed_names():
    assert make_propagation("b3, none ,Jaeger").names == ("b3", "jaeger")
    assert make_propagation(["jaeger"], text_map=True).text_map is True
