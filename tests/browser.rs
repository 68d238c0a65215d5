//! The web app in a real headless browser (Debian's chromium, driven through
//! chromedriver over WebDriver): sign in, open the students, open one,
//! submit the add-grade form, see the new grade and the new average, and
//! sign out.

mod support;

use std::process::{Child, Command, Stdio};

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;
use support::{Mesh, PATIENCE, TEST_PASSWORD, TEST_USER, eventually, free_port};

/// chromedriver, killed on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser() -> (Driver, fantoccini::Client) {
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Driver)
        .expect(
            "chromedriver is installed (apt-get install chromium chromium-driver; .ci/run does it)",
        );
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({ "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=412,915"] }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let client = eventually("chromedriver starts a browser", PATIENCE, || {
        let capabilities = capabilities.clone();
        let url = url.clone();
        async move {
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities)
                .connect(&url)
                .await
                .ok()
        }
    })
    .await;
    (driver, client)
}

#[tokio::test]
async fn a_teacher_adds_a_grade_in_the_browser() {
    let mesh = Mesh::new();
    let gradebook = mesh.gradebook().await;
    let (_driver, browser) = browser().await;

    // Signed out, /students leads to the sign-in page, and back after it.
    browser
        .goto(&format!("{}/students", gradebook.http()))
        .await
        .expect("open /students");
    assert!(
        browser.current_url().await.unwrap().path() == "/login",
        "signed out, the sign-in page"
    );
    sign_in(&browser).await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/students");
    let first = browser
        .find(Locator::Css("table tbody a"))
        .await
        .expect("a student link");
    let name = first.text().await.unwrap();
    first.click().await.expect("open the student");
    let heading = browser
        .find(Locator::Css("h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (last, given) = name.split_once(", ").unwrap();
    assert_eq!(heading, format!("{given} {last}"));
    let rows_before = browser
        .find_all(Locator::Css("#grades tbody tr"))
        .await
        .unwrap()
        .len();

    browser
        .find(Locator::Id("title"))
        .await
        .unwrap()
        .send_keys("Browser quiz")
        .await
        .unwrap();
    browser
        .find(Locator::Css("#type option[value='homework']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .find(Locator::Id("score"))
        .await
        .unwrap()
        .send_keys("100")
        .await
        .unwrap();
    browser
        .find(Locator::Css(
            "form[action$='/grades'] button[type='submit']",
        ))
        .await
        .unwrap()
        .click()
        .await
        .expect("submit the add-grade form");

    let rows = eventually("the new grade is listed", PATIENCE, || {
        let browser = browser.clone();
        async move {
            let rows = browser
                .find_all(Locator::Css("#grades tbody tr"))
                .await
                .ok()?;
            (rows.len() == rows_before + 1).then_some(rows)
        }
    })
    .await;
    let mut found = false;
    for row in rows {
        let text = row.text().await.unwrap();
        if text.contains("Browser quiz") {
            assert!(
                text.contains("homework") && text.contains("100.0"),
                "{text}"
            );
            found = true;
        }
    }
    assert!(found, "the new grade's row");

    // The average shown is the mean of the scores shown.
    let mut scores = Vec::new();
    for cell in browser
        .find_all(Locator::Css("#grades tbody td.num"))
        .await
        .unwrap()
    {
        scores.push(cell.text().await.unwrap().parse::<f64>().unwrap());
    }
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    let shown = browser
        .find(Locator::Id("average"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(shown, format!("{mean:.1}"));

    // Signing out ends the session: the pages ask for a sign-in again.
    browser
        .find(Locator::Css("form[action='/logout'] button"))
        .await
        .unwrap()
        .click()
        .await
        .expect("sign out");
    eventually("signed out", PATIENCE, || {
        let browser = browser.clone();
        async move { (browser.current_url().await.ok()?.path() == "/login").then_some(()) }
    })
    .await;
    browser
        .goto(&format!("{}/students", gradebook.http()))
        .await
        .unwrap();
    assert_eq!(browser.current_url().await.unwrap().path(), "/login");
    browser.close().await.ok();
}

/// Fills in and submits the sign-in form as the test user.
async fn sign_in(browser: &fantoccini::Client) {
    browser
        .find(Locator::Id("name"))
        .await
        .unwrap()
        .send_keys(TEST_USER)
        .await
        .unwrap();
    browser
        .find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(TEST_PASSWORD)
        .await
        .unwrap();
    browser
        .find(Locator::Css("form[action='/login'] button[type='submit']"))
        .await
        .unwrap()
        .click()
        .await
        .expect("sign in");
    eventually("signed in", PATIENCE, || {
        let browser = browser.clone();
        async move { (browser.current_url().await.ok()?.path() != "/login").then_some(()) }
    })
    .await;
}
