//! The locks of the in-flight call tables, swappable for the model checker's.
//!
//! Normal builds use `parking_lot`'s mutex. With the `shuttle` feature, the same tables lock
//! through `shuttle`'s mutex instead, so its scheduler can interleave threads at every lock and
//! explore the races between an answer, a cancel, a timeout and a teardown (see the model tests
//! in [`crate::dealer::call`]). Nothing else changes between the two builds.

#[cfg(not(feature = "shuttle"))]
pub(crate) use parking_lot::Mutex;

/// A point where, in the model, another thread may run: queueing a message for another session.
/// Without it the model checker could not interleave between a table decision and its send.
#[inline(always)]
pub(crate) fn switch_point() {
    #[cfg(feature = "shuttle")]
    shuttle::thread::yield_now();
}

#[cfg(feature = "shuttle")]
pub(crate) use model::Mutex;

#[cfg(feature = "shuttle")]
mod model {
    /// `shuttle`'s mutex with `parking_lot`'s signature (no poisoning to unwrap).
    #[derive(Default)]
    pub struct Mutex<T>(shuttle::sync::Mutex<T>);

    impl<T> Mutex<T> {
        /// Locks, letting the model checker switch threads here.
        pub fn lock(&self) -> shuttle::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }
}
