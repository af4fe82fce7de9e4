"""The reviewer console in a real browser (Debian's chromium via chromedriver) against the
running review service on the real broker, on SQLite and PostgreSQL: log in, claim the
top case, decide it with a keyboard shortcut, see the label on `fraud.labels` and in the
merchant's label book the scorer's label folder keeps in Redis; a
second reviewer cannot take the case; an analyst is refused lead pages; hostile text in
a case stays text.

`FRAUD_SCREENSHOTS=docs/images` also writes the queue and case screenshots there (the
README's pictures); otherwise they go to the test's directory only."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from fraudstream.contracts import Label, encode
from fraudstream.features.state import Entity
from fraudstream.localstack.stack import Endpoints
from fraudstream.review import auth
from fraudstream.review.auth import Role
from fraudstream.review.service import ReviewService
from fraudstream.review.settings import ReviewSettings
from fraudstream.scoring.labels import LabelFolder
from fraudstream.scoring.settings import ScorerSettings
from fraudstream.scoring.state import ScorerState, redis_client
from tests.factories import NOW
from tests.integration.conftest import consume_n
from tests.integration.review_support import review_case, rule_reason
from tests.waiting import await_condition

PASSWORD = "browser test password"
XSS = "<img src=x onerror=\"document.title='pwned'\"><script>alert(1)</script>"


def chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
    if browser is None or not Path(driver).exists():
        pytest.fail("chromium and chromedriver not found: apt-get install chromium "
                    "chromium-driver (.ci/run does)")  # fmt: skip
    return browser, driver


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator[Callable[[], WebDriver]]:
    """Headless chromium sessions (each its own profile, so its own cookies)."""
    browser, driver = chromium()
    made: list[WebDriver] = []

    def make() -> WebDriver:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--window-size=1360,900", "--disable-gpu", "--no-first-run",
                    f"--user-data-dir={tmp_path / f'profile-{len(made)}'}"):  # fmt: skip
            options.add_argument(arg)
        made.append(webdriver.Chrome(service=Service(driver), options=options))
        made[-1].implicitly_wait(0)
        return made[-1]

    yield make
    for session in made:
        session.quit()


@pytest.fixture
def service(  # noqa: PLR0917 - fixtures
    review_db: str, tmp_path: Path, endpoints: Endpoints, make_topic: Callable[..., str],
    unique: Callable[[str], str], make_producer: Callable[..., Producer],
) -> Iterator[ReviewService]:  # fmt: skip
    settings = ReviewSettings(
        state_dir=tmp_path / "state", review_database_url=review_db,
        kafka_bootstrap_servers=endpoints.kafka_bootstrap, redis_url=endpoints.redis_url,
        topic_review=make_topic(partitions=2), topic_labels=make_topic(partitions=2),
        review_group=unique("review"), review_transactional_id=unique("relay"),
        review_port=0, metrics_port=0, review_relay_interval_s=0.1,
    )  # fmt: skip
    producer = make_producer()
    now = datetime.now(UTC)
    cases = [
        review_case("tx-top", amount=2400.0, score=0.81, created_at=now, card_token="card-7",
                    merchant_id="merch-9", device_id="dev-shared"),
        review_case("tx-hostile", amount=45.0, score=0.55, created_at=now,
                    reasons=[rule_reason("ODD_SIGNAL", detail=XSS)], merchant_id="merch-9"),
        review_case("tx-third", amount=12.0, score=0.35, created_at=now, card_token="card-8",
                    device_id="dev-shared"),
        review_case("tx-earlier", amount=70.0, score=0.2, created_at=now, card_token="card-7",
                    event_time=NOW),
    ]  # fmt: skip
    for case in cases:
        producer.produce(settings.topic_review, key=case.transaction.transaction_id.encode(),
                         value=encode(case))  # fmt: skip
    producer.flush(10)
    running = ReviewService(settings)
    with running.store.sessions.begin() as db:
        for name, role in (("ann", Role.ANALYST), ("bob", Role.ANALYST), ("lea", Role.LEAD)):
            auth.create_user(db, name, role, PASSWORD, now)
    running.start()
    try:
        await_condition(lambda: running.store.summary(datetime.now(UTC)).depth == len(cases),
                        60, "the cases to reach the case store")  # fmt: skip
        yield running
    finally:
        running.close()


def log_in(browser: WebDriver, base: str, username: str) -> None:
    browser.get(base + "login")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login").click()
    WebDriverWait(browser, 20).until(expected_conditions.presence_of_element_located(
        (By.ID, "whoami")))  # fmt: skip


def screenshot(browser: WebDriver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    assert browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    if target := os.environ.get("FRAUD_SCREENSHOTS"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)
    return path


def test_a_reviewer_claims_decides_and_the_label_reaches_the_scorer(
    service: ReviewService, browsers: Callable[[], WebDriver], tmp_path: Path,
    make_consumer: Callable[..., Consumer], unique: Callable[[str], str],
) -> None:  # fmt: skip
    base = service.console_url
    labels = make_consumer(service.settings.topic_labels)
    ann, bob = browsers(), browsers()
    log_in(ann, base, "ann")
    rows = ann.find_elements(By.CSS_SELECTOR, "#queue tbody tr")
    assert len(rows) == 4
    assert rows[0].get_attribute("data-transaction-id") == "tx-top"
    countdown = ann.find_element(By.CSS_SELECTOR, "#queue tbody tr .sla").text
    assert countdown.endswith("left"), countdown  # the script ran and counts down
    screenshot(ann, tmp_path, "review-queue.png")

    ann.find_element(By.ID, "next").click()
    WebDriverWait(ann, 20).until(expected_conditions.text_to_be_present_in_element(
        (By.ID, "holder"), "You hold this case"))  # fmt: skip
    assert ann.find_element(By.ID, "case-id").text == "tx-top"
    assert "number of payments on this card" in ann.find_element(By.ID, "signals").text
    assert "tx-earlier" in ann.find_element(By.ID, "timeline").text
    assert "card-8" in ann.find_element(By.ID, "linked-shared").text
    screenshot(ann, tmp_path, "review-case.png")

    log_in(bob, base, "bob")
    bob.get(base + "cases/tx-top")
    assert "ann holds this case" in bob.find_element(By.ID, "holder").text
    assert bob.find_elements(By.ID, "verdict-form") == []  # nothing to decide with

    ann.find_element(By.TAG_NAME, "body").send_keys("f")  # the fraud shortcut
    WebDriverWait(ann, 20).until(lambda b: "tx-top decided fraud" in b.page_source)
    assert ann.find_element(By.ID, "case-id").text != "tx-top"  # the next case opened
    got = consume_n(labels, 1, timeout_s=30)
    assert len(got) == 1
    label = Label.model_validate_json(got[0].value() or b"")
    assert (label.transaction_id, label.verdict.value, label.actor) == ("tx-top", "fraud", "ann")
    assert label.merchant_id == "merch-9"
    decided = service.store.get("tx-top")
    assert decided is not None
    assert (decided.status, decided.verdict_by) == ("decided", "ann")
    assert_in_the_scorers_merchant_state(service, "merch-9", unique)


def assert_in_the_scorers_merchant_state(service: ReviewService, merchant: str,
                                         unique: Callable[[str], str]) -> None:  # fmt: skip
    """The scorer's label folder (as the scorer runs it) takes the reviewer's label into
    the merchant's label book in Redis, which its label-risk features read."""
    review = service.settings
    settings = ScorerSettings(
        kafka_bootstrap_servers=review.kafka_bootstrap_servers, redis_url=review.redis_url,
        topic_labels=review.topic_labels, redis_prefix=unique("scorer"),
        scorer_group_id=unique("scorer"),
    )  # fmt: skip
    assert settings.redis_url is not None
    state = ScorerState(redis_client(settings.redis_url, 2000),
                        prefix=f"{settings.redis_prefix}:fs")  # fmt: skip
    folder = LabelFolder(settings, service.bootstrap, state)
    folder.start()
    key = (Entity.MERCHANT, merchant)
    try:
        await_condition(lambda: key in state.load([key]).labels, 60,
                        f"the reviewer's label in merchant {merchant}'s label book")  # fmt: skip
    finally:
        folder.stop()
    (entry,) = state.load([key]).labels[key].entries
    assert entry[0] == NOW.timestamp()  # counted on the payment's day


