//! The load client: pgbench -N's transaction on C threads, with or without waits.
use super::*;

// ---------------------------------------------------------------- load client

#[derive(Debug, Clone)]
pub(crate) struct LoadSpec {
    pub(crate) conninfo: String,
    pub(crate) clients: usize,
    pub(crate) scale: u32,
    pub(crate) duration: Duration,
    /// Case b: the sender's admin address; every transaction waits.
    pub(crate) wait_admin: Option<String>,
    /// Transactions per second over all clients; None: as fast as possible.
    pub(crate) rate: Option<f64>,
    pub(crate) round: usize,
}

#[derive(Debug, Default)]
pub(crate) struct ThreadOut {
    pub(crate) start: Option<Instant>,
    pub(crate) end: Option<Instant>,
    pub(crate) counted: u64,
    pub(crate) not_durable: u64,
    pub(crate) wait_errors: u64,
    pub(crate) sql_errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) raw: RawLatencies,
    pub(crate) tx: Vec<f64>,
}

/// xorshift64*: pgbench's uniform random() is all the script needs.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        lo + (x % (hi - lo + 1) as u64) as i64
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) fn run_load(spec: &LoadSpec) -> Result<LoadRun> {
    let barrier = Barrier::new(spec.clients);
    let outs: Vec<Result<ThreadOut>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..spec.clients)
            .map(|i| {
                let barrier = &barrier;
                s.spawn(move || client_thread(spec, i, barrier))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a load client thread panicked"))))
            .collect()
    });
    let outs: Vec<ThreadOut> = outs.into_iter().collect::<Result<_>>()?;
    let start = outs.iter().filter_map(|o| o.start).min().context("no client started")?;
    let end = outs.iter().filter_map(|o| o.end).max().context("no client ended")?;
    let secs = end.duration_since(start).as_secs_f64();
    let mut raw = RawLatencies::default();
    let mut tx = Vec::new();
    let mut run = LoadRun { round: spec.round, secs, ..Default::default() };
    for o in outs {
        run.counted += o.counted;
        run.not_durable += o.not_durable;
        run.wait_errors += o.wait_errors;
        run.sql_errors += o.sql_errors;
        run.first_error = run.first_error.or(o.first_error);
        raw.commit.extend(o.raw.commit);
        raw.wait.extend(o.raw.wait);
        raw.total.extend(o.raw.total);
        tx.extend(o.tx);
    }
    run.tps = run.counted as f64 / secs;
    run.commit_ms = quantiles(&raw.commit);
    run.wait_ms = spec.wait_admin.as_ref().map(|_| quantiles(&raw.wait));
    run.commit_durable_ms = quantiles(&raw.total);
    run.tx_ms = quantiles(&tx);
    run.raw = raw;
    Ok(run)
}

pub(crate) fn client_thread(spec: &LoadSpec, idx: usize, barrier: &Barrier) -> Result<ThreadOut> {
    // Connect and prepare before the barrier, so that none of it is timed;
    // a failing thread still reaches the barrier (the others wait there).
    let setup = (|| -> Result<_> {
        let mut c = postgres::Client::connect(&spec.conninfo, postgres::NoTls).context("load client connect")?;
        // A commit waiting for a standby that died would block forever otherwise.
        c.batch_execute("SET statement_timeout = '60s'")?;
        let upd = c.prepare("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2")?;
        let sel = c.prepare("SELECT abalance FROM pgbench_accounts WHERE aid = $1")?;
        let ins = c.prepare(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
        )?;
        Ok((c, upd, sel, ins))
    })();
    barrier.wait();
    let (mut c, upd, sel, ins) = setup?;
    let waiter = spec.wait_admin.as_deref().map(walship_client::Client::new);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((idx as u64 + 1) << 17) ^ ((spec.round as u64) << 40));
    let scale = i64::from(spec.scale);
    let mut out = ThreadOut::default();
    let start = Instant::now();
    out.start = Some(start);
    let deadline = start + spec.duration;
    let interval = spec.rate.map(|r| Duration::from_secs_f64(spec.clients as f64 / r));
    // Spread the clients' schedules over one interval.
    let mut next = interval.map(|iv| start + iv.mul_f64(idx as f64 / spec.clients as f64));
    loop {
        if let (Some(n), Some(iv)) = (next.as_mut(), interval) {
            let now = Instant::now();
            if *n > now {
                std::thread::sleep(*n - now);
            }
            *n += iv;
        }
        if Instant::now() >= deadline {
            break;
        }
        let aid = rng.range(1, 100_000 * scale) as i32;
        let bid = rng.range(1, scale) as i32;
        let tid = rng.range(1, 10 * scale) as i32;
        let delta = rng.range(-5000, 5000) as i32;
        let t_begin = Instant::now();
        let res = (|| -> Result<(String, Instant, Instant)> {
            c.batch_execute("BEGIN")?;
            c.execute(&upd, &[&delta, &aid])?;
            let _: i32 = c.query_one(&sel, &[&aid])?.get(0);
            c.execute(&ins, &[&tid, &bid, &aid, &delta])?;
            let t0 = Instant::now();
            let mut lsn = None;
            for m in c.simple_query("COMMIT; SELECT pg_current_wal_flush_lsn()::text")? {
                if let postgres::SimpleQueryMessage::Row(r) = m {
                    lsn = r.get(0).map(str::to_string);
                }
            }
            Ok((lsn.context("no flush LSN")?, t0, Instant::now()))
        })();
        let (lsn, t0, t1) = match res {
            Ok(x) => x,
            Err(e) => {
                out.sql_errors += 1;
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
                let _ = c.batch_execute("ROLLBACK");
                if c.is_closed() || out.sql_errors > 100 {
                    bail!("load client {idx}: giving up after {} SQL errors: {e:#}", out.sql_errors);
                }
                continue;
            }
        };
        out.raw.commit.push(ms(t1 - t0));
        let durable = match &waiter {
            None => true,
            Some(w) => match w.wait(walship_client::Wait::position(lsn).timeout(WAIT_TIMEOUT)) {
                Ok(r) if r.outcome == walship_client::Outcome::Durable => true,
                Ok(r) => {
                    out.not_durable += 1;
                    out.first_error.get_or_insert_with(|| format!("wait answered {:?}", r.outcome));
                    false
                }
                Err(e) => {
                    out.wait_errors += 1;
                    out.first_error.get_or_insert_with(|| format!("wait failed: {e}"));
                    false
                }
            },
        };
        let t2 = Instant::now();
        if waiter.is_some() {
            out.raw.wait.push(ms(t2 - t1));
        }
        out.raw.total.push(ms(t2 - t0));
        out.tx.push(ms(t2 - t_begin));
        if durable {
            out.counted += 1;
        }
    }
    out.end = Some(Instant::now());
    Ok(out)
}
