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

/// Asserts that nothing overflows sideways on the phone-sized window, then
/// saves screenshots of the page at a phone's width and a laptop's as
/// artifacts (`target/tmp/screenshots/NAME-WIDTH.png`).
async fn fits_and_screenshots(browser: &fantoccini::Client, name: &str) {
    let fits = browser
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits, json!(true), "no horizontal overflow on {name}");
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    for (width, height) in [(412, 915), (1280, 900)] {
        browser.set_window_size(width, height).await.unwrap();
        let png = browser.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(shots.join(format!("{name}-{width}.png")), &png).unwrap();
    }
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

#[tokio::test]
async fn an_operator_follows_a_request_through_the_trace_waterfall() {
    let mesh = Mesh::new();
    let gradebook = mesh.gradebook().await;
    // A teacher's request, traced from the caller on.
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let created = gradebook
        .client()
        .post(format!("{}/api/students", gradebook.http()))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({ "first_name": "Grace", "last_name": "Waterfall" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let api = format!("{}/api/traces/{trace}", gradebook.http());
    eventually("the trace is stored", PATIENCE, || {
        let (client, api) = (gradebook.client(), api.clone());
        async move {
            let body: serde_json::Value = client.get(&api).send().await.ok()?.json().await.ok()?;
            (body["spans"].as_array()?.len() >= 4).then_some(())
        }
    })
    .await;

    let (_driver, browser) = browser().await;
    browser
        .goto(&format!("{}/traces", gradebook.http()))
        .await
        .unwrap();
    sign_in(&browser).await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/traces");
    browser
        .find(Locator::Css(&format!("a[href='/traces/{trace}']")))
        .await
        .expect("the trace is listed")
        .click()
        .await
        .unwrap();
    eventually("the trace's page", PATIENCE, || {
        let browser = browser.clone();
        let path = format!("/traces/{trace}");
        async move { (browser.current_url().await.ok()?.path() == path).then_some(()) }
    })
    .await;
    let rows = browser
        .find_all(Locator::Css(".waterfall li strong"))
        .await
        .unwrap();
    let mut names = Vec::new();
    for row in &rows {
        names.push(row.text().await.unwrap());
    }
    for expected in [
        "POST /api/students",
        "gradebook.grading.v1.Grading/CreateStudent",
        "store create_student",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    let bars = browser.find_all(Locator::Css(".lane span")).await.unwrap();
    assert!(bars.len() >= 4, "one bar per span: {}", bars.len());
    let text = browser
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("student created"),
        "the trace's log records: {text}"
    );
    fits_and_screenshots(&browser, "trace-waterfall").await;
    browser.close().await.ok();
}

/// The text of each row of the live `/services` table, as the browser shows it.
async fn fleet_rows(browser: &fantoccini::Client) -> Vec<String> {
    let rows = browser
        .execute(
            "return [...document.querySelectorAll('#fleet tr')].map(r => r.innerText);",
            vec![],
        )
        .await
        .unwrap_or_default();
    rows.as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the live table has a row of the instance at `address`
/// that `matches`; returns its text.
async fn fleet_row(
    what: &str,
    browser: &fantoccini::Client,
    address: &str,
    matches: impl Fn(&str) -> bool,
) -> String {
    eventually(what, PATIENCE, || {
        let browser = browser.clone();
        let matches = &matches;
        async move {
            fleet_rows(&browser)
                .await
                .into_iter()
                .find(|r| r.contains(address) && matches(r))
        }
    })
    .await
}

#[tokio::test]
async fn an_operator_watches_the_services_page_follow_the_mesh_live() {
    // Every instance's metrics read every second rather than every five.
    let mesh = Mesh::with_env(&[("GRADEBOOK_OPS_SAMPLE_INTERVAL", "1s")]);
    let gradebook = mesh.gradebook().await;
    let (_driver, browser) = browser().await;
    browser
        .goto(&format!("{}/services", gradebook.http()))
        .await
        .unwrap();
    sign_in(&browser).await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/services");
    // Marks this page: a reload would lose the mark.
    browser
        .execute("window.gradebookMark = 'still here';", vec![])
        .await
        .unwrap();

    // Traffic through the portal to grading: grading's row charts it,
    // from grading's own metrics.
    let client = gradebook.client();
    let students = format!("{}/api/students", gradebook.http());
    eventually("grading's row charts its requests", PATIENCE, || {
        let (browser, client, students) = (browser.clone(), client.clone(), students.clone());
        async move {
            let created = client
                .post(&students)
                .json(&json!({ "first_name": "Ops", "last_name": "Watcher" }))
                .send()
                .await;
            assert_eq!(created.ok()?.status(), 201);
            let charts = browser
                .execute(
                    "return [...document.querySelectorAll('#fleet tr')]
                        .filter(r => r.cells[1].innerText.trim().split('\\n')[0] == 'grading')
                        .map(r => (r.querySelector('svg.spark title') || {}).textContent || '');",
                    vec![],
                )
                .await
                .ok()?;
            let title = charts.as_array()?.first()?.as_str()?.to_owned();
            (title.starts_with("Requests a second") && !title.contains(": 0.0/s now")).then_some(())
        }
    })
    .await;
    let rows = fleet_rows(&browser).await;
    for service in ["registry", "log", "grading", "portal"] {
        assert!(
            rows.iter()
                .any(|r| r.contains(service) && r.contains("SERVING")),
            "{service} is serving: {rows:#?}"
        );
    }

    // A new instance shows up, then goes down, without a reload.
    let mut second = mesh.log(&gradebook.registry, "log-2", &[]).await;
    let address = second.address();
    fleet_row("the new instance appears", &browser, &address, |r| {
        r.contains("SERVING")
    })
    .await;
    second.kill9();
    let row = fleet_row(
        "the dead instance is down, with its history",
        &browser,
        &address,
        |r| r.starts_with("UNREACHABLE"),
    )
    .await;
    assert!(
        row.contains("SERVING") && row.contains("UNREACHABLE"),
        "the history says when it went down: {row}"
    );
    let mark = browser
        .execute("return window.gradebookMark || null;", vec![])
        .await
        .unwrap();
    assert_eq!(mark, json!("still here"), "updated in place, not reloaded");

    fits_and_screenshots(&browser, "services").await;
    browser.close().await.ok();
}
