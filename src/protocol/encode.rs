//! Encoding: packets to bytes.
