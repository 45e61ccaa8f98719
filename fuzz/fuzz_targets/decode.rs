//! Fuzz target for the codec: arbitrary bytes into `decode`, for every protocol version.
//!
//! Build and run on the stable toolchain (no nightly here; RUSTC_BOOTSTRAP lets cargo-fuzz
//! pass its sanitizer flags), from the repository root:
//!
//!     RUSTC_BOOTSTRAP=1 cargo fuzz run decode -- -max_total_time=60
//!
//! The first input byte picks the connection's version and a maximum packet size; the rest is
//! the read buffer. Every packet `decode` accepts must encode back to itself, and a short read
//! must leave the buffer untouched; any panic is a bug.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use supermq::protocol::{ProtocolVersion, decode, encode};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let version = match selector % 3 {
        0 => ProtocolVersion::V31,
        1 => ProtocolVersion::V311,
        _ => ProtocolVersion::V5,
    };
    // Mostly no limit, sometimes a small one, to reach the size check too.
    let max = if selector >= 0xF0 { usize::from(selector & 0x0F) * 8 } else { usize::MAX };
    let mut buf = BytesMut::from(input);
    loop {
        let before = buf.clone();
        match decode(&mut buf, version, max) {
            Ok(Some(packet)) => {
                let mut out = BytesMut::new();
                let written = encode(&packet, version, &mut out).expect("decoded packets encode");
                assert_eq!(written, out.len());
                let again = decode(&mut out, version, usize::MAX).expect("re-encoding decodes");
                assert_eq!(again.as_ref(), Some(&packet));
                assert!(out.is_empty());
            }
            Ok(None) => {
                assert_eq!(buf, before);
                return;
            }
            Err(_) => return,
        }
    }
});
