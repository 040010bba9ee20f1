//! The shop over HTTP: the app of `cargo run --example shop_service` served in-process on a
//! SQLite file and driven by a real HTTP client, then the example binary itself, stopped by
//! SIGINT.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use cqrs_core::EventStore as _;
use cqrs_examples::database::open_sqlite;
use cqrs_examples::shop::service::{CHECKOUT, READ_MODEL, ShopService, serve};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How long anything may take before the test calls it broken: generous, the machine is shared.
const PATIENCE: Duration = Duration::from_secs(60);

/// A directory of its own under the system's temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creates the scratch directory");
        Scratch(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The file SQLite keeps its write-ahead log in, next to `db`.
fn wal_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// An answer, read whole.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    /// The `Consistency-Position` header, as a number.
    fn position(&self) -> Option<u64> {
        let value = self.headers.get("consistency-position")?;
        Some(value.to_str().expect("ascii").parse().expect("a number"))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("ascii"))
            .unwrap_or("")
    }

    /// Asserts a 2xx answer with a `Consistency-Position`, and returns the position.
    fn written(&self) -> u64 {
        assert!(self.status.is_success(), "{} {:#}", self.status, self.body);
        self.position()
            .expect("a command's answer has a Consistency-Position")
    }

    /// Asserts a refused command's problem of this status.
    fn refused(&self, status: StatusCode, detail: &str) {
        assert_eq!(self.status, status, "{:#}", self.body);
        assert_eq!(self.header("content-type"), "application/problem+json");
        assert_eq!(self.body["type"], "urn:cqrs:problem:command-refused");
        assert_eq!(self.body["status"], status.as_u16());
        assert_eq!(self.body["detail"], detail, "{:#}", self.body);
    }
}

