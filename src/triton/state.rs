//! The `*SetState` slots: a `Box<T>` handed to the server as a `void*`, borrowed in callbacks,
//! and reclaimed at finalize. One generic type serves the backend, the models and the instances.

use std::ffi::c_void;
use std::marker::PhantomData;

use crate::error::{Error, Result};

/// Something that keeps one `void*` for us (backend, model, instance).
pub(crate) trait StateHolder {
    fn raw_state(&self) -> Result<*mut c_void>;
    fn set_raw_state(&self, state: *mut c_void) -> Result<()>;
}

/// The slot of one holder, typed by what we keep in it.
pub(crate) struct Slot<'h, H: StateHolder, T> {
    holder: &'h H,
    _t: PhantomData<T>,
}

// `Send + Sync`: the server calls a model's instances, and so reads its state, from several
// threads at once, and finalizes on another thread than the one that initialized.
impl<'h, H: StateHolder, T: Send + Sync> Slot<'h, H, T> {
    /// # Safety
    /// The holder's slot is null or holds a pointer stored by `Slot<_, T>::put` with this same
    /// `T`, and is not freed (by `take`) while a reference from `get` is alive.
    pub(crate) unsafe fn new(holder: &'h H) -> Self {
        Slot { holder, _t: PhantomData }
    }

    /// Stores `value`; if the server refuses, the value is dropped here.
    pub(crate) fn put(&self, value: Box<T>) -> Result<()> {
        let raw = Box::into_raw(value);
        self.holder.set_raw_state(raw.cast()).inspect_err(|_| {
            // SAFETY: the server did not take the pointer; we still own the box.
            drop(unsafe { Box::from_raw(raw) });
        })
    }

    /// Borrows the value for as long as the holder is borrowed: the server keeps the holder, and
    /// so the value, alive for the callback that lent it to us (between initialize and finalize).
    pub(crate) fn get(&self) -> Result<&'h T> {
        let raw = self.holder.raw_state()?.cast::<T>();
        // SAFETY: non-null pointers in the slot come from `put` with this T (constructor's
        // contract) and stay valid until `take`, which the server calls only after every callback
        // that could be using this reference has returned.
        unsafe { raw.as_ref() }.ok_or_else(|| Error::internal("backend state is missing"))
    }

    /// Takes the value back (at finalize), leaving the slot empty.
    pub(crate) fn take(&self) -> Result<Option<Box<T>>> {
        let raw = self.holder.raw_state()?.cast::<T>();
        if raw.is_null() {
            return Ok(None);
        }
        self.holder.set_raw_state(std::ptr::null_mut())?;
        // SAFETY: the pointer came from Box::into_raw in `put` (constructor's contract) and the
        // slot no longer refers to it, so this is the only owner.
        Ok(Some(unsafe { Box::from_raw(raw) }))
    }
}
