//! Status codes as `Result`s.

use std::ffi::CStr;
use std::fmt;

use gptq_sys as sys;

/// What kind of failure a status code is (`gptq_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    OutOfMemory,
    NotSupported,
    NotPositiveDefinite,
    Numeric,
    Io,
    Malformed,
    Shape,
    Device,
    Cancelled,
    Internal,
    NotFound,
    /// A code newer than this crate (status codes are only appended).
    Other(i32),
}

/// A failed libgptq call: the status code and the message the library recorded
/// (`gptq_ctx_last_error`).
#[derive(Debug, Clone)]
pub struct Error {
    status: i32,
    message: String,
}

impl Error {
    pub(crate) fn new(status: i32, message: String) -> Error {
        Error { status, message }
    }

    /// The negative `gptq_status` value.
    pub fn status(&self) -> i32 {
        self.status
    }

    /// The library's description of what failed.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn kind(&self) -> ErrorKind {
        match self.status {
            sys::GPTQ_ERR_INVALID_ARGUMENT => ErrorKind::InvalidArgument,
            sys::GPTQ_ERR_OUT_OF_MEMORY => ErrorKind::OutOfMemory,
            sys::GPTQ_ERR_NOT_SUPPORTED => ErrorKind::NotSupported,
            sys::GPTQ_ERR_NOT_POSITIVE_DEFINITE => ErrorKind::NotPositiveDefinite,
            sys::GPTQ_ERR_NUMERIC => ErrorKind::Numeric,
            sys::GPTQ_ERR_IO => ErrorKind::Io,
            sys::GPTQ_ERR_MALFORMED => ErrorKind::Malformed,
            sys::GPTQ_ERR_SHAPE => ErrorKind::Shape,
            sys::GPTQ_ERR_DEVICE => ErrorKind::Device,
            sys::GPTQ_ERR_CANCELLED => ErrorKind::Cancelled,
            sys::GPTQ_ERR_INTERNAL => ErrorKind::Internal,
            sys::GPTQ_ERR_NOT_FOUND => ErrorKind::NotFound,
            other => ErrorKind::Other(other),
        }
    }

    /// An argument this crate rejects before calling the library.
    pub(crate) fn invalid(message: String) -> Error {
        Error::new(sys::GPTQ_ERR_INVALID_ARGUMENT, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: gptq_strerror returns static text for any code.
        let name = unsafe { CStr::from_ptr(sys::gptq_strerror(self.status)) };
        if self.message.is_empty() {
            write!(f, "{} (status {})", name.to_string_lossy(), self.status)
        } else {
            write!(f, "{} ({}, status {})", self.message, name.to_string_lossy(), self.status)
        }
    }
}

impl std::error::Error for Error {}

/// Text owned by the library as a String (lossy for non-UTF-8 bytes).
pub(crate) fn c_str(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the library returns NUL-terminated strings valid during this call.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// `Ok(())` for GPTQ_OK, else an Error with the context's message (none for NULL).
pub(crate) fn check(status: i32, ctx: *const sys::gptq_ctx) -> Result<(), Error> {
    if status == sys::GPTQ_OK {
        return Ok(());
    }
    let message = if ctx.is_null() {
        String::new()
    } else {
        // SAFETY: ctx is a live context.
        c_str(unsafe { sys::gptq_ctx_last_error(ctx) })
    };
    Err(Error::new(status, message))
}
