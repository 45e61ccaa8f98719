"""The web console in a real browser: headless Chromium driven by Selenium against a real
three-node cluster of the built binary (README, "Observability", "Console").

Three ``supermq`` processes are started with configurations in a temporary directory, routes
between them and fast heartbeats (as tests/common/cluster.rs does), each serving HTTP with an
admin API key, so the console has to ask for it. Paho clients (tests/paho/mqttclient.py) make
the data the pages must show. With CONSOLE_SHOTS=1, screenshots of the main pages are written
to docs/console/ (the committed ones were made so).

Needs the binary ($BROKER_BIN, else target/debug/supermq; ``cargo build``), Selenium (pip) and
Debian's ``chromium`` and ``chromium-driver``. Skips, saying why, only when chromium is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests" / "paho"))

from mqttclient import V5, Endpoint, MqttClient  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Where screenshots of the main pages go: docs/console/ when CONSOLE_SHOTS=1 (to refresh the
#: committed ones), nowhere otherwise, so a test run leaves the checkout as it found it.
SHOTS = REPO_ROOT / "docs" / "console" if os.environ.get("CONSOLE_SHOTS") == "1" else None
HOST = "127.0.0.1"
KEY = "ops:S3CRET-console"
SECRET = "browser-test-cluster-secret"
NODES = ("node1", "node2", "node3")
#: Any single wait on the cluster or the page; only reached when something is wrong.
TIMEOUT = 15.0
ADMINISTRATIVE_ACTION = 0x98

if not Path(CHROMIUM).exists():
    pytest.skip(
        "chromium is not installed (apt-get install chromium chromium-driver): "
        "the console's browser tests did not run",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def broker_binary() -> Path:
    env = os.environ.get("BROKER_BIN")
    if env:
        path = Path(env)
        return path if path.is_absolute() else REPO_ROOT / path
    for candidate in ("target/debug/supermq", "target/release/supermq"):
        if (REPO_ROOT / candidate).exists():
            return REPO_ROOT / candidate
    return REPO_ROOT / "target/debug/supermq"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_until(condition, what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


class Cluster:
    """Three supermq processes on loopback ports, routed to each other."""

    def __init__(self, binary: Path, work: Path):
        self.work = work
        self.mqtt = {name: free_port() for name in NODES}
        self.http = {name: free_port() for name in NODES}
        route = {name: free_port() for name in NODES}
        user, secret = KEY.split(":", 1)
        keys = work / "keys.txt"
        subprocess.run([str(binary), "passwd", "-c", "-b", str(keys), user, secret], check=True)
        # The file's line is "user:hash"; a key is "name:role:hash".
        name, hashed = keys.read_text().strip().split(":", 1)
        api_key = f"{name}:admin:{hashed}"
        self.procs = {}
        self.logs = {}
        for i, name in enumerate(NODES):
            seeds = ", ".join(f'"{HOST}:{route[n]}"' for n in NODES[:i])
            conf = work / f"{name}.conf"
            conf.write_text(
                f'[node]\nname = "{name}"\n[mqtt]\ntcp = "{HOST}:{self.mqtt[name]}"\n'
                f'[http]\nlisten = "{HOST}:{self.http[name]}"\napi_keys = ["{api_key}"]\n'
                f'[log]\nlevel = "info"\n'
                f'[cluster]\nlisten = "{HOST}:{route[name]}"\nroutes = [{seeds}]\n'
                f'name = "browser"\nsecret = "{SECRET}"\n'
                "heartbeat_ms = 100\nheartbeat_timeout_ms = 1000\nredial_min_ms = 50\nredial_max_ms = 400\n"
            )
            self.logs[name] = work / f"{name}.log"
            env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERMQ_")}
            env.pop("RUST_LOG", None)
            env["NO_COLOR"] = "1"
            with open(self.logs[name], "wb") as log:
                self.procs[name] = subprocess.Popen(
                    [str(binary), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT, env=env
                )

    def wait_ready(self) -> None:
        """Every node answers and has its routes to the other two."""
        wait_until(lambda: self.node_count() == len(NODES), "every node answers /api/v1/nodes")
        for name in NODES:
            wait_until(lambda name=name: self.route_count(name) == len(NODES) - 1, f"{name}'s routes")

    def url(self, path: str = "/", node: str = "node1") -> str:
        return f"http://{HOST}:{self.http[node]}{path}"

    def api(self, method: str, path: str, node: str = "node1"):
        """(status, JSON or None) of an API call with the admin key."""
        request = urllib.request.Request(
            self.url(path, node), method=method, headers={"Authorization": f"Bearer {KEY}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                body = response.read()
                return response.status, json.loads(body) if body else None
        except urllib.error.HTTPError as error:
            return error.code, None
        except OSError:
            return 0, None

    def node_count(self) -> int:
        status, body = self.api("GET", "/api/v1/nodes")
        return len(body["data"]) if status == 200 else 0

    def route_count(self, node: str) -> int:
        status, body = self.api("GET", "/api/v1/routes", node)
        return len(body["data"]) if status == 200 else 0

    def endpoint(self, node: str) -> Endpoint:
        return Endpoint(HOST, self.mqtt[node])

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()

    def log_text(self) -> str:
        return "\n".join(f"--- {n}\n{p.read_text(errors='replace')}" for n, p in self.logs.items())


@pytest.fixture(scope="module")
def cluster():
    binary = broker_binary()
    if not binary.exists():
        pytest.fail(f"supermq binary not found at {binary}: run `cargo build` or set BROKER_BIN", pytrace=False)
    with tempfile.TemporaryDirectory(prefix="supermq-console-") as work:
        c = Cluster(binary, Path(work))
        try:
            c.wait_ready()
            yield c
        finally:
            c.stop()
            # Captured output: pytest shows it under a failing test only.
            print(c.log_text())


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1300,1150"):
        options.add_argument(arg)
    # The page's console, to find script errors no assertion on the page would show.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def client(cluster: Cluster, node: str, client_id: str) -> MqttClient:
    c = MqttClient(cluster.endpoint(node), client_id, V5)
    c.connect()
    return c


def text_of(browser, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).text


def wait_text(browser, element_id: str, wanted: str) -> None:
    WebDriverWait(browser, TIMEOUT).until(
        lambda b: wanted in text_of(b, element_id),
        message=f"{wanted!r} never appeared in #{element_id}",
    )


def go(browser, page: str) -> None:
    browser.find_element(By.CSS_SELECTOR, f'nav a[data-page="{page}"]').click()
    WebDriverWait(browser, TIMEOUT).until(lambda b: b.find_element(By.ID, f"page-{page}").is_displayed())


def shot(browser, name: str) -> None:
    if SHOTS is None:
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / f"{name}.png"))


def test_every_page_renders_and_acts_on_the_cluster(cluster, browser):
    watcher = client(cluster, "node1", "console-watcher")
    watcher.subscribe("sensors/#", 1)
    workers = [client(cluster, node, f"worker-{node}") for node in ("node2", "node3")]
    for worker in workers:
        worker.subscribe("$share/workers/jobs/#", 1)
    victim = client(cluster, "node2", "console-victim")
    receiver = client(cluster, "node3", "console-receiver")
    receiver.subscribe("console/publish", 1)
    publisher = client(cluster, "node1", "console-publisher")
    publisher.publish("sensors/temp", b"21.5", qos=1, retain=True)
    wait_until(lambda: cluster.api("GET", "/api/v1/retained/sensors/temp", "node3")[0] == 200,
               "the retained message reaches node3")

    # Some traffic for the rate chart, from a node1 client while the overview is open.
    stop_traffic = threading.Event()

    def traffic():
        feeder = client(cluster, "node1", "console-feeder")
        try:
            while not stop_traffic.is_set():
                feeder.publish_nowait("sensors/load", b"0.42", qos=0)
                time.sleep(0.05)
        finally:
            feeder.close()

    feeding = threading.Thread(target=traffic, daemon=True)
    feeding.start()
    try:
        # The page loads without a key and asks for one; a wrong one is refused.
        browser.get(cluster.url("/"))
        dialog = browser.find_element(By.ID, "key-dialog")
        WebDriverWait(browser, TIMEOUT).until(lambda b: dialog.get_attribute("open") is not None)
        browser.find_element(By.ID, "key-input").send_keys("ops:wrong")
        browser.find_element(By.ID, "key-save").click()
        wait_text(browser, "key-problem", "refused")
        browser.find_element(By.ID, "key-input").send_keys(KEY)
        browser.find_element(By.ID, "key-save").click()

        # Overview: every node, every node's routes to the other two, a chart with a rate.
        for name in NODES:
            wait_text(browser, "nodes", name)
        wait_text(browser, "this-node", "node1")
        matrix = browser.find_element(By.ID, "route-matrix")
        WebDriverWait(browser, TIMEOUT).until(
            lambda b: len(matrix.find_elements(By.CSS_SELECTOR, "td.up, td.strained")) == 6,
            message="the three nodes' routes to each other are not all shown up",
        )
        wait_text(browser, "routes", "node2")
        wait_text(browser, "routes", "node3")
        WebDriverWait(browser, TIMEOUT).until(
            lambda b: any(
                float(word) > 0
                for word in text_of(b, "rate-now").replace(",", " ").split()
                if word.replace(".", "", 1).isdigit()
            ),
            message="the chart never showed a rate above 0",
        )
        if SHOTS is not None:
            time.sleep(10)  # a few more samples, for the screenshot
        shot(browser, "overview")
    finally:
        stop_traffic.set()
        feeding.join(5)

    # Clients: every client listed; one's details; kick disconnects it.
    go(browser, "clients")
    for client_id in ("console-watcher", "console-victim", "worker-node3"):
        wait_text(browser, "clients", client_id)
    shot(browser, "clients")
    browser.find_element(By.ID, "client-search").send_keys("console-victim")
    browser.find_element(By.ID, "client-search-btn").click()
    WebDriverWait(browser, TIMEOUT).until(
        lambda b: "console-watcher" not in text_of(b, "clients"), message="the search did not filter"
    )
    browser.find_element(By.LINK_TEXT, "console-victim").click()
    wait_text(browser, "client-details", "node2")
    browser.find_element(By.CSS_SELECTOR, 'tr[data-clientid="console-victim"] button.kick').click()
    WebDriverWait(browser, TIMEOUT).until(lambda b: b.switch_to.alert).accept()
    gone = victim.wait_disconnected(TIMEOUT)
    assert gone.reason == ADMINISTRATIVE_ACTION, gone

    # Subscriptions and groups, with the group's members on both nodes.
    go(browser, "subscriptions")
    wait_text(browser, "subscriptions", "sensors/#")
    wait_text(browser, "subscriptions", "console-watcher")
    wait_text(browser, "groups", "workers")
    wait_text(browser, "groups", "node2: 1")
    wait_text(browser, "groups", "node3: 1")
    shot(browser, "subscriptions")

    # Retained: shown, then deleted everywhere.
    go(browser, "retained")
    wait_text(browser, "retained", "sensors/temp")
    wait_text(browser, "retained", "21.5")
    shot(browser, "retained")
    browser.find_element(By.CSS_SELECTOR, 'tr[data-topic="sensors/temp"] button.delete').click()
    WebDriverWait(browser, TIMEOUT).until(lambda b: b.switch_to.alert).accept()
    WebDriverWait(browser, TIMEOUT).until(
        lambda b: "sensors/temp" not in text_of(b, "retained"), message="the deleted message is still listed"
    )
    wait_until(lambda: cluster.api("GET", "/api/v1/retained/sensors/temp", "node3")[0] == 404,
               "the retained message is cleared on node3")

    # Live viewer: a message published while it watches shows up.
    go(browser, "live")
    live_filter = browser.find_element(By.ID, "live-filter")
    live_filter.clear()
    live_filter.send_keys("live/#")
    browser.find_element(By.ID, "live-start").click()
    wait_text(browser, "live-status", "watching live/#")
    # In order on one connection: once the last is shown, the one outside the filter was seen.
    publisher.publish("other/topic", b"not shown", qos=1)
    publisher.publish("live/hall", b"door open", qos=0)
    publisher.publish("live/kitchen", b"kettle on", qos=1)
    wait_text(browser, "live-log", "live/kitchen")
    wait_text(browser, "live-log", "kettle on")
    assert "door open" in text_of(browser, "live-log")
    assert "other/topic" not in text_of(browser, "live-log")
    shot(browser, "live")
    browser.find_element(By.ID, "live-stop").click()

    # Publish: a subscriber on another node receives it.
    go(browser, "publish")
    browser.find_element(By.ID, "pub-topic").send_keys("console/publish")
    browser.find_element(By.ID, "pub-payload").send_keys("from the console")
    browser.find_element(By.ID, "pub-send").click()
    wait_text(browser, "pub-result", "Published (id")
    got = receiver.next_message(TIMEOUT)
    assert (got.topic, got.payload) == ("console/publish", b"from the console")
    shot(browser, "publish")

    for c in (watcher, *workers, receiver, publisher):
        c.close()

    # The API's 401s before the key was given are logged by the browser as failed loads;
    # nothing else may be (a script error, a missing file).
    errors = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE"
        and not ("status of 401" in entry["message"] and ("/api/" in entry["message"] or "/metrics" in entry["message"]))
    ]
    assert not errors, errors
