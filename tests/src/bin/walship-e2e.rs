//! The walship program, for the end-to-end tests.
fn main() -> std::process::ExitCode {
    walship::main()
}
