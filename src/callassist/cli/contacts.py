"""`callassist contacts`: the people the assistant greets by name."""

from __future__ import annotations

from typing import Annotated

import typer

from callassist.cli.common import console, echo_json, fail, open_records, run_on_database, settings_or_exit

app = typer.Typer(help="People the assistant greets by name.", no_args_is_help=True)


def _phone_or_exit(number: str) -> str:
    from callassist.store.contacts import normalize_phone

    try:
        return normalize_phone(number)
    except ValueError as exc:
        raise fail(str(exc), 2) from None


@app.command("add")
def contacts_add(
    number: Annotated[str, typer.Argument(help="Their number, with country code: +15551234567")],
    name: Annotated[str, typer.Argument(help="How the assistant should call them")],
    note: Annotated[str | None, typer.Option(help="Something the assistant should know")] = None,
    vip: Annotated[
        bool | None, typer.Option("--vip/--no-vip", help="Always ring you, even when ringing is off")
    ] = None,
) -> None:
    """Add a contact, or update the name and note of an existing one."""
    from callassist.store.contacts import Contact, ContactRepository

    settings = settings_or_exit()
    phone = _phone_or_exit(number)
    if not name.strip():
        raise fail("the contact's name is empty", 2)

    async def save() -> Contact:
        async with open_records(settings) as database, database.session() as session:
            contacts = ContactRepository(session)
            saved = await contacts.upsert(phone, name, note)
            return saved if vip is None else await contacts.mark(phone, vip=vip)

    contact = run_on_database(save(), "save the contact")
    flag = " (VIP)" if contact.vip else ""
    console.print(f"Saved {contact.name} ({contact.phone}){flag}", highlight=False, markup=False)


@app.command("list")
def contacts_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (as GET /api/contacts)")] = False,
) -> None:
    """List the contacts, by name."""
    from rich.table import Table
    from rich.text import Text

    from callassist.dashboard.serialize import contacts_json
    from callassist.store.contacts import Contact, ContactRepository

    settings = settings_or_exit()

    async def listing() -> list[Contact]:
        async with open_records(settings) as database, database.session(read_only=True) as session:
            return await ContactRepository(session).list()

    contacts = run_on_database(listing())
    if as_json:
        echo_json(contacts_json(contacts, settings.zone))
        return
    if not contacts:
        console.print("No contacts. Add one: callassist contacts add +15551234567 'Alex Chen'", markup=False)
        return
    table = Table("Number", "Name", "", "Note", box=None, pad_edge=False)
    for contact in contacts:
        flags = ", ".join(flag for flag, on in (("VIP", contact.vip), ("blocked", contact.blocked)) if on)
        table.add_row(contact.phone, Text(contact.name), flags, Text(contact.note or ""))
    console.print(table)


@app.command("remove")
def contacts_remove(
    number: Annotated[str, typer.Argument(help="The contact's number")],
) -> None:
    """Forget a contact (their past calls stay in the records)."""
    from callassist.store.contacts import ContactRepository

    settings = settings_or_exit()
    phone = _phone_or_exit(number)

    async def remove() -> bool:
        async with open_records(settings) as database, database.session() as session:
            return await ContactRepository(session).remove(phone)

    if not run_on_database(remove(), "remove the contact"):
        raise fail(f"no contact with the number {phone}")
    console.print(f"Removed {phone}", highlight=False)


# `callassist block`, `unblock`, `blocked`: top-level commands (registered in cli/__init__.py).


def _set_blocked(number: str, blocked: bool) -> None:
    from callassist.store.contacts import Contact, ContactRepository

    settings = settings_or_exit()
    phone = _phone_or_exit(number)

    async def save() -> Contact:
        async with open_records(settings) as database, database.session() as session:
            return await ContactRepository(session).mark(phone, blocked=blocked)

    run_on_database(save(), "block the number" if blocked else "unblock the number")
    console.print(f"{'Blocked' if blocked else 'Unblocked'} {phone}", highlight=False)


def block(
    number: Annotated[str, typer.Argument(help="The number to refuse, with country code")],
) -> None:
    """Refuse calls from a number: it hears that you aren't taking calls (never the assistant)."""
    _set_blocked(number, True)


def unblock(
    number: Annotated[str, typer.Argument(help="A blocked number")],
) -> None:
    """Take calls from a blocked number again."""
    _set_blocked(number, False)


def blocked() -> None:
    """List the blocked numbers."""
    from rich.text import Text

    from callassist.store.contacts import Contact, ContactRepository

    settings = settings_or_exit()

    async def listing() -> list[Contact]:
        async with open_records(settings) as database, database.session(read_only=True) as session:
            return await ContactRepository(session).blocked()

    numbers = run_on_database(listing())
    if not numbers:
        console.print("No blocked numbers.", highlight=False)
    for contact in numbers:
        name = "" if contact.name == contact.phone else f"  {contact.name}"
        console.print(Text(contact.phone + name), highlight=False)
