//! Fuzz target for the route frame decoder: arbitrary bytes into `Frame::decode`, through the
//! crate's fuzz entry point `supermq::cluster::FuzzFrame`.
//!
//! Build and run on the stable toolchain (no nightly here; RUSTC_BOOTSTRAP lets cargo-fuzz
//! pass its sanitizer flags), from the repository root:
//!
//!     RUSTC_BOOTSTRAP=1 cargo fuzz run route_frame -- -max_total_time=180
//!
//! The first input byte picks a maximum packet size for message frames; the rest is one frame
//! body (kind byte first, as a route's reader cuts it out after the length prefix). Every frame
//! that decodes must encode with a length prefix that matches, and decode from that to the
//! same frame; any panic is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;
use supermq::cluster::FuzzFrame;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    // Mostly no limit, sometimes a small one, to reach the size check too.
    let max_packet = if selector >= 0xF0 { usize::from(selector & 0x0F) * 8 } else { usize::MAX };
    let Some(frame) = FuzzFrame::decode(body, max_packet) else {
        return;
    };
    let encoded = frame.encode().expect("decoded frames encode");
    let (length, rest) = encoded.split_first_chunk::<4>().expect("a length prefix");
    assert_eq!(u32::from_be_bytes(*length) as usize, rest.len());
    let again = FuzzFrame::decode(rest, usize::MAX).expect("re-encoded frames decode");
    assert_eq!(again, frame);
});
