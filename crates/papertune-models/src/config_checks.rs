//! Checks shared by the architectures' configurations, run before any size is used.

/// Refuses the first size that is zero, naming its key.
pub(crate) fn sizes(sizes: &[(&str, usize)]) -> Result<(), String> {
    match sizes.iter().find(|(_, value)| *value == 0) {
        Some((key, _)) => Err(format!("{key} must be at least 1")),
        None => Ok(()),
    }
}
