use cqrs_core::prelude::*;
use cqrs_examples::payment::PaymentEvent;

#[derive(Default, Serialize, Deserialize)]
struct Checkout;

#[saga(name = "checkout")]
impl Checkout {
    fn route(_: &CheckoutInput) -> Route {
        Route::Ignore
    }

    #[on(cqrs_examples::show::Show)]
    fn on_show(&mut self, _: PaymentEvent, _: &mut SagaContext) {}
}

fn main() {}
