use nexus_core::event_source;

#[event_source]
#[derive(Default)]
enum NotAStruct {
    #[default]
    Only,
}

fn main() {}
