// SPDX-License-Identifier: GPL-2.0

//! Kernel threads.
//!
//! [`Kthread::spawn`] runs a closure in a new kernel thread
//! (`kthread_create_on_node()` + `wake_up_process()`), optionally placed on one
//! CPU. Dropping the [`Kthread`] stops it (`kthread_stop()`): that sets the
//! thread's should-stop flag, wakes it and waits for the closure to return.
//! The closure sees the flag through its [`Context`]; a closure that sleeps
//! on a condition variable must also be woken by whatever it waits for, or
//! wait with a timeout, because the wake-up of `kthread_stop()` can come
//! between its check of the flag and its sleep.
//!
//! C header: [`include/linux/kthread.h`](srctree/include/linux/kthread.h)

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    cpu::CpuId,
    error::{from_err_ptr, to_result, Result},
    fmt,
    str::{CStrExt, CString},
    types::NotThreadSafe,
};
use core::{ffi::c_void, ptr::NonNull};

/// What the thread's closure can ask about its own thread.
pub struct Context(NotThreadSafe);

impl Context {
    /// Whether the owner of the [`Kthread`] asked it to stop
    /// (`kthread_should_stop()`).
    pub fn should_stop(&self) -> bool {
        // SAFETY: A `Context` only exists inside the closure of a kthread
        // started by `Kthread::spawn`.
        unsafe { bindings::kthread_should_stop() }
    }

    /// Moves the calling thread to `cpu` and keeps it there
    /// (`set_cpus_allowed_ptr()`). Fails if the CPU is not online. When the
    /// CPU goes offline the scheduler moves the thread elsewhere, and a later
    /// call can bring it back.
    pub fn set_cpu(&self, cpu: CpuId) -> Result {
        // SAFETY: `get_current` returns the running task, which is valid.
        to_result(unsafe { bindings::set_cpus_allowed_cpu(bindings::get_current(), cpu.as_u32()) })
    }
}

/// The closure of a thread, shared between [`Kthread`] and the thread.
struct Start<F> {
    f: Option<F>,
}

/// A running kernel thread, stopped when dropped.
///
/// # Examples
///
/// ```
/// use kernel::{
///     kthread::Kthread,
///     sync::{
///         atomic::{Atomic, Relaxed},
///         Arc, Completion,
///     },
///     time::{delay::fsleep, Delta},
/// };
///
/// let started = Arc::pin_init(Completion::new(), GFP_KERNEL)?;
/// let rounds = Arc::new(Atomic::new(0u32), GFP_KERNEL)?;
/// let thread = {
///     let (started, rounds) = (started.clone(), rounds.clone());
///     Kthread::spawn(fmt!("doctest_kthread"), None, move |ctx| {
///         started.complete_all();
///         loop {
///             rounds.add(1, Relaxed);
///             if ctx.should_stop() {
///                 break;
///             }
///             fsleep(Delta::from_millis(1));
///         }
///     })?
/// };
///
/// // Stopped before it ran, the thread would not run the closure at all.
/// started.wait_for_completion();
/// // Stops the thread and waits for the closure to return.
/// drop(thread);
/// let n = rounds.load(Relaxed);
/// assert!(n >= 1);
/// fsleep(Delta::from_millis(10));
/// assert_eq!(rounds.load(Relaxed), n);
/// # Ok::<(), Error>(())
/// ```
///
/// # Invariants
///
/// - `task` is a kthread created by [`Kthread::spawn`] on which we hold a task
///   reference (`get_task_struct()`), and which has not been stopped.
/// - `start` points to the `Start<F>` of that thread, allocated with [`KBox`];
///   only the thread touches it, once, to take the closure out before it runs
///   it, and `drop_start` is the function that frees it for that `F`.
pub struct Kthread {
    task: NonNull<bindings::task_struct>,
    start: *mut c_void,
    drop_start: unsafe fn(*mut c_void),
}

// SAFETY: The owner only stops and releases the thread, which any thread may
// do.
unsafe impl Send for Kthread {}

// SAFETY: `&Kthread` gives access to nothing.
unsafe impl Sync for Kthread {}

