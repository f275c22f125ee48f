//! One module per verb.

pub mod verify;
pub mod warm;
