"""The web portals in a real headless Chromium: each audience signs in, sees its data, and nothing else.

The app (API + static single-page portal) runs under uvicorn in a background thread on a free port,
over the module's known world; Playwright drives Debian's ``/usr/bin/chromium`` (no browser
download). Without that browser the tests skip, unless ``VINSIGHT_REQUIRE_CHROMIUM=1`` (set by
scripts/test.sh, i.e. in CI), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from analytics.dtc_descriptions import describe_dtc_or_none
from portal_api import leads
from portal_api.app import STATIC_DIR, create_app

from .conftest import portal_settings
from .world import OWNERS, PASSWORD, World

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # the dev extra installs it; without it the tests skip (fail in CI)
    sync_playwright = None
    Browser = Page = Any

CHROMIUM = Path(os.environ.get("VINSIGHT_CHROMIUM", "/usr/bin/chromium"))
REQUIRED = os.environ.get("VINSIGHT_REQUIRE_CHROMIUM", "") not in ("", "0")
WAIT_MS = 30_000  # generous: a loaded 2-core machine runs the app, PostgreSQL and Chromium at once


def _unavailable(reason: str, remedy: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason}; VINSIGHT_REQUIRE_CHROMIUM is set, so the web portal tests must run ({remedy})",
                    pytrace=False)
    pytest.skip(f"{reason}: the web portal tests need it ({remedy})")


def vin(owner: str) -> str:
    """The VIN world.py gives ``owner``'s vehicle."""
    return f"WVWZZZ1KZAW{OWNERS.index(owner) + 1:06d}"


