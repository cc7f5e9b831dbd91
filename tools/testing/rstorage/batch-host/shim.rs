// SPDX-License-Identifier: GPL-2.0
//! Host build of `kernel::completion_batch` and its KUnit cases.
//!
//! The helper uses only `kernel::sync::atomic` and `kernel::time` from the
//! kernel crate; these stand-ins give the same API on the host (the atomics
//! are sequentially consistent, which the single-threaded KUnit cases do not
//! depend on). `mutants.py` compiles the helper with this root after turning
//! `#[macros::kunit_tests(...)]` into `#[cfg(test)]`, so that each KUnit case
//! can be checked to fail against a deliberate bug.

pub mod sync {
    pub mod atomic {
        /// Ordering markers of the kernel's atomics.
        pub struct Relaxed;
        /// Ordering markers of the kernel's atomics.
        pub struct Full;

        /// `kernel::sync::atomic::Atomic`, behind a host mutex.
        pub struct Atomic<T>(std::sync::Mutex<T>);

        impl<T: Copy + PartialEq> Atomic<T> {
            pub fn new(v: T) -> Self {
                Self(std::sync::Mutex::new(v))
            }

            pub fn load<O>(&self, _: O) -> T {
                *self.0.lock().unwrap()
            }

            pub fn store<O>(&self, v: T, _: O) {
                *self.0.lock().unwrap() = v;
            }

            pub fn xchg<O>(&self, v: T, _: O) -> T {
                core::mem::replace(&mut *self.0.lock().unwrap(), v)
            }

            pub fn cmpxchg<O>(&self, old: T, new: T, _: O) -> Result<T, T> {
                let mut g = self.0.lock().unwrap();
                if *g == old {
                    *g = new;
                    Ok(old)
                } else {
                    Err(*g)
                }
            }
        }

        impl<T: Copy + PartialEq + core::ops::Add<Output = T>> Atomic<T> {
            pub fn add<O>(&self, v: T, _: O) {
                let mut g = self.0.lock().unwrap();
                *g = *g + v;
            }
        }
    }
}

pub mod time {
    use core::marker::PhantomData;

    /// `kernel::time::Delta`: a signed span of nanoseconds.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Delta(i64);

    impl Delta {
        pub const fn from_micros(v: i64) -> Self {
            Self(v * 1_000)
        }

        pub const fn from_millis(v: i64) -> Self {
            Self(v * 1_000_000)
        }

        pub const fn from_secs(v: i64) -> Self {
            Self(v * 1_000_000_000)
        }

        pub const fn as_nanos(self) -> i64 {
            self.0
        }
    }

    /// The monotonic clock.
    pub struct Monotonic;

    /// `kernel::time::Instant`, in nanoseconds of the host's monotonic clock.
    pub struct Instant<C>(i64, PhantomData<C>);

    impl<C> Clone for Instant<C> {
        fn clone(&self) -> Self {
            *self
        }
    }

    impl<C> Copy for Instant<C> {}

    impl<C> Instant<C> {
        pub fn now() -> Self {
            use std::sync::OnceLock;
            static START: OnceLock<std::time::Instant> = OnceLock::new();
            let start = START.get_or_init(std::time::Instant::now);
            // Past zero, as the kernel's clock is.
            Self(1_000_000_000 + start.elapsed().as_nanos() as i64, PhantomData)
        }

        pub fn as_nanos(&self) -> i64 {
            self.0
        }
    }

    impl<C> core::ops::Add<Delta> for Instant<C> {
        type Output = Self;

        fn add(self, d: Delta) -> Self {
            Self(self.0 + d.as_nanos(), PhantomData)
        }
    }
}

#[path = "completion_batch.rs"]
pub mod completion_batch;
