//! How a checkpoint archive is made.
