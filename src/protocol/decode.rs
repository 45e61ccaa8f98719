//! Decoding: bytes to packets.
