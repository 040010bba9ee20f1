//! The `cqrs-admin` binary against a running service (`--service`): a real axum server on
//! loopback with the admin router nested at `/admin`, over real processors. Each control is
//! sent without `--yes` (nothing changes) and with it (the processor's handle shows the
//! change), and a rebuild run from the CLI returns once the read model is back.

mod invocation;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use cqrs_core::processor::{DeadLetter, Processor as _, ProcessorState, ProcessorStatus};
use cqrs_core::projection::{MemoryReadModel, Projector};
use cqrs_core::{EventStore as _, Position, Repository};
use cqrs_examples::shop::order::{Order, OrderCommand};
use cqrs_examples::shop::orders_by_customer::OrdersByCustomer;
use cqrs_examples::shop::{Cents, Line};
use cqrs_http::Processors;
use cqrs_memstore::MemStore;
use cqrs_tests::refusing::{COUNTED, REFUSED, spawn_paced};
use invocation::{Database, Run, admin};
use serde_json::Value;
use tokio::net::TcpListener;

/// The other processor of the service.
const BY_CUSTOMER: &str = "orders_by_customer";

/// A service on loopback running [`COUNTED`] and [`BY_CUSTOMER`] over one memory store.
struct Service {
    url: String,
    store: MemStore,
    orders: Repository<Order, MemStore>,
    processors: Processors,
    refuse: Arc<AtomicBool>,
    counts: MemoryReadModel<BTreeMap<String, u32>>,
    /// The `Authorization` headers of the calls, as the service got them.
    authorizations: Arc<Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Service {
    /// Starts it; [`COUNTED`] takes `pace` over each event and refuses [`REFUSED`]'s orders.
    async fn start(pace: Duration) -> Service {
        let store = MemStore::new();
        let refuse = Arc::new(AtomicBool::new(true));
        let counts = MemoryReadModel::new();
        let counted = spawn_paced(&store, &refuse, &counts, pace);
        let by_customer = Projector::new(OrdersByCustomer, store.clone(), MemoryReadModel::new())
            .runner()
            .spawn();
        let processors = Processors::builder()
            .processor(counted)
            .processor(by_customer)
            .build();
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&authorizations);
        let router: Router = Router::new()
            .nest("/admin", cqrs_http::admin::router(processors.clone()))
            .layer(middleware::from_fn(move |request: Request, next: Next| {
                let header = request
                    .headers()
                    .get("authorization")
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                if let (Some(header), Ok(mut seen)) = (header, seen.lock()) {
                    seen.push(header);
                }
                next.run(request)
            }));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("an address");
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        Service {
            url: format!("http://{addr}/admin"),
            orders: Repository::new(store.clone()),
            store,
            processors,
            refuse,
            counts,
            authorizations,
            server,
        }
    }

    /// Places order `order` of `customer`.
    async fn place(&self, order: &str, customer: &str) {
        let command = OrderCommand::Place {
            order: order.to_owned(),
            customer: customer.to_owned(),
            lines: vec![Line {
                product: "tea".to_owned(),
                quantity: 1,
                unit_price: Cents(350),
            }],
            total: Cents(350),
        };
        self.orders
            .execute(order, command)
            .await
            .unwrap_or_else(|error| panic!("place {order}: {error}"));
    }

    /// Waits until `name` has handled the whole log; returns the head.
    async fn caught_up(&self, name: &str) -> Position {
        let head = self.store.head().await.expect("head");
        self.processors
            .wait_for(name, Some(head))
            .await
            .unwrap_or_else(|error| panic!("{name} catches up: {error}"));
        head
    }

    async fn state(&self, name: &str) -> ProcessorState {
        self.status(name).await.state
    }

    async fn status(&self, name: &str) -> ProcessorStatus {
        let handle = self.processors.get(name).await.expect("registered");
        handle.status().await
    }

    async fn letters(&self, name: &str) -> Vec<DeadLetter> {
        let handle = self.processors.get(name).await.expect("registered");
        handle.dead_letters().await.expect("dead letters read")
    }

    /// Runs the binary with `--service` and `args` (off the runtime's threads: it blocks).
    async fn cli(&self, args: &[&str]) -> Run {
        let mut all = vec!["--service".to_owned(), self.url.clone()];
        all.extend(args.iter().map(|arg| (*arg).to_owned()));
        let run = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            admin(&Database::None, &args)
        })
        .await
        .expect("the run ends");
        println!(
            "cqrs-admin {args:?} -> {:?}\n{}{}",
            run.code, run.stdout, run.stderr
        );
        run
    }

    fn counts(&self) -> BTreeMap<String, u32> {
        self.counts.read(Clone::clone)
    }

    async fn stop(self) {
        self.server.abort();
        self.processors.shutdown().await;
    }
}

