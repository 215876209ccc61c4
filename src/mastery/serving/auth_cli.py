"""``mastery keys create|list|revoke``: the API keys of the HTTP services (see :mod:`mastery.serving.auth`).

    mastery keys create --owner alice        # prints the token once; the file keeps only its sha256
    mastery keys list                        # id, owner, first characters, created, revoked
    mastery keys revoke 3f9c2a1b             # the next request with that token gets 401

``--keys-file PATH`` picks another key file (default ``MASTERY_API_KEYS_FILE``, else ``<cache>/api-keys.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _store(args: argparse.Namespace) -> Any:
    from mastery.serving.auth import KeyStore

    return KeyStore(args.keys_file) if args.keys_file else KeyStore.from_settings()


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def cmd_create(args: argparse.Namespace) -> int:
    store = _store(args)
    key, token = store.create(args.owner)
    if args.json:
        _out(json.dumps({"id": key.id, "owner": key.owner, "token": token, "file": str(store.path)}))
        return 0
    _out(f"API key {key.id} for {key.owner} (stored hashed in {store.path}).")
    _out("Token (shown only now; keep it secret):")
    _out(token)
    _out("Send it as: Authorization: Bearer <token>")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    keys = store.list_keys()
    if args.json:
        _out(json.dumps([{"id": k.id, "owner": k.owner, "prefix": k.prefix, "created_at": k.created_at,
                          "revoked_at": k.revoked_at} for k in keys]))
        return 0
    if not keys:
        _out(f"no API keys in {store.path}; create one with: mastery keys create --owner NAME")
        return 0
    _out(f"{'id':<10} {'owner':<20} {'token starts':<13} {'created':<20} revoked")
    for k in keys:
        _out(f"{k.id:<10} {k.owner:<20} {k.prefix + '...':<13} {_when(k.created_at):<20} {_when(k.revoked_at)}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    key = _store(args).revoke(args.id)
    _out(f"API key {key.id} of {key.owner} revoked at {_when(key.revoked_at)}")
    return 0


def register(subparsers: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    keys = subparsers.add_parser("keys", help="API keys (bearer tokens) of the agent API and the other HTTP services")
    sub = keys.add_subparsers(dest="action", required=True, parser_class=parser_class)

    def with_file(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--keys-file", default=None, help="key file (default MASTERY_API_KEYS_FILE, else "
                                                    "<cache>/api-keys.json)")
        return p

    p = with_file(sub.add_parser("create", help="make a key for an owner and print its token once"))
    p.add_argument("--owner", required=True, help="who the key belongs to; runs started with it are theirs alone")
    p.add_argument("--json", action="store_true", help="print {id, owner, token, file} as JSON")
    p.set_defaults(func=cmd_create)
    p = with_file(sub.add_parser("list", help="the keys in the key file (never their tokens)"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = with_file(sub.add_parser("revoke", help="revoke a key by its id: its token gets 401 from then on"))
    p.add_argument("id", help="the key's id (see 'mastery keys list')")
    p.set_defaults(func=cmd_revoke)
