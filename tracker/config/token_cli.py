"""`python -m tracker token create|list|revoke`: API tokens as configuration events."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import msgspec

from tracker.config import auth, model
from tracker.config.live import LiveConfig
from tracker.config.writer import ConfigWriter, xandr_time
from tracker.eventstore.store import EventStore
from tracker.settings import Settings, SettingsError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = sub.add_parser("token", help="create, list and revoke API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="SUBCOMMAND")
    create = token_sub.add_parser("create", help="create a token; prints it once")
    create.add_argument("--tenant", required=True, help="the network / member it belongs to")
    create.add_argument(
        "--role", required=True, help="admin | advertiser:ID | affiliate:ID | publisher:ID"
    )
    create.add_argument("--name", default="", help="a note saying what it is for")
    listing = token_sub.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--tenant", help="only this tenant's")
    revoke = token_sub.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("id", help="the token id (the hex part after trk_)")


def check_args(args: argparse.Namespace) -> None:
    """Validate before connecting: raise SettingsError with a message for the user."""
    if args.command == "token" and args.token_command == "create":
        if not auth.TENANT_RE.fullmatch(args.tenant):
            raise SettingsError(f"--tenant {args.tenant!r}: letters, digits, _ . - (max 64)")
        try:
            auth.parse_role(args.role)
        except ValueError as exc:
            raise SettingsError(f"--role: {exc}") from None


async def token_main(settings: Settings, args: argparse.Namespace) -> None:
    from tracker.service import open_store, resolve_redis_url

    async with open_store(settings, await resolve_redis_url(settings)) as store:
        await run(store, args)


async def run(store: EventStore, args: argparse.Namespace) -> None:
    writer = ConfigWriter(store.client)
    if args.token_command == "create":
        role, scope_id = auth.parse_role(args.role)
        if scope_id is not None:  # a token for an object that is not there would see nothing
            live = LiveConfig(store)
            await live.load()
            scoped = live.state.get(role, scope_id)
            if scoped is None or scoped.tenant != args.tenant or model.is_deleted(scoped):
                raise SettingsError(
                    f"--role {args.role}: tenant {args.tenant!r} has no {role} {scope_id} "
                    "(create it first, with an admin token)"
                )
        token_id, digest, bearer = auth.mint()
        now = datetime.now(UTC)
        token = model.Token(
            id=token_id,
            tenant=args.tenant,
            role=role,
            scope_id=scope_id,
            secret_sha256=digest,
            created_at=xandr_time(now),
            name=args.name,
            version=0,
        )
        await writer.save(model.TOKEN, token, actor="cli", now=now)
        print(f"token id: {token_id}", file=sys.stderr)
        print(bearer, flush=True)
        return
    live = LiveConfig(store)
    await live.load()
    tokens = sorted(live.state.tokens.values(), key=lambda t: (t.tenant, t.created_at, t.id))
    if args.token_command == "list":
        for t in tokens:
            if args.tenant and t.tenant != args.tenant:
                continue
            shown = f"{t.role}:{t.scope_id}" if t.scope_id is not None else t.role
            print(f"{t.id}  {t.tenant}  {shown}  {t.state}  {t.created_at}  {t.name}")
        return
    found = live.state.tokens.get(args.id)
    if found is None:
        raise SettingsError(f"no token {args.id!r}")
    if found.state == "revoked":
        print(f"token {args.id} was already revoked")
        return
    await writer.save(model.TOKEN, msgspec.structs.replace(found, state="revoked"), actor="cli")
    print(f"token {args.id} revoked")
