//! A precise timer for the open loop, on a Linux `timerfd` registered with the tokio reactor.
//!
//! tokio's own timer wheel has millisecond resolution: a call due 0.2 ms from now would go out up to
//! a millisecond late, and since open-loop latency is measured from the intended send time, that
//! lateness of the load generator would be charged to the router. A `timerfd` armed with an absolute
//! `CLOCK_MONOTONIC` deadline (the clock `Instant` reads) wakes the reactor within the thread's timer
//! slack, which [`reduce_timer_slack`] lowers to a microsecond.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A re-armable one-shot timer. Cancel-safe: dropping a [`PreciseTimer::sleep_until`] future leaves
/// the timer armed, and the next call re-arms it.
pub struct PreciseTimer {
    fd: AsyncFd<OwnedFd>,
    /// An `Instant` and the same moment as a `CLOCK_MONOTONIC` reading, to convert deadlines.
    origin: (Instant, libc::timespec),
    /// The deadline the timer is armed with and has not yet been seen to pass.
    armed: Option<Instant>,
}

impl PreciseTimer {
    /// Creates the timer; needs a tokio runtime with I/O enabled.
    pub fn new() -> io::Result<PreciseTimer> {
        // SAFETY: plain syscalls; the descriptor is owned by the OwnedFd from here on.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: timerfd_create returned a new descriptor (checked above) that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let origin = Instant::now();
        // SAFETY: clock_gettime writes the struct we pass.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: an OwnedFd is a valid open descriptor that stays the same until it is dropped,
        // which happens only with the AsyncFd.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)?;
        Ok(PreciseTimer { fd, origin: (origin, now), armed: None })
    }

    /// Waits until `deadline` (at once if it has passed).
    pub async fn sleep_until(&mut self, deadline: Instant) -> io::Result<()> {
        if deadline <= Instant::now() {
            return Ok(());
        }
        if self.armed != Some(deadline) {
            self.arm(deadline)?;
            self.armed = Some(deadline);
        }
        loop {
            let mut ready = self.fd.readable().await?;
            let mut expirations = 0u64;
            // SAFETY: reads 8 bytes into a u64, as timerfd requires.
            let n = unsafe {
                libc::read(self.fd.as_raw_fd(), (&mut expirations as *mut u64).cast(), std::mem::size_of::<u64>())
            };
            if n == 8 {
                self.armed = None;
                return Ok(());
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::WouldBlock {
                return Err(error);
            }
            // Readiness left over from an earlier arming (re-arming reset the count): wait again.
            ready.clear_ready();
        }
    }

    fn arm(&self, deadline: Instant) -> io::Result<()> {
        let (origin, base) = self.origin;
        let offset = deadline.saturating_duration_since(origin);
        let nanos = base.tv_nsec as u64 + u64::from(offset.subsec_nanos());
        let value = libc::timespec {
            tv_sec: base.tv_sec + offset.as_secs() as libc::time_t + (nanos / 1_000_000_000) as libc::time_t,
            tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
        };
        let spec = libc::itimerspec { it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 }, it_value: value };
        // SAFETY: arms our own timerfd with a struct we own.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Lowers the calling thread's timer slack (default 50 µs) to 1 µs, so timers fire when asked.
pub fn reduce_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}
