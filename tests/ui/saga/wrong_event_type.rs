use cqrs_core::prelude::*;

include!("show.in");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum PaymentEvent {
    Charged,
}

#[derive(Default, Serialize, Deserialize)]
struct Checkout;

#[saga(name = "checkout")]
impl Checkout {
    fn route(_: &CheckoutInput) -> Route {
        Route::Ignore
    }

    #[on(Show)]
    fn on_show(&mut self, _: PaymentEvent, _: &mut SagaContext) {}
}

fn main() {}
