//! The handler table: which handlers and filters an event goes to.
//!
//! Registration edits a copy and publishes it whole; the dispatcher reads its own snapshot
//! without any lock.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::error::NexusError;
use crate::event::{EventType, Kind, Text};
use crate::handler::{ErasedFilter, Selector};

pub(crate) use crate::handler::Handler as HandlerEntry;

#[derive(Clone)]
pub(crate) struct FilterEntry {
    pub(crate) filter: Arc<dyn ErasedFilter>,
    pub(crate) name: &'static str,
}

/// The handlers of one selector: exactly one outside `multiple` mode.
type Slot = Vec<HandlerEntry>;

#[derive(Clone, Default)]
pub(crate) struct Table {
    pub(crate) filters: Vec<FilterEntry>,
    ints: FxHashMap<i64, Slot>,
    named: FxHashMap<Text, Slot>,
    /// Inclusive ranges in registration order; the first that holds a type wins.
    ranges: Vec<(i64, i64, Slot)>,
    default: Slot,
    /// Which Rust type claimed each name registered through [`Selector::Kind`].
    kinds: FxHashMap<&'static str, Kind>,
}

impl Table {
    /// The handlers for an event of type `event_type`: its exact type's, else the first range
    /// holding it, else the default's. Empty when unhandled.
    #[inline(always)]
    pub(crate) fn lookup(&self, event_type: &EventType) -> &[HandlerEntry] {
        let exact = match event_type {
            EventType::Int(i) => {
                if let Some(slot) = self.ints.get(i) {
                    return slot;
                }
                self.ranges
                    .iter()
                    .find(|(start, end, _)| (*start..=*end).contains(i))
                    .map(|(_, _, slot)| slot.as_slice())
            }
            EventType::Named(name) => self.named.get(name.as_str()).map(Vec::as_slice),
        };
        exact.unwrap_or(&self.default)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.filters.is_empty()
            && self.ints.is_empty()
            && self.named.is_empty()
            && self.ranges.is_empty()
            && self.default.is_empty()
    }

    /// Adds `entry` for every type `selector` names. Either all of them are added or, on error,
    /// none.
    pub(crate) fn insert(
        &mut self,
        selector: &Selector,
        entry: HandlerEntry,
        multiple: bool,
    ) -> Result<(), NexusError> {
        let mut flat = Vec::new();
        flatten(selector, &mut flat)?;
        let mut claimed: Vec<Kind> = Vec::new();
        for s in &flat {
            if let Selector::Kind(kind) = s {
                let first = self
                    .kinds
                    .get(kind.name())
                    .or_else(|| claimed.iter().find(|k| k.name() == kind.name()));
                if let Some(first) = first
                    && !first.same_type(kind)
                {
                    return Err(NexusError::EventNameClash {
                        name: kind.name(),
                        first: first.type_name(),
                        second: kind.type_name(),
                    });
                }
                claimed.push(*kind);
            }
        }
        if !multiple {
            for (i, s) in flat.iter().enumerate() {
                if self.is_taken(s) || flat[..i].iter().any(|earlier| overlaps(earlier, s)) {
                    return Err(NexusError::DuplicateHandler {
                        selector: s.to_string(),
                    });
                }
            }
        }
        for s in flat {
            self.slot_mut(s).push(entry.clone());
        }
        for kind in claimed {
            self.kinds.entry(kind.name()).or_insert(kind);
        }
        Ok(())
    }

    fn is_taken(&self, selector: &Selector) -> bool {
        match selector {
            Selector::Type(EventType::Int(i)) => self.ints.contains_key(i),
            Selector::Type(EventType::Named(n)) => self.named.contains_key(n.as_str()),
            Selector::Kind(kind) => self.named.contains_key(kind.name()),
            Selector::Range(a, b) => self.ranges.iter().any(|(s, e, _)| s <= b && a <= e),
            Selector::Default => !self.default.is_empty(),
            Selector::List(_) => false,
        }
    }

    fn slot_mut(&mut self, selector: &Selector) -> &mut Slot {
        match selector {
            Selector::Type(EventType::Int(i)) => self.ints.entry(*i).or_default(),
            Selector::Type(EventType::Named(n)) => self.named.entry(n.clone()).or_default(),
            Selector::Kind(kind) => self.named.entry(Text::from(kind.name())).or_default(),
            Selector::Range(a, b) => {
                let at = match self.ranges.iter().position(|(s, e, _)| s == a && e == b) {
                    Some(at) => at,
                    None => {
                        self.ranges.push((*a, *b, Vec::new()));
                        self.ranges.len() - 1
                    }
                };
                &mut self.ranges[at].2
            }
            Selector::Default | Selector::List(_) => &mut self.default,
        }
    }
}

/// Whether two selectors take a type in common, so that outside `multiple` mode they could not
/// both be registered. Invalid selectors (an empty range or list) overlap nothing.
pub(crate) fn selectors_overlap(a: &Selector, b: &Selector) -> bool {
    let (mut left, mut right) = (Vec::new(), Vec::new());
    if flatten(a, &mut left).is_err() || flatten(b, &mut right).is_err() {
        return false;
    }
    left.iter().any(|l| right.iter().any(|r| overlaps(l, r)))
}

fn overlaps(a: &Selector, b: &Selector) -> bool {
    match (a, b) {
        (Selector::Range(a0, a1), Selector::Range(b0, b1)) => a0 <= b1 && b0 <= a1,
        _ => match (name_of(a), name_of(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

/// The name a selector of one named type selects.
fn name_of(selector: &Selector) -> Option<&str> {
    match selector {
        Selector::Type(EventType::Named(n)) => Some(n.as_str()),
        Selector::Kind(kind) => Some(kind.name()),
        _ => None,
    }
}

fn flatten<'a>(selector: &'a Selector, out: &mut Vec<&'a Selector>) -> Result<(), NexusError> {
    match selector {
        Selector::List(items) => {
            if items.is_empty() {
                return Err(NexusError::InvalidArgument {
                    what: "selector []".to_owned(),
                    reason: "a list of event types must name at least one",
                });
            }
            for item in items {
                flatten(item, out)?;
            }
        }
        Selector::Range(a, b) if a > b => {
            return Err(NexusError::InvalidArgument {
                what: format!("range {a}..={b}"),
                reason: "a range of event types must not be empty",
            });
        }
        other => out.push(other),
    }
    Ok(())
}
