//! Calls to a running service's admin router (`cqrs_http::admin`), over plain HTTP/1.1.

use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::error::AdminError;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one call may take, answer included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How to write `--service`.
const WRITE_IT: &str = "write the admin router's address as http://HOST:PORT/PATH, such as \
                        http://127.0.0.1:3000/admin";

/// The problem type of a mutating call that was not confirmed (`cqrs_http::problem::kinds`).
pub(crate) const CONFIRMATION_REQUIRED: &str = "urn:cqrs:problem:confirmation-required";

/// The problem type of a processor or dead letter the service does not know
/// (`cqrs_http::problem::kinds`).
pub(crate) const NOT_FOUND: &str = "urn:cqrs:problem:not-found";

/// A running service's admin router, as `--service` names it.
pub(crate) struct Service {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `host:port`.
    authority: String,
    /// The router's path, without a trailing `/` (empty at the root).
    base: String,
    /// Sent with every call (`--service-header`).
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// A problem the service answered with (`application/problem+json`), or an error status
/// without one.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The problem's `type` (empty without a problem body).
    pub(crate) kind: String,
    /// The problem's `title`.
    pub(crate) title: String,
    /// The problem's `detail`, the service's own words.
    pub(crate) detail: String,
    /// The whole body.
    pub(crate) body: Value,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (HTTP {})", self.title, self.status)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl Service {
    /// Reads `--service URL` and the `--service-header` values.
    pub(crate) fn new(url: &str, headers: &[String]) -> Result<Self, AdminError> {
        let usage = |detail: String| AdminError::Usage(format!("--service {url}: {detail}"));
        let uri: Uri = url
            .parse()
            .map_err(|error| usage(format!("not a URL ({error}): {WRITE_IT}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(usage(
                    "https is not spoken here: reach the admin router over loopback, a \
                     port-forward or a plain-HTTP listener of the proxy in front of it"
                        .to_owned(),
                ));
            }
            _ => return Err(usage(WRITE_IT.to_owned())),
        }
        let authority = match uri.authority() {
            Some(authority) if authority.as_str().contains('@') => {
                return Err(usage(
                    "credentials in the URL are not sent: pass them with --service-header \
                     'Authorization: ...'"
                        .to_owned(),
                ));
            }
            Some(authority) => authority.as_str().to_owned(),
            None => return Err(usage("the URL names no host".to_owned())),
        };
        if uri.query().is_some() {
            return Err(usage("the URL must not carry a query".to_owned()));
        }
        let headers = headers
            .iter()
            .map(|header| parse_header(header))
            .collect::<Result<Vec<_>, _>>()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        Ok(Service {
            client: Client::builder(TokioExecutor::new()).build(connector),
            authority,
            base: uri.path().trim_end_matches('/').to_owned(),
            headers,
        })
    }

    /// The router's address, as calls are sent to it.
    pub(crate) fn address(&self) -> String {
        format!("http://{}{}", self.authority, self.base)
    }

    /// `GET path` (relative to the router): the JSON answer of a success.
    pub(crate) async fn get(&self, path: &str) -> Result<Value, AdminError> {
        match self.call(Method::GET, path).await? {
            Ok(value) => Ok(value),
            Err(refusal) => Err(AdminError::Refused(refusal)),
        }
    }

    /// `POST path`: the JSON answer of a success, or the problem the service refused with.
    pub(crate) async fn post(&self, path: &str) -> Result<Result<Value, Refusal>, AdminError> {
        self.call(Method::POST, path).await
    }

    async fn call(&self, method: Method, path: &str) -> Result<Result<Value, Refusal>, AdminError> {
        let target = format!("{}{path}", self.address());
        let unreachable = |detail: String| AdminError::ServiceUnreachable {
            address: self.address(),
            detail,
        };
        let mut request = Request::builder()
            .method(method.clone())
            .uri(&target)
            .header(ACCEPT, "application/json, application/problem+json");
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|error| AdminError::Usage(format!("cannot call {target}: {error}")))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|error| {
                // The legacy client's error says little alone; its source says what failed.
                let cause = std::error::Error::source(&error)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                unreachable(
                    format!("{error}: {cause}")
                        .trim_end_matches(": ")
                        .to_owned(),
                )
            })?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|error| unreachable(format!("the answer broke off: {error}")))?
                .to_bytes();
            Ok::<_, AdminError>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", CALL_TIMEOUT.as_secs())))??;
        let json = serde_json::from_slice::<Value>(&body).ok();
        if parts.status.is_success() {
            return json.map(Ok).ok_or_else(|| AdminError::ServiceAnswer {
                call: format!("{method} {target}"),
                detail: format!(
                    "HTTP {} with a body that is not JSON ({} bytes, content type {})",
                    parts.status.as_u16(),
                    body.len(),
                    content_type(&parts.headers)
                ),
            });
        }
        Ok(Err(refusal(parts.status, json, &target)))
    }
}

