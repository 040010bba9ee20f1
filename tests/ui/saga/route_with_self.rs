use cqrs_core::prelude::*;

include!("show.in");

#[derive(Default, Serialize, Deserialize)]
struct Checkout;

#[saga(name = "checkout")]
impl Checkout {
    fn route(&self, _: &CheckoutInput) -> Route {
        Route::Ignore
    }

    #[on(Show)]
    fn on_show(&mut self, _: ShowEvent, _: &mut SagaContext) {}
}

fn main() {}
