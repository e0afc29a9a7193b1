//! Runs `receiver_session` inputs without libFuzzer, e.g. to read a crash:
//! `WALSHIP_FUZZ_TRACE=1 cargo run --manifest-path fuzz/Cargo.toml --example replay_session -- FILE...`
fn main() -> std::io::Result<()> {
    for path in std::env::args_os().skip(1) {
        let data = std::fs::read(&path)?;
        eprintln!("== {}", path.to_string_lossy());
        walship_fuzz::session::run(&data);
    }
    Ok(())
}