impl Kthread {
    /// Starts a kernel thread called `name` that runs `f`, on `cpu` if given
    /// (the CPU must be online).
    pub fn spawn<F>(name: fmt::Arguments<'_>, cpu: Option<CpuId>, f: F) -> Result<Self>
    where
        F: FnOnce(&Context) + Send + 'static,
    {
        let name = CString::try_from_fmt(name)?;
        let start = KBox::into_raw(KBox::new(Start { f: Some(f) }, GFP_KERNEL)?);
        // SAFETY: `thread_fn::<F>` matches `start`'s type; the name format
        // takes one string argument, which is NUL-terminated.
        let task = unsafe {
            bindings::kthread_create_on_node(
                Some(Self::thread_fn::<F>),
                start.cast(),
                bindings::NUMA_NO_NODE,
                c"%s".as_char_ptr(),
                name.as_char_ptr(),
            )
        };
        let task = match from_err_ptr(task) {
            Ok(t) => t,
            Err(e) => {
                // SAFETY: The thread was not created; `start` is still ours.
                drop(unsafe { KBox::from_raw(start) });
                return Err(e);
            }
        };
        // SAFETY: `task` is a valid, newly created task.
        unsafe { bindings::get_task_struct(task) };
        let this = Self {
            // SAFETY: `from_err_ptr` returned a non-error, non-null pointer.
            task: unsafe { NonNull::new_unchecked(task) },
            start: start.cast(),
            drop_start: Self::drop_start::<F>,
        };
        if let Some(cpu) = cpu {
            // SAFETY: `task` is valid; it has not run yet.
            let ret = unsafe { bindings::set_cpus_allowed_cpu(task, cpu.as_u32()) };
            // On error, dropping `this` stops the thread before it runs `f`.
            to_result(ret)?;
        }
        // SAFETY: `task` is valid and waiting for its first wake-up.
        unsafe { bindings::wake_up_process(task) };
        Ok(this)
    }

    /// The function the new thread runs.
    ///
    /// # Safety
    ///
    /// `data` is the `Start<F>` of this thread.
    unsafe extern "C" fn thread_fn<F: FnOnce(&Context)>(data: *mut c_void) -> crate::ffi::c_int {
        // SAFETY: By the type invariant of `Kthread`, only this thread touches
        // `Start<F>` until it exits. The borrow ends here: the closure may
        // drop the `Kthread`, which then frees `Start<F>` (see `drop`).
        let f = unsafe { (*data.cast::<Start<F>>()).f.take() };
        if let Some(f) = f {
            f(&Context(NotThreadSafe));
        }
        0
    }

    /// Frees the `Start<F>` of a stopped thread.
    ///
    /// # Safety
    ///
    /// `p` is the `start` of a [`Kthread`] for `F` whose thread has exited.
    unsafe fn drop_start<F>(p: *mut c_void) {
        // SAFETY: `p` came from `KBox::into_raw` for `Start<F>`.
        drop(unsafe { KBox::from_raw(p.cast::<Start<F>>()) });
    }
}

impl Drop for Kthread {
    /// Stops the thread and waits for it to end; dropped by the thread itself
    /// (from its closure), it only lets go: the thread ends when its closure
    /// returns. `kthread_stop()` of the running thread would wait for itself.
    fn drop(&mut self) {
        // SAFETY: `get_current` returns the running task.
        if self.task.as_ptr() == unsafe { bindings::get_current() } {
            // The closure runs: it was taken out of `start`, which the thread
            // no longer touches (`thread_fn`).
            // SAFETY: We hold a task reference; the thread holds its own until
            // it exits. `start` is ours to free.
            unsafe {
                bindings::put_task_struct(self.task.as_ptr());
                (self.drop_start)(self.start);
            }
            return;
        }
        // SAFETY: By the type invariant `task` is a kthread we hold a
        // reference to and have not stopped, and it is not the running thread
        // (checked above). `kthread_stop` returns after the thread exited (if
        // it never ran its function, the closure is still in `start` and freed
        // below).
        unsafe { bindings::kthread_stop(self.task.as_ptr()) };
        // SAFETY: The thread has exited; release our task reference and the
        // closure storage.
        unsafe {
            bindings::put_task_struct(self.task.as_ptr());
            (self.drop_start)(self.start);
        }
    }
}