/// The refusal an error status says, with its problem body when it has one.
fn refusal(status: StatusCode, body: Option<Value>, target: &str) -> Refusal {
    let text = |body: &Option<Value>, key: &str| {
        body.as_ref()
            .and_then(|body| body.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let title = text(&body, "title")
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let detail = text(&body, "detail").unwrap_or_else(|| {
        if body.is_none() && status == StatusCode::NOT_FOUND {
            format!(
                "nothing is served at {target}: is --service the address the admin router is \
                 nested at (such as http://127.0.0.1:3000/admin)?"
            )
        } else {
            String::new()
        }
    });
    Refusal {
        status: status.as_u16(),
        kind: text(&body, "type").unwrap_or_default(),
        title,
        detail,
        body: body.unwrap_or(Value::Null),
    }
}

fn content_type(headers: &hyper::HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("none")
        .to_owned()
}

/// `Name: value`.
fn parse_header(header: &str) -> Result<(HeaderName, HeaderValue), AdminError> {
    // The value may be a secret: a message repeats the name only.
    let (name, value) = header.split_once(':').ok_or_else(|| {
        AdminError::Usage("--service-header: write it as `Name: value`".to_owned())
    })?;
    let usage = |detail: &str| {
        AdminError::Usage(format!("--service-header `{}: ...`: {detail}", name.trim()))
    };
    let name =
        HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| usage("not a header name"))?;
    let mut value = HeaderValue::from_str(value.trim()).map_err(|_| usage("not a header value"))?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// `text` as one path segment: everything but unreserved characters percent-encoded (a saga
/// deadline's dead letter id holds `/`).
pub(crate) fn segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_of(url: &str, headers: &[&str]) -> String {
        let headers: Vec<String> = headers.iter().map(|header| (*header).to_owned()).collect();
        match Service::new(url, &headers) {
            Err(AdminError::Usage(message)) => message,
            Err(other) => panic!("not a usage error: {other}"),
            Ok(_) => panic!("{url} accepted"),
        }
    }

    #[test]
    fn the_address_is_the_routers_base() {
        let service = Service::new("http://127.0.0.1:3000/admin/", &[])
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(service.address(), "http://127.0.0.1:3000/admin");
        let root =
            Service::new("http://localhost:9", &[]).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(root.address(), "http://localhost:9");
    }

    #[test]
    fn urls_it_cannot_use_are_usage_errors_that_say_why() {
        assert!(usage_of("https://ops.example/admin", &[]).contains("https is not spoken"));
        assert!(usage_of("127.0.0.1:3000/admin", &[]).contains("http://HOST:PORT/PATH"));
        assert!(usage_of("http://ops:secret@host/admin", &[]).contains("--service-header"));
        assert!(usage_of("http://host/admin?x=1", &[]).contains("query"));
    }

    #[test]
    fn headers_are_read_and_a_bad_one_is_named_without_its_value() {
        let service = Service::new(
            "http://host/admin",
            &["Authorization: Bearer s3cret".into()],
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(service.headers.len(), 1);
        assert_eq!(service.headers[0].0, "authorization");
        assert_eq!(service.headers[0].1, "Bearer s3cret");
        let message = usage_of("http://host/admin", &["X-Token s3cret"]);
        assert!(message.contains("`Name: value`"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("deadline/order-1/pay"), "deadline%2Forder-1%2Fpay");
        assert_eq!(segment("orders_counted"), "orders_counted");
        assert_eq!(segment("a b?é"), "a%20b%3F%C3%A9");
    }
}
