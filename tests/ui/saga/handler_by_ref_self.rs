use cqrs_core::prelude::*;
use cqrs_examples::show::ShowEvent;

#[derive(Default, Serialize, Deserialize)]
struct Checkout;

#[saga(name = "checkout")]
impl Checkout {
    fn route(_: &CheckoutInput) -> Route {
        Route::Ignore
    }

    #[on(cqrs_examples::show::Show)]
    fn on_show(&self, _: ShowEvent, _: &mut SagaContext) {}
}

fn main() {}
