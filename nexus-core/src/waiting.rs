//! What waits in a channel or a queue, in the order it is to be taken: first in, first out, or
//! by rank with aging.

use std::collections::VecDeque;
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
///
/// Each rank in use has a lane of its own, in arrival order, so the order within a rank costs
/// nothing, and while the waiting items are all of one rank (all priorities equal) taking one is
/// a `pop_front`, without reading the clock. Lanes stay when they empty, so that a steady flow
/// of one rank allocates nothing; past `SPARE_LANES` lanes, the empty ones are let go.
#[derive(Debug)]
pub(crate) struct Ranked<T> {
    /// By rank, lowest first.
    lanes: Vec<Lane<T>>,
    /// Items in all lanes.
    len: usize,
    arrivals: u64,
    max_wait: Duration,
    rank: fn(&T) -> i64,
}

#[derive(Debug)]
struct Lane<T> {
    rank: i64,
    items: VecDeque<Entry<T>>,
}

#[derive(Debug)]
struct Entry<T> {
    arrival: u64,
    /// When it has waited `max_wait`.
    overdue: Instant,
    item: T,
}

/// Lanes kept, empty ones included, before the empty ones are let go.
const SPARE_LANES: usize = 16;

impl<T> Waiting<T> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Fifo(queue) => queue.len(),
            Self::Ranked(ranked) => ranked.len,
        }
    }

    pub(crate) fn push(&mut self, item: T) {
        match self {
            Self::Fifo(queue) => queue.push_back(item),
            Self::Ranked(ranked) => ranked.push(item),
        }
    }

    /// The item to take next.
    pub(crate) fn pop(&mut self) -> Option<T> {
        match self {
            Self::Fifo(queue) => queue.pop_front(),
            Self::Ranked(ranked) => ranked.pop(),
        }
    }

    /// Moves the next `count` items (at most as many as wait) to the back of `buffer`, in the
    /// order they are to be taken: in one move when first in, first out.
    pub(crate) fn take_into(&mut self, buffer: &mut VecDeque<T>, count: usize) {
        match self {
            Self::Fifo(queue) => buffer.extend(queue.drain(..count.min(queue.len()))),
            Self::Ranked(ranked) => buffer.extend(std::iter::from_fn(|| ranked.pop()).take(count)),
        }
    }

    /// The item that arrived first.
    pub(crate) fn pop_oldest(&mut self) -> Option<T> {
        match self {
            Self::Fifo(queue) => queue.pop_front(),
            Self::Ranked(ranked) => {
                let lane = ranked.oldest()?;
                ranked.take(lane)
            }
        }
    }
}

impl<T> Ranked<T> {
    fn push(&mut self, item: T) {
        let rank = (self.rank)(&item);
        let overdue = Instant::now()
            .checked_add(self.max_wait)
            .unwrap_or_else(far_future);
        let entry = Entry {
            arrival: self.arrivals,
            overdue,
            item,
        };
        self.arrivals += 1;
        self.len += 1;
        let at = match self.lanes.binary_search_by_key(&rank, |lane| lane.rank) {
            Ok(at) => at,
            Err(_) => {
                if self.lanes.len() >= SPARE_LANES {
                    self.lanes.retain(|lane| !lane.items.is_empty());
                }
                let at = self
                    .lanes
                    .binary_search_by_key(&rank, |lane| lane.rank)
                    .unwrap_or_else(|at| at);
                self.lanes.insert(
                    at,
                    Lane {
                        rank,
                        items: VecDeque::new(),
                    },
                );
                at
            }
        };
        self.lanes[at].items.push_back(entry);
    }

    fn pop(&mut self) -> Option<T> {
        let mut lanes = self
            .lanes
            .iter()
            .enumerate()
            .filter(|(_, lane)| !lane.items.is_empty());
        let (first, _) = lanes.next()?;
        if lanes.next().is_none() {
            // One rank waiting: its lane's order is the order by rank and by age alike.
            return self.take(first);
        }
        let oldest = self.oldest()?;
        let overdue = self.lanes[oldest]
            .items
            .front()
            .is_some_and(|entry| entry.overdue <= Instant::now());
        self.take(if overdue { oldest } else { first })
    }

    /// The lane whose first item arrived first.
    fn oldest(&self) -> Option<usize> {
        self.lanes
            .iter()
            .enumerate()
            .filter_map(|(at, lane)| Some((lane.items.front()?.arrival, at)))
            .min()
            .map(|(_, at)| at)
    }

    fn take(&mut self, lane: usize) -> Option<T> {
        let entry = self.lanes[lane].items.pop_front()?;
        self.len -= 1;
        Some(entry.item)
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
            lanes: Vec::new(),
            len: 0,
            arrivals: 0,
            max_wait,
            rank,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule, written plainly: the oldest item if it is overdue, else the lowest rank, the
    /// oldest of it.
    #[derive(Default)]
    struct Model {
        items: Vec<(u64, i64, Instant, u32)>,
        arrivals: u64,
    }

    impl Model {
        fn push(&mut self, value: u32, max_wait: Duration) {
            let overdue = Instant::now() + max_wait;
            self.items
                .push((self.arrivals, i64::from(value % 5), overdue, value));
            self.arrivals += 1;
        }

        fn pop(&mut self) -> Option<u32> {
            let oldest = (0..self.items.len()).min_by_key(|&i| self.items[i].0)?;
            let at = if self.items[oldest].2 <= Instant::now() {
                oldest
            } else {
                (0..self.items.len()).min_by_key(|&i| (self.items[i].1, self.items[i].0))?
            };
            Some(self.items.remove(at).3)
        }

        fn pop_oldest(&mut self) -> Option<u32> {
            let oldest = (0..self.items.len()).min_by_key(|&i| self.items[i].0)?;
            Some(self.items.remove(oldest).3)
        }
    }

    /// Random pushes (five ranks, or one), pops, oldest-pops and waits, on the paused clock:
    /// the lanes take what the rule says, every time.
    #[tokio::test(start_paused = true)]
    async fn takes_what_the_rule_says() {
        let max_wait = Duration::from_millis(10);
        for seed in 0..40 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let one_rank = seed % 4 == 0;
            let mut waiting = Waiting::ranked(max_wait, |value: &u32| i64::from(value % 5));
            let mut model = Model::default();
            for step in 0..2_000 {
                match rng.u8(..10) {
                    0..=4 => {
                        let value = if one_rank {
                            5 * rng.u32(..1000)
                        } else {
                            rng.u32(..)
                        };
                        waiting.push(value);
                        model.push(value, max_wait);
                    }
                    5..=7 => assert_eq!(waiting.pop(), model.pop(), "seed {seed}, step {step}"),
                    8 => assert_eq!(waiting.pop_oldest(), model.pop_oldest()),
                    _ => tokio::time::advance(Duration::from_millis(rng.u64(..4))).await,
                }
                assert_eq!(waiting.len(), model.items.len());
            }
        }
    }

    /// Past `SPARE_LANES` ranks, empty lanes are let go: a stream of ever new ranks does not
    /// grow the lanes without bound.
    #[test]
    fn empty_lanes_are_let_go() {
        let mut waiting = Waiting::ranked(Duration::from_secs(1), |value: &i64| *value);
        for rank in 0..1_000 {
            waiting.push(rank);
            assert_eq!(waiting.pop(), Some(rank));
        }
        let Waiting::Ranked(ranked) = &waiting else {
            unreachable!()
        };
        assert!(ranked.lanes.len() <= SPARE_LANES, "{}", ranked.lanes.len());
    }
}