/// A real HTTP/1 client of one server.
struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl HttpClient {
    fn new(addr: SocketAddr) -> Self {
        HttpClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Value,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let bytes = if body.is_null() {
            Bytes::new()
        } else {
            request = request.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(&body).expect("serializes"))
        };
        let request = request.body(Full::new(bytes)).expect("a valid request");
        let response = tokio::time::timeout(PATIENCE, self.client.request(request))
            .await
            .expect("the server answers in time")
            .expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("reads the body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::GET, path, headers, Value::Null).await
    }

    /// `POST path` with the `Idempotency-Key` `key` and a JSON body.
    async fn command(&self, path: &str, key: &str, body: Value) -> Answer {
        self.send(Method::POST, path, &[("idempotency-key", key)], body)
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_serves_commands_and_reads_its_writes_over_http() {
    let scratch = Scratch::new("shop-service");
    let db = scratch.file("shop.db");
    let store = open_sqlite(&db).await.expect("opens the file");
    let service = ShopService::new(store.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("has an address");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(service, listener, async move {
        let _ = stopped.await;
    }));
    let http = HttpClient::new(addr);

    let opened = http
        .command("/carts/c-1", "open-c-1", json!({ "customer": "ada" }))
        .await;
    assert_eq!(opened.written(), 1, "the first event of the log");
    assert_eq!(opened.body["stream"], "cart-c-1");

    // A retry with the same key: the same answer, nothing written a second time.
    let mugs = json!({ "product": "mug", "quantity": 2, "unit_price": 850 });
    let added = http
        .command("/carts/c-1/items", "mugs-c-1", mugs.clone())
        .await;
    let again = http.command("/carts/c-1/items", "mugs-c-1", mugs).await;
    assert_eq!(again.written(), added.written());
    assert_eq!(added.body["deduplicated"], false);
    assert_eq!(again.body["deduplicated"], true, "{:#}", again.body);
    assert_eq!(again.header("idempotent-replayed"), "true");
    let cart = http.get("/carts/c-1", &[]).await;
    assert_eq!(cart.status, StatusCode::OK);
    assert_eq!(
        cart.body,
        json!({
            "lines": [{ "product": "mug", "quantity": 2, "unit_price": 850 }],
            "total": 1700,
            "version": 2,
        }),
        "two mugs once, not four"
    );
    assert_eq!(store.head().await.expect("reads the head").0, 2);

    // Refusals: a request no cart could take is 422, one about where the cart stands 409.
    let nothing = json!({ "product": "mug", "quantity": 0, "unit_price": 850 });
    http.command("/carts/c-1/items", "none-c-1", nothing)
        .await
        .refused(StatusCode::UNPROCESSABLE_ENTITY, "add at least one item");
    let kettle = json!({ "product": "kettle", "quantity": 1, "unit_price": 4900 });
    http.command("/carts/c-2/items", "kettle-c-2", kettle)
        .await
        .refused(StatusCode::CONFLICT, "the cart is not open");
    http.command(
        "/orders/c-9/cancel",
        "cancel-c-9",
        json!({ "reason": "none" }),
    )
    .await
    .refused(StatusCode::CONFLICT, "the order was never placed");
    let not_json = http
        .send(
            Method::POST,
            "/carts/c-3",
            &[("idempotency-key", "open-c-3")],
            Value::String("ben".to_owned()),
        )
        .await;
    assert_eq!(not_json.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(not_json.header("content-type"), "application/problem+json");
    assert_eq!(not_json.body["type"], "urn:cqrs:problem:invalid-body");
    let missing_key = http
        .send(
            Method::POST,
            "/carts/c-3",
            &[],
            json!({ "customer": "ben" }),
        )
        .await;
    assert_eq!(missing_key.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        missing_key.body["type"],
        "urn:cqrs:problem:invalid-idempotency-key"
    );

    // The checkout's position covers the order the saga placed: a read sent with it sees it.
    let checkout = json!({ "card": "Good", "address": { "city": "Utrecht", "country": "NL" } });
    let checked_out = http
        .command("/carts/c-1/checkout", "checkout-c-1", checkout)
        .await;
    let position = checked_out.written();
    let cart_event = checked_out.body["position"].as_u64().expect("a position");
    assert!(
        position > cart_event,
        "{position} after the cart's {cart_event}"
    );
    let position = position.to_string();
    let orders = http
        .get(
            "/customers/ada/orders",
            &[("consistency-position", &position)],
        )
        .await;
    assert_eq!(orders.status, StatusCode::OK, "{:#}", orders.body);
    assert_eq!(orders.body["customer"], "ada");
    assert_eq!(
        orders.body["orders"]["c-1"]["total"], 1700,
        "{:#}",
        orders.body
    );
    assert_eq!(orders.body["orders"]["c-1"]["items"], 2);
    assert!(orders.body["position"].as_u64() >= position.parse().ok());
    let order = http
        .get("/orders/c-1", &[("consistency-position", &position)])
        .await;
    assert_eq!(order.status, StatusCode::OK, "{:#}", order.body);
    assert_eq!(order.body["total"], 1700);
    let unknown = http.get("/orders/c-404", &[]).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let bad_position = http
        .get("/customers/ada/orders?after=not-a-number", &[])
        .await;
    assert_eq!(bad_position.status, StatusCode::BAD_REQUEST);

    http.command(
        "/carts/c-1/items",
        "late-c-1",
        json!({ "product": "mug", "quantity": 1, "unit_price": 850 }),
    )
    .await
    .refused(StatusCode::CONFLICT, "the cart was checked out");

    let status = http.get("/admin/status", &[]).await;
    assert_eq!(status.status, StatusCode::OK, "{:#}", status.body);
    let names: Vec<&str> = status
        .body
        .as_array()
        .expect("a list of processors")
        .iter()
        .filter_map(|processor| processor["name"].as_str())
        .collect();
    assert_eq!(names, [READ_MODEL, CHECKOUT], "{:#}", status.body);
    let health = http.get("/admin/health", &[]).await;
    assert_eq!(health.status, StatusCode::OK, "{:#}", health.body);

    let _ = stop.send(());
    let statuses = tokio::time::timeout(PATIENCE, server)
        .await
        .expect("drains in time")
        .expect("the server task ends")
        .expect("the server ran");
    let drained: Vec<&str> = statuses.iter().map(|status| status.name).collect();
    assert_eq!(drained, [READ_MODEL, CHECKOUT]);
    store.close().await.expect("closes the file");
    assert!(!wal_of(&db).exists(), "the -wal file is gone");
}

/// The example binary next to this test's: `cargo test` builds the examples before it runs the
/// tests (`target/<profile>/examples/`, this test is in `target/<profile>/deps/`).
fn example_binary() -> PathBuf {
    let test = std::env::current_exe().expect("the test binary's path");
    let profile = test
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps");
    let binary = profile
        .join("examples")
        .join(format!("shop_service{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: `cargo test -p cqrs-examples` builds it (or `cargo build -p \
         cqrs-examples --example shop_service`)",
        binary.display()
    );
    let built = modified(&binary);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = vec![manifest.join("examples").join("shop_service.rs")];
    sources.extend(rust_files(&manifest.join("src")));
    // `cargo test -p cqrs-examples --test shop_service` builds no examples: a binary older than
    // its sources would test yesterday's code.
    for source in sources {
        assert!(
            modified(&source) <= built,
            "{} is older than {}: run `cargo test -p cqrs-examples` (or `cargo build -p \
             cqrs-examples --example shop_service`) first",
            binary.display(),
            source.display()
        );
    }
    binary
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The `.rs` files under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("reads the sources").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files
}

/// Kills the child if the test fails before it has stopped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The example binary, running on a SQLite file, and what it printed so far.
struct Service {
    child: Running,
    addr: SocketAddr,
    printed: mpsc::Receiver<String>,
    output: Vec<String>,
}

impl Service {
    /// Starts the example on `db` and waits until it says where it listens.
    fn start(db: &Path) -> Service {
        let mut child = Command::new(example_binary())
            .arg("--database")
            .arg(db)
            // Port 0: the system picks a free port, and the service prints the one it got.
            .env("SHOP_ADDR", "127.0.0.1:0")
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .current_dir(db.parent().expect("the file is in a directory"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starts the example");
        let stdout = child.stdout.take().expect("piped stdout");
        let child = Running(child);
        let (lines, printed) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut output = Vec::new();
        let addr = loop {
            let line = printed
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|_| panic!("no address printed; printed so far: {output:#?}"));
            let found = line
                .strip_prefix("The shop is open on http://")
                .map(|addr| addr.parse().expect("an address"));
            output.push(line);
            if let Some(addr) = found {
                break addr;
            }
        };
        Service {
            child,
            addr,
            printed,
            output,
        }
    }

    /// Sends `signal` (`INT`, `TERM`) and waits for the exit; asserts it is 0 and returns all
    /// the example printed.
    fn stop(mut self, signal: &str) -> String {
        let pid = self.child.0.id().to_string();
        let killed = Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .expect("runs kill");
        assert!(killed.success());
        let deadline = Instant::now() + PATIENCE;
        let exit = loop {
            if let Some(exit) = self.child.0.try_wait().expect("waits for the example") {
                break exit;
            }
            assert!(Instant::now() < deadline, "still running after SIG{signal}");
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader thread ends with the pipe; what it read is all there is.
        self.output.extend(self.printed.iter());
        let output = self.output.join("\n");
        assert!(exit.success(), "{exit}\n{output}");
        assert!(
            output.contains(&format!(
                "SIG{signal}: stopped taking connections, finished the requests in flight, and \
                 drained the processors"
            )),
            "{output}"
        );
        assert!(output.contains("Closed "), "{output}");
        output
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

#[cfg(unix)]
#[test]
fn the_example_serves_until_sigint_then_drains_and_closes_the_file() {
    let scratch = Scratch::new("shop-service-binary");
    let db = scratch.file("served.db");
    let service = Service::start(&db);
    assert!(
        service.output[0].contains("a new database"),
        "{:#?}",
        service.output
    );
    let runtime = runtime();
    let opened = runtime.block_on(async {
        let http = HttpClient::new(service.addr);
        http.command("/carts/b-1", "open-b-1", json!({ "customer": "ada" }))
            .await
    });
    assert_eq!(opened.written(), 1);

    service.stop("INT");
    assert!(db.exists());
    assert!(!wal_of(&db).exists(), "a -wal file is left");
    // The cart is in the file: a new open finds the event the service wrote.
    let head = runtime.block_on(async {
        let store = open_sqlite(&db).await.expect("reopens the file");
        let head = store.head().await.expect("reads the head");
        store.close().await.expect("closes the file");
        head
    });
    assert_eq!(head.0, 1);
}

#[cfg(unix)]
#[test]
fn the_example_continues_on_its_file_and_stops_on_sigterm_too() {
    let scratch = Scratch::new("shop-service-restart");
    let db = scratch.file("served.db");
    let runtime = runtime();
    let checkout = json!({ "card": "Good", "address": { "city": "Lyon", "country": "FR" } });
    let service = Service::start(&db);
    let position = runtime.block_on(async {
        let http = HttpClient::new(service.addr);
        http.command("/carts/r-1", "open-r-1", json!({ "customer": "ben" }))
            .await
            .written();
        let kettle = json!({ "product": "kettle", "quantity": 1, "unit_price": 4900 });
        http.command("/carts/r-1/items", "kettle-r-1", kettle)
            .await
            .written();
        http.command("/carts/r-1/checkout", "checkout-r-1", checkout.clone())
            .await
            .written()
    });
    service.stop("INT");

    // The second run finds the first one's events, rebuilds the read model from them, and a
    // retry of the checkout (a client that never saw the answer) still has no second effect.
    let service = Service::start(&db);
    assert!(
        service.output[0].contains("from earlier runs"),
        "{:#?}",
        service.output
    );
    runtime.block_on(async {
        let http = HttpClient::new(service.addr);
        let retried = http
            .command("/carts/r-1/checkout", "checkout-r-1", checkout)
            .await;
        assert!(retried.written() >= position);
        assert_eq!(retried.body["deduplicated"], true, "{:#}", retried.body);
        let position = position.to_string();
        let orders = http
            .get(
                "/customers/ben/orders",
                &[("consistency-position", &position)],
            )
            .await;
        assert_eq!(orders.status, StatusCode::OK, "{:#}", orders.body);
        assert_eq!(
            orders.body["orders"]["r-1"]["total"], 4900,
            "{:#}",
            orders.body
        );
    });
    service.stop("TERM");
    assert!(!wal_of(&db).exists(), "a -wal file is left");
}
