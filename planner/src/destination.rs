//! Destination assignment (bin packing). Each group goes whole to one destination web cluster
//! and, when it has databases, to one destination SQL server. Capacity is what the destination
//! has minus what it already uses, minus the headroom kept free.
//!
//! Strategy: groups arrive in draining order, so groups from the same source cluster arrive
//! together. A group first tries the destination its source cluster used last (neighbours stay
//! neighbours), then the next destination with room in a fixed order (next-fit), then the one
//! with the most free space (first-fit over all). A cached upper bound on the free space left
//! anywhere makes a hopeless search O(1) once destinations are full.

/// A multi-dimensional bin: bytes and slots (sites, or databases).
#[derive(Debug, Clone)]
pub struct Bin {
    pub free_bytes: u64,
    pub free_slots: u64,
}

/// A set of bins of one kind (web clusters or SQL servers).
#[derive(Debug, Clone)]
pub struct Bins {
    /// Inventory index of each bin's cluster or server.
    pub ids: Vec<u32>,
    pub bins: Vec<Bin>,
    cursor: usize,
    bound_bytes: u64,
    bound_slots: u64,
}

impl Bins {
    /// `(inventory index, capacity bytes, capacity slots, used bytes, used slots)` per bin.
    pub fn new(items: impl Iterator<Item = (u32, u64, u64, u64, u64)>, headroom_pct: f64) -> Bins {
        let keep = 1.0 - headroom_pct / 100.0;
        let mut ids = Vec::new();
        let mut bins = Vec::new();
        for (id, cap_b, cap_s, used_b, used_s) in items {
            let ub = ((cap_b as f64 * keep) as u64).saturating_sub(used_b);
            let us = ((cap_s as f64 * keep) as u64).saturating_sub(used_s);
            ids.push(id);
            bins.push(Bin {
                free_bytes: ub,
                free_slots: us,
            });
        }
        let bound_bytes = bins.iter().map(|b| b.free_bytes).max().unwrap_or(0);
        let bound_slots = bins.iter().map(|b| b.free_slots).max().unwrap_or(0);
        Bins {
            ids,
            bins,
            cursor: 0,
            bound_bytes,
            bound_slots,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bins.is_empty()
    }

    fn fits(&self, i: usize, bytes: u64, slots: u64) -> bool {
        let b = &self.bins[i];
        b.free_bytes >= bytes && b.free_slots >= slots
    }

    /// Finds a bin for `(bytes, slots)` without taking it; `hint` is a preferred bin position.
    pub fn find(&mut self, bytes: u64, slots: u64, hint: Option<usize>) -> Option<usize> {
        if bytes > self.bound_bytes || slots > self.bound_slots || self.bins.is_empty() {
            return None;
        }
        if let Some(h) = hint {
            if self.fits(h, bytes, slots) {
                return Some(h);
            }
        }
        if self.fits(self.cursor, bytes, slots) {
            return Some(self.cursor);
        }
        let n = self.bins.len();
        let mut best: Option<usize> = None;
        let (mut max_b, mut max_s) = (0, 0);
        for k in 1..=n {
            let i = (self.cursor + k) % n;
            let b = &self.bins[i];
            max_b = max_b.max(b.free_bytes);
            max_s = max_s.max(b.free_slots);
            if best.is_none() && self.fits(i, bytes, slots) {
                best = Some(i);
                break;
            }
        }
        match best {
            Some(i) => {
                self.cursor = i;
                Some(i)
            }
            None => {
                // The scan saw every bin: tighten the bounds.
                self.bound_bytes = max_b;
                self.bound_slots = max_s;
                None
            }
        }
    }

    /// Takes `(bytes, slots)` from bin `i` (which must fit).
    pub fn take(&mut self, i: usize, bytes: u64, slots: u64) {
        let b = &mut self.bins[i];
        b.free_bytes -= bytes;
        b.free_slots -= slots;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_hint_and_exhaustion() {
        let mut b = Bins::new([(7, 100, 10, 0, 0), (8, 200, 10, 100, 0)].into_iter(), 10.0);
        assert_eq!(b.bins[0].free_bytes, 90);
        assert_eq!(b.bins[1].free_bytes, 80);
        let i = b.find(85, 1, None).unwrap();
        assert_eq!(b.ids[i], 7);
        b.take(i, 85, 1);
        let j = b.find(50, 1, Some(i)).unwrap();
        assert_eq!(b.ids[j], 8);
        b.take(j, 50, 1);
        assert!(b.find(40, 1, None).is_none());
        assert!(b.find(31, 1, None).is_none());
        assert!(b.find(30, 1, None).is_some());
    }
}