def test_roles_are_enforced_and_hostile_text_stays_text(
    service: ReviewService, browsers: Callable[[], WebDriver],
) -> None:  # fmt: skip
    base = service.console_url
    ann = browsers()
    log_in(ann, base, "ann")
    assert ann.find_elements(By.LINK_TEXT, "Approvals") == []
    ann.get(base + "approvals")
    assert "needs the lead role" in ann.find_element(By.TAG_NAME, "main").text
    ann.get(base + "cases/tx-hostile")
    reasons = ann.find_element(By.ID, "rule-reasons").text
    assert "<script>alert(1)</script>" in reasons  # shown as the characters it is
    assert ann.title != "pwned"
    assert ann.find_elements(By.CSS_SELECTOR, "#rule-reasons img, #rule-reasons script") == []
    with pytest.raises(NoAlertPresentException):
        ann.switch_to.alert.text  # noqa: B018 - raises when there is no alert
    # Overturning the model needs a note: the shortcut asks for it instead of submitting.
    ann.find_element(By.TAG_NAME, "body").send_keys("l")
    assert ann.find_element(By.ID, "note-hint").is_displayed()
    assert service.store.get("tx-hostile").status == "open"  # type: ignore[union-attr]
    lea = browsers()
    log_in(lea, base, "lea")
    lea.get(base + "approvals")
    assert lea.find_element(By.TAG_NAME, "h1").text == "Approvals"
