//! `/metrics`: OpenMetrics text built from a snapshot at scrape time.
//!
//! Names are listed in docs/monitoring.md; units are in the names. Counters
//! are given without `_total`, which the encoder appends.
use std::fmt::Error;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use walship_agent::sender::{APPLY, FLUSH, WRITE};
use walship_core::histogram::Histogram;

use crate::Role;

type Labels = Vec<(String, String)>;

/// Renders the metrics of `role`.
pub fn render(role: &Role) -> Result<String, Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(role.clone())));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct Snapshot(Role);

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), Error> {
        match &self.0 {
            Role::Sender(h) => sender(&mut enc, h),
            Role::Receiver(h) => receiver(&mut enc, h),
        }
    }
}

fn gauges<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    items: &[(Labels, V)],
) -> Result<(), Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in items {
        // An unlabeled sample is written bare (`name value`, not `name{} value`).
        if labels.is_empty() {
            m.encode_gauge(v)?;
        } else {
            m.encode_family(labels)?.encode_gauge(v)?;
        }
    }
    Ok(())
}

fn counters<V: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    items: &[(Labels, V)],
) -> Result<(), Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in items {
        if labels.is_empty() {
            m.encode_counter::<NoLabelSet, V, u64>(v, None)?;
        } else {
            m.encode_family(labels)?.encode_counter::<NoLabelSet, V, u64>(v, None)?;
        }
    }
    Ok(())
}

fn one<V>(v: V) -> [(Labels, V); 1] {
    [(Vec::new(), v)]
}

fn receiver_label(name: &str) -> Labels {
    vec![("receiver".to_string(), name.to_string())]
}

fn histograms(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    items: &[(Labels, &Histogram)],
) -> Result<(), Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in items {
        if labels.is_empty() {
            m.encode_histogram::<NoLabelSet>(h.sum(), h.count(), &h.buckets(), None)?;
        } else {
            m.encode_family(labels)?.encode_histogram::<NoLabelSet>(h.sum(), h.count(), &h.buckets(), None)?;
        }
    }
    Ok(())
}

const STATES: [&str; 5] = ["connecting", "handshaking", "streaming", "backoff", "stopped"];

