//! The headless browser kit (`cqrs_tests::browser`) against a page served here: it reads what
//! the page shows, clicks a button behind a `confirm` dialog, sees the page change and the
//! server get the page's request, and keeps a screenshot under `target/test-artifacts/`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cqrs_tests::browser::{Browser, artifact};

const PAGE: &str = r#"<!doctype html>
<html><head><title>kit</title></head>
<body>
<h1>Clicks: <span id="count">0</span></h1>
<button id="add">Add one</button>
<script>
document.getElementById("add").addEventListener("click", async () => {
  if (!confirm("Add one?")) return;
  const response = await fetch("/clicked", { method: "POST" });
  document.getElementById("count").textContent = await response.text();
});
</script>
</body></html>"#;

/// Serves `PAGE` at `/` and counts the `POST /clicked` it gets, answering the new count.
fn serve(clicks: Arc<AtomicUsize>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                    break;
                }
            }
            let (kind, body) = if request.starts_with("POST /clicked") {
                let count = clicks.fetch_add(1, Ordering::SeqCst) + 1;
                ("text/plain", count.to_string())
            } else {
                ("text/html", PAGE.to_owned())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_reads_clicks_confirms_and_keeps_a_screenshot() {
    let clicks = Arc::new(AtomicUsize::new(0));
    let port = serve(Arc::clone(&clicks));
    let shot = artifact("browser-kit.png");
    let _ = std::fs::remove_file(&shot);
    let seen = tokio::task::spawn_blocking({
        let shot = shot.clone();
        move || {
            let browser = Browser::start().unwrap_or_else(|error| panic!("{error}"));
            browser
                .open(&format!("http://127.0.0.1:{port}/"))
                .expect("open the page");
            let before = browser.text("#count").expect("count shown");
            browser.click("#add").expect("click");
            let question = browser.alert_text().expect("a confirmation is asked");
            browser.accept_alert().expect("confirm");
            let after = browser
                .wait_for_text("#count", Duration::from_secs(10), |text| text == "1")
                .expect("the page shows the server's answer");
            browser.screenshot(&shot).expect("screenshot");
            (before, question, after)
        }
    })
    .await
    .expect("browser task");
    assert_eq!(
        seen,
        ("0".to_owned(), "Add one?".to_owned(), "1".to_owned())
    );
    assert_eq!(
        clicks.load(Ordering::SeqCst),
        1,
        "the click reached the server once"
    );
    let png = std::fs::read(&shot).expect("screenshot kept");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    println!("screenshot: {} ({} bytes)", shot.display(), png.len());
}
