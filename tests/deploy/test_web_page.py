"""The service's web page (deploy/web/) in a real browser: headless Chromium
from Debian's packages driven by Playwright. It uploads a query image and
shows the grid predict.py prints for the same image (same ids, same
order), follows a change of top-k, and removes a result with the token,
which then is gone; it asks nothing of any address but the service's. The
screenshot it saves is ``web_page.png`` in the test's temporary folder
(its path is printed)."""
import os
from urllib.parse import urlsplit

import pytest

from support.service import TOKEN, predicted_ranking, start_service, stop

CHROMIUM = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
# no update checks, sync, field trials or QUIC probes: the browser talks to the service only
QUIET = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


def chromium():
    return next((path for path in CHROMIUM if os.access(path, os.X_OK)), None)


playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed "
                                     "(pip install -r requirements-dev.txt)")
pytestmark = pytest.mark.skipif(chromium() is None, reason="no Chromium here "
                                "(apt-get install chromium; .ci/run installs it)")


@pytest.fixture(scope="module")
def service(demo, trained, tmp_path_factory):
    running = start_service(demo, trained.prefix, tmp_path_factory.mktemp("service"))
    yield running
    stop(running)


@pytest.fixture(scope="module")
def page(service):
    elsewhere = []

    def only_the_service(route):
        if urlsplit(route.request.url).hostname != "127.0.0.1":
            elsewhere.append(route.request.url)
            return route.abort()
        return route.continue_()
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=QUIET)
        tab = browser.new_page(viewport={"width": 1100, "height": 900})
        tab.route("**/*", only_the_service)
        tab.goto(service.url + "/")
        yield tab
        browser.close()
    assert not elsewhere, f"the page asked for other addresses: {elsewhere}"


def grid(page):
    """(id, distance) of each tile, in page order."""
    return [(int(tile.get_attribute("data-id")), int(tile.get_attribute("data-distance")))
            for tile in page.query_selector_all("#grid .tile")]


def test_query_grid_topk_and_removal_in_a_browser(page, service, demo, trained, outside_query,
                                                  tmp_path, capsys):
    expected = predicted_ranking(service, demo, trained.prefix, outside_query, tmp_path, capsys)
    page.wait_for_function("document.getElementById('health').textContent.includes('images')")
    page.set_input_files("#file-input", outside_query)
    page.wait_for_function("document.querySelectorAll('#grid .tile').length === 10")
    assert grid(page) == expected
    bits = page.inner_text("#query-bits")
    assert len(bits) == 16 and set(bits) <= {"0", "1"}
    assert not page.is_visible("#grid .tile .remove")   # no token yet: no removals

    page.fill("#topk", "5")
    page.dispatch_event("#topk", "change")
    page.wait_for_function("document.querySelectorAll('#grid .tile').length === 5")
    assert grid(page) == expected[:5]

    page.fill("#token", TOKEN)   # leaving #topk re-runs the search: locators re-resolve
    first = page.locator("#grid .tile").first
    removed_path = first.locator(".path").inner_text().split(" ", 1)[1]
    first.locator(".remove").click()
    page.wait_for_function(f"document.getElementById('status').textContent === "
                           f"'removed image {expected[0][0]}'")
    page.wait_for_function("document.querySelectorAll('#grid .tile').length === 5")
    paths = [p.inner_text().split(" ", 1)[1] for p in page.query_selector_all("#grid .path")]
    assert removed_path not in paths
    with open(os.path.join(service.list_dir, "database.txt")) as f:
        assert removed_path not in [line.rsplit(None, 10)[0] for line in f]
    assert grid(page) == predicted_ranking(service, demo, trained.prefix, outside_query,
                                           tmp_path / "after", capsys, "--topk", "5")
    shot = str(tmp_path / "web_page.png")
    page.screenshot(path=shot, full_page=True)
    print(f"screenshot: {shot}")
