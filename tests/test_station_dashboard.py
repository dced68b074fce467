"""The dashboard in a real browser (Debian's headless Chromium through Selenium): panels per
line, verdicts arriving live, read-only until an operator signs in, operator actions (threshold, switch), ng
pictures; a screenshot is saved (``dashboard.png`` in the test's folder)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from edge_runtime.sim.generator import iter_parts
from edge_runtime.station.config import load_station_config
from edge_runtime.station.service import Station
from edge_runtime.stream.protocol import encode_frame
from tests.station_helpers import SMALL_3D, Client, running, write_station

pytestmark = pytest.mark.timeout(300)

TOKEN = "dashboard-operator-token-42"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).is_file():
            pytest.fail(f"{path} is missing: scripts/setup.sh dev installs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # page errors into the failure message
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1300"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, what: str, predicate, timeout: float = 60.0):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: predicate(d))
    except TimeoutException:
        console = "\n".join(entry["message"] for entry in driver.get_log("browser"))
        raise AssertionError(f"the page never showed {what}; browser console:\n{console}") from None


def rows(driver, line: str) -> list[tuple[str, str]]:
    """(part, verdict) of a line's feed, newest first."""
    return [(r.get_attribute("data-part"), r.find_element(By.CSS_SELECTOR, ".chip").text)
            for r in driver.find_elements(By.CSS_SELECTOR, f'section[data-line="{line}"] .feed tbody tr')]


def test_dashboard_shows_verdicts_live_and_operator_actions(tmp_path, browser):
    (tmp_path / "operators").write_text(f"alice {TOKEN}\n")
    config = load_station_config(write_station(tmp_path, {"tile": SMALL_3D, "gland": SMALL_3D},
                                               http={"operator_tokens": "operators"}))
    clouds = {line: [p.xyz for p in iter_parts(line, 12, 0.3, seed=7, image_size=64)] for line in ("tile", "gland")}

    def send(c, start, n):
        for i in range(start, start + n):
            for line in clouds:
                c.push.send_multipart(encode_frame(line, f"{line}-{i:03d}", i, "xyz", clouds[line][i]))

    with running(Station(config)) as station:
        c = Client(station.endpoints)
        c.wait_subscribed()
        browser.get(station.endpoints["http"] + "/")
        wait(browser, "a panel per line", lambda d: len(d.find_elements(By.CSS_SELECTOR, "section[data-line]")) == 2)
        wait(browser, "the live connection", lambda d: d.find_element(By.ID, "connection").text == "live")

        send(c, 0, 8)  # live, no reload: 4 inconclusive while warming up (min_window 5), then scored
        sub = c.verdicts(16)
        for line in clouds:
            wait(browser, f"8 verdicts on {line}", lambda d, line=line: len(rows(d, line)) == 8)
            published = [(h["part"], h["verdict"]) for h, _ in sub if h["line"] == line]
            assert rows(browser, line) == published[::-1]
        tile = browser.find_element(By.CSS_SELECTOR, 'section[data-line="tile"]')
        assert not tile.find_element(By.CSS_SELECTOR, ".operator").is_displayed()  # read-only
        held = station.status()["lines"]["tile"]["window"]  # the guard keeps ng parts out of the references
        wait(browser, "the window fill",
             lambda d: tile.find_element(By.CSS_SELECTOR, ".window").text.startswith(f"{held}/8 "))
        assert tile.find_elements(By.CSS_SELECTOR, ".plot circle"), "no score in the plot"

        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "signin-button").click()
        wait(browser, "the operator signed in", lambda d: d.find_element(By.ID, "role").text == "operator alice")
        assert tile.find_element(By.CSS_SELECTOR, ".operator").is_displayed()
        box = tile.find_element(By.CSS_SELECTOR, ".new-threshold")
        box.send_keys("0.05")
        tile.find_element(By.CSS_SELECTOR, ".set-threshold").click()
        wait(browser, "the operator's threshold",
             lambda d: tile.find_element(By.CSS_SELECTOR, ".threshold").text == "0.0500 (operator:alice)")
        assert station.status()["lines"]["tile"]["threshold"] == 0.05  # the action reached the line
        gland = browser.find_element(By.CSS_SELECTOR, 'section[data-line="gland"]')
        gland.find_element(By.CSS_SELECTOR, ".profile").send_keys("tile")  # the same settings, another file
        gland.find_element(By.CSS_SELECTOR, ".switch").click()
        wait(browser, "the switched profile",
             lambda d: gland.find_element(By.CSS_SELECTOR, ".product").text.endswith("lines/tile.toml"))
        assert station.workers["gland"].profile.source.endswith("tile.toml")

        send(c, 8, 4)
        sub = c.verdicts(8)
        ng = [h["part"] for h, _ in sub if h["line"] == "tile" and h["verdict"] == "ng"]
        assert ng, [(h["part"], h["verdict"], h["score"]) for h, _ in sub]
        wait(browser, "12 verdicts on tile", lambda d: len(rows(d, "tile")) == 12)
        wait(browser, "the ng pictures, loaded", lambda d: d.execute_script(
            "const imgs = document.querySelectorAll('section[data-line=\"tile\"] .ng-parts img');"
            "return imgs.length === arguments[0] && [...imgs].every(i => i.complete && i.naturalWidth === 128);",
            len(ng)))
        shown = [f.get_attribute("data-part") for f in tile.find_elements(By.CSS_SELECTOR, ".ng-parts figure")]
        assert shown == ng[::-1]
        wait(browser, "latency percentiles", lambda d: "ms" in tile.find_element(By.CSS_SELECTOR, ".latency").text)
        browser.execute_script("window.scrollTo(0, 0)")
        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
        print(f"dashboard screenshot: {shot}")
        c.close()
