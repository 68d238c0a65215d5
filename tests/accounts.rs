//! Teachers sign in: the portal refuses anonymous requests (401 on the API,
//! the sign-in page elsewhere), keeps the mesh's pages for admins, starts
//! and ends sessions, refuses cross-site writes, limits failed sign-ins,
//! and sends security headers on every answer. Real daemons, real HTTP,
//! accounts made with the real `gradebook users`.

mod support;

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use support::{Mesh, TEST_PASSWORD, TEST_USER, signed_in_builder};

fn anonymous() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn signing_in_is_required_and_roles_are_enforced() {
    let mesh = Mesh::new();
    let gradebook = mesh.gradebook().await;
    let http = gradebook.http();

    let api = anonymous()
        .get(format!("{http}/api/students"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.headers()["www-authenticate"], "Bearer");
    let body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(body["error"]["code"], "UNAUTHENTICATED", "{body}");

    let page = anonymous()
        .get(format!("{http}/students?sort=name"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        page.headers()["location"],
        "/login?next=/students%3Fsort%3Dname"
    );

    let forged = signed_in_builder("0".repeat(64).as_str())
        .build()
        .unwrap()
        .get(format!("{http}/api/students"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    // A teacher works with students but does not see the mesh.
    let teacher_token = mesh.add_user("ada", "teacher", "analytical engine");
    let teacher = signed_in_builder(&teacher_token)
        .redirect(Policy::none())
        .build()
        .unwrap();
    let students = teacher
        .get(format!("{http}/api/students"))
        .send()
        .await
        .unwrap();
    assert_eq!(students.status(), StatusCode::OK);
    let services = teacher
        .get(format!("{http}/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(services.status(), StatusCode::FORBIDDEN);
    assert!(services.text().await.unwrap().contains("for admins"));
    let services = teacher
        .get(format!("{http}/api/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(services.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = services.json().await.unwrap();
    assert_eq!(body["error"]["code"], "PERMISSION_DENIED");
    for page in ["/logs", "/services"] {
        let admin = gradebook
            .client()
            .get(format!("{http}{page}"))
            .send()
            .await
            .unwrap();
        assert_eq!(admin.status(), StatusCode::OK, "{page} for an admin");
    }

    // Security headers on every kind of answer.
    for (client, path) in [
        (anonymous(), "/login"),
        (anonymous(), "/api/students"),
        (teacher.clone(), "/students"),
        (teacher.clone(), "/api/students"),
        (teacher.clone(), "/nowhere"),
    ] {
        let response = client.get(format!("{http}{path}")).send().await.unwrap();
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'")
                && !csp.contains("unsafe-inline'; script")
                && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "same-origin", "{path}");
    }
}

/// How many students the portal lists.
async fn student_count(gradebook: &support::Gradebook) -> usize {
    let page: serde_json::Value = gradebook
        .client()
        .get(format!("{}/api/students?page_size=100", gradebook.http()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["students"].as_array().unwrap().len()
}

/// Signs in through the form; the answer.
async fn sign_in(http: &str, name: &str, password: &str) -> reqwest::Response {
    anonymous()
        .post(format!("{http}/login"))
        .form(&[
            ("name", name),
            ("password", password),
            ("next", "/students"),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sessions_start_and_end_and_cross_site_writes_and_guessing_are_refused() {
    let mesh = Mesh::new();
    let gradebook = mesh.gradebook().await;
    let http = gradebook.http();

    let wrong = sign_in(&http, TEST_USER, "not the password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("Wrong name or password")
    );

    let signed_in = sign_in(&http, TEST_USER, TEST_PASSWORD).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_in.headers()["location"], "/students");
    let set_cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "plain HTTP on loopback: {set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let with_cookie = |request: reqwest::RequestBuilder| request.header("cookie", &cookie);

    let page = with_cookie(anonymous().get(format!("{http}/students")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Sign out"));

    // A form posted from another site is refused, and changes nothing.
    let before = student_count(&gradebook).await;
    let form = [("first_name", "Forged"), ("last_name", "Student")];
    for (header, value) in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://evil.example"),
    ] {
        let forged = with_cookie(anonymous().post(format!("{http}/students")))
            .header(header, value)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::FORBIDDEN, "{header}: {value}");
    }
    let after = student_count(&gradebook).await;
    assert_eq!(after, before, "nothing was written");
    // The same form from the portal's own page is accepted.
    let host = http.trim_start_matches("http://").to_owned();
    let own = with_cookie(anonymous().post(format!("{http}/students")))
        .header("origin", format!("http://{host}"))
        .header("sec-fetch-site", "same-origin")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::SEE_OTHER);

    // Signing out ends the session everywhere it is used.
    let out = with_cookie(anonymous().post(format!("{http}/logout")))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after_out = with_cookie(anonymous().get(format!("{http}/api/students")))
        .send()
        .await
        .unwrap();
    assert_eq!(after_out.status(), StatusCode::UNAUTHORIZED);

    // Five wrong passwords hold the account, even from the right password.
    mesh.add_user("bob", "teacher", "bobs password");
    for _ in 0..5 {
        let wrong = sign_in(&http, "bob", "guess guess").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let held = sign_in(&http, "bob", "bobs password").await;
    assert_eq!(held.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = held.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 60, "held for the window: {wait} s");
}