fn sender(enc: &mut DescriptorEncoder, h: &walship_agent::SenderHandle) -> Result<(), Error> {
    let s = h.snapshot();
    let per = |f: &dyn Fn(usize) -> u64| -> Vec<(Labels, u64)> {
        s.receivers.iter().enumerate().map(|(i, r)| (receiver_label(&r.label), f(i))).collect()
    };
    let per_f = |f: &dyn Fn(usize) -> f64| -> Vec<(Labels, f64)> {
        s.receivers.iter().enumerate().map(|(i, r)| (receiver_label(&r.label), f(i))).collect()
    };
    let r = &s.receivers;
    gauges(enc, "walship_source_end_position_bytes", "End of the WAL the sender has observed.", &one(s.end.get()))?;
    gauges(
        enc,
        "walship_receiver_sent_position_bytes",
        "Position handed to the transport.",
        &per(&|i| r[i].sent.get()),
    )?;
    gauges(
        enc,
        "walship_receiver_written_position_bytes",
        "Position the receiver wrote.",
        &per(&|i| r[i].written.get()),
    )?;
    gauges(
        enc,
        "walship_receiver_flushed_position_bytes",
        "Position the receiver fdatasync'ed.",
        &per(&|i| r[i].flushed.get()),
    )?;
    gauges(
        enc,
        "walship_receiver_applied_position_bytes",
        "Position the receiver applied.",
        &per(&|i| r[i].applied.get()),
    )?;
    gauges(enc, "walship_receiver_lag_bytes", "End minus flushed position.", &per(&|i| s.lags[i].lag_bytes))?;
    gauges(
        enc,
        "walship_receiver_inflight_bytes",
        "Sent minus written: the window in use.",
        &per(&|i| r[i].sent.since(r[i].written)),
    )?;
    gauges(
        enc,
        "walship_receiver_write_lag_current_seconds",
        "Age of the oldest byte not yet written on the receiver; 0 when caught up.",
        &per_f(&|i| s.lags[i].write.as_secs_f64()),
    )?;
    gauges(
        enc,
        "walship_receiver_flush_lag_current_seconds",
        "Age of the oldest byte not yet flushed on the receiver; 0 when caught up.",
        &per_f(&|i| s.lags[i].flush.as_secs_f64()),
    )?;
    gauges(
        enc,
        "walship_receiver_apply_lag_current_seconds",
        "Age of the oldest byte not yet applied on the receiver; 0 when caught up.",
        &per_f(&|i| s.lags[i].apply.as_secs_f64()),
    )?;
    for (level, name, help) in [
        (
            WRITE,
            "walship_write_lag_seconds",
            "Per-ack write lag samples: now minus when the newest acknowledged byte was first observed.",
        ),
        (
            FLUSH,
            "walship_flush_lag_seconds",
            "Per-ack flush lag samples: now minus when the newest flushed byte was first observed.",
        ),
        (
            APPLY,
            "walship_apply_lag_seconds",
            "Per-ack apply lag samples: now minus when the newest applied byte was first observed.",
        ),
    ] {
        let items: Vec<(Labels, &Histogram)> =
            r.iter().map(|x| (receiver_label(&x.label), &x.levels[level].histogram)).collect();
        histograms(enc, name, help, &items)?;
    }
    gauges(
        enc,
        "walship_receiver_up",
        "1 while a session to the receiver streams.",
        &per(&|i| u64::from(r[i].state == walship_agent::ConnState::Streaming)),
    )?;
    let states: Vec<(Labels, u64)> = r
        .iter()
        .flat_map(|x| {
            STATES.iter().map(move |st| {
                let mut l = receiver_label(&x.label);
                l.push(("state".into(), st.to_string()));
                (l, u64::from(x.state.as_str() == *st))
            })
        })
        .collect();
    gauges(enc, "walship_receiver_state", "1 for the receiver's current connection state.", &states)?;
    counters(enc, "walship_receiver_reconnects", "Sessions that ended and were retried.", &per(&|i| r[i].reconnects))?;
    counters(enc, "walship_frames_sent", "Frames sent.", &per(&|i| r[i].frames_sent))?;
    counters(enc, "walship_sent_bytes", "WAL bytes sent.", &per(&|i| r[i].bytes_sent))?;
    counters(enc, "walship_crc_errors", "Sessions the receiver closed for a bad frame.", &per(&|i| r[i].crc_errors))?;
    gauges(
        enc,
        "walship_rpo_exposure_seconds",
        "Age of the oldest byte not yet flushed on the quorum (async: the best receiver); 0 when caught up.",
        &one(s.rpo_exposure.as_secs_f64()),
    )?;
    if let Some(t) = s.rpo_target {
        gauges(enc, "walship_rpo_target_seconds", "The --rpo-target.", &one(t.as_secs_f64()))?;
        counters(
            enc,
            "walship_rpo_within_target_seconds",
            "Seconds with RPO exposure within the target.",
            &one(s.rpo_within_secs),
        )?;
        counters(
            enc,
            "walship_rpo_outside_target_seconds",
            "Seconds with RPO exposure over the target.",
            &one(s.rpo_outside_secs),
        )?;
    }
    histograms(
        enc,
        "walship_source_detection_delay_seconds",
        "File change event, as read on the sender's runtime, to the tailer's refresh that saw the new bytes.",
        &[(Vec::new(), &s.detection)],
    )?;
    counters(enc, "walship_source_errors", "Failed refreshes of the WAL directory.", &one(s.source_errors))?;
    gauges(enc, "walship_lag_tracker_points", "Ranges the lag tracker holds (bounded).", &one(s.lag_points as u64))?;
    let y = &s.sync;
    let states: Vec<(Labels, u64)> = ["async", "sync", "degraded"]
        .iter()
        .map(|st| (vec![("state".to_string(), st.to_string())], u64::from(y.state.as_str() == *st)))
        .collect();
    gauges(enc, "walship_sync_state", "1 for the current semi-sync state (async, sync, degraded).", &states)?;
    gauges(
        enc,
        "walship_sync_quorum",
        "--sync-quorum: receivers a wait needs (0 = async).",
        &one(u64::from(y.quorum)),
    )?;
    if let Some(q) = y.quorum_pos {
        gauges(
            enc,
            "walship_sync_quorum_position_bytes",
            "The quorum position at the sync level among connected receivers.",
            &one(q.get()),
        )?;
    }
    gauges(enc, "walship_sync_waiters", "Waits currently blocked.", &one(y.waiting as u64))?;
    counters(enc, "walship_sync_fallbacks", "Times semi-sync degraded to async.", &one(y.fallbacks))?;
    counters(enc, "walship_sync_recoveries", "Times semi-sync returned from degraded to sync.", &one(y.recoveries))?;
    counters(
        enc,
        "walship_retention_released_segments",
        "Segment waits (archive_command) let go without the segment being durable, because the unshipped WAL \
         exceeded --max-retained.",
        &one(y.released),
    )?;
    if let Some(max) = y.max_retained {
        gauges(
            enc,
            "walship_retention_max_bytes",
            "--max-retained: unshipped WAL allowed before segments are released.",
            &one(max),
        )?;
    }
    let waits: Vec<(Labels, &Histogram)> = ["durable", "degraded", "timeout", "released"]
        .iter()
        .zip(y.waits.iter())
        .map(|(o, h)| (vec![("outcome".to_string(), o.to_string())], h))
        .collect();
    histograms(enc, "walship_sync_wait_seconds", "How long waits took, by outcome.", &waits)?;
    Ok(())
}

