//! Where the session layer, and everything that judges a session by its
//! times, reads the time: a [`Clock`]. Servers run on [`SystemClock`];
//! tests run on a [`ShiftedClock`] and move it on instead of sleeping, so
//! "ten minutes later" costs nothing and a slow machine cannot flip an
//! outcome.

use std::sync::atomic::{AtomicI64, Ordering};

/// The current time in unix seconds.
pub trait Clock: Send + Sync {
    /// Now, in unix seconds.
    fn now(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        super::now()
    }
}

/// The system's clock moved on by a shift that grows only when told
/// ([`ShiftedClock::advance`]): time flows as usual otherwise, so what a
/// test computes from the wall clock (an authenticator code) still agrees.
#[derive(Debug, Default)]
pub struct ShiftedClock(AtomicI64);

impl ShiftedClock {
    /// Moves the clock `seconds` on.
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    /// How far the clock was moved on, in seconds.
    pub fn shift(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> i64 {
        super::now() + self.shift()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_clock_moves_on_when_told() {
        let clock = ShiftedClock::default();
        assert!((clock.now() - SystemClock.now()).abs() <= 1);
        clock.advance(600);
        assert!((clock.now() - SystemClock.now() - 600).abs() <= 1);
        assert_eq!(clock.shift(), 600);
    }
}
