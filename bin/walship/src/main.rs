//! The `walship` binary; everything lives in the library.
fn main() -> std::process::ExitCode {
    walship::main()
}
