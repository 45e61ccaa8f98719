//! Errors of the codec.
