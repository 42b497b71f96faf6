use nexus::handler;

#[handler(event_type = 1)]
struct NotAFunction;

fn main() {}