fn receiver(enc: &mut DescriptorEncoder, h: &walship_agent::ReceiverHandle) -> Result<(), Error> {
    let st = h.stats();
    gauges(enc, "walship_mirror_written_position_bytes", "Written to the mirror files.", &one(st.written_pos.get()))?;
    gauges(enc, "walship_mirror_flushed_position_bytes", "Durable in the mirror.", &one(st.flushed_pos.get()))?;
    let applied = st.apply.as_ref().map_or(st.flushed_pos, |a| a.applied.min(st.flushed_pos));
    gauges(enc, "walship_mirror_applied_position_bytes", "Applied in the mirror.", &one(applied.get()))?;
    if let Some(a) = &st.apply {
        counters(
            enc,
            "walship_apply_failures",
            "Failed runs of the apply command (each is retried).",
            &one(a.failures),
        )?;
    }
    counters(enc, "walship_received_bytes", "WAL bytes received in data frames.", &one(st.bytes_received))?;
    counters(enc, "walship_received_frames", "Frames received.", &one(st.frames_received))?;
    counters(enc, "walship_segments_completed", "Segments completed and renamed.", &one(st.segments_completed))?;
    counters(
        enc,
        "walship_frames_rejected",
        "Connections closed for a bad frame (crc, magic, length).",
        &one(st.bad_frames),
    )?;
    counters(enc, "walship_sessions", "Sessions accepted.", &one(st.sessions_accepted))?;
    counters(enc, "walship_sessions_refused", "Sessions refused.", &one(st.sessions_refused))?;
    gauges(enc, "walship_session_up", "1 while a sender is connected.", &one(u64::from(st.connected)))?;
    counters(
        enc,
        "walship_storage_failures",
        "Sessions ended by a storage failure (disk full, I/O error); nothing past the durable position was acked.",
        &one(st.storage_errors),
    )?;
    gauges(
        enc,
        "walship_storage_failing",
        "1 from a storage failure until a flush succeeds again.",
        &one(u64::from(st.storage_error.is_some())),
    )?;
    gauges(enc, "walship_connections_open", "Connections open (handshaking or streaming).", &one(st.connections_open))?;
    counters(
        enc,
        "walship_connections_refused",
        "Connections refused: over --max-connections, handshake failed or too slow, not in --allow-client.",
        &one(st.connections_refused),
    )?;
    histograms(
        enc,
        "walship_fsync_duration_seconds",
        "fdatasync of the data plus the durable-position record.",
        &[(Vec::new(), &st.fsync)],
    )?;
    if let Some(t) = st.last_frame_at {
        let age = std::time::Instant::now().saturating_duration_since(t).as_secs_f64();
        gauges(enc, "walship_last_frame_age_seconds", "Time since the last frame.", &one(age))?;
    }
    Ok(())
}
