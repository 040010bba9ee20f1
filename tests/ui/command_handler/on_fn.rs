use cqrs_core::prelude::*;

#[command_handler]
pub fn schedule() {}

fn main() {}
