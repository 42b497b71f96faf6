//! What waits in a channel or a queue, in the order it is to be taken: first in, first out, or
//! by rank with aging.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Items waiting: first in, first out; or by rank, with aging.
#[derive(Debug)]
pub(crate) enum Waiting<T> {
    Fifo(VecDeque<T>),
    Ranked(Ranked<T>),
}

/// Items ordered by rank (lowest first), then by arrival; an item that has waited `max_wait`
/// goes first, before any younger one, whatever its rank.
#[derive(Debug)]
pub(crate) struct Ranked<T> {
    by_rank: BTreeMap<(i64, u64), T>,
    /// Arrival number to (rank, when it is overdue), oldest first.
    by_arrival: BTreeMap<u64, (i64, Instant)>,
    arrivals: u64,
    max_wait: Duration,
    rank: fn(&T) -> i64,
}

impl<T> Waiting<T> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Fifo(queue) => queue.len(),
            Self::Ranked(ranked) => ranked.by_rank.len(),
        }
    }

    pub(crate) fn push(&mut self, item: T) {
        match self {
            Self::Fifo(queue) => queue.push_back(item),
            Self::Ranked(ranked) => {
                let (arrival, rank) = (ranked.arrivals, (ranked.rank)(&item));
                ranked.arrivals += 1;
                let overdue = Instant::now()
                    .checked_add(ranked.max_wait)
                    .unwrap_or_else(far_future);
                ranked.by_rank.insert((rank, arrival), item);
                ranked.by_arrival.insert(arrival, (rank, overdue));
            }
        }
    }

    /// The item to take next.
    pub(crate) fn pop(&mut self) -> Option<T> {
        match self {
            Self::Fifo(queue) => queue.pop_front(),
            Self::Ranked(ranked) => {
                if let Some((&arrival, &(rank, overdue))) = ranked.by_arrival.first_key_value()
                    && overdue <= Instant::now()
                {
                    ranked.by_arrival.pop_first();
                    return ranked.by_rank.remove(&(rank, arrival));
                }
                let ((_, arrival), item) = ranked.by_rank.pop_first()?;
                ranked.by_arrival.remove(&arrival);
                Some(item)
            }
        }
    }

    /// The item that arrived first.
    pub(crate) fn pop_oldest(&mut self) -> Option<T> {
        match self {
            Self::Fifo(queue) => queue.pop_front(),
            Self::Ranked(ranked) => {
                let (arrival, (rank, _)) = ranked.by_arrival.pop_first()?;
                ranked.by_rank.remove(&(rank, arrival))
            }
        }
    }
}

/// A time no wait reaches: for a `max_wait` too long to add to now.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

impl<T> Default for Waiting<T> {
    fn default() -> Self {
        Self::Fifo(VecDeque::new())
    }
}

impl<T> Waiting<T> {
    /// Nothing waiting yet, to be taken by rank (lowest first), with aging after `max_wait`.
    pub(crate) fn ranked(max_wait: Duration, rank: fn(&T) -> i64) -> Self {
        Self::Ranked(Ranked {
            by_rank: BTreeMap::new(),
            by_arrival: BTreeMap::new(),
            arrivals: 0,
            max_wait,
            rank,
        })
    }
}
