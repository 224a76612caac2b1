//! Contexts: backend, threads and the last error of the calls made with them.

use std::os::raw::{c_char, c_void};
use std::panic::{self, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::Arc;

use gptq_sys as sys;

use crate::error::{c_str, check, Error};
use crate::versioned::Versioned;

/// The version of the loaded library, e.g. "0.1.0".
pub fn version() -> String {
    c_str(unsafe { sys::gptq_version() })
}

/// Compute backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// CUDA when libgptq-cuda.so and a GPU are usable, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

impl Backend {
    fn raw(self) -> i32 {
        match self {
            Backend::Auto => sys::GPTQ_BACKEND_AUTO,
            Backend::Cpu => sys::GPTQ_BACKEND_CPU,
            Backend::Cuda => sys::GPTQ_BACKEND_CUDA,
        }
    }
}

/// `Ok(())` when `backend` can be used in this process, else the reason.
pub fn backend_available(backend: Backend) -> Result<(), String> {
    let mut why = [0 as c_char; 512];
    // SAFETY: why holds why.len() bytes.
    if unsafe { sys::gptq_backend_available(backend.raw(), why.as_mut_ptr(), why.len()) } == 1 {
        Ok(())
    } else {
        Err(c_str(why.as_ptr()))
    }
}

/// A log sink: called with a level (`sys::GPTQ_LOG_*`) and one line of text.
pub type LogFn = Arc<dyn Fn(i32, &str) + Send + Sync>;

/// Options of a new context, starting from the library's defaults.
#[derive(Clone)]
pub struct ContextOptions {
    raw: Versioned<sys::gptq_ctx_options>,
    log: Option<LogFn>,
}

impl ContextOptions {
    pub fn new() -> ContextOptions {
        ContextOptions { raw: Versioned::init(sys::gptq_ctx_options_init), log: None }
    }

    /// Send the library's log lines up to `level` (`sys::GPTQ_LOG_WARN`, ...) to `f`.
    /// The library is silent without one.
    pub fn log<F: Fn(i32, &str) + Send + Sync + 'static>(mut self, level: i32, f: F) -> Self {
        self.raw.log_level = level;
        self.log = Some(Arc::new(f));
        self
    }

    pub fn backend(mut self, backend: Backend) -> Self {
        self.raw.backend = backend.raw();
        self
    }

    /// Worker threads for the library's loops; 0 (default) = all cores. With the CPU
    /// backend a value > 0 also sets OpenBLAS's process-wide thread count.
    pub fn threads(mut self, threads: i32) -> Self {
        self.raw.threads = threads;
        self
    }

    /// GPU ordinal for the CUDA backend.
    pub fn device(mut self, device: i32) -> Self {
        self.raw.device = device;
        self
    }
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions::new()
    }
}

/// A libgptq context (`gptq_ctx`). Everything made with it borrows it. A context may
/// move to another thread but is used by one thread at a time (it is not `Sync`).
pub struct Context {
    raw: NonNull<sys::gptq_ctx>,
    // The log sink the library calls back, at a stable address; dropped after the
    // context is freed (fields drop after Drop::drop).
    _log: Option<Box<LogFn>>,
}

/// The C log callback: `user` is the context's boxed LogFn. A panic must not unwind
/// into the library; it is dropped here (a log line is not worth aborting for).
unsafe extern "C" fn log_trampoline(user: *mut c_void, level: i32, msg: *const c_char) {
    let f = &*(user as *const LogFn);
    let text = c_str(msg);
    let _ = panic::catch_unwind(AssertUnwindSafe(|| f(level, &text)));
}

// SAFETY: a context holds no thread-affine state; the library only requires that one
// thread at a time uses it, which `!Sync` and the borrows of its objects guarantee.
unsafe impl Send for Context {}

impl Context {
    /// A context with the defaults: CPU backend, all cores.
    pub fn new() -> Result<Context, Error> {
        Context::with_options(&ContextOptions::new())
    }

    pub fn with_options(opts: &ContextOptions) -> Result<Context, Error> {
        let mut raw_opts = opts.raw.clone();
        let log = opts.log.clone().map(Box::new);
        if let Some(f) = &log {
            raw_opts.log = Some(log_trampoline);
            raw_opts.log_user = &**f as *const LogFn as *mut c_void;
        }
        let mut raw = ptr::null_mut();
        let mut msg = [0 as c_char; 512];
        // SAFETY: the options are initialised; msg holds msg.len() bytes.
        let status = unsafe { sys::gptq_ctx_create(raw_opts.as_ptr(), &mut raw, msg.as_mut_ptr(), msg.len()) };
        if status != sys::GPTQ_OK {
            return Err(Error::new(status, c_str(msg.as_ptr())));
        }
        Ok(Context { raw: NonNull::new(raw).expect("gptq_ctx_create returned no context"), _log: log })
    }

    /// The backend in use (never `Auto`).
    pub fn backend(&self) -> Backend {
        match unsafe { sys::gptq_ctx_backend(self.raw.as_ptr()) } {
            sys::GPTQ_BACKEND_CUDA => Backend::Cuda,
            _ => Backend::Cpu,
        }
    }

    /// The message of the last failure on this context ("" if none).
    pub fn last_error(&self) -> String {
        c_str(unsafe { sys::gptq_ctx_last_error(self.raw.as_ptr()) })
    }

    /// The raw handle, for calls through [`crate::sys`].
    pub fn as_ptr(&self) -> *mut sys::gptq_ctx {
        self.raw.as_ptr()
    }

    pub(crate) fn check(&self, status: i32) -> Result<(), Error> {
        check(status, self.raw.as_ptr())
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("raw", &self.raw).field("backend", &self.backend()).finish()
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: every object made with the context borrowed it and is gone.
        unsafe { sys::gptq_ctx_free(self.raw.as_ptr()) }
    }
}
