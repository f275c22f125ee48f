//! One module per verb.

pub mod warm;
