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
    /// Shared by the table's copies. A `Box` inside the `Arc`, so that a call finds the filter
    /// at a fixed place: reaching the value in an `Arc<dyn _>` takes its alignment from the
    /// vtable and rounds an offset with it, on every call.
    pub(crate) filter: Arc<Box<dyn ErasedFilter>>,
    pub(crate) name: &'static str,
}

/// The handlers of one selector: exactly one outside `multiple` mode.
type Slot = Vec<HandlerEntry>;

/// The handlers of one event type, with the type itself: a dispatch borrows it for its counts and
/// errors while the event's own type goes to the handler, where a clone of the event's type would
/// count a reference on a name made at run time (two locked instructions per event). Integer
/// types keep theirs too, so that every exact match takes the same borrowed course.
#[derive(Clone)]
struct Typed {
    event_type: EventType,
    handlers: Slot,
}

impl Typed {
    fn new(event_type: EventType) -> Self {
        Self {
            event_type,
            handlers: Slot::new(),
        }
    }
}

#[derive(Clone, Default)]
pub(crate) struct Table {
    pub(crate) filters: Vec<FilterEntry>,
    ints: FxHashMap<i64, Typed>,
    /// The same slots as `ints`, in a list indexed by type from `base`, while the int types lie
    /// within [`DENSE`] of each other: found with a subtraction and a bounds check, where the
    /// map hashes and probes. Empty otherwise (then `ints` is asked).
    dense: Vec<Typed>,
    base: i64,
    named: FxHashMap<Text, Typed>,
    /// Inclusive ranges in registration order; the first that holds a type wins.
    ranges: Vec<(i64, i64, Slot)>,
    default: Slot,
    /// Which Rust type claimed each name registered through [`Selector::Kind`].
    kinds: FxHashMap<&'static str, Kind>,
    /// Mask handlers (bit mode), in registration order.
    masks: Vec<(u64, HandlerEntry)>,
    /// For each of the 63 bits, the mask handlers holding it: all of them in `multiple` mode,
    /// else the first registered. Empty while no mask is registered.
    by_bit: Vec<Slot>,
}

/// The bits an event type can be: event types are `i64`, so bit 63 is none.
const BITS: usize = 63;

/// How far apart the int types of a table may lie for their slots to be kept in a list.
const DENSE: u64 = 256;

impl Table {
    /// The handlers for an event of type `event_type`: its exact type's, else the first range
    /// holding it, else the default's; empty when unhandled. With them, the table's own copy of
    /// `event_type` when they were registered for that exact type: equal to it, and borrowed
    /// without counting a reference on its name.
    #[inline(always)]
    pub(crate) fn lookup(&self, event_type: &EventType) -> (&[HandlerEntry], Option<&EventType>) {
        let exact = match event_type {
            EventType::Int(i) => {
                let exact = if self.dense.is_empty() {
                    self.ints.get(i)
                } else {
                    // Below `base`, the difference wraps past every index.
                    usize::try_from(i.wrapping_sub(self.base) as u64)
                        .ok()
                        .and_then(|at| self.dense.get(at))
                        .filter(|typed| !typed.handlers.is_empty())
                };
                if let Some(typed) = exact {
                    return (&typed.handlers, Some(&typed.event_type));
                }
                if !self.by_bit.is_empty()
                    && let Some(slot) = self.by_bit.get(i.trailing_zeros() as usize)
                    && *i > 0
                    && i.count_ones() == 1
                    && !slot.is_empty()
                {
                    return (slot, None);
                }
                self.ranges
                    .iter()
                    .find(|(start, end, _)| (*start..=*end).contains(i))
                    .map(|(_, _, slot)| slot.as_slice())
            }
            EventType::Named(name) => {
                if let Some(typed) = self.named.get(name.as_str()) {
                    return (&typed.handlers, Some(&typed.event_type));
                }
                None
            }
        };
        (exact.unwrap_or(&self.default), None)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.filters.is_empty()
            && self.ints.is_empty()
            && self.named.is_empty()
            && self.ranges.is_empty()
            && self.default.is_empty()
            && self.masks.is_empty()
    }

