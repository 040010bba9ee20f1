//! A headless Chromium driven over WebDriver, for tests of pages a service serves: Debian's
//! `chromium` and `chromedriver` (`scripts/ensure-chromium` installs them), started on loopback
//! by [`Browser::start`] and stopped when dropped. The WebDriver calls go over a small blocking
//! HTTP/1.1 client of its own, so the kit needs no HTTP library; call it from
//! `tokio::task::spawn_blocking` in an async test.
//!
//! ```no_run
//! let browser = cqrs_tests::browser::Browser::start().expect("chromium");
//! browser.open("http://127.0.0.1:8080/admin/").expect("page");
//! let lag = browser.text("#processors .lag").expect("lag shown");
//! browser.click("button.retry").expect("click");
//! browser.accept_alert().expect("confirm");
//! browser.screenshot(&cqrs_tests::browser::artifact("status-page.png")).expect("screenshot");
//! # let _ = lag;
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key W3C WebDriver names an element reference by.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long [`Browser::start`] waits for chromedriver to answer, and a call for its answer.
const PATIENCE: Duration = Duration::from_secs(30);

/// What went wrong with the browser or a page.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// chromedriver could not be started (not installed: run `scripts/ensure-chromium`).
    #[error("cannot start chromedriver: {0} (scripts/ensure-chromium installs it)")]
    Start(String),
    /// chromedriver could not be reached, or its answer was not HTTP with JSON.
    #[error("talking to chromedriver: {0}")]
    Transport(String),
    /// chromedriver answered a call with a WebDriver error.
    #[error("{call}: {error}: {message}")]
    WebDriver {
        /// The call, as `METHOD path`.
        call: String,
        /// The WebDriver error code (`no such element`, ...).
        error: String,
        /// What chromedriver said.
        message: String,
    },
    /// A screenshot could not be decoded or written.
    #[error("screenshot: {0}")]
    Screenshot(String),
    /// A condition on the page did not hold in time.
    #[error("waited {waited:?} for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        waited: Duration,
    },
}

