//! The test helpers themselves: a backend answers, the HTTP client parses it.
mod util;

#[test]
fn backend_answers_with_its_name_and_path() {
    let backend = util::Backend::start("alpha");
    let resp = util::http_get(
        backend.addr,
        "example.com",
        "/hello?x=1",
        &[("x-test", "yes")],
    )
    .expect("request to backend");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-backend"), Some("alpha"));
    let body = resp.body_text();
    assert!(body.starts_with("alpha /hello?x=1\n"), "{body}");
    assert!(body.contains("x-test: yes"), "{body}");
    assert_eq!(backend.hits.load(std::sync::atomic::Ordering::Relaxed), 1);
}