    /// Adds `entry` for every type `selector` names. Either all of them are added or, on error,
    /// none.
    pub(crate) fn insert(
        &mut self,
        selector: &Selector,
        entry: HandlerEntry,
        multiple: bool,
        bit_mode: bool,
    ) -> Result<(), NexusError> {
        let mut flat = Vec::new();
        flatten(selector, &mut flat)?;
        for s in &flat {
            check_mode(s, bit_mode)?;
        }
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
        let mut masked = false;
        for s in flat {
            if let Selector::Mask(mask) = s {
                self.masks.push((*mask, entry.clone()));
                masked = true;
            } else {
                self.slot_mut(s).push(entry.clone());
            }
        }
        for kind in claimed {
            self.kinds.entry(kind.name()).or_insert(kind);
        }
        if masked {
            self.index_bits(multiple);
        }
        self.index_ints();
        Ok(())
    }

    /// Lists the int types' slots by type, when the types lie close enough together.
    fn index_ints(&mut self) {
        self.dense = Vec::new();
        let (Some(&low), Some(&high)) = (self.ints.keys().min(), self.ints.keys().max()) else {
            return;
        };
        let span = high.abs_diff(low);
        if span >= DENSE {
            return;
        }
        let mut dense: Vec<Typed> = (0..=span)
            .map(|at| Typed::new(EventType::Int(low.wrapping_add_unsigned(at))))
            .collect();
        for (i, typed) in &self.ints {
            dense[i.abs_diff(low) as usize]
                .handlers
                .clone_from(&typed.handlers);
        }
        self.dense = dense;
        self.base = low;
    }

    /// Sorts the mask handlers by bit, for lookup.
    fn index_bits(&mut self, multiple: bool) {
        let mut by_bit = vec![Slot::new(); BITS];
        for (mask, entry) in &self.masks {
            for (bit, slot) in by_bit.iter_mut().enumerate() {
                if mask & (1 << bit) != 0 && (multiple || slot.is_empty()) {
                    slot.push(entry.clone());
                }
            }
        }
        self.by_bit = by_bit;
    }

    fn is_taken(&self, selector: &Selector) -> bool {
        match selector {
            Selector::Type(EventType::Int(i)) => self.ints.contains_key(i),
            Selector::Type(EventType::Named(n)) => self.named.contains_key(n.as_str()),
            Selector::Kind(kind) => self.named.contains_key(kind.name()),
            Selector::Range(a, b) => self.ranges.iter().any(|(s, e, _)| s <= b && a <= e),
            Selector::Default => !self.default.is_empty(),
            // A mask whose every bit an earlier mask holds could never be called.
            Selector::Mask(mask) => {
                let held = self.masks.iter().fold(0, |held, (m, _)| held | m);
                mask & !held == 0
            }
            Selector::List(_) => false,
        }
    }

    fn slot_mut(&mut self, selector: &Selector) -> &mut Slot {
        match selector {
            Selector::Type(EventType::Int(i)) => {
                &mut self
                    .ints
                    .entry(*i)
                    .or_insert_with(|| Typed::new(EventType::Int(*i)))
                    .handlers
            }
            Selector::Type(EventType::Named(n)) => named_slot(&mut self.named, n.clone()),
            Selector::Kind(kind) => named_slot(&mut self.named, Text::from(kind.name())),
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
            Selector::Default | Selector::List(_) | Selector::Mask(_) => &mut self.default,
        }
    }
}

