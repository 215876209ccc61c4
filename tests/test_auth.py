"""The shared auth layer: API keys stored hashed (created, listed, revoked with `mastery keys`), the bearer
dependency and the trusted-host check, on a tiny FastAPI app of its own (served on 127.0.0.1)."""

import json
import stat
from typing import Annotated

import pytest

from mastery.core.errors import ConfigError
from mastery.serving.agent_client import api_client
from mastery.serving.auth import KeyStore, TrustedHosts, host_name, owner_dependency, trusted_hosts
from mastery.serving.server import ServerThread


def test_keys_are_stored_hashed_in_a_private_file(tmp_path):
    store = KeyStore(tmp_path / "sub" / "keys.json")
    key, token = store.create("alice")
    text = store.path.read_text()
    assert token not in text and token[8:20] not in text  # neither the token nor its secret part
    assert json.loads(text)["keys"][0]["sha256"] == key.sha256 and len(key.sha256) == 64
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert not list(store.path.parent.glob("*.tmp"))  # the atomic write left no temp file
    assert token.startswith("mst_") and len(token) >= 40
    _, other = store.create("alice")  # an owner may hold several keys, each its own token
    assert other != token and store.owner_of(other) == store.owner_of(token) == "alice"


def test_owner_of_accepts_only_active_exact_tokens(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    assert store.owner_of("mst_anything") is None  # no file: no keys, nobody gets in
    alice, alice_token = store.create("alice")
    _, bob_token = store.create("bob")
    assert (store.owner_of(alice_token), store.owner_of(bob_token)) == ("alice", "bob")
    for wrong in (None, "", alice_token[:-1], alice_token + "x", alice_token.upper(), alice.sha256, alice.prefix):
        assert store.owner_of(wrong) is None, wrong
    store.revoke(alice.id)
    assert store.owner_of(alice_token) is None and store.owner_of(bob_token) == "bob"
    # another process (the CLI) revoking a key is seen by a store that read the file before
    second_view = KeyStore(store.path)
    assert second_view.owner_of(bob_token) == "bob"
    bob_id = next(k.id for k in store.list_keys() if k.owner == "bob")
    KeyStore(store.path).revoke(bob_id)
    assert second_view.owner_of(bob_token) is None
    assert [k.active for k in store.list_keys()] == [False, False]


@pytest.mark.parametrize("owner", ["", " alice", "al ice", "-x", "a" * 65, "alice\n", "ä"])
def test_bad_owner_names_are_refused(tmp_path, owner):
    with pytest.raises(ConfigError, match="owner"):
        KeyStore(tmp_path / "keys.json").create(owner)


@pytest.mark.parametrize("content", ["{", "[]", '{"format": "other", "version": 1, "keys": []}',
                                     '{"format": "mastery-api-keys", "version": 1, "keys": [{"id": "x"}]}'])
def test_a_broken_key_file_is_one_clear_error(tmp_path, content):
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match="API key file"):
        KeyStore(path).owner_of("mst_x")


def test_revoking_an_unknown_key_names_it(tmp_path):
    with pytest.raises(ConfigError, match="no API key 'nope'"):
        KeyStore(tmp_path / "keys.json").revoke("nope")


def test_the_key_file_location_comes_from_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("MASTERY_API_KEYS_FILE", str(tmp_path / "from-env.json"))
    assert KeyStore.from_settings().path == tmp_path / "from-env.json"
    monkeypatch.delenv("MASTERY_API_KEYS_FILE")
    monkeypatch.setenv("MASTERY_CACHE", str(tmp_path / "cache"))
    assert KeyStore.from_settings().path == tmp_path / "cache" / "api-keys.json"


def test_cli_create_list_revoke(tmp_path, capsys):
    from mastery.cli import main

    path = tmp_path / "keys.json"
    assert main(["keys", "create", "--owner", "alice", "--keys-file", str(path), "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["owner"] == "alice" and KeyStore(path).owner_of(created["token"]) == "alice"
    assert main(["keys", "list", "--keys-file", str(path)]) == 0
    listing = capsys.readouterr().out
    assert created["id"] in listing and "alice" in listing and created["token"] not in listing
    assert main(["keys", "revoke", created["id"], "--keys-file", str(path)]) == 0
    assert KeyStore(path).owner_of(created["token"]) is None
    assert main(["keys", "revoke", "nope", "--keys-file", str(path)]) == 2
    assert capsys.readouterr().err.strip().startswith("mastery: error: no API key 'nope'")
    assert main(["keys", "create", "--owner", "bad name", "--keys-file", str(path)]) == 2
    plain = tmp_path / "plain.json"
    assert main(["keys", "create", "--owner", "bob", "--keys-file", str(plain)]) == 0
    token = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("mst_")]
    assert len(token) == 1 and KeyStore(plain).owner_of(token[0]) == "bob"


@pytest.mark.parametrize(("header", "host"), [
    ("127.0.0.1:8010", "127.0.0.1"), ("[::1]:8010", "::1"), ("::1", "::1"), ("LocalHost", "localhost"),
    ("example.org:443", "example.org"), ("", "")])
def test_host_name_drops_the_port(header, host):
    assert host_name(header) == host


def test_trusted_hosts_defaults_and_wildcards():
    assert trusted_hosts() == ["127.0.0.1", "localhost", "::1"]
    assert trusted_hosts("0.0.0.0") == trusted_hosts("::") == trusted_hosts()  # a wildcard bind names no host
    assert trusted_hosts("10.0.0.5", ["api.example.org", "[fe80::1]"])[-3:] == ["10.0.0.5", "api.example.org",
                                                                                 "fe80::1"]
    check = TrustedHosts(None, ["localhost", "*.example.org"])
    assert check.is_allowed("a.example.org:80") and check.is_allowed("localhost")
    assert not check.is_allowed("example.org") and not check.is_allowed("evilexample.org")
    assert not check.is_allowed(None) and not check.is_allowed("localhost.evil")
    with pytest.raises(ConfigError):
        TrustedHosts(None, [])


def test_the_dependency_and_middleware_on_another_app(tmp_path):
    """The layer as the other services will use it: a route guarded by require_owner, hosts checked."""
    from fastapi import Depends, FastAPI

    from mastery.serving.http import RequestContextMiddleware, install_error_handlers

    store = KeyStore(tmp_path / "keys.json")
    _, token = store.create("dana")
    app = FastAPI()
    app.add_middleware(TrustedHosts, allowed=trusted_hosts())
    app.add_middleware(RequestContextMiddleware, max_body_bytes=1024)
    owner = Annotated[str, Depends(owner_dependency(store))]

    @app.get("/me")
    async def me(who: owner) -> dict:
        return {"owner": who}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    import logging

    install_error_handlers(app, logging.getLogger("test"))
    assert app.openapi()["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    with ServerThread(app) as srv, api_client(srv.url, token) as client, api_client(srv.url, None) as anonymous:
        assert client.get("/me").json() == {"owner": "dana"}
        missing = anonymous.get("/me")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.headers["x-request-id"] and missing.json()["request_id"] == missing.headers["x-request-id"]
        assert anonymous.get("/health").status_code == 200
        rebinding = client.get("/me", headers={"Host": "attacker.example"})
        assert rebinding.status_code == 400 and rebinding.json()["request_id"] == rebinding.headers["x-request-id"]
