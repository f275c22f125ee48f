//! The checkpoint image.