/// The handlers of the named type `name`, made empty if it has none yet.
fn named_slot(named: &mut FxHashMap<Text, Typed>, name: Text) -> &mut Slot {
    &mut named
        .entry(name)
        .or_insert_with_key(|name| Typed::new(EventType::Named(name.clone())))
        .handlers
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

/// Whether a nexus in bit mode (or not) takes `selector`: in bit mode every type is a power of
/// two, so a named type or any other integer is refused; a mask only in bit mode, and only one
/// that holds a type.
fn check_mode(selector: &Selector, bit_mode: bool) -> Result<(), NexusError> {
    let refuse = |reason| {
        Err(NexusError::InvalidArgument {
            what: format!("selector {selector}"),
            reason,
        })
    };
    match selector {
        Selector::Mask(_) if !bit_mode => {
            refuse("a mask selects event types only in bit mode (NexusBuilder::bit_mode)")
        }
        Selector::Mask(mask) if *mask == 0 || mask >> BITS != 0 => {
            refuse("a mask must hold at least one of the bits 0 to 62 and no other")
        }
        Selector::Type(t) if bit_mode && !t.is_bit() => {
            refuse("in bit mode an event type must be a power of two")
        }
        Selector::Kind(_) if bit_mode => refuse("in bit mode an event type must be a power of two"),
        _ => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, EventQueue};

    fn table(selectors: &[(Selector, &'static str)]) -> Table {
        let mut table = Table::default();
        for (selector, name) in selectors {
            let entry = HandlerEntry::new(|_: Event, _: EventQueue| ()).named(name);
            table.insert(selector, entry, false, false).unwrap();
        }
        table
    }

    fn found(table: &Table, event_type: i64) -> Vec<&'static str> {
        table
            .lookup(&EventType::Int(event_type))
            .0
            .iter()
            .map(HandlerEntry::name)
            .collect()
    }

    #[test]
    fn int_types_are_found_whether_they_lie_close_together_or_far_apart() {
        let close = table(&[
            (Selector::from(-3), "minus three"),
            (Selector::from(5), "five"),
            (Selector::from(200), "two hundred"),
            (Selector::Range(10, 20), "ten to twenty"),
            (Selector::Default, "default"),
        ]);
        // Listed by type: the slots are found without the map.
        assert!(!close.dense.is_empty());
        assert_eq!(found(&close, -3), ["minus three"]);
        assert_eq!(found(&close, 5), ["five"]);
        assert_eq!(found(&close, 200), ["two hundred"]);
        // Between and around the listed types: the range, then the default.
        assert_eq!(found(&close, 15), ["ten to twenty"]);
        for other in [-4, 0, 4, 6, 199, 201, 1_000, i64::MIN, i64::MAX] {
            assert_eq!(found(&close, other), ["default"], "type {other}");
        }

        let far = table(&[
            (Selector::from(i32::MIN), "low"),
            (Selector::from(1), "one"),
            (Selector::from(i32::MAX), "high"),
        ]);
        assert!(far.dense.is_empty());
        assert_eq!(found(&far, i64::from(i32::MIN)), ["low"]);
        assert_eq!(found(&far, 1), ["one"]);
        assert_eq!(found(&far, i64::from(i32::MAX)), ["high"]);
        assert!(found(&far, 2).is_empty());
    }

    #[test]
    fn the_extreme_int_types_are_listed_without_wrapping_onto_each_other() {
        let high = table(&[
            (Selector::from(i64::MAX), "max"),
            (Selector::from(i64::MAX - 2), "max - 2"),
        ]);
        assert!(!high.dense.is_empty());
        assert_eq!(found(&high, i64::MAX), ["max"]);
        assert_eq!(found(&high, i64::MAX - 2), ["max - 2"]);
        for other in [
            i64::MIN,
            i64::MIN + 1,
            i64::MIN + 2,
            0,
            i64::MAX - 1,
            i64::MAX - 3,
        ] {
            assert!(found(&high, other).is_empty(), "type {other}");
        }
        let low = table(&[(Selector::from(i64::MIN), "min")]);
        assert_eq!(found(&low, i64::MIN), ["min"]);
        for other in [i64::MAX, i64::MIN + 1, 0, -1] {
            assert!(found(&low, other).is_empty(), "type {other}");
        }
    }
}