/// A headless Chromium session, with its chromedriver; both stop when dropped.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless Chromium session
    /// (without the sandbox, which refuses to run as root, as CI does).
    pub fn start() -> Result<Browser, BrowserError> {
        let port = free_port().map_err(|error| BrowserError::Start(error.to_string()))?;
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| BrowserError::Start(error.to_string()))?;
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
        };
        let started = Instant::now();
        loop {
            match browser.call("GET", "/status", None) {
                Ok(status) if status["ready"].as_bool() == Some(true) => break,
                _ if started.elapsed() > PATIENCE => {
                    return Err(BrowserError::Start(format!(
                        "chromedriver did not get ready on port {port} in {PATIENCE:?}"
                    )));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--window-size=1280,900"
                        ]
                    }
                }
            }
        });
        let created = browser.call("POST", "/session", Some(capabilities))?;
        browser.session = created["sessionId"]
            .as_str()
            .ok_or_else(|| BrowserError::Transport(format!("no session id in {created}")))?
            .to_owned();
        Ok(browser)
    }

    /// Opens `url` and waits for it to load.
    pub fn open(&self, url: &str) -> Result<(), BrowserError> {
        self.session_call("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    /// The visible text of the first element `selector` (CSS) finds.
    pub fn text(&self, selector: &str) -> Result<String, BrowserError> {
        let element = self.find(selector)?;
        let text = self.session_call("GET", &format!("/element/{element}/text"), None)?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    /// The visible text of every element `selector` (CSS) finds, in document order.
    pub fn texts(&self, selector: &str) -> Result<Vec<String>, BrowserError> {
        let found = self.session_call(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": selector })),
        )?;
        let mut texts = Vec::new();
        for element in found.as_array().into_iter().flatten() {
            let id = element[ELEMENT_KEY].as_str().unwrap_or_default();
            let text = self.session_call("GET", &format!("/element/{id}/text"), None)?;
            texts.push(text.as_str().unwrap_or_default().to_owned());
        }
        Ok(texts)
    }

    /// Waits up to `timeout` until some element `selector` finds shows text that satisfies
    /// `condition`, and returns that text.
    pub fn wait_for_text(
        &self,
        selector: &str,
        timeout: Duration,
        condition: impl Fn(&str) -> bool,
    ) -> Result<String, BrowserError> {
        let started = Instant::now();
        loop {
            if let Ok(texts) = self.texts(selector)
                && let Some(text) = texts.into_iter().find(|text| condition(text))
            {
                return Ok(text);
            }
            if started.elapsed() > timeout {
                return Err(BrowserError::Timeout {
                    what: format!("text in `{selector}`"),
                    waited: started.elapsed(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the first element `selector` (CSS) finds.
    pub fn click(&self, selector: &str) -> Result<(), BrowserError> {
        let element = self.find(selector)?;
        self.session_call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .map(drop)
    }

    /// The text of the open `alert` or `confirm` dialog.
    pub fn alert_text(&self) -> Result<String, BrowserError> {
        let text = self.session_call("GET", "/alert/text", None)?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    /// Accepts the open `alert` or `confirm` dialog (OK).
    pub fn accept_alert(&self) -> Result<(), BrowserError> {
        self.session_call("POST", "/alert/accept", Some(json!({})))
            .map(drop)
    }

    /// Runs `script` (the body of a function) in the page and returns what it returns.
    pub fn execute(&self, script: &str) -> Result<Value, BrowserError> {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Saves a PNG of the window at `path`, creating its directory.
    pub fn screenshot(&self, path: &Path) -> Result<(), BrowserError> {
        let encoded = self.session_call("GET", "/screenshot", None)?;
        let png = decode_base64(encoded.as_str().unwrap_or_default())
            .ok_or_else(|| BrowserError::Screenshot("not base64".into()))?;
        if let Some(directory) = path.parent() {
            std::fs::create_dir_all(directory)
                .map_err(|error| BrowserError::Screenshot(error.to_string()))?;
        }
        std::fs::write(path, png).map_err(|error| BrowserError::Screenshot(error.to_string()))
    }

    fn find(&self, selector: &str) -> Result<String, BrowserError> {
        let found = self.session_call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": selector })),
        )?;
        found[ELEMENT_KEY]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| BrowserError::Transport(format!("no element reference in {found}")))
    }

    fn session_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, BrowserError> {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// One WebDriver call: its `value`, or the WebDriver error it answered.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, BrowserError> {
        let (_, answer) = http(self.port, method, path, body.as_ref())
            .map_err(|error| BrowserError::Transport(format!("{method} {path}: {error}")))?;
        let answer: Value = serde_json::from_slice(&answer).map_err(|error| {
            BrowserError::Transport(format!("{method} {path}: not JSON: {error}"))
        })?;
        let value = answer["value"].clone();
        if let Some(error) = value.get("error").and_then(Value::as_str) {
            return Err(BrowserError::WebDriver {
                call: format!("{method} {path}"),
                error: error.to_owned(),
                message: value["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(value)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where a test keeps a file for people to look at afterwards: `target/test-artifacts/NAME`.
pub fn artifact(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("test-artifacts")
        .join(name)
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A blocking HTTP/1.1 call to `127.0.0.1:port`, one connection per call: the status code and
/// the body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP status line: {status_line}")))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
    }
    let mut content = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {size:?}")))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            content.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = length {
        content.resize(length, 0);
        reader.read_exact(&mut content)?;
    } else {
        reader.read_to_end(&mut content)?;
    }
    Ok((status, content))
}

/// Standard base64 (with padding), as WebDriver encodes screenshots.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let value = |byte: u8| -> Option<u32> {
        Some(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    let mut decoded = Vec::with_capacity(bytes.len() / 4 * 3);
    for quad in bytes.chunks(4) {
        let padding = quad.iter().rev().take_while(|byte| **byte == b'=').count();
        let mut bits = 0_u32;
        for (index, byte) in quad.iter().enumerate() {
            let sextet = if index >= quad.len() - padding {
                0
            } else {
                value(*byte)?
            };
            bits = (bits << 6) | sextet;
        }
        bits <<= 6 * (4 - quad.len() as u32);
        let out = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
        decoded.extend_from_slice(&out[..3_usize.saturating_sub(padding)]);
    }
    Some(decoded)
}

#[cfg(test)]
mod tests {
    use super::decode_base64;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(decode_base64("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode_base64("aGVsbG8h").as_deref(), Some(&b"hello!"[..]));
        assert_eq!(decode_base64("aGk=").as_deref(), Some(&b"hi"[..]));
        assert_eq!(decode_base64("aA==").as_deref(), Some(&b"h"[..]));
        assert_eq!(decode_base64("a$=="), None);
    }
}
