//! Harness code shared by the fuzz targets and the seed generator
//! (`examples/gen_seeds.rs`).
pub mod seeds;
pub mod session;
