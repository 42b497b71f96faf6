use nexus_core::event_source;

#[event_source]
#[derive(Default)]
struct NotASource;

fn main() {}
