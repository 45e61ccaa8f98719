//! A full disk under a broker with a store: the broker binary runs with `[storage] dir` on a
//! small tmpfs, and the tmpfs fills up. What it cannot store it does not acknowledge — an MQTT 5
//! publisher gets 0x80, a 3.1.1 one no PUBACK and a closed connection — while traffic that
//! needs no disk flows on; once there is room again, it acknowledges again by itself
//! (README, "Persistence": when the disk fails).
//!
//! Mounting a tmpfs needs root (CI runs as root); without it the test says so and passes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{Process, Storage};
use common::*;
use supermq::protocol::{Packet, ProtocolVersion, QoS};

/// The tmpfs: room for the store and a filler file.
const DISK: &str = "size=4m";

/// Room left beside the filler: the store's first pages fit, a few large messages do not.
const ROOM: u64 = 256 * 1024;

/// A tmpfs mounted over a directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("store dir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", DISK, "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then(|| Tmpfs(dir.to_path_buf()))
    }

    /// Bytes free on it.
    fn available(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.0)
            .output()
            .expect("df runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|line| line.trim().parse().ok())
            .expect("df prints the free bytes")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

#[tokio::test]
async fn a_full_disk_refuses_what_it_cannot_store_and_resumes_when_there_is_room() {
    let mut broker = Process::new(Storage::Immediate, "");
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let Some(disk) = Tmpfs::mount(&broker.store_dir()) else {
        eprintln!("skipped: mount -t tmpfs refused (no CAP_SYS_ADMIN here)");
        return;
    };
    broker.start().await;
    let filler = disk.0.join("filler");
    let fill = disk.available().saturating_sub(ROOM);
    std::fs::write(&filler, vec![0u8; usize::try_from(fill).expect("fits")]).expect("filler");

    // A persistent session, away: what is published to it must be stored.
    let mut connect = connect_packet(ProtocolVersion::V5, "sleeper");
    connect.properties.session_expiry_interval = Some(3600);
    let (mut sleeper, _) = TestClient::connect_with(broker.addr(), connect).await;
    sleeper.subscribe("disk/#", QoS::AtLeastOnce).await;
    sleeper.disconnect().await;
    // A clean session needs no disk.
    let mut clean = TestClient::v5(broker.addr(), "clean").await;
    clean.subscribe("free/#", QoS::AtLeastOnce).await;

    let mut publisher = TestClient::v5(broker.addr(), "pub").await;
    let payload = vec![b'x'; 32 * 1024];
    let mut refused = None;
    for i in 0..64u16 {
        let code = publisher
            .publish(&format!("disk/{i}"), &payload, QoS::AtLeastOnce, false)
            .await;
        if code >= 0x80 {
            refused = Some(code);
            break;
        }
    }
    assert_eq!(
        refused,
        Some(0x80),
        "a message the full disk could not take was refused; log:\n{}",
        broker.log()
    );
    assert!(broker.log().contains("cannot write to the store"));

    // Meanwhile a clean session is served as ever.
    let code = publisher
        .publish("free/t", b"no disk needed", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(code, 0);
    assert_eq!(&clean.recv_acked().await.payload[..], b"no disk needed");

    // A 3.1.1 publisher has no negative ack: no PUBACK, and its connection is closed.
    let mut old = TestClient::v311(broker.addr(), "old").await;
    old.send_publish(publish_packet(
        "disk/old",
        &payload,
        QoS::AtLeastOnce,
        false,
        1,
    ))
    .await;
    let got = old.expect_closed().await;
    assert!(
        !got.iter().any(|p| matches!(p, Packet::PubAck(_))),
        "a 3.1.1 publisher got a PUBACK for what was not stored: {got:?}"
    );

    // Room again: the store is written to again, by itself, and acks are positive again.
    std::fs::remove_file(&filler).expect("remove filler");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let code = publisher
            .publish("disk/after", b"stored", QoS::AtLeastOnce, false)
            .await;
        if code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused (0x{code:02x}) with room on the disk; log:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(broker.log().contains("the store is written to again"));
    broker.kill();
    drop(disk);
}
