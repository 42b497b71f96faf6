use nexus_core::handler;

#[handler(event_type = 1)]
struct NotAFunction;

fn main() {}
