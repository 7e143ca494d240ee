"""The azure source under throttling and faults: Retry-After obeyed and counted, bounded backoff, and a page
that fails for good failing the whole read (never a partial directory)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from adsync_plan.config import Scope
from adsync_plan.errors import SourceError
from adsync_plan.sources import azure
from tests.servers.graph import CLIENT_SECRET, GraphServer, graph_user, group_id


@pytest.fixture
def graph(monkeypatch):
    monkeypatch.setenv("GRAPH_TEST_SECRET", CLIENT_SECRET)
    with GraphServer() as server:
        server.users = [graph_user(n) for n in range(1200)]
        server.add_group(group_id("staff"), [u["id"] for u in server.users])
        yield server


def read(graph, **settings):
    settings.setdefault("page_size", 500)  # three user pages: 500, 500, 200
    scope = Scope(admin_groups=(), user_groups=(group_id("staff"),))
    return azure.read_directory(graph.source_settings(**settings), scope, {}, Path("."))


def gaps_after(graph, endpoint: str, status: int) -> list[float]:
    """Seconds between each `status` answer on `endpoint` and the next request to that endpoint."""
    hits = [h for h in graph.hits if h.endpoint == endpoint]
    return [b.at - a.at for a, b in zip(hits, hits[1:], strict=False) if a.status == status]


def test_429_with_fractional_retry_after_is_obeyed_and_counted(graph):
    graph.fail("users", 429, page=1, times=2, retry_after="0.15")

    directory = read(graph)

    assert len(directory.users) == 1200
    assert graph.counts["users:429"] == 2
    assert graph.counts["users:200"] == 3
    gaps = gaps_after(graph, "users", 429)
    assert len(gaps) == 2 and min(gaps) >= 0.15


def test_503_with_retry_after_on_group_members(graph):
    graph.fail("transitive", 503, page=2, retry_after="0.05")

    directory = read(graph)

    assert all(u.groups for u in directory.users)
    assert graph.counts["transitive:503"] == 1
    assert min(gaps_after(graph, "transitive", 503)) >= 0.05


def test_retry_after_as_an_http_date(graph):
    graph.fail("users", 429, page=0, retry_after=format_datetime(datetime.now(UTC), usegmt=True))

    assert len(read(graph).users) == 1200
    assert graph.counts["users:429"] == 1


def test_503_without_retry_after_backs_off(graph):
    graph.fail("users", 503, page=2)

    directory = read(graph)

    assert len(directory.users) == 1200
    assert min(gaps_after(graph, "users", 503)) >= azure.backoff(1)


def test_throttling_that_never_ends_fails_after_a_bounded_number_of_attempts(graph):
    graph.fail("users", 429, page=1, times=None, retry_after="0.01")

    with pytest.raises(SourceError) as err:
        read(graph)

    message = str(err.value)
    assert f"after {azure.MAX_ATTEMPTS} attempts" in message and "page 2 of the users" in message
    assert "no partial directory" in message
    assert graph.counts["users:429"] == azure.MAX_ATTEMPTS


def test_a_page_that_fails_for_good_fails_the_read(graph):
    graph.fail("users", 500, page=2, times=None)

    with pytest.raises(SourceError) as err:
        read(graph)

    message = str(err.value)
    assert "page 3 of the users" in message and "HTTP 500" in message and "no partial directory" in message
    assert graph.counts["users:500"] == 1  # a 500 is not transient: not retried
    assert graph.counts["transitive"] == 0  # nothing after the failed page was read


def test_a_page_that_is_not_json_fails_the_read(graph):
    graph.fail("users", 200, page=1, body=b"<html>Service temporarily overloaded</html>", content_type="text/html")

    with pytest.raises(SourceError, match=r"page 2 of the users with something that is not JSON \(text/html\)"):
        read(graph)


def test_a_member_page_that_fails_for_good_fails_the_read(graph):
    graph.fail("transitive", 502, page=1, times=None)

    with pytest.raises(SourceError, match=r"page 2 of the members of group .* \(HTTP 502"):
        read(graph)


def test_a_page_without_values_fails_the_read(graph):
    graph.fail("users", 200, page=0, body=b'{"error": "odd"}')

    with pytest.raises(SourceError, match="without a list of values"):
        read(graph)


def test_a_403_names_the_permissions_to_grant(graph):
    graph.fail("users", 403, page=0, body=b'{"error": {"code": "Authorization_RequestDenied", "message": "no"}}')

    with pytest.raises(SourceError, match="User.Read.All and GroupMember.Read.All"):
        read(graph)


def test_a_server_that_went_away_fails_the_read(graph, monkeypatch, closed_port):
    monkeypatch.setattr(azure, "MAX_ATTEMPTS", 2)
    monkeypatch.setattr(azure, "BACKOFF_FIRST", 0.01)
    settings = graph.source_settings(graph_url=f"https://127.0.0.1:{closed_port}")  # bound, never listening

    with pytest.raises(SourceError, match=f"Cannot connect to 127.0.0.1:{closed_port}"):
        azure.read_directory(settings, Scope((), (group_id("staff"),)), {}, Path("."))


def test_a_next_link_to_another_host_is_refused(graph, monkeypatch):
    client = azure.GraphClient(graph.source_settings(), Path("."))

    with pytest.raises(SourceError, match="another host"):
        client._next_link("https://evil.example/v1.0/users?$skiptoken=x", "the users")
    assert client._next_link(f"{graph.base_url}/v1.0/users?$skiptoken=x", "the users").endswith("=x")


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2.128", 2.128),
        ("10", 10.0),
        ("0", 0.0),
        ("-3", 0.0),
        ("99999", azure.RETRY_AFTER_CAP),
        ("soon", None),
    ],
)
def test_retry_after_values(header, seconds):
    assert azure.retry_after(header) == seconds


def test_retry_after_http_date_in_the_future(monkeypatch):
    """The clock is fixed, so the answer is exact however long the machine takes between the two lines."""
    now = datetime(2026, 12, 2, 9, 0, 0, tzinfo=UTC)

    class FixedClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return now if tz is not None else now.replace(tzinfo=None)

    monkeypatch.setattr(azure, "datetime", FixedClock)
    assert azure.retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True)) == 30.0
    assert azure.retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True)) == 0.0  # in the past


def test_backoff_doubles_and_is_bounded():
    delays = [azure.backoff(n) for n in range(1, 10)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(delays) == azure.BACKOFF_CAP
