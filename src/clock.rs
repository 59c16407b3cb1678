//! The one wall clock. Handlers read it once, at the edge, and pass `now` down: the rules,
//! grants, sessions and token checks below take time as an argument, so a test moves time
//! instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The system clock, or (for tests) the system clock moved forward by what was
/// [`Clock::advance`]d.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds added to the system time; `None` for the plain system clock.
    ahead: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock { ahead: None }
    }

    /// A clock that runs with the system's and can be moved forward.
    pub fn adjustable() -> Self {
        Clock {
            ahead: Some(Arc::new(AtomicU64::new(0))),
        }
    }

    /// Moves an adjustable clock forward by `by`, for every copy of it; does nothing to the
    /// system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(ahead) = &self.ahead {
            let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
            ahead.fetch_add(ms, Ordering::Relaxed);
        }
    }

    /// Now.
    pub fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        match &self.ahead {
            None => now,
            Some(ahead) => now + Duration::from_millis(ahead.load(Ordering::Relaxed)),
        }
    }

    /// Now in seconds since the epoch (a JWT NumericDate).
    pub fn unix(&self) -> u64 {
        crate::jwt::numeric_date(self.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adjustable_clock_moves_forward_for_every_copy_and_the_system_clock_does_not() {
        let clock = Clock::adjustable();
        let copy = clock.clone();
        let before = copy.unix();
        clock.advance(Duration::from_secs(3600));
        assert!(copy.unix() >= before + 3600);
        let system = Clock::system();
        system.advance(Duration::from_secs(3600));
        assert!(system.unix() < before + 3600);
    }
}
