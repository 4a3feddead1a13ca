//! Per-thread counters: what the hot path writes.
//!
//! Every thread that counts gets a small index of its own while it lives (reused after it exits),
//! and each [`Counters`] block gives that index a row of its own, allocated the first time the
//! thread counts there. A row has one writer, so adding is a plain load and store of a relaxed
//! atomic: no lock, no read-modify-write instruction, no cache line shared with another thread
//! (rows are whole cache lines). Reading (a scrape) sums the rows. Threads beyond
//! [`MAX_THREADS`] alive at once share one more row with `fetch_add`; the sums stay exact.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Threads with a row of their own at one time.
pub const MAX_THREADS: usize = 128;

/// One cache line of counters.
#[repr(align(64))]
struct Line([AtomicU64; 8]);

impl Line {
    fn new() -> Self {
        Line(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

type Row = Box<[Line]>;

/// Counters `0..width`, a row per thread.
pub struct Counters {
    rows: Box<[OnceLock<Row>]>,
    /// Shared by threads beyond [`MAX_THREADS`].
    overflow: Row,
    width: usize,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters").field("width", &self.width).finish()
    }
}

/// Indexes of threads that exited, for new threads to take.
static FREE: Mutex<(Vec<usize>, usize)> = Mutex::new((Vec::new(), 0));

/// A thread's index; given back when the thread exits.
struct Slot(usize);

impl Slot {
    fn take() -> Self {
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        match free.0.pop() {
            Some(index) => Slot(index),
            None => {
                free.1 += 1;
                Slot(free.1 - 1)
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Counting from here on (other thread-local destructors) goes to the shared row.
        let _ = INDEX.try_with(|cell| cell.set(usize::MAX - 1));
        if self.0 < MAX_THREADS {
            FREE.lock().unwrap_or_else(|e| e.into_inner()).0.push(self.0);
        }
    }
}

thread_local! {
    static SLOT: Slot = Slot::take();
    /// A copy of `SLOT`'s index, readable without the lazy-init check of a value with `Drop`.
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's index (`usize::MAX` while the thread is being torn down).
#[inline]
fn index() -> usize {
    let index = INDEX.try_with(Cell::get).unwrap_or(usize::MAX - 1);
    if index != usize::MAX {
        return index;
    }
    let index = SLOT.try_with(|slot| slot.0).unwrap_or(usize::MAX);
    let _ = INDEX.try_with(|cell| cell.set(index));
    index
}

fn row(width: usize) -> Row {
    (0..width.div_ceil(8).max(1)).map(|_| Line::new()).collect()
}

impl Counters {
    /// `width` counters, all zero.
    pub fn new(width: usize) -> Self {
        Counters { rows: (0..MAX_THREADS).map(|_| OnceLock::new()).collect(), overflow: row(width), width }
    }

    /// Adds `value` to counter `index`.
    #[inline]
    pub fn add(&self, counter: usize, value: u64) {
        self.add2(counter, value, counter, 0);
    }

    /// Adds `a` to counter `i` and `b` to counter `j`, finding this thread's row once.
    #[inline]
    pub fn add2(&self, i: usize, a: u64, j: usize, b: u64) {
        debug_assert!(i < self.width && j < self.width);
        match self.rows.get(index()) {
            Some(row) => {
                // This thread is the row's only writer: load and store, no read-modify-write.
                let row = row.get_or_init(|| self::row(self.width));
                for (counter, value) in [(i, a), (j, b)] {
                    let cell = &row[counter / 8].0[counter % 8];
                    cell.store(cell.load(Ordering::Relaxed).wrapping_add(value), Ordering::Relaxed);
                }
            }
            None => {
                self.overflow[i / 8].0[i % 8].fetch_add(a, Ordering::Relaxed);
                self.overflow[j / 8].0[j % 8].fetch_add(b, Ordering::Relaxed);
            }
        }
    }

    fn rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter_map(OnceLock::get).chain(std::iter::once(&self.overflow))
    }

    /// Counter `index`, summed over the threads.
    pub fn get(&self, counter: usize) -> u64 {
        self.rows().map(|row| row[counter / 8].0[counter % 8].load(Ordering::Relaxed)).fold(0, u64::wrapping_add)
    }

    /// Every counter, summed over the threads.
    pub fn snapshot(&self) -> Vec<u64> {
        let mut out = vec![0u64; self.width];
        for row in self.rows() {
            for (counter, total) in out.iter_mut().enumerate() {
                *total = total.wrapping_add(row[counter / 8].0[counter % 8].load(Ordering::Relaxed));
            }
        }
        out
    }

    /// How many counters.
    pub fn width(&self) -> usize {
        self.width
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_add_up_also_beyond_max_threads() {
        let counters = std::sync::Arc::new(Counters::new(13));
        // More threads alive at once than rows: some share the overflow row.
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(MAX_THREADS + 8));
        let threads: Vec<_> = (0..MAX_THREADS + 8)
            .map(|_| {
                let (counters, barrier) = (counters.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..1000 {
                        counters.add(i % 13, 2);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let threads = (MAX_THREADS + 8) as u64;
        assert_eq!(counters.snapshot().iter().sum::<u64>(), threads * 2000);
        assert_eq!(counters.get(0), threads * 77 * 2);
        // Indexes of exited threads are reused, and their rows keep what was counted.
        std::thread::spawn({
            let counters = counters.clone();
            move || counters.add(12, 5)
        })
        .join()
        .unwrap();
        assert_eq!(counters.get(12), threads * 76 * 2 + 5);
    }
}
