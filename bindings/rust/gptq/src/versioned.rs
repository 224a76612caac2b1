//! Option structs that begin with `struct_size`, in memory with room to grow.
//!
//! A newer libgptq's `_init()` fills its own struct, which may be longer than the one
//! this crate was written against (fields are only appended). The struct therefore
//! lives at the start of a larger zeroed buffer and keeps the `struct_size` the
//! library wrote, so fields this crate does not know keep the library's defaults.

use std::ops::{Deref, DerefMut};

const SPARE: usize = 1024;

#[repr(C)]
struct Roomy<T> {
    value: T,
    spare: [u8; SPARE],
}

pub(crate) struct Versioned<T: Copy> {
    inner: Box<Roomy<T>>,
}

impl<T: Copy> Versioned<T> {
    /// A struct filled by the library's `init` function.
    pub(crate) fn init(init: unsafe extern "C" fn(*mut T)) -> Versioned<T> {
        // SAFETY: every C option struct is plain data for which all-zero bytes are a
        // valid value (integers, doubles, nullable pointers and Option<fn>).
        let mut inner: Box<Roomy<T>> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: the buffer holds size_of::<T>() + SPARE bytes.
        unsafe { init(&mut inner.value) };
        let size = unsafe { *(&inner.value as *const T as *const u32) } as usize;
        assert!(
            size <= std::mem::size_of::<Roomy<T>>(),
            "the library's option struct ({} bytes) is larger than this crate allows for",
            size
        );
        Versioned { inner }
    }

    pub(crate) fn as_ptr(&self) -> *const T {
        &self.inner.value
    }
}

impl<T: Copy> Clone for Versioned<T> {
    fn clone(&self) -> Self {
        // SAFETY: plain data, copied byte for byte with its spare room.
        let mut inner: Box<Roomy<T>> = Box::new(unsafe { std::mem::zeroed() });
        inner.value = self.inner.value;
        inner.spare = self.inner.spare;
        Versioned { inner }
    }
}

impl<T: Copy> Deref for Versioned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner.value
    }
}

impl<T: Copy> DerefMut for Versioned<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner.value
    }
}
