use cqrs_core::prelude::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ShowEvent {
    Scheduled,
}

#[derive(Default, Serialize, Deserialize)]
struct Checkout;

#[saga(name = "checkout")]
impl Checkout {
    fn route(_: &CheckoutInput) -> Route {
        Route::Ignore
    }

    #[on]
    fn on_show(&mut self, _: ShowEvent, _: &mut SagaContext) {}
}

fn main() {}