# --- the browser and the served app ------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def browser() -> Iterator[Browser]:
    """Debian's Chromium under Playwright; autouse, so a missing browser skips before the world is built."""
    if sync_playwright is None:
        _unavailable("the playwright package is not installed", "pip install -e '.[dev]'")
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"no Chromium at {CHROMIUM}", "apt-get install chromium, as scripts/services.sh does")
    assert (STATIC_DIR / "index.html").is_file(), "the web portal's static files are missing"
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, timeout=60_000,
                               args=["--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def base_url(browser: Browser, world: World) -> Iterator[str]:
    """The portal app (API and web portal) on a free loopback port, served by uvicorn in a thread."""
    server = uvicorn.Server(uvicorn.Config(create_app(portal_settings(world.dsn)), log_level="warning",
                                           lifespan="on", access_log=False))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="portal-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "uvicorn did not start the portal"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


OpenAs = Callable[..., Page]


@pytest.fixture
def open_as(browser: Browser, base_url: str) -> Iterator[OpenAs]:
    """Sign in through the login page in a fresh browser context; returns the page."""
    contexts: list[Any] = []
    page_errors: list[str] = []

    def _open(email: str, *, password: str = PASSWORD) -> Page:
        ctx = browser.new_context(base_url=base_url, accept_downloads=True)
        ctx.set_default_timeout(WAIT_MS)
        contexts.append(ctx)
        page = ctx.new_page()
        page.on("pageerror", lambda exc: page_errors.append(f"{email}: {exc}"))
        page.goto("/")
        expect(page).to_have_url(re.compile(r"#/login$"))
        page.get_by_label("E-mail").fill(email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        return page

    yield _open
    for ctx in contexts:
        ctx.close()
    assert not page_errors, f"uncaught JavaScript errors: {page_errors}"


def ready(page: Page, testid: str) -> Any:
    """A section once its API call has answered (data-state ready); fails on an error state."""
    sec = page.get_by_test_id(testid)
    expect(sec).not_to_have_attribute("data-state", "loading")
    expect(sec).to_have_attribute("data-state", "ready")
    return sec


def refused(page: Page, testid: str, status: int, detail: str) -> None:
    """The section shows the API's refusal (its problem detail), and no data."""
    sec = page.get_by_test_id(testid)
    expect(sec).to_have_attribute("data-state", "error")
    err = sec.get_by_role("alert")
    expect(err).to_have_attribute("data-status", str(status))
    expect(err).to_contain_text(detail)
    expect(sec.locator("table")).to_have_count(0)


# Every audience, sent to the others' pages, gets the API's refusal shown and no data.
ELSEWHERE = {
    "driver": [("#/dealer", "dealer-vehicles", "may not use 'dealer.vehicles'"),
               ("#/insurer", "insurer-policyholders", "may not use 'insurer.policyholders'")],
    "dealer": [("#/insurer", "insurer-policyholders", "may not use 'insurer.policyholders'"),
               ("#/driver", "my-vehicles", "may not use 'me'")],
    "insurer": [("#/dealer", "dealer-vehicles", "may not use 'dealer.vehicles'"),
                ("#/driver", "my-consents", "may not use 'me'")],
}


def refused_elsewhere(page: Page, audience: str) -> None:
    for route, testid, detail in ELSEWHERE[audience]:
        page.goto(f"/{route}")
        refused(page, testid, 403, detail)
        text = page.locator("main").inner_text()
        assert not any(vin(o) in text for o in OWNERS), text


# --- dealers ---------------------------------------------------------------------------------------------

def test_dealer_sees_consented_vehicles_with_health_and_works_leads(open_as: OpenAs, world: World) -> None:
    page = open_as("admin@dealer_a.test")
    expect(page).to_have_url(re.compile(r"#/dealer$"))
    expect(page.get_by_test_id("signed-in-as")).to_contain_text("Autohaus Nord")

    vehicles = ready(page, "dealer-vehicles")
    rows = vehicles.get_by_test_id("vehicle-row")
    expect(rows).to_have_count(1)  # alice; bob's consent expired, carol granted dealer_a no health scope
    alice = rows.first
    expect(alice).to_have_attribute("data-id", str(world.vehicle_ids["alice"]))
    expect(alice).to_contain_text(vin("alice"))
    expect(alice).to_contain_text("Alice")  # service_contact granted: the owner's name
    dtc = alice.get_by_test_id("dtc")
    expect(dtc).to_have_attribute("data-code", "P0301")
    expect(dtc).to_contain_text(describe_dtc_or_none("P0301").description)
    expect(alice.get_by_test_id("mil-on")).to_be_visible()
    expect(alice).to_contain_text("weak")  # battery level from vehicle health
    expect(alice).to_contain_text("11.9 V")
    expect(alice).to_contain_text("km")

    # Leads from the latest analytics, then along the pipeline.
    page.get_by_test_id("leads-refresh").click()
    expect(page.get_by_test_id("leads-status")).to_contain_text("new lead(s)")
    leads_sec = ready(page, "dealer-leads")
    lead = leads_sec.get_by_test_id("lead-row").filter(has_text="P0301")
    expect(lead).to_have_count(1)
    expect(lead.get_by_test_id("lead-state")).to_have_text("new")
    lead.get_by_test_id("lead-action-contacted").click()
    expect(page.get_by_test_id("leads-status")).to_contain_text("is now contacted")
    lead = ready(page, "dealer-leads").get_by_test_id("lead-row").filter(has_text="P0301")
    expect(lead.get_by_test_id("lead-state")).to_have_text("contacted")
    lead.get_by_test_id("lead-lost-reason").select_option("declined")
    lead.get_by_test_id("lead-action-lost").click()
    expect(page.get_by_test_id("leads-status")).to_contain_text("is now lost")
    lead = ready(page, "dealer-leads").get_by_test_id("lead-row").filter(has_text="P0301")
    expect(lead.get_by_test_id("lead-state")).to_have_text("lost")
    expect(lead).to_contain_text("declined")
    expect(lead).to_contain_text("closed")
    for row in page.get_by_test_id("lead-row").all():
        expect(row).to_contain_text("Alice")  # every lead is about a consented customer

    funnel = ready(page, "dealer-funnel").get_by_test_id("funnel-row").filter(has_text="new dtc")
    expect(funnel).to_have_count(1)
    expect(funnel.locator("td")).to_have_text([re.compile(r"\d{4}-\d{2}"), "new dtc", "1", "1", "0", "0", "1", "0 %"])

    with page.expect_download() as download:
        page.get_by_test_id("leads-csv").click()
    csv_text = Path(download.value.path()).read_text()
    assert csv_text.startswith("lead_id,priority,kind,state,reason"), csv_text[:200]
    assert vin("alice") in csv_text
    assert vin("bob") not in csv_text and vin("carol") not in csv_text

    text = page.locator("main").inner_text()
    for other in ("bob", "carol", "dave"):
        assert vin(other) not in text
        assert other.title() not in text
    refused_elsewhere(page, "dealer")


def test_dealer_analyst_sees_leads_but_the_api_refuses_moves(open_as: OpenAs, world: World) -> None:
    from psycopg import connect

    with connect(world.dsn) as conn:
        leads.generate_all(conn)
    page = open_as("analyst@dealer_a.test")
    expect(page).to_have_url(re.compile(r"#/dealer$"))
    sec = ready(page, "dealer-leads")
    row = sec.get_by_test_id("lead-row").filter(has=page.get_by_test_id("lead-action-contacted")).first
    row.get_by_test_id("lead-action-contacted").click()
    err = row.get_by_role("alert")
    expect(err).to_have_attribute("data-status", "403")
    expect(err).to_contain_text("may not use 'dealer.leads.write'")
    expect(row.get_by_test_id("lead-state")).to_have_text("new")


# --- insurers ------------------------------------------------------------------------------------------

def test_insurer_sees_consented_policyholders_scores_mileage_and_events(open_as: OpenAs, world: World) -> None:
    page = open_as("underwriter@insurer_a.test")
    expect(page).to_have_url(re.compile(r"#/insurer$"))
    holders = ready(page, "insurer-policyholders")
    rows = holders.get_by_test_id("policyholder-row")
    expect(rows).to_have_count(2)  # alice and carol; bob revoked
    expect(rows.nth(0)).to_have_attribute("data-id", str(world.vehicle_ids["alice"]))
    expect(rows.nth(1)).to_have_attribute("data-id", str(world.vehicle_ids["carol"]))
    expect(rows.nth(0)).to_contain_text("Alice")
    expect(rows.nth(0).get_by_test_id("score-30d")).to_have_text("71.0")
    expect(rows.nth(0)).to_contain_text("harsh braking: 2")
    expect(rows.nth(1)).to_contain_text("Carol")

    portfolio = ready(page, "insurer-portfolio")
    expect(portfolio.get_by_test_id("portfolio-summary")).to_contain_text("2 policyholder(s), 2 with a 30-day score")
    expect(portfolio.get_by_test_id("portfolio-suppressed")).to_be_visible()  # 2 < k: no distribution

    rows.nth(0).get_by_test_id("policyholder-select").click()
    expect(page.get_by_test_id("policyholder-name")).to_contain_text("Alice")
    scores = ready(page, "insurer-scores")
    expect(scores.get_by_test_id("score-trend-chart")).to_be_visible()
    expect(scores.get_by_test_id("score-row").first).to_contain_text("71.0")
    expect(scores.get_by_test_id("score-row").first).to_contain_text("braking 60")
    mileage = ready(page, "insurer-mileage")
    expect(mileage.get_by_test_id("mileage-row").first).to_contain_text("km")
    expect(mileage.get_by_test_id("mileage-chart").locator("rect.bar").first).to_be_attached()
    events = ready(page, "insurer-events").get_by_test_id("event-row")
    expect(events).to_have_count(2)
    expect(events.first).to_contain_text("harsh braking")
    expect(events.first).to_contain_text("not shared")  # alice did not grant location_history
    expect(ready(page, "insurer-trips").get_by_test_id("insurer-trip-row")).to_have_count(2)

    rows.nth(1).get_by_test_id("policyholder-select").click()
    expect(page.get_by_test_id("policyholder-name")).to_contain_text("Carol")
    events = ready(page, "insurer-events").get_by_test_id("event-row")
    expect(events.first).to_contain_text("7.0050, 45.0050")  # carol did

    text = page.locator("main").inner_text()
    assert "Bob" not in text and vin("bob") not in text and vin("dave") not in text
    refused_elsewhere(page, "insurer")


# --- drivers ---------------------------------------------------------------------------------------

def test_driver_sees_her_vehicle_trips_score_and_the_trip_drawn(open_as: OpenAs, world: World) -> None:
    page = open_as("alice@drivers.test")
    expect(page).to_have_url(re.compile(r"#/driver$"))
    mine = ready(page, "my-vehicles").get_by_test_id("my-vehicle")
    expect(mine).to_have_count(1)
    expect(mine).to_contain_text(vin("alice"))
    expect(mine.get_by_test_id("dtc")).to_contain_text("P0301")
    expect(mine.get_by_test_id("mil-on")).to_be_visible()

    score = ready(page, "my-score")
    expect(score.get_by_test_id("my-score-30d")).to_have_text("71.0")
    expect(score.get_by_test_id("score-component")).to_have_count(2)
    expect(score.get_by_test_id("score-tips")).to_contain_text("Brake earlier")

    trips = ready(page, "my-trips").get_by_test_id("trip-row")
    expect(trips).to_have_count(2)
    newest = world.trip_ids["alice"][0]  # world.py seeds today's trip first
    expect(trips.first).to_have_attribute("data-id", str(newest))
    trips.first.get_by_test_id("trip-link").click()
    expect(page).to_have_url(re.compile(rf"#/driver/trips/{newest}$"))

    view = ready(page, "trip-view")
    track = view.get_by_test_id("trip-track")
    expect(track).to_be_visible()
    d = track.get_attribute("d") or ""
    m = re.fullmatch(r"M([\d.]+),([\d.]+) L([\d.]+),([\d.]+)", d)
    assert m, f"the two-point track should be one SVG line, got d={d!r}"
    x0, y0, x1, y1 = map(float, m.groups())
    assert x1 > x0 and y1 < y0, "the track runs north-east: right and up on the map"
    box = track.bounding_box()
    assert box and box["width"] > 50 and box["height"] > 50, f"the track is drawn at a visible size: {box}"
    expect(view.get_by_test_id("trip-event-marker")).to_have_count(1)
    expect(view.get_by_test_id("trip-event-marker")).to_have_attribute("data-kind", "harsh_braking")
    expect(view.get_by_test_id("trip-start")).to_be_attached()
    expect(view.get_by_test_id("map-tile")).to_have_count(0)  # no tiles configured: plain background
    expect(view.get_by_test_id("trip-event-row")).to_contain_text("harsh braking")
    expect(view.get_by_test_id("trip-component")).to_have_count(2)
    expect(view.get_by_test_id("trip-score")).to_have_text("71.0")

    text = page.locator("main").inner_text()
    assert vin("bob") not in text and "Bob" not in text

    # With a tile URL configured the same view lays <img> tiles under the track. The browser is
    # handed that configuration and a 1×1 PNG per tile: no tile server, no second app.
    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                        "0000000d49444154789c63f8cfc0f01f0005000201a5f4f1f40000000049454e44ae426082")
    page.context.route("**/config.json", lambda route: route.fulfill(json={"map_tiles_url": "/tiles/{z}/{x}/{y}.png"}))
    page.context.route("**/tiles/**", lambda route: route.fulfill(body=png, content_type="image/png"))
    page.reload()
    view = ready(page, "trip-view")
    tiles = view.get_by_test_id("map-tile")
    expect(tiles.first).to_be_attached()
    src = tiles.first.get_attribute("src") or ""
    assert re.fullmatch(r"/tiles/\d+/\d+/\d+\.png", src), src
    expect(view.get_by_test_id("trip-track")).to_be_visible()
    expect(view.locator("rect.map-bg")).to_have_count(0)

    # Another owner's trip is not found, and the other audiences' pages are refused.
    bobs = world.trip_ids["bob"][0]
    page.goto(f"/#/driver/trips/{bobs}")
    refused(page, "trip-view", 404, f"No trip {bobs} of yours.")
    expect(page.get_by_test_id("trip-track")).to_have_count(0)
    refused_elsewhere(page, "driver")


def test_driver_grants_and_revokes_consent_and_sees_who_read_her_data(open_as: OpenAs, world: World,
                                                                      base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as api:
        def token(email: str) -> dict[str, str]:
            r = api.post("/v1/auth/token", data={"username": email, "password": PASSWORD})
            assert r.status_code == 200, r.text
            return {"Authorization": f"Bearer {r.json()['access_token']}"}

        dealer_a, dealer_b = token("sales@dealer_a.test"), token("admin@dealer_b.test")
        assert api.get("/v1/dealer/vehicles", headers=dealer_a).status_code == 200  # an audited read

        def dealer_b_sees_alice() -> bool:
            r = api.get("/v1/dealer/vehicles", headers=dealer_b)
            assert r.status_code == 200, r.text
            return world.vehicle_ids["alice"] in [v["vehicle_id"] for v in r.json()["items"]]

        assert not dealer_b_sees_alice()

        page = open_as("alice@drivers.test")
        log = ready(page, "my-access-log").get_by_test_id("access-row").filter(has_text="sales@dealer_a.test")
        expect(log.filter(has_text="Vehicle health").first).to_contain_text("Autohaus Nord")
        expect(log.filter(has_text="Service contact").first).to_contain_text("dealer vehicles")

        consents = ready(page, "my-consents")
        expect(consents.get_by_test_id("consent-row")).to_have_count(2)
        page.get_by_label("Organisation").select_option(label="Garage Sud (dealer)")
        page.get_by_label("Vehicle health").check()
        page.get_by_label("Purpose").fill("winter check")
        page.get_by_test_id("grant-submit").click()
        expect(page.get_by_test_id("consents-status")).to_contain_text("Garage Sud may now read: Vehicle health")
        granted = ready(page, "my-consents").get_by_test_id("consent-row").filter(has_text="Garage Sud")
        expect(granted).to_have_count(1)
        expect(granted).to_contain_text("active")
        assert dealer_b_sees_alice()

        granted.get_by_test_id("consent-revoke").click()
        expect(page.get_by_test_id("consents-status")).to_contain_text("Consent for Garage Sud revoked")
        revoked = ready(page, "my-consents").get_by_test_id("consent-row").filter(has_text="Garage Sud")
        expect(revoked).to_contain_text("revoked")
        expect(revoked.get_by_test_id("consent-revoke")).to_have_count(0)
        assert not dealer_b_sees_alice()

        # A purpose the API rejects: its detail is shown on the form.
        page.get_by_label("Purpose").fill("x")
        page.get_by_test_id("grant-submit").click()
        err = page.get_by_test_id("grant-form").get_by_role("alert")
        expect(err).to_have_attribute("data-status", "422")
        expect(err).to_contain_text("purpose")


def test_login_shows_the_apis_error_and_signing_out_forgets_the_token(open_as: OpenAs) -> None:
    page = open_as("alice@drivers.test", password="not the password")
    err = page.get_by_test_id("login-form").get_by_role("alert")
    expect(err).to_have_attribute("data-status", "401")
    expect(err).to_contain_text("Unknown e-mail or wrong password.")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"#/driver$"))
    page.get_by_test_id("sign-out").click()
    expect(page).to_have_url(re.compile(r"#/login$"))
    page.goto("/#/driver")
    expect(page).to_have_url(re.compile(r"#/login$"))  # no token left: back to the login page
