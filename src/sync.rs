//! Locking helpers shared by every module (std only, so the client builds without the
//! server).

use std::sync::{Mutex, MutexGuard, PoisonError};

/// [`Mutex::lock`] that carries on after a panic in another critical section.
pub trait LockUnpoisoned<T> {
    /// Locks, taking the guard even if a thread panicked while holding the lock.
    ///
    /// Use it where every critical section leaves the value valid at each step (a value
    /// replaced whole, a list pushed to), so one panicked task must not take every later
    /// caller down with it. State that a panic can leave half-changed must not be read
    /// on: `raft::state_machine` treats a poisoned table as fatal instead.
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T>;
}

impl<T> LockUnpoisoned<T> for Mutex<T> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_still_gives_its_value() {
        let m = Mutex::new(vec![1]);
        let poisoned = std::panic::catch_unwind(|| {
            let mut guard = m.lock().expect("not poisoned yet");
            guard.push(2);
            panic!("a task panics while holding the lock");
        });
        assert!(poisoned.is_err());
        assert!(m.is_poisoned());
        assert_eq!(*m.lock_unpoisoned(), vec![1, 2]);
    }
}