fn counts(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs
        .iter()
        .map(|(name, count)| ((*name).to_owned(), *count))
        .collect()
}

/// Places ada's, mallory's (refused: a dead letter) and bob's orders and waits for both
/// processors.
async fn three_orders(service: &Service) -> Position {
    for (order, customer) in [("o-1", "ada"), ("o-2", REFUSED), ("o-3", "bob")] {
        service.place(order, customer).await;
    }
    service.caught_up(BY_CUSTOMER).await;
    service.caught_up(COUNTED).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processors_and_their_status_are_read_from_the_running_service() {
    let service = Service::start(Duration::ZERO).await;
    let head = three_orders(&service).await;

    let lines = service
        .cli(&["processors", "--json"])
        .await
        .expect(0)
        .json_lines();
    let names: Vec<&str> = lines
        .iter()
        .filter_map(|line| line["name"].as_str())
        .collect();
    assert_eq!(names, [BY_CUSTOMER, COUNTED], "{lines:?}");
    for line in &lines {
        assert_eq!(line["state"]["state"], "live", "{line}");
        assert_eq!(line["checkpoint"], head.0, "{line}");
        assert_eq!(line["head"], head.0, "{line}");
        assert_eq!(line["lag"], 0, "{line}");
        assert_eq!(line["leader"], true, "{line}");
    }
    assert_eq!(lines[0]["dead_letters"], 0);
    assert_eq!(lines[1]["dead_letters"], 1);
    let error = lines[1]["last_error"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("`mallory` are refused"), "{error}");

    let table = service.cli(&["processors"]).await.expect(0);
    let rows: Vec<&str> = table.stdout.lines().collect();
    assert!(rows[0].starts_with("NAME"), "{}", table.stdout);
    assert!(rows[0].contains("LAST ERROR"), "{}", table.stdout);
    assert!(
        rows[2].starts_with(COUNTED) && rows[2].contains("live"),
        "{}",
        table.stdout
    );
    assert!(
        rows[2].contains("`mallory` are refused"),
        "{}",
        table.stdout
    );

    let one = service
        .cli(&["processor", COUNTED, "status", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(one, lines[1]);
    let unknown = service
        .cli(&["processor", "nope", "status"])
        .await
        .expect(4);
    assert!(
        unknown.stderr.contains(
            "runs no processor named `nope`; it runs: orders_by_customer, orders_counted"
        ),
        "{}",
        unknown.stderr
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_resume_and_reset_change_nothing_without_yes_and_act_with_it() {
    let service = Service::start(Duration::ZERO).await;
    let head = three_orders(&service).await;

    // Without --yes: what it would do, exit 0, the processor untouched.
    let asked = service
        .cli(&["processor", COUNTED, "pause"])
        .await
        .expect(0);
    assert!(
        asked
            .stdout
            .contains("this would pause `orders_counted` after the batch in hand"),
        "{}",
        asked.stdout
    );
    assert!(
        asked
            .stdout
            .contains("nothing was changed: run again with --yes")
    );
    let asked = service
        .cli(&["processor", COUNTED, "pause", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(asked["done"], false);
    assert_eq!(asked["action"], "pause");
    assert_eq!(asked["processor"], COUNTED);
    assert_eq!(service.state(COUNTED).await, ProcessorState::Live);

    // With it.
    let paused = service
        .cli(&["processor", COUNTED, "pause", "--yes", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(paused["done"], true, "{paused}");
    assert_eq!(paused["status"]["state"]["state"], "paused", "{paused}");
    assert_eq!(service.state(COUNTED).await, ProcessorState::Paused);

    // Paused, it lets an order by: moved past by a reset, it never counts it.
    service.place("o-4", "eve").await;
    let skipped = service.caught_up(BY_CUSTOMER).await;
    assert_eq!(skipped.0, head.0 + 1);
    let to = skipped.0.to_string();
    service
        .cli(&["processor", COUNTED, "reset", "--to", &to])
        .await
        .expect(0);
    assert_eq!(service.status(COUNTED).await.checkpoint, head);
    let reset = service
        .cli(&["processor", COUNTED, "reset", "--to", &to, "--yes"])
        .await
        .expect(0);
    assert!(
        reset.stdout.starts_with(&format!(
            "reset?to={to}: done. `orders_counted` is paused at checkpoint {to}"
        )),
        "{}",
        reset.stdout
    );
    assert_eq!(service.status(COUNTED).await.checkpoint, skipped);

    // Refusals are the service's words, exit 4.
    let back = service
        .cli(&["processor", COUNTED, "reset", "--to", "1", "--yes"])
        .await
        .expect(4);
    assert!(
        back.stderr
            .contains("the service refused: refused (HTTP 409)")
            && back
                .stderr
                .contains("would handle the events in between twice"),
        "{}",
        back.stderr
    );
    let beyond = service
        .cli(&["processor", COUNTED, "reset", "--to", "999", "--yes"])
        .await
        .expect(4);
    assert!(
        beyond.stderr.contains("past the head of the log"),
        "{}",
        beyond.stderr
    );

    let resumed = service
        .cli(&["processor", COUNTED, "resume", "--yes"])
        .await
        .expect(0);
    assert!(
        resumed.stdout.starts_with("resume: done."),
        "{}",
        resumed.stdout
    );
    service.place("o-5", "ada").await;
    service.caught_up(COUNTED).await;
    assert_eq!(
        service.counts(),
        counts(&[("ada", 2), ("bob", 1)]),
        "eve's order skipped"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_are_listed_retried_and_discarded_through_the_service() {
    let service = Service::start(Duration::ZERO).await;
    three_orders(&service).await;

    let letters = service
        .cli(&["dead-letters", COUNTED, "--json"])
        .await
        .expect(0)
        .json_lines();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["stream"], "order-o-2");
    assert_eq!(letters[0]["processor"], COUNTED);
    let id = letters[0]["id"].as_str().expect("an id").to_owned();

    let asked = service
        .cli(&["dead-letters", COUNTED, "retry", &id])
        .await
        .expect(0);
    assert!(
        asked.stdout.contains(&format!(
            "this would handle the event of dead letter `{id}`"
        )),
        "{}",
        asked.stdout
    );
    assert_eq!(service.letters(COUNTED).await.len(), 1);

    // Still refused: the retry fails again, and says so.
    let failed = service
        .cli(&["dead-letters", COUNTED, "retry", &id, "--yes"])
        .await
        .expect(4);
    assert!(
        failed.stderr.contains("handling failed again (HTTP 422)"),
        "{}",
        failed.stderr
    );

    // The fix is deployed.
    service.refuse.store(false, Ordering::SeqCst);
    let retried = service
        .cli(&["dead-letters", COUNTED, "retry", &id, "--yes"])
        .await
        .expect(0);
    assert!(
        retried
            .stdout
            .starts_with(&format!("dead-letters/{id}/retry: done.")),
        "{}",
        retried.stdout
    );
    assert!(
        retried.stdout.contains("with 0 dead letter(s)"),
        "{}",
        retried.stdout
    );
    assert_eq!(service.letters(COUNTED).await, []);
    assert_eq!(
        service.counts(),
        counts(&[("ada", 1), ("bob", 1), (REFUSED, 1)])
    );

    // Another refused order, discarded: never counted.
    service.refuse.store(true, Ordering::SeqCst);
    service.place("o-6", REFUSED).await;
    service.caught_up(COUNTED).await;
    let table = service.cli(&["dead-letters", COUNTED]).await.expect(0);
    assert!(table.stdout.contains("order-o-6"), "{}", table.stdout);
    let letters = service.letters(COUNTED).await;
    let [letter] = letters.as_slice() else {
        panic!("one dead letter: {letters:?}");
    };
    let discarded = service
        .cli(&[
            "dead-letters",
            COUNTED,
            "discard",
            &letter.id,
            "--yes",
            "--json",
        ])
        .await
        .expect(0)
        .json();
    assert_eq!(discarded["done"], true);
    assert_eq!(discarded["status"]["dead_letters"], 0);
    assert_eq!(service.letters(COUNTED).await, []);
    assert_eq!(
        service.counts(),
        counts(&[("ada", 1), ("bob", 1), (REFUSED, 1)])
    );

    let unknown = service
        .cli(&[
            "dead-letters",
            COUNTED,
            "discard",
            "no-such-letter",
            "--yes",
        ])
        .await
        .expect(4);
    assert!(
        unknown.stderr.contains("no such dead letter (HTTP 404)"),
        "{}",
        unknown.stderr
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_run_from_the_cli_returns_once_the_read_model_is_back() {
    // 2 ms per event: the rebuild of 300 events takes long enough to be watched.
    let service = Service::start(Duration::from_millis(2)).await;
    service.refuse.store(false, Ordering::SeqCst);
    let customers = ["ada", "bob", "cyd"];
    for number in 0..300 {
        service
            .place(&format!("o-{number}"), customers[number % 3])
            .await;
    }
    let head = service.caught_up(COUNTED).await;
    let expected = counts(&[("ada", 100), ("bob", 100), ("cyd", 100)]);
    assert_eq!(service.counts(), expected);

    let asked = service
        .cli(&["processor", COUNTED, "rebuild"])
        .await
        .expect(0);
    assert!(
        asked
            .stdout
            .contains("this would empty the read model of `orders_counted`"),
        "{}",
        asked.stdout
    );
    assert_eq!(service.counts(), expected, "nothing changed");

    // --no-wait answers while it replays.
    let started = service
        .cli(&[
            "processor",
            COUNTED,
            "rebuild",
            "--yes",
            "--no-wait",
            "--json",
        ])
        .await
        .expect(0)
        .json();
    assert_eq!(started["done"], true, "{started}");
    assert_eq!(
        started["status"]["state"]["state"], "rebuilding",
        "{started}"
    );
    service.caught_up(COUNTED).await;

    // Without it, the CLI watches the progress and returns once it is live again.
    let started = std::time::Instant::now();
    let rebuilt = service
        .cli(&["processor", COUNTED, "rebuild", "--yes"])
        .await
        .expect(0);
    let took = started.elapsed();
    println!("rebuild of {} events from the CLI: {took:?}", head.0);
    assert_eq!(
        rebuilt.stdout.trim(),
        format!(
            "rebuilt `orders_counted`: live at checkpoint {} of head {}",
            head.0, head.0
        )
    );
    let status = service.status(COUNTED).await;
    assert_eq!(status.state, ProcessorState::Live);
    assert_eq!(status.checkpoint, head);
    assert_eq!(service.counts(), expected, "the read model equals the log");

    let json = service
        .cli(&["processor", COUNTED, "rebuild", "--yes", "--json"])
        .await
        .expect(0)
        .json();
    assert_eq!(json["done"], true);
    assert_eq!(json["status"]["state"]["state"], "live", "{json}");
    assert_eq!(json["status"]["checkpoint"], head.0, "{json}");
    assert_eq!(service.counts(), expected);

    // A projection is rebuilt; a name the service does not run is refused by the service.
    let unknown = service
        .cli(&["processor", "nope", "rebuild", "--yes"])
        .await
        .expect(4);
    assert!(
        unknown.stderr.contains("the service refused"),
        "{}",
        unknown.stderr
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_and_unreachable_services_have_their_own_exit_codes() {
    // No --service for a control: a usage error.
    let run = admin(&Database::None, &["processor", COUNTED, "pause"]).expect(2);
    assert!(run.stderr.contains("pass --service URL"), "{}", run.stderr);
    let run = admin(&Database::None, &["dead-letters", COUNTED, "retry", "x"]).expect(2);
    assert!(run.stderr.contains("CQRS_ADMIN_SERVICE"), "{}", run.stderr);
    let run = admin(
        &Database::None,
        &["--service", "https://ops.example/admin", "processors"],
    )
    .expect(2);
    assert!(run.stderr.contains("https is not spoken"), "{}", run.stderr);

    // A port nothing listens on: exit 3.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        listener.local_addr().expect("an address")
    };
    let run = admin(
        &Database::None,
        &["--service", &format!("http://{closed}/admin"), "processors"],
    )
    .expect(3);
    assert!(
        run.stderr.contains(&format!(
            "cannot reach the service at http://{closed}/admin"
        )),
        "{}",
        run.stderr
    );

    // A server that is not the admin router: a 404 without a problem says what to check.
    let service = Service::start(Duration::ZERO).await;
    let wrong = service.url.trim_end_matches("/admin").to_owned() + "/elsewhere";
    let run = tokio::task::spawn_blocking(move || {
        admin(&Database::None, &["--service", &wrong, "processors"])
    })
    .await
    .expect("the run ends")
    .expect(4);
    assert!(
        run.stderr
            .contains("is --service the address the admin router is nested at"),
        "{}",
        run.stderr
    );

    // Headers reach the service, from the flag or the environment.
    let flagged = {
        let url = service.url.clone();
        tokio::task::spawn_blocking(move || {
            admin(
                &Database::None,
                &[
                    "--service",
                    &url,
                    "--service-header",
                    "Authorization: Bearer fl4g",
                    "processors",
                ],
            )
        })
        .await
        .expect("the run ends")
    };
    assert_eq!(flagged.code, Some(0), "{flagged:?}");
    let by_env = {
        let url = service.url.clone();
        tokio::task::spawn_blocking(move || {
            let output = invocation::command(&Database::None)
                .env("CQRS_ADMIN_SERVICE", &url)
                .env("CQRS_ADMIN_SERVICE_HEADER", "Authorization: Bearer s3cret")
                .args(["processors", "--json"])
                .output()
                .expect("runs");
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
            )
        })
        .await
        .expect("the run ends")
    };
    assert_eq!(by_env.0, Some(0));
    let lines: Vec<Value> = by_env
        .1
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 2);
    let seen = service
        .authorizations
        .lock()
        .map(|seen| seen.clone())
        .unwrap_or_default();
    assert_eq!(seen, ["Bearer fl4g", "Bearer s3cret"]);
    service.stop().await;
}
