//! Places in line for a quota-bound KMS operation, so that a key waiting minutes for its import
//! slot rests off the worker pool instead of holding a reconcile worker while it waits.
//!
//! A bucket's requests leave first come, first served ([`super::quota`]); a reconcile that would
//! wait there holds one of the controller's workers all the while. At 1 GetParametersForImport
//! per second and account and Region, a roll-out's workers gather in one Region's queue while the
//! other Region's runs dry. So a reconcile about to create a key (which it then imports into)
//! first takes a [`Place`] in its bucket's line: with more than [`GOING`] places before it, it
//! comes back when about that many remain ([`Place::turn`]), keeping its place; otherwise it
//! goes, and gives its place up when its reconcile is over.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many holders of earlier places may be going (creating, waiting in the bucket's queue,
/// importing) when a place's holder goes too: two seconds of imports at 1/s, so the bucket's queue
/// does not run dry while the next holder is on its way (a status write and a CreateKey), and one
/// Region's keys hold three of the workers (`--concurrency`, 8 by default) where they would
/// otherwise hold them all.
pub const GOING: usize = 2;

/// One bucket's line: the numbers of the places held, and the next number.
#[derive(Debug)]
pub struct Line {
    next: AtomicU64,
    held: Mutex<BTreeSet<u64>>,
    /// How far apart the bucket's requests leave ([`super::quota::spacing`]).
    spacing: Duration,
}

/// When a place's holder goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// No more than [`GOING`] places before it are held: go now.
    Now,
    /// `ahead` places before it are held: come back after `wait` (about when [`GOING`] remain).
    Later { ahead: usize, wait: Duration },
}

impl Line {
    pub fn new(spacing: Duration) -> Arc<Line> {
        Arc::new(Line {
            next: AtomicU64::new(0),
            held: Mutex::new(BTreeSet::new()),
            spacing,
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place at the end of the line.
    pub fn join(self: &Arc<Line>) -> Place {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        self.held().insert(number);
        Place {
            line: Arc::clone(self),
            number,
        }
    }
}

/// A place in one bucket's line, held across requeues; dropping it gives it up.
#[derive(Debug)]
pub struct Place {
    line: Arc<Line>,
    number: u64,
}

impl Place {
    /// How many places before this one are still held.
    pub fn ahead(&self) -> usize {
        self.line.held().range(..self.number).count()
    }

    /// Whether this place's holder goes now, or when to come back: one spacing per place ahead
    /// beyond [`GOING`] (the line moves one place per spacing while its bucket is busy; a holder
    /// back early finds the rest still ahead and waits again, for what remains).
    pub fn turn(&self) -> Turn {
        let ahead = self.ahead();
        match ahead.checked_sub(GOING) {
            None | Some(0) => Turn::Now,
            Some(beyond) => Turn::Later {
                ahead,
                wait: self
                    .line
                    .spacing
                    .saturating_mul(u32::try_from(beyond).unwrap_or(u32::MAX)),
            },
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.line.held().remove(&self.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_waits_one_spacing_per_place_ahead_beyond_those_going() {
        let line = Line::new(Duration::from_millis(1020));
        let places: Vec<Place> = (0..GOING + 3).map(|_| line.join()).collect();
        for place in &places[..=GOING] {
            assert_eq!(place.turn(), Turn::Now);
        }
        assert_eq!(
            places[GOING + 2].turn(),
            Turn::Later {
                ahead: GOING + 2,
                wait: Duration::from_millis(2040)
            }
        );
    }

    #[test]
    fn places_given_up_anywhere_in_the_line_move_the_rest_up() {
        let line = Line::new(Duration::from_secs(1));
        let mut places: Vec<Option<Place>> = (0..10).map(|_| Some(line.join())).collect();
        let last = |places: &[Option<Place>]| places[9].as_ref().map(Place::ahead);
        assert_eq!(last(&places), Some(9));
        // A holder that went and finished, and one whose key was deleted while it waited.
        places[0] = None;
        places[5] = None;
        assert_eq!(last(&places), Some(7));
        // A later place does not count ahead of an earlier one.
        let late = line.join();
        assert_eq!(places[1].as_ref().map(Place::ahead), Some(0));
        assert_eq!(late.ahead(), 8);
        places.clear();
        assert_eq!(late.ahead(), 0);
        assert_eq!(late.turn(), Turn::Now);
    }
}
