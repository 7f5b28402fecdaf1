"""The owner's dashboard in a real browser (Debian's chromium, headless, driven by Playwright) against
the real server, the fake OpenAI Realtime server and the caller simulator.

One browser and one stack for the module: log in; a simulated call appears without a reload, its
greeting and the caller's words show up as they are heard; the owner hangs up from the page; the
call is in the history with its summary, cost and latency; its message is marked done; a contact is
blocked; the numbers count the call; logout. Screenshots go to tests/browser/artifacts/screenshots/
(kept by CI as artifacts, ignored by git); UPDATE_DOCS_SCREENSHOT=1 copies the live one to
docs/dashboard-live.png.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callassist.call.events import CallEvent, TurnHeard
from callassist.store.contacts import ContactRepository
from tests.fakes.realtime_server import Reply, Say, Script, UseTool
from tests.support.records import ADMIN_TOKEN
from tests.support.stack import StackFactory, stack_factory

playwright_api = pytest.importorskip("playwright.async_api")
async_playwright = playwright_api.async_playwright
expect = playwright_api.expect

CHROMIUM = Path(os.environ.get("CALLASSIST_TEST_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).parent / "artifacts" / "screenshots"
DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "dashboard-live.png"

if not CHROMIUM.exists():
    # CI installs chromium (scripts/test): there a missing browser is a failure, not a skip.
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

# Notes the time each transcript line first appears on the live page, by its text.
SEEN_LINES_JS = """() => {
  window.seenLines = {};
  new MutationObserver(() => {
    for (const text of document.querySelectorAll("#live-calls .line .text")) {
      if (!(text.textContent in window.seenLines)) window.seenLines[text.textContent] = Date.now();
    }
  }).observe(document.getElementById("live-calls"), {childList: true, subtree: true, characterData: true});
}"""
CALLER = "+15551230000"
GREETING = "Hello, this is Dana's assistant. How can I help?"
CALLER_WORDS = "Please tell Dana to call me back about the roof."
SUMMARY = "Alex Kim asked Dana to call back about the roof; a message was taken."


def script() -> Script:
    return Script(
        replies=[
            Reply([Say(GREETING)]),
            Reply(
                [
                    Say("Sure, I'll pass that on."),
                    UseTool(
                        "take_message",
                        intent={"message": "Call me back about the roof", "caller_name": "Alex Kim"},
                    ),
                ]
            ),
            Reply([Say("Your message is saved.")]),
        ],
        transcripts=[CALLER_WORDS],
        summary=json.dumps(
            {
                "summary": SUMMARY,
                "caller_name": "Alex Kim",
                "reason": "call back",
                "follow_up_needed": True,
                "urgency": "normal",
            }
        ),
    )


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    async with stack_factory(tmp_path) as factory:
        yield factory
        assert factory.protocol_problems() == []


async def test_the_owner_follows_a_call_live_then_finds_it_in_the_history(make_stack: StackFactory) -> None:
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    SCREENSHOTS.mkdir(parents=True)
    stack = await make_stack(script(), admin_token=ADMIN_TOKEN)
    services = stack.server.services
    async with services.database.session() as session:
        await ContactRepository(session).upsert(CALLER, "Alex Kim", "the roofer's neighbour")
    base = stack.server.base_url

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 860})

            # Not logged in: the dashboard sends us to the login form; a wrong token is refused.
            await page.goto(base + "/")
            await expect(page).to_have_url(base + "/dashboard/login")
            await page.get_by_label("Admin token").fill("not-the-token-0123456789")
            await page.get_by_role("button", name="Log in").click()
            await expect(page.get_by_role("alert")).to_contain_text("Wrong token")
            await page.get_by_label("Admin token").fill(ADMIN_TOKEN)
            await page.get_by_role("button", name="Log in").click()
            await expect(page.get_by_role("heading", name="Live calls")).to_be_visible()
            await expect(page.locator("body")).to_have_attribute("data-live", "connected")
            await expect(page.locator("#no-calls")).to_be_visible()
            await page.screenshot(path=SCREENSHOTS / "01-live-empty.png")

            # When each line reached the page (the browser's clock, which is this machine's), against
            # when the server published it (TurnHeard): the live path's own delay.
            await page.evaluate(SEEN_LINES_JS)
            published: dict[str, float] = {}

            def on_event(event: CallEvent) -> None:
                if isinstance(event, TurnHeard):
                    published.setdefault(event.turn.text, time.time())

            stop_listening = services.events.subscribe(on_event)

            # A call comes in while the page is open: it appears without a reload, named.
            call = await stack.simulator.place_call(from_number=CALLER)
            article = page.locator("article.call").first
            await expect(article.locator(".caller")).to_have_text("Alex Kim", timeout=5000)
            await expect(article.locator(".number")).to_have_text("•••0000")
            await expect(page.locator("#no-calls")).to_be_hidden()

            # The greeting is on the page within a second of the caller having heard it.
            await call.wait_until_quiet(quiet_ms=100, timeout=15)
            await expect(article.locator(".line.assistant").first).to_contain_text(GREETING, timeout=1000)

            # The caller's words, as soon as they are transcribed (after the caller stops and the
            # VAD's silence window has passed), then the tool and the cost.
            await call.say_text(CALLER_WORDS)
            said = time.monotonic()
            caller_line = article.locator(".line.caller")
            await expect(caller_line).to_contain_text(CALLER_WORDS, timeout=3000)
            shown_after_s = time.monotonic() - said
            await expect(article.locator(".tools li")).to_contain_text("take message", timeout=10000)
            await expect(article.locator(".cost")).not_to_have_text("$0.0000")
            await call.wait_until_quiet(quiet_ms=100, timeout=15, after=said)
            await expect(article.locator(".line.assistant")).to_have_count(3, timeout=1000)
            await page.screenshot(path=SCREENSHOTS / "02-live-call.png")
            stop_listening()
            seen: dict[str, float] = await page.evaluate("window.seenLines")
            delays = {text: seen[text] / 1000 - at for text, at in published.items() if text in seen}
            assert GREETING in delays and CALLER_WORDS in delays
            assert all(delay < 1.0 for delay in delays.values()), delays
            print(
                f"caller's words on the page {shown_after_s:.2f} s after they were said; each line "
                f"{1000 * max(delays.values()):.0f} ms at most after the server had it"
            )

            # The owner hangs up from the page: the call ends and links to its record.
            await article.get_by_role("button", name="Hang up").click()
            await expect(page).to_have_url(base + "/dashboard")
            await call.wait_closed(timeout=10)
            await services.registry.wait_idle(10)
            await page.reload()
            await expect(page.locator("#no-calls")).to_be_visible()

            # History: the call, newest first, with its summary; open it.
            await page.get_by_role("link", name="History").click()
            row = page.locator("table.calls tbody tr").first
            await expect(row).to_contain_text("Alex Kim")
            await expect(row).to_contain_text(SUMMARY)
            await expect(row.locator(".tag")).to_contain_text("message")
            await page.screenshot(path=SCREENSHOTS / "03-history.png")
            await page.get_by_label("Search caller, transcript or summary").fill("the roof")
            await page.get_by_role("button", name="Show").click()
            await expect(page.locator("table.calls tbody tr")).to_have_count(1)
            await row.get_by_role("link").click()
            await expect(page.locator(".summary")).to_have_text(SUMMARY)
            await expect(page.locator(".total-cost")).not_to_have_text("$0.0000")
            await expect(page.locator(".latency")).to_contain_text("median")
            await expect(page.locator(".transcript")).to_contain_text(CALLER_WORDS)
            await page.screenshot(path=SCREENSHOTS / "04-call.png", full_page=True)

            # Inbox: the message the assistant took; marked done, it leaves the inbox.
            await page.get_by_role("link", name="Inbox").click()
            message = page.locator(".message", has_text="Call me back about the roof")
            await expect(message).to_be_visible()
            await page.screenshot(path=SCREENSHOTS / "05-inbox.png")
            await message.get_by_role("button", name="Mark done").click()
            await expect(page.locator(".empty").first).to_have_text("Nothing to do: no open messages.")
            await page.get_by_role("link", name="Done").click()
            await expect(message.locator(".tag")).to_contain_text("done")

            # Contacts: block the caller.
            await page.get_by_role("link", name="Contacts").click()
            contact = page.locator("li.contact", has_text="Alex Kim")
            await contact.get_by_role("button", name="Block").click()
            await expect(contact.locator(".tag")).to_have_text("blocked")
            await expect(contact.get_by_role("button", name="Unblock")).to_be_visible()
            async with services.database.session(read_only=True) as session:
                blocked = await ContactRepository(session).get(CALLER)
            assert blocked is not None and blocked.blocked
            await page.set_viewport_size({"width": 390, "height": 844})  # a phone
            await page.screenshot(path=SCREENSHOTS / "06-contacts-phone.png", full_page=True)
            await page.set_viewport_size({"width": 1280, "height": 860})

            # Numbers: today's call is counted; the health panel says OpenAI answered.
            await page.get_by_role("link", name="Numbers").click()
            await expect(page.locator(".figures")).to_contain_text("Calls")
            await expect(page.locator(".figures div").first.locator("dd")).to_have_text("1")
            await expect(page.locator(".health")).to_contain_text("OpenAI: OK")
            await page.screenshot(path=SCREENSHOTS / "07-numbers.png", full_page=True)

            # Logout: back to the login form, and the dashboard is closed again.
            await page.get_by_role("button", name="Log out").click()
            await expect(page).to_have_url(base + "/dashboard/login")
            await page.goto(base + "/dashboard/history")
            await expect(page).to_have_url(base + "/dashboard/login")
        finally:
            await browser.close()
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        shutil.copyfile(SCREENSHOTS / "02-live-call.png", DOCS_SCREENSHOT)
