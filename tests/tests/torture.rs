//! Crash torture with real processes: while a writer appends, a seeded
//! loop SIGKILLs the sender or the receiver at random moments and restarts
//! it (the receiver on the same address). The sender logs every flush ack
//! it receives (`--debug-ack-log`); after each kill the acks logged so far
//! must be covered by the mirror's durable position — the restarted
//! receiver's "mirror recovered ... durable_pos=" after a receiver kill, the
//! durable position on disk after a sender kill. At the end the mirror is
//! byte-identical to the source.
//!
//! `WALSHIP_TORTURE_KILLS` (default 12) and `WALSHIP_TORTURE_SEED`.
use std::path::Path;
use std::time::{Duration, Instant};

use walship_tests::writer::WriterConfig;
use walship_tests::{Env, Writer, field, file_crcs, mirror_durable, wait_durable};

const MIB: u64 = 1 << 20;
const T: Duration = Duration::from_secs(60);
const RATE: u64 = 8 * MIB;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn pos(line: &str, key: &str) -> u64 {
    field(line, key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no numeric {key} in {line:?}"))
}

/// The highest flushed position the sender was ever acknowledged by `label`.
fn max_acked(log: &Path, label: &str) -> u64 {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(l, _)| *l == label)
        .map(|(_, p)| p.trim().parse::<u64>().unwrap_or_else(|_| panic!("bad ack log line for {label}: {p:?}")))
        .max()
        .unwrap_or(0)
}

#[test]
fn random_kills_of_either_side_never_lose_an_acknowledged_flush() {
    let kills: u64 = std::env::var("WALSHIP_TORTURE_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let seed: u64 = std::env::var("WALSHIP_TORTURE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x7047);
    let mut rng = Rng(seed | 1);
    let env = Env::new();
    let acks = env.path("acks.log");
    let ack_arg = acks.display().to_string();
    let sender_args = ["--debug-ack-log", ack_arg.as_str()];

    let mut receiver = env.receiver("receiver", "127.0.0.1:0");
    let addr = field(&receiver.wait_log("receiver listening", T), "listen").expect("listen addr");
    // Enough WAL to keep the writer busy through the kills (about 0.9 s each).
    let total = RATE * (kills * 9 / 10 + 3);
    let writer = Writer::start(
        &env.wal,
        WriterConfig { total, segment_size: 4 * MIB, chunk: 128 << 10, rate: Some(RATE), seal_last: true },
    );
    let mut sender = env.sender("sender", &addr, &sender_args);
    receiver.wait_log_n("session accepted", 1, T);

    let started = Instant::now();
    let (mut receiver_kills, mut sender_kills, mut killed_while_writing, mut live_kills) = (0u64, 0u64, 0u64, 0u64);
    let (mut max_gap, mut resumed) = (0u64, 0u64);
    let mut receiver_starts = 1;
    // The previous kill: its index, the highest ack logged before it, and
    // how many sessions the receiver's log had accepted by then.
    let mut previous: Option<(u64, u64, usize)> = None;
    for k in 0..kills {
        // The fault: a random moment.
        std::thread::sleep(Duration::from_millis(50 + rng.below(800)));
        let accepted = receiver.log_lines("session accepted").len();
        if let Some(p) = previous {
            // A session accepted since the last kill resumed at or past every ack before it.
            if accepted > p.2 {
                let resume = pos(&receiver.log_lines("session accepted")[p.2], "resume_pos");
                assert!(resume >= p.1, "kill {}: the next session resumed at {resume}, below the acked {}", p.0, p.1);
                max_gap = max_gap.max(resume - p.1);
                resumed += 1;
                live_kills += 1;
            }
        }
        killed_while_writing += u64::from(writer.written() < total);
        // Both kinds for sure, then a coin per kill.
        let kill_receiver = if k < 2 { k == 0 } else { rng.below(2) == 0 };
        let (acked, durable);
        // Sessions accepted before the kill: counted once the killed side is dead
        // and before its replacement starts, so the next one is after the kill.
        let before;
        if kill_receiver {
            receiver.kill9();
            before = receiver.log_lines("session accepted").len();
            receiver_kills += 1;
            acked = max_acked(&acks, &addr);
            receiver = env.receiver("receiver", &addr);
            receiver_starts += 1;
            durable = pos(&receiver.wait_log_n("mirror recovered", receiver_starts, T), "durable_pos");
            assert!(
                durable >= acked,
                "kill {k} (receiver): recovered durable_pos {durable} < flushed {acked} acknowledged before the kill"
            );
        } else {
            sender.kill9();
            before = receiver.log_lines("session accepted").len();
            sender_kills += 1;
            acked = max_acked(&acks, &addr);
            durable = mirror_durable(&env.mirror);
            assert!(durable >= acked, "kill {k} (sender): mirror durable {durable} < flushed {acked} acknowledged");
            sender = env.sender("sender", &addr, &sender_args);
        }
        println!("kill {k}: {} acked {acked} durable {durable}", if kill_receiver { "receiver" } else { "sender" });
        previous = Some((k, acked, before));
    }
    // The stream resumes after the last kill too.
    if let Some(p) = previous {
        let resume = pos(&receiver.wait_log_n("session accepted", p.2 + 1, T), "resume_pos");
        assert!(resume >= p.1, "last kill: the session resumed at {resume}, below the acked {}", p.1);
        max_gap = max_gap.max(resume - p.1);
        resumed += 1;
    }
    let elapsed = started.elapsed();

    assert_eq!(writer.join(), total);
    wait_durable(&env.mirror, total, T);
    walship_tests::wait_complete(&env.wal, &env.mirror, T);
    let source: Vec<_> = file_crcs(&env.wal, |_| true).into_iter().filter(|f| f.1 > 0).collect();
    let mirror = file_crcs(&env.mirror, |n| !n.ends_with(".partial") && !n.starts_with("walship."));
    assert_eq!(mirror, source, "mirror segments must equal the source's");
    let acked = max_acked(&acks, &addr);
    assert!(acked <= total && mirror_durable(&env.mirror) >= acked, "final ack {acked}");
    assert_eq!(sender.term(), Some(0));
    assert_eq!(receiver.term(), Some(0));
    let lines = std::fs::read_to_string(&acks).map(|t| t.lines().count()).unwrap_or(0);
    let report = format!(
        "crash torture (seed {seed:#x}): {kills} kills ({receiver_kills} receiver, {sender_kills} sender, \
         {killed_while_writing} while the writer wrote, {live_kills} after the previous kill's session resumed) \
         in {elapsed:.1?}; {total} bytes shipped in {} segments; {lines} flush acks logged, none lost; \
         {resumed} resumed sessions checked, max resume gap {max_gap} bytes (resume position past the last \
         ack logged before the kill)",
        source.len()
    );
    println!("{report}");
    assert!(receiver_kills > 0 && sender_kills > 0, "{report}");
}
