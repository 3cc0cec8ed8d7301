//! A pointer into one output buffer that parallel tasks share, each writing elements no other
//! task writes.

/// The buffer's start, shareable across rayon's tasks.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);

// SAFETY: used only for writes to disjoint elements, joined before the buffer is read.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// Through a method, so closures capture the wrapper (which is Send) and not the field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}
