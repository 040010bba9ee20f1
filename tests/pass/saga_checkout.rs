//! A saga over two aggregates, with deadlines, refusals, fallible handlers and a renamed input
//! enum; `Result`, `Option` and `Vec` shadowed to prove the expansion names nothing unqualified.

#![allow(dead_code)]

use cqrs_core::prelude::*;
use cqrs_core::saga::{HandlerError, Rejection};
use cqrs_examples::payment::{Payment, PaymentEvent};
use cqrs_examples::show::{Show, ShowCommand, ShowEvent};

type Result<T> = core::result::Result<T, ()>;
type Option = ();
type Vec = ();

#[derive(Debug, Default, Serialize, Deserialize)]
struct Sales {
    seen: u32,
}

#[saga(name = "sales", input = SalesEvent)]
impl Sales {
    fn route(input: &SalesEvent) -> Route {
        match input {
            SalesEvent::Show(ShowEvent::SeatsReserved { booking, .. }) => Route::start(booking.0),
            SalesEvent::Show(_) => Route::Ignore,
            SalesEvent::Payment(_) => Route::Ignore,
        }
    }

    #[on(Show)]
    fn on_show(&mut self, event: ShowEvent, saga: &mut SagaContext) {
        self.seen += 1;
        if let ShowEvent::SeatsReserved { booking, .. } = event {
            saga.send::<Show>("hamlet", ShowCommand::CancelReservation { booking });
            saga.schedule("follow-up", std::time::Duration::from_secs(60));
        }
    }

    #[on(cqrs_examples::payment::Payment)]
    fn on_payment(
        &mut self,
        _: PaymentEvent,
        _: &mut SagaContext,
    ) -> core::result::Result<(), HandlerError> {
        Err("payments are not for sales".into())
    }

    fn on_deadline(&mut self, _: &str, saga: &mut SagaContext) {
        saga.complete();
    }

    fn on_rejected(
        &mut self,
        rejection: Rejection,
        _: &mut SagaContext,
    ) -> core::result::Result<(), String> {
        Err(rejection.message().to_owned())
    }
}

fn main() {
    fn is_saga<S: cqrs_core::saga::Saga>() {}
    is_saga::<Sales>();
    let _: SalesEvent = ShowEvent::Scheduled { capacity: 1 }.into();
    let _ = core::marker::PhantomData::<Payment>;
    assert_eq!(<Sales as cqrs_core::saga::Saga>::NAME, "sales");
}
