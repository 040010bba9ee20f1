use cqrs_core::prelude::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ShowEvent {
    Scheduled,
}

#[derive(Debug, thiserror::Error)]
#[error("show error")]
struct ShowError;

#[derive(Default, Aggregate)]
#[aggregate(name = "show", event = ShowEvent, error = ShowError)]
struct Show;

impl Show {
    fn apply(&mut self, _event: ShowEvent) {}
}

#[derive(Default, Serialize, Deserialize)]
struct Checkout;

#[saga(name = "checkout")]
impl Checkout {
    fn route(_: &CheckoutInput) -> Route {
        Route::Ignore
    }

    #[on(Show)]
    fn on_show(&self, _: ShowEvent, _: &mut SagaContext) {}
}

fn main() {}
