"""The live status page in a real browser: Debian's headless Chromium, driven by Selenium through
Debian's chromedriver, loads the page of a real `roundhouse` process while the load generator runs
calls through it, and checks that the registration, its members and rising call counts appear and
that the charts are drawn. Saves a screenshot as the test's artifact.

Run by scripts/browser_test.sh (which installs what it needs); environment:
  ROUNDHOUSE_BIN   router binary (default target/debug/roundhouse)
  LOADTEST_BIN     load generator (default target/debug/loadtest)
  ARTIFACT_DIR     where the screenshot goes (default target/browser)
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

TARGET = os.environ.get("CARGO_TARGET_DIR", "target")
ROUTER = os.environ.get("ROUNDHOUSE_BIN", os.path.join(TARGET, "debug", "roundhouse"))
LOADTEST = os.environ.get("LOADTEST_BIN", os.path.join(TARGET, "debug", "loadtest"))
ARTIFACTS = os.environ.get("ARTIFACT_DIR", os.path.join(TARGET, "browser"))
PROCEDURE = "com.roundhouse.loadtest"

passed, failed = 0, 0


def check(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
        print(f"ok     {name}")
    else:
        failed += 1
        print(f"FAILED {name} {detail}")


def wait_for(what, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def start_router(log_path):
    log = open(log_path, "w")
    router = subprocess.Popen(
        [ROUTER, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "json"],
        stderr=log,
        stdout=subprocess.DEVNULL,
    )

    def urls():
        ws = admin = None
        for line in open(log_path):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("message") == "router listening":
                ws = entry["url"]
            if entry.get("message", "").startswith("admin listening"):
                admin = entry["url"]
        return (ws, admin) if ws and admin else None

    ws, admin = wait_for("the router's URLs in its log", urls, 15)
    return router, ws, admin


def number(text):
    digits = re.sub(r"[^0-9.]", "", text or "")
    return float(digits) if digits else 0.0


def main():
    os.makedirs(ARTIFACTS, exist_ok=True)
    router, ws_url, admin_url = start_router(os.path.join(ARTIFACTS, "router.log"))
    print(f"router {ws_url}, status page {admin_url}")
    load = subprocess.Popen(
        [LOADTEST, "--url", ws_url, "--callers", "2", "--callees", "3", "--rate", "2000",
         "--warmup", "1s", "--duration", "40s"],
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(ARTIFACTS, "loadtest.log"), "w"),
    )
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1500"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(admin_url)
        check("the page loads with its title", "Roundhouse" in driver.title, driver.title)
        # The tables are redrawn every second: read the page in one script call at a time.
        def page():
            return driver.execute_script("""
                const row = document.querySelector('tr.registration[data-uri="%s"]');
                const text = (sel) => (document.querySelector(sel) || {}).textContent || '';
                return {
                  cells: row ? [...row.querySelectorAll(':scope > td')].map((td) => td.textContent) : null,
                  members: row ? [...row.querySelectorAll('.members span')].map((s) => s.textContent) : [],
                  served: row ? row.querySelector('td.served').textContent : '',
                  realm_total: text('#realms td.calls-total'),
                  rate: text('#c-rate'), p50: text('#c-p50'), p99: text('#c-p99'),
                  sessions: document.querySelectorAll('#sessions tbody tr').length,
                  state: text('#state'),
                };""" % PROCEDURE)

        first = wait_for("the load generator's registration on the page", lambda: (lambda p: p if p["cells"] else None)(page()))
        cells = first["cells"]
        check("the registration is listed", PROCEDURE in cells[0], cells)
        check("with its rule", cells[2] == "roundrobin", cells[2])
        check("with its three members", cells[4] == "3", cells[4])
        wait_for("three members with counts", lambda: len(page()["members"]) == 3)
        members = page()["members"]
        check("each member with in-flight and served counts",
              all("served" in m and "in flight" in m for m in members), members)
        before = wait_for("calls being served", lambda: (lambda p: p if number(p["served"]) > 0 else None)(page()))
        time.sleep(3)
        after = page()
        check("the served count rises while the load runs",
              number(after["served"]) > number(before["served"]), (before["served"], after["served"]))
        check("the realm's call count rises",
              number(after["realm_total"]) > number(before["realm_total"]), (before["realm_total"], after["realm_total"]))
        shown = wait_for("calls/s and latency figures",
                         lambda: (lambda p: p if number(p["rate"]) > 0 and "s" in p["p50"] and "s" in p["p99"] else None)(page()), 15)
        check("calls/s is shown", number(shown["rate"]) > 0, shown["rate"])
        check("p50 and p99 are shown", shown["p50"] != "–" and shown["p99"] != "–", (shown["p50"], shown["p99"]))
        painted = driver.execute_script("""
            return ['chart-rate', 'chart-latency'].map((id) => {
              const c = document.getElementById(id), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              let colored = 0;
              for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && (d[i] < 200 || d[i + 2] < 200)) colored++;
              return colored;
            });""")
        check("both charts are drawn", all(n > 200 for n in painted), painted)
        final = page()
        check("the sessions are listed", final["sessions"] == 5, final["sessions"])
        check("the router is ready", final["state"] == "ready", final["state"])
        shot = os.path.join(ARTIFACTS, "status-page.png")
        driver.save_screenshot(shot)
        check("a screenshot is saved", os.path.getsize(shot) > 10_000, shot)
        print(f"screenshot: {shot}")
    finally:
        driver.quit()
        load.send_signal(signal.SIGINT)
        try:
            load.wait(10)
        except subprocess.TimeoutExpired:
            load.kill()
        router.send_signal(signal.SIGTERM)
        try:
            router.wait(10)
        except subprocess.TimeoutExpired:
            router.kill()
    print(f"browser: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as error:  # a timeout or a browser that did not start is a failure, said plainly
        print(f"FAILED {type(error).__name__}: {error}")
        print(f"browser: {passed} passed, {failed + 1} failed")
        sys.exit(1)
