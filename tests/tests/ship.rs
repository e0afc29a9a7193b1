//! Shipping while a writer appends: the mirror ends byte-identical.
use std::time::Duration;

use walship_tests::writer::WriterConfig;
use walship_tests::{Env, Writer, field, file_crcs, wait_durable};

const MIB: u64 = 1 << 20;

#[test]
fn ships_256_mib_from_a_concurrent_writer_across_many_segments() {
    let env = Env::new();
    let mut recv = env.receiver("receiver", "127.0.0.1:0");
    let addr = field(&recv.wait_log("receiver listening", Duration::from_secs(5)), "listen").expect("listen addr");
    // The writer starts first and keeps appending while the sender ships.
    let writer = Writer::start(
        &env.wal,
        WriterConfig { total: 256 * MIB, segment_size: 20 * MIB, chunk: 256 << 10, rate: None, seal_last: true },
    );
    writer.wait_written(MIB, Duration::from_secs(30));
    let mut send = env.sender("sender", &addr, &[]);
    let total = writer.join();
    assert_eq!(total, 256 * MIB);
    wait_durable(&env.mirror, total, Duration::from_secs(240));
    walship_tests::wait_complete(&env.wal, &env.mirror, Duration::from_secs(60));

    // 13 data segments plus the empty one that sealed the last: all complete
    // on the mirror under their final names, byte-identical.
    let source = file_crcs(&env.wal, |_| true);
    assert!(source.len() >= 11, "at least 10 data segments, got {}", source.len());
    let data_segments: Vec<_> = source.iter().filter(|(_, len, _)| *len > 0).cloned().collect();
    let mirror = file_crcs(&env.mirror, |n| !n.ends_with(".partial") && !n.starts_with("walship."));
    assert_eq!(mirror, data_segments, "complete mirror segments must equal the source's");
    let out = env.verify();
    assert!(out.status.success(), "verify failed: {}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("identical"));

    assert_eq!(send.term(), Some(0), "sender exits cleanly on SIGTERM");
    assert_eq!(recv.term(), Some(0), "receiver exits cleanly on SIGTERM");
    let stopped = recv.wait_log("receiver stopped", Duration::from_secs(5));
    assert_eq!(field(&stopped, "bytes_received").as_deref(), Some(total.to_string().as_str()), "each byte sent once");
}
