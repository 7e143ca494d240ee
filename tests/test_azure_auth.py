"""The azure source's token: the real msal client-credentials flow against the local Entra ID server.

Client secret and certificate (PEM, encrypted PEM, PFX) credentials, wrong credentials, unknown tenant and
application, TLS trust, and the secret never showing up in an error or a log line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from adsync_plan.config import Scope
from adsync_plan.errors import AdsyncError, ConfigError, SourceError
from adsync_plan.sources import azure
from tests.servers.graph import CLIENT_SECRET, GraphServer, graph_user, group_id, rsa_client_certificate

CERT_PASSWORD = "pfx-Pa55word!"


@pytest.fixture
def graph(monkeypatch):
    monkeypatch.setenv("GRAPH_TEST_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("GRAPH_CERT_PASSWORD", CERT_PASSWORD)
    with GraphServer() as server:
        server.users = [graph_user(n) for n in range(1500)]
        server.add_group(group_id("staff"), [u["id"] for u in server.users[:3]])
        yield server


def read(graph, **settings):
    scope = Scope(admin_groups=(), user_groups=(group_id("staff"),))
    return azure.read_directory(graph.source_settings(**settings), scope, {}, Path("."))


def one_sentence(err: AdsyncError) -> str:
    message = str(err)
    assert "\n" not in message and "Traceback" not in message
    assert message.endswith(".")
    return message


def test_client_secret(graph):
    directory = read(graph, page_size=500)

    assert len(directory.users) == 1500
    assert graph.counts["token:200"] == 1  # one token for three user pages and one group page
    assert graph.counts["users:200"] == 3
    assert graph.counts["unauthorised"] == 0


@pytest.mark.parametrize("kind", ["pem", "encrypted-pem", "pfx"])
def test_certificate_credentials(graph, tmp_path, kind, caplog):
    caplog.set_level(logging.DEBUG)
    password = None if kind == "pem" else CERT_PASSWORD.encode()
    files = rsa_client_certificate(graph.ca, tmp_path, password)
    graph.register_certificate(files["cert"])
    settings = {
        "client_secret_env": None,
        "certificate_file": str(files["pfx" if kind == "pfx" else "pem"]),
        "certificate_password_env": None if password is None else "GRAPH_CERT_PASSWORD",
    }

    directory = read(graph, **settings)

    assert len(directory.users) == 1500
    assert graph.counts["token:200"] == 1
    assert graph.counts["token:401"] == 0
    key_line = files["key_pem"].splitlines()[3]  # a line from the middle of the private key
    assert key_line not in caplog.text and CERT_PASSWORD not in caplog.text


def test_a_certificate_the_application_does_not_know_is_refused(graph, tmp_path):
    registered = rsa_client_certificate(graph.ca, tmp_path)
    graph.register_certificate(registered["cert"])
    (tmp_path / "other").mkdir()
    other = rsa_client_certificate(trustme.CA(), tmp_path / "other")

    with pytest.raises(SourceError) as err:
        read(graph, client_secret_env=None, certificate_file=str(other["pem"]))

    message = one_sentence(err.value)
    assert "invalid_client" in message and "AADSTS700027" in message
    assert "certificate is registered" in message
    assert graph.counts["users"] == 0


def test_a_wrong_certificate_password_is_a_configuration_error(graph, tmp_path, monkeypatch):
    files = rsa_client_certificate(graph.ca, tmp_path, CERT_PASSWORD.encode())
    monkeypatch.setenv("GRAPH_CERT_PASSWORD", "not-the-password")

    with pytest.raises(ConfigError) as err:
        read(
            graph,
            client_secret_env=None,
            certificate_file=str(files["pfx"]),
            certificate_password_env="GRAPH_CERT_PASSWORD",
        )

    message = one_sentence(err.value)
    assert "GRAPH_CERT_PASSWORD" in message and "not-the-password" not in message
    assert sum(graph.counts.values()) == 0


def test_an_ec_key_is_refused_with_a_reason(graph, tmp_path):
    leaf = graph.ca.issue_cert("ec-client.example")  # trustme's default key type is ECDSA
    path = tmp_path / "ec.pem"
    path.write_bytes(leaf.private_key_pem.bytes() + leaf.cert_chain_pems[0].bytes())

    with pytest.raises(ConfigError, match="needs an RSA key"):
        read(graph, client_secret_env=None, certificate_file=str(path))


def test_a_pem_without_a_key_is_refused(graph, tmp_path):
    files = rsa_client_certificate(graph.ca, tmp_path)
    only_cert = tmp_path / "cert-only.pem"
    only_cert.write_bytes(files["cert"].public_bytes(serialization.Encoding.PEM))

    with pytest.raises(ConfigError, match="no private key"):
        read(graph, client_secret_env=None, certificate_file=str(only_cert))


def test_a_wrong_secret_is_one_sentence_without_the_secret(graph, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng~but-still-secret.value"
    monkeypatch.setenv("GRAPH_TEST_SECRET", wrong)

    with pytest.raises(SourceError) as err:
        read(graph)

    message = one_sentence(err.value)
    assert "invalid_client" in message and "AADSTS7000215" in message
    assert "GRAPH_TEST_SECRET" in message  # where to fix it
    assert wrong not in message and CLIENT_SECRET not in message
    assert wrong not in caplog.text
    assert graph.counts["token:401"] == 1 and graph.counts["users"] == 0


def test_the_secret_never_appears_in_logs_of_a_successful_read(graph, caplog):
    caplog.set_level(logging.DEBUG)

    read(graph)

    assert graph.counts["token:200"] == 1
    assert caplog.records, "expected DEBUG records from msal/urllib3 to check"
    tokens = list(graph._tokens)
    assert len(tokens) == 1
    for record in caplog.records:
        assert CLIENT_SECRET not in record.getMessage()
    assert CLIENT_SECRET not in caplog.text
    assert tokens[0] not in caplog.text  # nor the access token, which is as good as the secret for an hour


def test_an_unknown_tenant(graph):
    with pytest.raises(SourceError) as err:
        read(graph, tenant_id="00000000-0000-0000-0000-000000000000")

    message = one_sentence(err.value)
    assert "does not know the tenant 00000000-0000-0000-0000-000000000000" in message
    assert "source.tenant_id" in message
    assert graph.counts["discovery:400"] == 1 and graph.counts["token"] == 0


def test_an_unknown_application(graph):
    with pytest.raises(SourceError) as err:
        read(graph, client_id="11111111-2222-3333-4444-555555555555")

    message = one_sentence(err.value)
    assert "unauthorized_client" in message and "source.client_id" in message


def test_a_missing_secret_variable_is_a_configuration_error(graph, monkeypatch):
    monkeypatch.delenv("GRAPH_TEST_SECRET")

    with pytest.raises(ConfigError, match="GRAPH_TEST_SECRET"):
        read(graph)
    assert sum(graph.counts.values()) == 0


def test_a_failing_token_endpoint_fails_the_read(graph):
    graph.fail("token", 503, retry_after="1")

    with pytest.raises(SourceError) as err:
        read(graph)

    message = one_sentence(err.value)
    assert "token endpoint" in message and "try again later" in message
    assert graph.counts["users"] == 0


def test_an_expired_token_is_renewed_once(graph):
    graph.fail("users", 401, page=1)  # Graph no longer accepts the cached token on the second page

    directory = read(graph, page_size=500)

    assert len(directory.users) == 1500
    assert graph.counts["users:401"] == 1
    assert graph.counts["token:200"] == 2


def test_the_ca_file_wins_over_requests_ca_bundle(graph, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")

    assert len(read(graph).users) == 1500


def test_an_untrusted_server_certificate_names_the_fix(graph, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")

    with pytest.raises(SourceError) as err:
        read(graph, ca_file=None)

    message = one_sentence(err.value)
    assert "could not be verified" in message and "source.ca_file" in message


def test_a_missing_ca_file_is_a_configuration_error(graph, tmp_path):
    with pytest.raises(ConfigError, match="source.ca_file: .*missing-ca.pem does not exist"):
        read(graph, ca_file=str(tmp_path / "missing-ca.pem"))
    assert sum(graph.counts.values()) == 0
