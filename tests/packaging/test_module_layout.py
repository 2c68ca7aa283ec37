# SPDX-License-Identifier: Apache-2.0
"""Who owns what: the core loads no integration, and each shared piece has one home."""
import subprocess
import sys

import fasttrace


# the frameworks the integrations wrap: none of them is imported by `import fasttrace`
FRAMEWORKS = ("grpc", "grpc.aio", "aiohttp", "requests", "httpx", "starlette", "flask",
              "django", "asgiref")


def test_import_fasttrace_loads_no_integration():
    out = subprocess.run(
        [sys.executable, "-c",
         "import sys, fasttrace; print([m for m in sys.modules if 'contrib' in m"
         f" or m.split('.')[0] in {FRAMEWORKS!r} or m in {FRAMEWORKS!r}])"],
        capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_import_fasttrace_loads_the_remote_sampler_only_when_asked_for():
    code = ("import sys, fasttrace; a = 'fasttrace.remote_sampling' in sys.modules; "
            "fasttrace.RemoteSampler; print(a, 'fasttrace.remote_sampling' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split() == ["False", "True"]


def test_the_asyncio_integrations_share_the_sync_ones_helpers():
    import pytest
    pytest.importorskip("grpc")
    from fasttrace.contrib import grpc, grpc_aio

    # one place for the tags, the status -> error mapping and the trailer
    assert grpc_aio._finish is grpc._finish and grpc_aio._client_end is grpc._client_end
    assert issubclass(grpc_aio._AioServerInterceptor, grpc._ServerWrapping)


def test_the_django_integration_is_built_from_the_http_helpers():
    import pytest
    pytest.importorskip("django")
    from fasttrace.contrib import _http
    from fasttrace.contrib import django as ft_django

    assert issubclass(ft_django._Request, _http.ServerRequest)
    assert ft_django.start_server_span is _http.start_server_span


def test_the_aiohttp_integration_is_built_from_the_http_helpers():
    import pytest
    pytest.importorskip("aiohttp")
    from fasttrace.contrib import _http
    from fasttrace.contrib import aiohttp as ft_aiohttp

    assert issubclass(ft_aiohttp._Request, _http.ServerRequest)
    assert ft_aiohttp.finish_http_client_span is _http.finish_http_client_span
    assert ft_aiohttp.follow_response_header is _http.follow_response_header


def test_traced_and_the_integrations_share_one_error_log_and_one_set_of_counters():
    import fasttrace.contrib as contrib
    from fasttrace import _failures, decorators, errors
    from fasttrace.contrib import _http

    assert contrib.mark_error is errors.mark_error is _http.mark_error
    assert decorators.mark_error is errors.mark_error
    assert decorators.internal_error is _failures.internal_error is contrib.internal_error
    assert contrib.stats is _failures.stats and contrib.reset_stats is _failures.reset_stats


def test_the_helpers_stay_importable_from_fasttrace_contrib():
    from fasttrace.contrib import (Patches, client_span_tags, count_dropped,  # noqa: F401
                                   extract, finish_http_client_span, get_tracer, inject,
                                   internal_error, log, mark_error, normalize_excluded,
                                   path_excluded, peer_tags, reset_stats, start_server_span,
                                   stats, strip_userinfo)
    assert fasttrace.contrib.__all__ == ["stats", "reset_stats"]


def test_the_http_client_integrations_share_one_client_span_flag_and_one_wrapper():
    from fasttrace.contrib import _http, httpx, requests, urllib

    assert urllib.client_span_active is _http.client_span_active
    for make in (requests._make_send, httpx._make_send, httpx._make_async_send):
        assert make.__module__ == _http.__name__


def test_the_viewer_keeps_its_public_names():
    import fasttrace.viewer as viewer
    from fasttrace.exporters import _jsonl_read
    from fasttrace.view import html, model, terminal

    for name in viewer.__all__:
        assert hasattr(viewer, name), name
    assert viewer.load_jsonl is _jsonl_read.load_jsonl
    assert viewer.tree_order is model.tree_order
    assert viewer.render_waterfall is terminal.render_waterfall
    assert callable(html.render_html)
