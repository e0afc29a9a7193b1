//! Writes the seed corpora to `seeds/<target>/` (run from anywhere):
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds`.
//! The `receiver_session` scripts are run once first: a seed must not fail.
use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (target, name, bytes) in walship_fuzz::seeds::all() {
        if target == "receiver_session" {
            walship_fuzz::session::run(&bytes);
        }
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), &bytes)?;
        println!("{target}/{name}: {} bytes", bytes.len());
    }
    Ok(())
}
